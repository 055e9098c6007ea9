"""Columns several tables share: the image keys, the two classes of a pair, defect counts."""

from __future__ import annotations

import pyarrow as pa

# Descriptions of the image keys (every image table starts with them) and of a pair's classes.
KEYS = {
    "sample_id": "stable id of the image, the key shared by every table",
    "split": "source split: `train` or `test`",
    "label": "the dataset's class index",
    "class_name": "class name",
}
PAIR = {
    "label_a": "label of class a",
    "class_a": "name of class a",
    "label_b": "label of class b",
    "class_b": "name of class b",
}


def pair_fields() -> list[pa.Field]:
    """The two classes of a pair, by original label and name (how every pair table starts)."""
    return [
        pa.field("label_a", pa.int32(), nullable=False),
        pa.field("class_a", pa.string(), nullable=False),
        pa.field("label_b", pa.int32(), nullable=False),
        pa.field("class_b", pa.string(), nullable=False),
    ]


# The neighbours stage's counts per class pair (overlap_pairs, confusion_pairs): descriptions;
PAIR_DEFECTS = {
    "cross_class_duplicates": "near-duplicate pairs with one copy in each of the two classes "
    "(the same picture under both labels); null without the neighbours stage",
    "leaked_test": "test images of either class with a near-copy in train, under any label",
}
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
