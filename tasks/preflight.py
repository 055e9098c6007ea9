"""Checks that cost milliseconds, run before any download or forward pass."""

from __future__ import annotations

from typing import Any

from storage.fs import Location
from tasks import models
from tasks.load import check_dataset


def check_run(config: Any) -> None:
    """Raise a one-line error for an unwritable output, unknown model, missing weights or folder."""
    Location(config.out).check_writable()
    models.check_model_name(config.model)
    if config.weights is not None and not config.weights.is_file():
        raise models.ModelError(f"weights file {config.weights} does not exist; check --weights")
    models.resolve_device(config.device)
    check_dataset(config)
