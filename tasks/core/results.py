"""What a run's stages hand each other: the set of their manifests, and each stage's ``info``.

``RunStages`` is the set of stages that ran, one field per stage; the flow hands it to the report
and the run record. The classifier path (subset to confusion) runs only when the overlap rule
flagged pairs: ``trained`` says whether it did.

Each ``*Info`` model is the typed contract of one stage's ``info`` (the facts it records in its
manifest for the stages after it): ``SubsetInfo.of(subset)`` reads it back. A stage's manifest
JSON stays as it was: an info model names the fields others read and accepts any more the stage
records (``extra="allow"``); ``Stage(info_type=...)`` checks a body's info against its model before
the manifest is written. They live here, not in the stage modules, so that the report, the
record and the commands read them without importing a stage.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Self

from pydantic import BaseModel, ConfigDict

from storage.manifest import StageManifest


class StageInfo(BaseModel):
    """A stage's ``info``: the fields its downstream stages read, typed; any others kept."""

    model_config = ConfigDict(extra="allow", frozen=True)

    @classmethod
    def of(cls, manifest: StageManifest) -> Self:
        """The typed info of a finished stage's manifest."""
        return cls.model_validate(manifest.info)


class ImagesInfo(StageInfo):
    """What the images stage records: the classes, rows and splits of the loaded dataset."""

    class_names: list[str]
    rows: int | None = None
    has_test_split: bool | None = None
    planted_defects: dict[str, Any] | None = None


class EmbeddingsInfo(StageInfo):
    """What the embeddings stage records: the model, the vectors' dimension, what was computed."""

    model: str | None = None
    dim: int | None = None
    rows: int | None = None


class OverlapInfo(StageInfo):
    """What the overlap stage records: the rule's outcome; ``n_pairs`` 0 ends the run early."""

    n_pairs: int = 0
    n_classes: int | None = None
    bootstrap_resamples: int | None = None


class SubsetInfo(StageInfo):
    """What the subset stage records: the kept classes and their labels in the full dataset."""

    class_names: list[str]
    original_labels: list[int]
    coarse_names: list[str] | None = None


class ClassifierInfo(StageInfo):
    """How training ended (``tasks.classifier.stopping``)."""

    epochs_run: int | None = None
    best_epoch: int | None = None
    stopped_early: bool | None = None


class EvaluateInfo(StageInfo):
    """The classifier's accuracy on the test split."""

    accuracy: float | None = None
    test_rows: int | None = None


class ReportInfo(StageInfo):
    """Where the report's pages are."""

    report: str
    explorer: str | None = None


@dataclass(frozen=True)
class RunStages:
    """The manifests of the stages that ran, in stage order; None: the stage did not run.

    Every run has images and embeddings; the flow's model-free stages (neighbours to overlap)
    always run after them, the classifier path (subset to confusion) when pairs were flagged.
    """

    images: StageManifest
    embeddings: StageManifest
    neighbours: StageManifest | None = None
    class_similarity: StageManifest | None = None
    overlap: StageManifest | None = None
    subset: StageManifest | None = None
    classifier: StageManifest | None = None
    evaluate: StageManifest | None = None
    confusion: StageManifest | None = None
    report: StageManifest | None = None

    @property
    def trained(self) -> bool:
        """True when the classifier path ran: the overlap rule flagged pairs."""
        return self.confusion is not None

    def ran(self) -> dict[str, StageManifest]:
        """Stage name -> manifest of each stage that ran, in stage order."""
        return {
            field.name: manifest
            for field in dataclasses.fields(self)
            if (manifest := getattr(self, field.name)) is not None
        }

    def with_report(self, report: StageManifest) -> RunStages:
        """These stages and the report made of them."""
        return dataclasses.replace(self, report=report)
