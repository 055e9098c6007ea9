"""Checks that cost milliseconds, run before any download or forward pass, once per process."""

from __future__ import annotations

from storage.fs import Location
from tasks.core.params import EmbeddingsParams
from tasks.images import check_dataset
from tasks.models import models

# Parameter sets that passed: the CLI checks before the flow starts (no Prefect server for a
# typo), the flow checks again for deployments; the second check in the same process is free.
_PASSED: set[str] = set()


def check_run(params: EmbeddingsParams) -> None:
    """Raise a one-line error for an unwritable output, unknown model, bad weights or folder."""
    key = params.model_dump_json()
    if key in _PASSED:
        return
    Location(params.out).check_writable()
    models.check_model_name(params.model)
    if params.weights is not None:
        # Loading a weights file takes a second; finding out it is the wrong one after the
        # dataset download would take much longer.
        models.build_model(
            params.model, pretrained=True, weights=params.weights, image_size=params.image_size
        )
    models.resolve_device(params.device)
    check_dataset(params)
    if params.weights is None and params.pretrained:
        # one probe, before a dataset download that would be wasted without the weights
        models.check_pretrained_available(params.model)
    _PASSED.add(key)
