"""Schemas of the load and extraction stages: ``images`` and ``embeddings``."""

from __future__ import annotations

import pyarrow as pa

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
