"""Pure algorithms on arrays and tables: overlap rules, pair samples, classification statistics."""
