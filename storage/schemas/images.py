"""The tables of the load and extraction stages, schema and spec: ``images``, ``embeddings``."""

from __future__ import annotations

import pyarrow as pa

from storage.schemas.shared_columns import KEYS
from storage.table_spec import TableSpec

# Hugging Face `datasets` reads a struct of (bytes, path) as an Image column.
IMAGE_TYPE = pa.struct([pa.field("bytes", pa.binary()), pa.field("path", pa.string())])

# Where a read-in-place source (Parquet, WebDataset) keeps an image: null for copied images.
POINTER = pa.schema(
    [
        pa.field("source_file", pa.string()),
        pa.field("source_row", pa.int64()),
        pa.field("source_member", pa.string()),
        pa.field("source_offset", pa.int64()),
        pa.field("source_size", pa.int64()),
    ]
)

IMAGE_COLUMN = (
    "PNG bytes (CIFAR, synthetic) or the original file's bytes (image folders), and the "
    "original file name; Hugging Face `datasets` reads this struct as an Image column; null "
    "for `parquet:` and `webdataset:` sources, read in place through the `source_*` columns"
)
POINTER_COLUMNS = {
    "source_file": "read in place: the Parquet file or tar shard (path or URL) holding the image; "
    "null where `image` holds the bytes",
    "source_row": "row in the Parquet file, or sample number in the tar",
    "source_member": "tar member of the image, or the Parquet column that holds it",
    "source_offset": "byte offset of the tar member's data (null for Parquet)",
    "source_size": "byte size of the tar member's data (null for Parquet)",
}
COARSE_COLUMNS = {
    "coarse_label": "superclass index (CIFAR-100); null where the dataset has none",
    "coarse_name": "superclass name; null where the dataset has none",
}

IMAGES = pa.schema(
    [
        pa.field("sample_id", pa.int64(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("label", pa.int32(), nullable=False),
        pa.field("class_name", pa.string(), nullable=False),
        pa.field("coarse_label", pa.int32()),
        pa.field("coarse_name", pa.string()),
        pa.field("image", IMAGE_TYPE),  # null where the source is read in place
        *POINTER,
    ]
)
IMAGES_TABLE = TableSpec(
    "images",
    "images",
    "One row per image of the source dataset, both source splits; `--shard-size` rows a "
    "shard (8192 by default), or one shard per source file for `parquet:` and `webdataset:`.",
    {**KEYS, **COARSE_COLUMNS, "image": IMAGE_COLUMN, **POINTER_COLUMNS},
    sharded=True,
    arrow=IMAGES,
)


def embedding_type(dim: int) -> pa.DataType:
    """Fixed-size list of float32, the embedding column's type."""
    return pa.list_(pa.field("item", pa.float32(), nullable=False), dim)


def embeddings_schema(dim: int) -> pa.Schema:
    """Schema of the ``embeddings`` table for a model of dimension ``dim``."""
    return pa.schema(
        [
            pa.field("sample_id", pa.int64(), nullable=False),
            pa.field("split", pa.string(), nullable=False),
            pa.field("label", pa.int32(), nullable=False),
            pa.field("class_name", pa.string(), nullable=False),
            pa.field("embedding", embedding_type(dim), nullable=False),
        ]
    )


EMBEDDINGS_TABLE = TableSpec(
    "embeddings",
    "embeddings",
    "One row per image: one shard per images shard, the same rows in the same order.",
    {
        **KEYS,
        "embedding": "the model's pooled features (CLS token for DINO ViTs), "
        "**L2-normalised**, so a dot product is a cosine",
    },
    sharded=True,
    arrow=embeddings_schema,
)

SPECS = (IMAGES_TABLE, EMBEDDINGS_TABLE)
