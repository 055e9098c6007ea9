"""Checks that cost milliseconds, run before any download or forward pass, once per process."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

from storage.fs import Location
from tasks.core.params import EmbeddingsParams, ImagesParams, OverlapParams
from tasks.images import check_dataset
from tasks.models import hardware

# Parameter sets that passed: the CLI checks before the flow starts (no Prefect server for a
# typo), the flow checks again for deployments; the second check in the same process is free.
_PASSED: set[str] = set()


def check_run(params: EmbeddingsParams) -> None:
    """Raise a one-line error for an unwritable output, unknown model, bad weights or folder.

    ``params``: the run's parameters (a ``RunConfig``: the images' and embeddings' fields).
    """
    key = params.model_dump_json()
    if key in _PASSED:
        return
    Location(params.out).check_writable()
    # First: whether the run's embeddings are finished lists the dataset's files, which must be
    # readable (a symlink loop is refused here in one line).
    check_classes_rule(params, check_dataset(params))
    # The model checks load timm and torch: a run whose embeddings are finished skips them
    # (they passed when the embeddings were made), so a cached run imports neither.
    needs_model = not embedded(params)
    if needs_model:
        check_model(params)
    hardware.device_name(params.device)
    if needs_model and params.weights is None and params.pretrained:
        # one probe, before a dataset download that would be wasted without the weights
        models().check_pretrained_available(params.model)
    _PASSED.add(key)


def check_classes_rule(params: EmbeddingsParams, num_classes: int | None) -> None:
    """Refuse ``--overlap-classes`` above the dataset's class count before the extraction."""
    if not isinstance(params, OverlapParams) or params.overlap_rule != "classes":
        return
    if num_classes is not None and params.overlap_classes > num_classes:
        raise ValueError(
            f"--overlap-classes {params.overlap_classes} is more than the {num_classes} classes "
            f"of {params.dataset}; pass --overlap-classes 2..{num_classes}"
        )


def models() -> ModuleType:
    """``tasks.models.models``, imported on first use: it loads timm and torch."""
    from tasks.models import models

    return models


def check_model(params: EmbeddingsParams) -> None:
    """Raise for an unknown model or a weights file that does not fit it."""
    models().check_model_name(params.model)
    if params.weights is not None:
        # Loading a weights file takes a second; finding out it is the wrong one after the
        # dataset download would take much longer.
        models().build_model(
            params.model, pretrained=True, weights=params.weights, image_size=params.image_size
        )


def embedded(params: EmbeddingsParams) -> bool:
    """True when this run's images and embeddings are finished and intact under its output root."""
    from tasks import embeddings, images

    if params.weights is not None and not Path(params.weights).is_file():
        return False  # the model check says what is wrong with it
    images_done = images.STAGE.completed(params=params.params_of(ImagesParams))
    if images_done is None:
        return False
    done = embeddings.STAGE.completed(images=images_done, params=params.params_of(EmbeddingsParams))
    return done is not None
