"""The class-similarity stage's tables, schema and spec: class centroids, pair cosines."""

from __future__ import annotations

import pyarrow as pa

from storage.schemas.images import embedding_type
from storage.schemas.shared_columns import KEYS, PAIR, pair_fields
from storage.table_spec import TableSpec


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


CENTROIDS_TABLE = TableSpec(
    "centroids",
    "class_similarity",
    "One row per class; computed from per-shard partial sums, so memory does not grow with "
    "the number of images.",
    {
        "label": KEYS["label"],
        "class_name": KEYS["class_name"],
        "count": "embeddings of the class",
        "centroid": "mean of the class's L2-normalised embeddings, re-normalised to unit length",
    },
    arrow=centroids_schema,
)

# Both directions: (a, b) and (b, a) are separate rows; rank is b's place among a's neighbours.
CLASS_SIMILARITY = pa.schema(
    [
        *pair_fields(),
        pa.field("cosine", pa.float32(), nullable=False),
        pa.field("rank", pa.int32(), nullable=False),
    ]
)
CLASS_SIMILARITY_TABLE = TableSpec(
    "class_similarity",
    "class_similarity",
    "Every ordered pair of classes a != b, **both directions** (C·(C−1) rows; (a, b) and "
    "(b, a) have the same cosine), sorted by `label_a`, `rank`.",
    {
        **PAIR,
        "cosine": "cosine of the two class centroids (a matrix product of the unit centroids)",
        "rank": "place of b among a's most similar other classes (1 = nearest; ties go to "
        "the lower label)",
    },
    arrow=CLASS_SIMILARITY,
)

SPECS = (CENTROIDS_TABLE, CLASS_SIMILARITY_TABLE)
