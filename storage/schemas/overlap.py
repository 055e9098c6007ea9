"""Schemas of the overlap stages: centroids, class similarity, overlaps, pair samples, subset."""

from __future__ import annotations

import pyarrow as pa

from storage.schemas.images import IMAGES, embedding_type
from storage.schemas.neighbours import OVERLAP_DEFECTS


def pair_fields() -> list[pa.Field]:
    """The two classes of a pair, by original label and name (how every pair table starts)."""
    return [
        pa.field("label_a", pa.int32(), nullable=False),
        pa.field("class_a", pa.string(), nullable=False),
        pa.field("label_b", pa.int32(), nullable=False),
        pa.field("class_b", pa.string(), nullable=False),
    ]


def centroids_schema(dim: int) -> pa.Schema:
    """One row per class: how many embeddings it has and its unit-length mean embedding."""
    return pa.schema(
        [
            pa.field("label", pa.int32(), nullable=False),
            pa.field("class_name", pa.string(), nullable=False),
            pa.field("count", pa.int64(), nullable=False),
            pa.field("centroid", embedding_type(dim), nullable=False),
        ]
    )


# Both directions: (a, b) and (b, a) are separate rows; rank is b's place among a's neighbours.
CLASS_SIMILARITY = pa.schema(
    [
        *pair_fields(),
        pa.field("cosine", pa.float32(), nullable=False),
        pa.field("rank", pa.int32(), nullable=False),
    ]
)

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

# the images table with the subset's own label: written from image rows, so it follows IMAGES
SUBSET = IMAGES.insert(4, pa.field("new_label", pa.int32(), nullable=False))

SPLITS = pa.schema(
    [
        pa.field("sample_id", pa.int64(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("label", pa.int32(), nullable=False),
        pa.field("class_name", pa.string(), nullable=False),
        pa.field("original_label", pa.int32(), nullable=False),
    ]
)
