"""The neighbours stage's tables, schema and spec: the kNN graph, near-duplicates, suspects."""

from __future__ import annotations

import pyarrow as pa

from storage.schemas.shared_columns import KEYS
from storage.table_spec import TableSpec


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
NEIGHBOURS_TABLE = TableSpec(
    "neighbours",
    "neighbours",
    "One row per image: its `--knn-k` nearest other images by cosine, nearest first (exact "
    "on a GPU, and on a CPU up to 200,000 images where it runs bf16 natively, 50,000 where "
    "not; FAISS IVF beyond, its recall in the manifest; exact means exactly what a "
    "brute-force fp32 search finds).",
    {
        "sample_id": KEYS["sample_id"],
        "label": KEYS["label"],
        "neighbour_ids": "sample_ids of the nearest other images, nearest first",
        "neighbour_labels": "their labels, in the same order",
        "neighbour_cosines": "their cosines to this image, in the same order",
    },
    arrow=NEIGHBOURS,
)

NEAR_DUPLICATES = pa.schema(
    [
        *_image_fields("a"),
        *_image_fields("b"),
        pa.field("cosine", pa.float32(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
    ]
)
NEAR_DUPLICATES_TABLE = TableSpec(
    "near_duplicates",
    "neighbours",
    "Unordered pairs of images, among each other's nearest neighbours, with cosine ≥ the "
    "duplicate threshold (the manifest's `duplicate_threshold`); most similar first.",
    {
        "sample_id_a": "the copy with the smaller sample_id",
        "split_a": "its source split",
        "label_a": "its label",
        "class_a": "its class name",
        "sample_id_b": "the other copy",
        "split_b": "its source split",
        "label_b": "its label",
        "class_b": "its class name",
        "cosine": "cosine of the two embeddings",
        "kind": "`cross_class` (labels differ), `train_test_leak` (same label, one copy in "
        "train and one in test) or `same_class`",
    },
    arrow=NEAR_DUPLICATES,
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
LABEL_SUSPECTS_TABLE = TableSpec(
    "label_suspects",
    "neighbours",
    "Images whose neighbours mostly carry another label, more than their class explains; "
    "most suspect first.",
    {
        **KEYS,
        "score": "−log10(`p_value`), capped at 300: higher is more suspect",
        "p_value": "binomial P(X ≥ votes for `majority_label`) given `expected_share`",
        "own_share": "share of the neighbours that carry the image's own label (< 0.5)",
        "majority_label": "the most voted other label (ties: the nearer neighbour's)",
        "majority_class": "its class name",
        "majority_share": "its share of the neighbours",
        "expected_share": "its share among the neighbours of the rest of the image's class "
        "(leave-one-out, +1 smoothed)",
    },
    arrow=LABEL_SUSPECTS,
)

SPECS = (NEIGHBOURS_TABLE, NEAR_DUPLICATES_TABLE, LABEL_SUSPECTS_TABLE)
