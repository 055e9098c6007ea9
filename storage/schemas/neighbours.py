"""Schemas of the neighbours stage: the kNN graph, near-duplicate pairs and label suspects."""

from __future__ import annotations

import pyarrow as pa


def _image_fields(side: str) -> list[pa.Field]:
    """One copy of a near-duplicate pair: id, split, label and class name."""
    return [
        pa.field(f"sample_id_{side}", pa.int64(), nullable=False),
        pa.field(f"split_{side}", pa.string(), nullable=False),
        pa.field(f"label_{side}", pa.int32(), nullable=False),
        pa.field(f"class_{side}", pa.string(), nullable=False),
    ]


NEIGHBOURS = pa.schema(
    [
        pa.field("sample_id", pa.int64(), nullable=False),
        pa.field("label", pa.int32(), nullable=False),
        pa.field("neighbour_ids", pa.list_(pa.int64()), nullable=False),
        pa.field("neighbour_labels", pa.list_(pa.int32()), nullable=False),
        pa.field("neighbour_cosines", pa.list_(pa.float32()), nullable=False),
    ]
)

NEAR_DUPLICATES = pa.schema(
    [
        *_image_fields("a"),
        *_image_fields("b"),
        pa.field("cosine", pa.float32(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
    ]
)

LABEL_SUSPECTS = pa.schema(
    [
        pa.field("sample_id", pa.int64(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("label", pa.int32(), nullable=False),
        pa.field("class_name", pa.string(), nullable=False),
        pa.field("score", pa.float64(), nullable=False),
        pa.field("p_value", pa.float64(), nullable=False),
        pa.field("own_share", pa.float32(), nullable=False),
        pa.field("majority_label", pa.int32(), nullable=False),
        pa.field("majority_class", pa.string(), nullable=False),
        pa.field("majority_share", pa.float32(), nullable=False),
        pa.field("expected_share", pa.float32(), nullable=False),
    ]
)

# Columns added to overlap_pairs (classes a, b) and confusion_pairs (True, Pred): how much of
# the pair's overlap near-duplicates, suspects and leaks explain; null without the stage's tables.
OVERLAP_DEFECTS = [
    pa.field("cross_class_duplicates", pa.int64()),
    pa.field("leaked_test", pa.int64()),
    pa.field("suspects_a_to_b", pa.int64()),
    pa.field("suspects_b_to_a", pa.int64()),
]
CONFUSION_DEFECTS = [
    pa.field("cross_class_duplicates", pa.int64()),
    pa.field("leaked_test", pa.int64()),
    pa.field("suspects_true_to_pred", pa.int64()),
    pa.field("suspects_pred_to_true", pa.int64()),
]
