"""Checks that cost milliseconds, run before any download or forward pass."""

from __future__ import annotations

from typing import Any

from storage.fs import Location
from tasks import models
from tasks.load import check_dataset


def check_run(config: Any) -> None:
    """Raise a one-line error for an unwritable output, unknown model, bad weights or folder."""
    Location(config.out).check_writable()
    models.check_model_name(config.model)
    if config.weights is not None:
        # Loading a weights file takes a second; finding out it is the wrong one after the
        # dataset download would take much longer.
        models.build_model(
            config.model, pretrained=True, weights=config.weights, image_size=config.image_size
        )
    models.resolve_device(config.device)
    check_dataset(config)
    if config.weights is None and config.pretrained:
        # one probe, before a dataset download that would be wasted without the weights
        models.check_pretrained_available(config.model)
