"""The subset stage's tables, schema and spec: the flagged classes' images and their split."""

from __future__ import annotations

import pyarrow as pa

from storage.schemas.images import COARSE_COLUMNS, IMAGES, POINTER_COLUMNS
from storage.schemas.shared_columns import KEYS
from storage.table_spec import TableSpec

# the images table with the subset's own label: written from image rows, so it follows IMAGES
SUBSET = IMAGES.insert(4, pa.field("new_label", pa.int32(), nullable=False))
SUBSET_TABLE = TableSpec(
    "subset",
    "subset",
    "The images of the flagged classes only (the `images` rows plus `new_label`), sorted by "
    "`sample_id`.",
    {
        **KEYS,
        "label": "original label (the dataset's class index)",
        "new_label": "the subset's own label 0..K−1, contiguous, in original-label order",
        **COARSE_COLUMNS,
        "image": "the image: as in `images`, but filled from the source for `parquet:` and "
        "`webdataset:` sources (path: the tar member, or `file#row`)",
        **POINTER_COLUMNS,
    },
    arrow=SUBSET,
)

SPLITS = pa.schema(
    [
        pa.field("sample_id", pa.int64(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("label", pa.int32(), nullable=False),
        pa.field("class_name", pa.string(), nullable=False),
        pa.field("original_label", pa.int32(), nullable=False),
    ]
)
SPLITS_TABLE = TableSpec(
    "splits",
    "subset",
    "The subset's train/val/test split: test = the source test split when there is one "
    "(else a stratified seeded `--test-fraction`), val = a stratified seeded "
    "`--val-fraction` of train; disjoint, the same seed gives the same split.",
    {
        "sample_id": KEYS["sample_id"],
        "split": "`train`, `val` or `test`",
        "label": "the subset's label (`new_label`, 0..K−1)",
        "class_name": KEYS["class_name"],
        "original_label": "the dataset's class index",
    },
    arrow=SPLITS,
)

SPECS = (SUBSET_TABLE, SPLITS_TABLE)
