"""The overlap stage's tables, schema and spec: flagged pairs, calibration, stability, classes
and pair samples."""

from __future__ import annotations

import pyarrow as pa

from storage.schemas.shared_columns import KEYS, OVERLAP_DEFECTS, PAIR, PAIR_DEFECTS, pair_fields
from storage.table_spec import TableSpec

# Unordered flagged pairs, label_a < label_b, most similar first.
OVERLAP_PAIRS = pa.schema(
    [
        *pair_fields(),
        pa.field("cosine", pa.float32(), nullable=False),
        pa.field("z", pa.float64(), nullable=False),
        pa.field("rank", pa.int32(), nullable=False),
        pa.field("rank_a", pa.int32(), nullable=False),
        pa.field("rank_b", pa.int32(), nullable=False),
        pa.field("same_superclass", pa.bool_()),
        pa.field("ci_low", pa.float64()),
        pa.field("ci_high", pa.float64()),
        pa.field("flag_rate", pa.float64()),
        *OVERLAP_DEFECTS,
    ]
)
OVERLAP_PAIRS_TABLE = TableSpec(
    "overlap_pairs",
    "overlap",
    "The flagged unordered class pairs, `label_a` < `label_b`, most similar first; "
    "`pair_id` elsewhere is the 0-based row number here.",
    {
        **PAIR,
        "cosine": "cosine of the two class centroids",
        "z": "(cosine − mu) / sigma over all unordered pairs",
        "rank": "min(`rank_a`, `rank_b`)",
        "rank_a": "rank of b among a's nearest classes",
        "rank_b": "rank of a among b's nearest classes",
        "same_superclass": "both classes share a coarse label; null when the dataset has no "
        "superclasses",
        "ci_low": "2.5% point of the pair's cosine over the bootstrap resamples; null with "
        "`--bootstrap-resamples 0`",
        "ci_high": "97.5% point of the same",
        "flag_rate": "share of bootstrap resamples in which the run's rule flags the pair",
        **PAIR_DEFECTS,
        "suspects_a_to_b": "label suspects labelled a whose neighbours vote b",
        "suspects_b_to_a": "label suspects labelled b whose neighbours vote a",
    },
    arrow=OVERLAP_PAIRS,
)

# One row per rule and value of its parameter.
OVERLAP_CALIBRATION = pa.schema(
    [
        pa.field("rule", pa.string(), nullable=False),
        pa.field("parameter", pa.string(), nullable=False),
        pa.field("value", pa.float64(), nullable=False),
        pa.field("cutoff", pa.float64()),
        pa.field("n_pairs", pa.int64(), nullable=False),
        pa.field("n_classes", pa.int64(), nullable=False),
        pa.field("chosen", pa.bool_(), nullable=False),
    ]
)
OVERLAP_CALIBRATION_TABLE = TableSpec(
    "overlap_calibration",
    "overlap",
    "What every rule would flag at each value of its parameter, this run's setting marked; "
    "one row per rule and value, values ascending.",
    {
        "rule": "sigma, threshold, topk or classes",
        "parameter": "the rule's parameter: k, threshold, top_k or classes",
        "value": "its value (the run's own is always a row)",
        "cutoff": "the cosine bound it gives (sigma, threshold, classes); null for topk",
        "n_pairs": "unordered pairs it flags",
        "n_classes": "classes in at least one of them",
        "chosen": "this run's rule and value",
    },
    arrow=OVERLAP_CALIBRATION,
)

# The flagged pairs, then the most similar pairs the rule left out.
OVERLAP_STABILITY = pa.schema(
    [
        *pair_fields(),
        pa.field("cosine", pa.float32(), nullable=False),
        pa.field("flagged", pa.bool_(), nullable=False),
        pa.field("ci_low", pa.float64(), nullable=False),
        pa.field("ci_high", pa.float64(), nullable=False),
        pa.field("flag_rate", pa.float64(), nullable=False),
    ]
)
OVERLAP_STABILITY_TABLE = TableSpec(
    "overlap_stability",
    "overlap",
    "Poisson bootstrap of the class centroids (`--bootstrap-resamples`, seeded by `--seed`): "
    "the flagged pairs in `overlap_pairs` order, then the ten most similar pairs the rule "
    "left out. Not written with `--bootstrap-resamples 0`.",
    {
        **PAIR,
        "cosine": "cosine of the two class centroids (all images)",
        "flagged": "flagged by the run's rule",
        "ci_low": "2.5% point of the pair's cosine over the resamples",
        "ci_high": "97.5% point of the same",
        "flag_rate": "share of resamples in which the run's rule flags the pair",
    },
    arrow=OVERLAP_STABILITY,
)

OVERLAP_CLASSES = pa.schema(
    [
        pa.field("label", pa.int32(), nullable=False),
        pa.field("class_name", pa.string(), nullable=False),
        pa.field("partners", pa.list_(pa.string()), nullable=False),
        pa.field("partner_labels", pa.list_(pa.int32()), nullable=False),
        pa.field("group", pa.int32(), nullable=False),
        pa.field("group_size", pa.int32(), nullable=False),
        pa.field("max_cosine", pa.float32(), nullable=False),
    ]
)
OVERLAP_CLASSES_TABLE = TableSpec(
    "overlap_classes",
    "overlap",
    "One row per class in at least one flagged pair, sorted by `group`, `label`.",
    {
        "label": KEYS["label"],
        "class_name": KEYS["class_name"],
        "partners": "names of the classes it is flagged with, nearest first",
        "partner_labels": "their labels, in the same order",
        "group": "connected component of the flagged pairs, numbered 0.. by smallest label",
        "group_size": "classes in the group",
        "max_cosine": "centroid cosine to its nearest partner",
    },
    arrow=OVERLAP_CLASSES,
)

PAIR_SAMPLES = pa.schema(
    [
        pa.field("pair_id", pa.int32(), nullable=False),
        *pair_fields(),
        pa.field("sample_id", pa.int64(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("label", pa.int32(), nullable=False),
        pa.field("class_name", pa.string(), nullable=False),
        pa.field("cos_own", pa.float32(), nullable=False),
        pa.field("cos_other", pa.float32(), nullable=False),
        pa.field("margin", pa.float32(), nullable=False),
        pa.field("rank", pa.int32(), nullable=False),
    ]
)
PAIR_SAMPLES_TABLE = TableSpec(
    "pair_samples",
    "overlap",
    "For each flagged pair and each of its two classes, the `--pair-samples` images closest "
    "to the other class's centroid; sorted by `pair_id`, `label`, `rank`; streamed by shard.",
    {
        "pair_id": "0-based row of the pair in `overlap_pairs`",
        **PAIR,
        "sample_id": KEYS["sample_id"],
        "split": KEYS["split"],
        "label": "the image's own class (`label_a` or `label_b`)",
        "class_name": "the image's own class name",
        "cos_own": "cosine of the embedding to its own class's centroid",
        "cos_other": "cosine of the embedding to the other class's centroid",
        "margin": "cos_own − cos_other (≤ 0: closer to the other class)",
        "rank": "1-based place among its class's images for this pair, by `cos_other`, "
        "highest first (ties by `sample_id`)",
    },
    arrow=PAIR_SAMPLES,
)

SPECS = (
    OVERLAP_PAIRS_TABLE,
    OVERLAP_CALIBRATION_TABLE,
    OVERLAP_STABILITY_TABLE,
    OVERLAP_CLASSES_TABLE,
    PAIR_SAMPLES_TABLE,
)
