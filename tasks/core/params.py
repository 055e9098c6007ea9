"""Every stage's parameters: ``StageParams`` (dataset, output root, seed) and one model per stage.

Each stage takes its own model (``ClassifierParams`` ...); the run configuration
(``flows.config``) is composed of them, so a field, its default, bounds and description are
written once and the CLI, the JSON schema and the deployments see them all. They live here, not
in the stage modules, so that the command line reads them without importing torch, FAISS or
scikit-learn.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Self
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from storage.fs import normalise_url
from tasks.algorithms.overlap_rule import RULE_NAMES
from tasks.core import dataset_kinds as kinds
from tasks.core.dataset_kinds import DATASET_PATTERN
from tasks.core.dataset_kinds import KNOWN_DATASETS as KNOWN_DATASETS  # for flows.config


class StageParams(BaseModel):
    """The parameters every stage gets: which dataset, where outputs go, the run's seed."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    dataset: str = Field(
        "cifar100",
        description=kinds.help_text(),
        # In the JSON schema only, so that a deployment refuses a bad name when the run is
        # created; in Python the validator below gives the friendlier message.
        json_schema_extra={"pattern": DATASET_PATTERN},
    )
    out: str = Field(
        "./outputs",
        description="output root: a folder or an fsspec URL (s3://bucket/prefix)",
        validate_default=True,  # the default is normalised too (absolute), like a given path
    )
    seed: int = Field(0, ge=0, description="seed for synthetic data, splits, training and UMAP")

    @field_validator("out")
    @classmethod
    def _some_out(cls, value: str) -> str:
        if not value.strip():  # "" would write into whatever folder the command runs in
            raise ValueError("the output location is empty; give a folder or bucket URL")
        return normalise_url(value)  # stage keys hash it: one spelling per location

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, value: str) -> str:
        if kinds.kind_of(value) is not None:
            return value
        raise ValueError(kinds.unknown_dataset(value))


# --- one model per stage, in stage order; stages without parameters of their own take
# StageParams itself (class_similarity, evaluate) ---

DEFAULT_MODEL = "vit_small_patch16_224.dino"
# Offline demo: a tiny ViT with random weights at a small input size runs in seconds on a CPU.
SYNTHETIC_MODEL = "vit_tiny_patch16_224"
SYNTHETIC_IMAGE_SIZE = 64


