"""Every kind of dataset ``--dataset`` names, in one table: how it is spelled, opened, described.

A kind is either built in, named alone (``cifar100``), or a prefix with an argument
(``imagefolder:PATH``). The parameters' validator and help (``tasks.core.params``), the images
stage and the run checks all read ``KINDS``: a new kind is one row here plus its source module.

A row names its source module rather than importing it: every stage imports the parameters,
and a stage's code version covers every module it imports, so an import here would make an
edit of any source re-run every stage. The images stage imports the source modules.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Plain words: they need no escaping in DATASET_PATTERN's regular expression.
_NAME = re.compile(r"[a-z0-9][a-z0-9-]*")


@dataclass(frozen=True)
class DatasetKind:
    """One kind of dataset: its name, its argument if any, the module that opens it, its help."""

    name: str  # the whole name of a built-in dataset, else the prefix before ':'
    help: str  # its line in --help: what it is and where it is read from
    # the ``tasks.sources`` module whose ``open_dataset(params, name)`` opens the whole dataset;
    # None: indexed and read in place, shard by shard (``tasks.sources.sharded_load``)
    source: str | None
    argument: str | None = None  # what follows 'name:' (PATH, ...); None: a built-in dataset
    num_classes: int | None = None  # known without reading the dataset (built-in ones)

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name):
            raise ValueError(f"dataset kind {self.name!r}: use lower-case letters, digits and '-'")

    @property
    def built_in(self) -> bool:
        """Named alone and opened whole: --max-per-class can subset it."""
        return self.argument is None

    @property
    def read_in_place(self) -> bool:
        """Indexed shard by shard and read where it lies (``parquet:``, ``webdataset:``)."""
        return self.source is None

    @property
    def usage(self) -> str:
        """How --dataset spells it: ``cifar100``, ``imagefolder:PATH``."""
        return self.name if self.built_in else f"{self.name}:{self.argument}"

    @property
    def pattern(self) -> str:
        """The regular expression of the names it accepts (an argument: anything non-empty)."""
        return self.name if self.built_in else f"{self.name}:.+"


_DOWNLOADED = "downloaded into --data-dir when absent"
_IDX = "its four IDX files in --data-dir, downloaded when absent"
_IN_PLACE = "read in place"

# In the order --help and the refusal of an unknown name list them.
KINDS: tuple[DatasetKind, ...] = (
    DatasetKind("cifar100", f"CIFAR-100, {_DOWNLOADED}", "cifar", num_classes=100),
    DatasetKind("cifar10", f"CIFAR-10, {_DOWNLOADED}", "cifar", num_classes=10),
    DatasetKind("fashion-mnist", f"Fashion-MNIST, {_IDX}", "idx", num_classes=10),
    DatasetKind("mnist", f"MNIST, {_IDX}", "idx", num_classes=10),
    DatasetKind(
        "synthetic",
        "12 classes of generated images with planted look-alike pairs, made offline",
        "synthetic",
        num_classes=12,
    ),
    DatasetKind(
        "imagefolder",
        "class sub-folders, optionally under train/ and test/",
        "folder_delta",
        argument="PATH",
    ),
    DatasetKind(
        "parquet",
        "Parquet files with an image and a label column: a file, folder, glob or s3:// URL; "
        + _IN_PLACE,
        None,
        argument="PATH_OR_URL",
    ),
    DatasetKind(
        "webdataset",
        f"tar shards, e.g. shard-{{000000..000099}}.tar; {_IN_PLACE}",
        None,
        argument="PATTERN",
    ),
)
BY_NAME: dict[str, DatasetKind] = {kind.name: kind for kind in KINDS}

KNOWN_DATASETS = tuple(kind.usage for kind in KINDS)
# Every valid --dataset, for the validator and for the JSON schema of deployments.
DATASET_PATTERN = "^(" + "|".join(kind.pattern for kind in KINDS) + ")$"
BUILT_IN = tuple(kind.name for kind in KINDS if kind.built_in)


def kind_of(dataset: str) -> DatasetKind | None:
    """The kind ``dataset`` names when it is a valid ``--dataset``, else None."""
    if not re.fullmatch(DATASET_PATTERN, dataset, re.DOTALL):
        return None
    return BY_NAME[dataset if dataset in BY_NAME else dataset.partition(":")[0]]


def argument_of(dataset: str) -> str:
    """What follows the kind's prefix: ``PATH`` of ``imagefolder:PATH``; '' for a built-in."""
    return dataset.partition(":")[2]


def unknown_dataset(dataset: str) -> str:
    """The one-line refusal of a name that is no kind's, listing the kinds."""
    return f"unknown dataset {dataset!r}; use one of {', '.join(KNOWN_DATASETS)}"


def help_text() -> str:
    """``--dataset``'s help: each kind and its line."""
    return "; ".join(f"{kind.usage} ({kind.help})" for kind in KINDS)
