"""A terminal progress bar mirrored to a Prefect progress artifact."""

from __future__ import annotations

from prefect.artifacts import create_progress_artifact, update_progress_artifact
from tqdm.auto import tqdm


class Progress:
    """A terminal progress bar (images/s) mirrored to a Prefect progress artifact."""

    def __init__(self, total: int) -> None:
        self.total, self.done, self.reported = total, 0, -1.0
        self.bar = tqdm(total=total, unit="img", desc="extract", smoothing=0.1)
        self.artifact = create_progress_artifact(
            progress=self.percent, key="embedding-extraction", description="images embedded"
        )

    @property
    def percent(self) -> float:
        return 100.0 * self.done / max(self.total, 1)

    def start_at(self, done: int) -> None:
        """Count images a resumed run finds already embedded (not in the images/s rate)."""
        self.done = self.bar.initial = self.bar.n = done
        self.bar.refresh()
        self.reported = self.percent
        update_progress_artifact(self.artifact, progress=self.percent)

    def __call__(self, n: int) -> None:
        self.done += n
        self.bar.update(n)
        if self.percent - self.reported >= 1.0 or self.done == self.total:
            self.reported = self.percent
            update_progress_artifact(self.artifact, progress=self.percent)

    def close(self) -> None:
        self.bar.close()
