"""The report's pieces: data, figures, rendering, artifacts and the explorer page."""
