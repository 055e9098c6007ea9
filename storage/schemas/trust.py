"""Schemas of the tables that say how far to trust the overlaps: calibration, stability, compare."""

from __future__ import annotations

import pyarrow as pa

from storage.schemas.overlap import pair_fields

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

# Pairs by name across runs: one row per pair and run.
COMPARE_PAIRS = pa.schema(
    [
        pa.field("class_a", pa.string(), nullable=False),
        pa.field("class_b", pa.string(), nullable=False),
        pa.field("run", pa.string(), nullable=False),
        pa.field("cosine", pa.float64(), nullable=False),
        pa.field("pair_rank", pa.int64(), nullable=False),
        pa.field("rank", pa.int32()),
        pa.field("flagged", pa.bool_(), nullable=False),
        pa.field("mis_rate", pa.float64()),
    ]
)

COMPARE_AGREEMENT = pa.schema(
    [
        pa.field("run_a", pa.string(), nullable=False),
        pa.field("run_b", pa.string(), nullable=False),
        pa.field("pairs", pa.int64(), nullable=False),
        pa.field("flagged_a", pa.int64(), nullable=False),
        pa.field("flagged_b", pa.int64(), nullable=False),
        pa.field("flagged_both", pa.int64(), nullable=False),
        pa.field("jaccard", pa.float64(), nullable=False),
        pa.field("spearman", pa.float64(), nullable=False),
    ]
)

COMPARE_CONSENSUS = pa.schema(
    [
        pa.field("class_a", pa.string(), nullable=False),
        pa.field("class_b", pa.string(), nullable=False),
        pa.field("runs_flagged", pa.int64(), nullable=False),
        pa.field("consensus", pa.bool_(), nullable=False),
        pa.field("mean_cosine", pa.float64(), nullable=False),
        pa.field("min_cosine", pa.float64(), nullable=False),
        pa.field("worst_pair_rank", pa.int64(), nullable=False),
    ]
)