class ImagesParams(StageParams):
    """Parameters of the images stage: where the dataset comes from and how it is sharded."""

    data_dir: str = Field(
        "./data", description="local folder where datasets are downloaded and cached"
    )
    download_url: str | None = Field(
        None,
        description="mirror URL of the dataset archive (cifar10/cifar100) or of the folder "
        "holding the IDX files (mnist/fashion-mnist); default: the official mirrors",
    )
    shard_size: int = Field(
        8192,
        ge=1,
        description="images (and embeddings) per Parquet shard: the unit of resume and of "
        "cluster work",
    )
    rescan: bool = Field(
        False,
        description="image folders: read every file again instead of taking files with an "
        "unchanged path, size and modification time from the last load",
    )

    # how to read parquet: and webdataset: sources (detected when not given)
    image_column: str | None = Field(
        None, description="parquet: the image column ({bytes, path} struct or binary)"
    )
    label_column: str | None = Field(
        None, description="parquet: the label column (integer or class name)"
    )
    split_column: str | None = Field(
        None,
        description="parquet: the split column; default: a `split` column, else the split "
        "the file's path names (train-*.parquet, test/...), else train",
    )
    label_field: str = Field(
        "label", description="webdataset: the label's field in a sample's .json member"
    )
    class_names: str | None = Field(
        None,
        description="parquet/webdataset: text file of class names, one per line, in label order "
        "(default: the Parquet file's Hugging Face ClassLabel names, else the labels themselves)",
    )
    max_per_class: int | None = Field(
        None,
        ge=1,
        description=f"built-in datasets ({', '.join(kinds.BUILT_IN)}): keep at most this many "
        "images of each class in each split, drawn at random with --seed "
        "(a stratified subset for a quick look); default: every image",
    )
    max_image_pixels: int = Field(
        89_478_485,  # Pillow's own default for Image.MAX_IMAGE_PIXELS
        ge=0,
        description="images with more pixels (width x height) are skipped by name at load, as "
        "decompression bombs (Pillow's Image.MAX_IMAGE_PIXELS); 0: no limit",
    )
    synthetic_defects: bool = Field(
        False,
        description="--dataset synthetic only: plant near-duplicates, train/test leaks and "
        "flipped labels (recorded in the images manifest), to check the neighbours stage",
    )

    @field_validator("download_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://", "ftp://", "file://")):
            raise ValueError(f"{value!r} is not a URL; give an http(s):// or ftp:// mirror")
        if value is not None and not value.startswith("file://") and not urlparse(value).hostname:
            raise ValueError(f"{value!r} names no host; give a mirror such as http://host/path")
        return value

    @field_validator("data_dir")
    @classmethod
    def _local_data_dir(cls, value: str) -> str:
        if "://" in value:
            raise ValueError(
                f"{value!r}: the data folder must be a local folder (archives are downloaded "
                "and unpacked there); outputs can go to a bucket with --out"
            )
        return value

    @model_validator(mode="after")
    def _subset_of_built_in(self) -> Self:
        kind = kinds.kind_of(self.dataset)
        if self.max_per_class is not None and kind is not None and not kind.built_in:
            raise ValueError(
                f"--max-per-class subsets the built-in datasets only ({', '.join(kinds.BUILT_IN)})"
                "; select the images of a folder or file yourself"
            )
        if self.max_per_class is not None and self.synthetic_defects:
            raise ValueError(
                "--max-per-class would drop planted defects of --synthetic-defects; use one"
            )
        return self

    @model_validator(mode="after")
    def _defects_need_synthetic(self) -> Self:
        if self.synthetic_defects and self.dataset != "synthetic":
            raise ValueError("--synthetic-defects plants defects in --dataset synthetic only")
        return self


class EmbeddingsParams(StageParams):
    """Parameters of the embeddings stage: the model, its weights, input size and device."""

    model: str | None = Field(
        None,
        description=f"any timm model name; default {DEFAULT_MODEL} "
        f"({SYNTHETIC_MODEL} for --dataset synthetic)",
    )
    weights: Path | None = Field(None, description="local weights file (.safetensors or .pth)")
    pretrained: bool | None = Field(
        None,
        description="load pretrained weights (default yes; no for --dataset synthetic). "
        "--no-pretrained: random weights, for tests and demos only: results are meaningless",
    )
    image_size: int | None = Field(
        None, ge=16, le=1024, description="model input size in pixels; default: the model's own"
    )
    batch_size: int = Field(
        128, ge=1, le=65536, description="images per forward pass (on a CPU, at most 32)"
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: CUDA when present")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="auto: bf16 on CUDA and on CPUs with native bf16, else fp32"
    )

    @model_validator(mode="after")
    def _resolve_defaults(self) -> Self:
        synthetic = self.dataset == "synthetic"
        if self.model is None:
            self.model = SYNTHETIC_MODEL if synthetic else DEFAULT_MODEL
            if synthetic and self.image_size is None:
                self.image_size = SYNTHETIC_IMAGE_SIZE
        if self.pretrained is None:
            self.pretrained = not (synthetic and self.weights is None)
        if self.weights is not None and not self.pretrained:
            raise ValueError("--weights and --no-pretrained contradict each other; drop one")
        return self

    @property
    def random_weights(self) -> bool:
        """True when the model runs with random weights (results are then meaningless)."""
        return not self.pretrained


class NeighboursParams(StageParams):
    """Parameters of the neighbours stage: kNN, the near-duplicate and label-suspect rules."""

    knn_k: int = Field(10, ge=1, le=1000, description="nearest neighbours per image (cosine)")
    duplicate_threshold: float | None = Field(
        None,
        ge=-1,
        le=1,
        description="cosine at or above which two images are near-duplicates; default: "
        "1 - 0.25 x the median distance of each image to its nearest neighbour",
    )
    suspect_alpha: float = Field(
        1e-4,
        gt=0,
        lt=1,
        description="a label suspect's neighbours vote for another class with binomial tail "
        "probability <= this, given how often its class's neighbours do",
    )


