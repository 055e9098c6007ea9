"""The run checks: milliseconds, before any download or forward pass, once per run."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

from flows.config import RunConfig
from flows.runners import check_runner
from storage.fs import Location
from tasks.core.params import EmbeddingsParams, ImagesParams, OverlapParams
from tasks.images import check_dataset
from tasks.models import hardware


def check_run(config: RunConfig) -> None:
    """Raise a one-line error for a missing runner, an unwritable output, an unknown model, bad
    weights or folder; the one place the run checks run.

    The CLI checks before the flow starts (no Prefect server for a typo) and the flow checks a
    deployment's run: a configuration that passed is not checked again.
    """
    if config.checked:
        return
    params = config.params
    check_runner(config)
    Location(config.out).check_writable()
    # First: whether the run's embeddings are finished lists the dataset's files, which must be
    # readable (a symlink loop is refused here in one line).
    check_classes_rule(params.overlap, check_dataset(params.images))
    # The model checks load timm and torch: a run whose embeddings are finished skips them
    # (they passed when the embeddings were made), so a cached run imports neither.
    needs_model = not embedded(params.images, params.embeddings)
    if needs_model:
        check_model(params.embeddings)
    hardware.device_name(params.embeddings.device)
    if needs_model and params.embeddings.weights is None and params.embeddings.pretrained:
        # one probe, before a dataset download that would be wasted without the weights
        models().check_pretrained_available(params.embeddings.model)
    config.mark_checked()


def check_classes_rule(params: OverlapParams, num_classes: int | None) -> None:
    """Refuse ``--overlap-classes`` above the dataset's class count before the extraction."""
    if params.overlap_rule != "classes":
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


def embedded(images: ImagesParams, embeddings: EmbeddingsParams) -> bool:
    """True when this run's images and embeddings are finished and intact under its output root."""
    from tasks import embeddings as embeddings_stage
    from tasks import images as images_stage

    if embeddings.weights is not None and not Path(embeddings.weights).is_file():
        return False  # the model check says what is wrong with it
    images_done = images_stage.STAGE.completed(params=images)
    if images_done is None:
        return False
    done = embeddings_stage.STAGE.completed(images=images_done, params=embeddings)
    return done is not None
