"""The run configuration, composed of the stages' parameter models; the CLI and prefect.yaml use it.

Each stage's parameters are its own model (``tasks.core.params``): a field, its default, bounds
and description are written once, next to the stage that uses it. ``RunParams`` holds one
validated model per stage; ``RunConfig`` shows their fields flat, in the order the stages run,
as the CLI's flags, the deployments' parameters and the run record have them, and builds its
``RunParams`` when it is validated: each stage's model is validated there, once, and the flow
hands each stage its own (``config.params.classifier``).
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SkipValidation,
    ValidationError,
    ValidatorFunctionWrapHandler,
    create_model,
    model_validator,
)
from pydantic.fields import FieldInfo

from tasks.core.params import (
    DATASET_PATTERN,
    DEFAULT_MODEL,
    KNOWN_DATASETS,
    SYNTHETIC_IMAGE_SIZE,
    SYNTHETIC_MODEL,
    ClassifierParams,
    ConfusionParams,
    EmbeddingsParams,
    ImagesParams,
    NeighboursParams,
    OverlapParams,
    ReportParams,
    SimilarityParams,
    StageParams,
    SubsetParams,
)

__all__ = [
    "DATASET_PATTERN",
    "DEFAULT_MODEL",
    "KNOWN_DATASETS",
    "SYNTHETIC_IMAGE_SIZE",
    "SYNTHETIC_MODEL",
    "RunConfig",
    "RunParams",
    "RunnerParams",
]


class RunnerParams(BaseModel):
    """Where a run's tasks execute: the flow's concern, no stage's."""

    model_config = ConfigDict(extra="forbid")

    runner: Literal["threads", "dask", "ray"] = Field(
        "threads",
        description="task runner: threads (one machine), dask or ray (extraction is spread over "
        "the cluster's workers, one shard per task)",
    )
    runner_address: str | None = Field(
        None,
        description="address of an existing Dask scheduler (tcp://host:8786) or Ray cluster "
        "(ray://host:10001, auto); default: start a local cluster",
    )
    workers: int = Field(
        2, ge=1, le=1024, description="worker processes of a local Dask or Ray cluster"
    )


@dataclass(frozen=True)
class RunParams:
    """One validated parameter model per stage, in the order the stages run.

    ``common``: what every stage gets (dataset, output root, seed), for the stages without
    parameters of their own (evaluate, the run record); ``runner``: where tasks execute.
    """

    common: StageParams
    images: ImagesParams
    embeddings: EmbeddingsParams
    runner: RunnerParams
    neighbours: NeighboursParams
    class_similarity: SimilarityParams
    overlap: OverlapParams
    subset: SubsetParams
    classifier: ClassifierParams
    confusion: ConfusionParams
    report: ReportParams

    @classmethod
    def models(cls) -> dict[str, type[BaseModel]]:
        """Part name -> its parameter model, in stage order."""
        hints = typing.get_type_hints(cls)
        return {part.name: hints[part.name] for part in dataclasses.fields(cls)}

    @classmethod
    def validate(cls, values: Mapping[str, Any]) -> RunParams:
        """Each part's model validated once from the values it declares; every error at once.

        A field several parts share (dataset, out, seed) and gets wrong is reported once.
        """
        parts: dict[str, BaseModel] = {}
        errors: dict[tuple[str, tuple, str], Any] = {}
        for name, model in cls.models().items():
            try:
                parts[name] = model.model_validate(
                    {field: v for field, v in values.items() if field in model.model_fields}
                )
            except ValidationError as error:
                for line in error.errors():
                    errors.setdefault((line["type"], line["loc"], line["msg"]), line)
        if errors:
            raise ValidationError.from_exception_data("RunConfig", list(errors.values()))
        return cls(**parts)

    def flat(self) -> dict[str, Any]:
        """Every part's fields in one mapping (a shared field has one value in all parts)."""
        values: dict[str, Any] = {}
        for part in dataclasses.fields(self):
            values.update(dict(getattr(self, part.name)))
        return values


def flat_fields() -> dict[str, FieldInfo]:
    """Every part's fields, in stage order; a field shared by several parts, where first seen."""
    found: dict[str, FieldInfo] = {}
    for model in RunParams.models().values():
        for name, field in model.model_fields.items():
            found.setdefault(name, field)
    return found


class _ComposedConfig(BaseModel):
    """What ``RunConfig`` adds to the parts' fields: building and keeping its ``RunParams``."""

    # frozen: the parts are validated once, from these values; a changed copy is validated anew
    model_config = ConfigDict(extra="forbid", frozen=True)

    _params: RunParams = PrivateAttr()
    _checked: bool = PrivateAttr(False)

    @model_validator(mode="wrap")
    @classmethod
    def _compose(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Self:
        """The parts validate the given values; the flat fields take theirs (defaults filled)."""
        if isinstance(data, cls) or not isinstance(data, Mapping):
            return handler(data)
        params = RunParams.validate(data)
        # unknown names stay in, for the flat model's own "extra inputs" error
        config = handler({**data, **params.flat()})
        config._params = params
        return config

    @property
    def params(self) -> RunParams:
        """Each stage's validated parameters."""
        return self._params

    @property
    def random_weights(self) -> bool:
        """True when the model runs with random weights (results are then meaningless)."""
        return self._params.embeddings.random_weights

    @property
    def checked(self) -> bool:
        """True once ``flows.preflight.check_run`` passed for this configuration."""
        return self._checked

    def mark_checked(self) -> None:
        """Record that the run checks passed (``flows.preflight`` only)."""
        self._checked = True

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """A copy; with ``update``, validated anew (its parts are built from the new values)."""
        if not update:
            return super().model_copy(deep=deep)
        return self.model_validate({**dict(self), **update})


# The flat fields are not validated again (SkipValidation): the parts validated them and a
# model validator may have filled some in (EmbeddingsParams' model); pydantic still gives their
# types, bounds and descriptions to the JSON schema (deployments) and the CLI.
RunConfig = create_model(
    "RunConfig",
    __base__=_ComposedConfig,
    __module__=__name__,
    __doc__="Every parameter of one run of the class-overlap flow.",
    **{name: (SkipValidation[field.annotation], field) for name, field in flat_fields().items()},
)