class SimilarityParams(StageParams):
    """Parameters of the class-similarity stage: which images make the class centroids."""

    centroid_split: Literal["all", "train"] = Field(
        "all",
        description="images whose embeddings make the class centroids (and their bootstrap): "
        "all (train and test, as the reference did: test images then help pick the classes the "
        "classifier is scored on) or train (the test split stays unseen until evaluation)",
    )


class OverlapParams(SimilarityParams):
    """Parameters of the overlap stage: the rule that flags class pairs, images per pair."""

    overlap_rule: Literal[RULE_NAMES] = Field(  # one entry per rule in overlap_rule.RULES
        "sigma",
        description="how centroid pairs are flagged: sigma (cosine >= mu + k*sigma over all "
        "pairs), threshold (cosine >= --overlap-threshold), topk (mutual: each class among "
        "the other's --overlap-top-k nearest classes), classes (the most similar pairs, in "
        "order, until --overlap-classes classes are covered)",
    )
    overlap_k: float = Field(3.0, ge=0, le=10, description="k of the sigma rule")
    overlap_threshold: float = Field(0.6, ge=-1, le=1, description="cosine of the threshold rule")
    overlap_top_k: int = Field(1, ge=1, le=50, description="neighbours per class of the topk rule")
    overlap_classes: int = Field(
        54, ge=2, description="classes the classes rule covers (54: the reference on CIFAR-100)"
    )
    bootstrap_resamples: int = Field(
        200,
        ge=0,
        le=10000,
        description="Poisson bootstrap resamples of the class centroids: each flagged pair's "
        "cosine interval and flag_rate (0: none)",
    )
    pair_samples: int = Field(
        50, ge=1, description="images per class and flagged pair in the pair_samples table"
    )


class SubsetParams(StageParams):
    """Parameters of the subset stage: the split fractions and the optional PNG export."""

    val_fraction: float = Field(0.1, gt=0, lt=1, description="share of train kept for validation")
    test_fraction: float = Field(
        0.2, gt=0, lt=1, description="share held out for test when the dataset has no test split"
    )
    export_pngs: bool = Field(False, description="also write the subset as PNGs in class folders")


class ClassifierParams(StageParams):
    """Parameters of the classifier stage: the MLP and its training."""

    hidden_size: int = Field(512, ge=1, description="MLP hidden units")
    dropout: float = Field(0.2, ge=0, lt=1, description="MLP dropout")
    learning_rate: float = Field(1e-3, gt=0, le=1, description="AdamW learning rate")
    weight_decay: float = Field(1e-4, ge=0, description="AdamW weight decay")
    epochs: int = Field(100, ge=1, le=10000, description="maximum training epochs")
    patience: int = Field(10, ge=1, description="early stopping: epochs without val improvement")
    train_batch_size: int = Field(256, ge=1, description="MLP training batch size")


class ConfusionParams(StageParams):
    """Parameters of the confusion stage: the rule that flags confused pairs."""

    confusion_rule: Literal["sigma", "binomial"] = Field(
        "binomial",
        description="sigma: C_ij >= mu + k*sigma over off-diagonal cells (the seed's rule); "
        "binomial: Benjamini-Hochberg q-value of a binomial test <= --confusion-alpha",
    )
    confusion_k: float = Field(5.0, ge=0, le=50, description="k of the sigma rule")
    confusion_alpha: float = Field(
        0.001, gt=0, lt=1, description="q-value bound of the binomial rule"
    )


class ReportParams(StageParams):
    """Parameters of the report stage: image grids and how many pairs get figures."""

    grid_images: int = Field(8, ge=1, le=64, description="images per class in sample grids")
    report_pairs: int = Field(
        12,
        ge=0,
        le=200,
        description="flagged confusion pairs (highest MisRate first) that get their own UMAP "
        "and image grid in the report",
    )
    explorer_images: int = Field(
        6000,
        ge=1,
        le=200_000,
        description="images embedded in explorer.html at most (about 3.5 KB each at 32 px); "
        "clicked views' images first, then a class-stratified sample for the UMAP thumbnails",
    )
