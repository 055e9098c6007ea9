"""The tables of ``overlap compare``, schema and spec: pairs by run, agreement, consensus."""

from __future__ import annotations

import pyarrow as pa

from storage.table_spec import TableSpec

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
COMPARE_PAIRS_TABLE = TableSpec(
    "compare_pairs",
    "compare",
    "`overlap compare`: one row per class pair (by name) and run, pairs in name order, runs "
    "as given.",
    {
        "class_a": "name of class a (class_a < class_b)",
        "class_b": "name of class b",
        "run": "the run's name (its output root's last path part, or `--names`)",
        "cosine": "cosine of the two class centroids in this run",
        "pair_rank": "1 = the run's most similar pair; ties share the best rank",
        "rank": "neighbour rank: min over both directions (as `overlap_pairs.rank`)",
        "flagged": "flagged by the run's overlap rule",
        "mis_rate": "the larger MisRate of the two directions; null where the classifier "
        "did not see both classes",
    },
    arrow=COMPARE_PAIRS,
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
COMPARE_AGREEMENT_TABLE = TableSpec(
    "compare_agreement",
    "compare",
    "`overlap compare`: one row per two runs, in the order given.",
    {
        "run_a": "first run",
        "run_b": "second run",
        "pairs": "class pairs both runs have",
        "flagged_a": "pairs the first run flags (among those)",
        "flagged_b": "pairs the second run flags",
        "flagged_both": "pairs both flag",
        "jaccard": "flagged_both / pairs either flags; 1.0 when neither flags any",
        "spearman": "rank correlation of the two runs' cosines; NaN when undefined",
    },
    arrow=COMPARE_AGREEMENT,
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
COMPARE_CONSENSUS_TABLE = TableSpec(
    "compare_consensus",
    "compare",
    "`overlap compare`: every pair some run flags, most runs first, then by mean cosine.",
    {
        "class_a": "name of class a",
        "class_b": "name of class b",
        "runs_flagged": "runs that flag the pair",
        "consensus": "every run flags it",
        "mean_cosine": "mean of the runs' cosines",
        "min_cosine": "lowest of the runs' cosines",
        "worst_pair_rank": "highest `pair_rank` over the runs",
    },
    arrow=COMPARE_CONSENSUS,
)

SPECS = (COMPARE_PAIRS_TABLE, COMPARE_AGREEMENT_TABLE, COMPARE_CONSENSUS_TABLE)
