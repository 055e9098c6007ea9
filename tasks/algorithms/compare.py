"""Would another model agree: line several runs' class pairs up and measure their agreement.

Runs are matched by class names, not labels, so runs over different versions of a dataset still
line up on the classes they share. A pair is written with its two names in sorted order.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from storage.schemas.compare import COMPARE_AGREEMENT, COMPARE_CONSENSUS, COMPARE_PAIRS
from tasks.algorithms.correlation import spearman

PAIR = ["class_a", "class_b"]
VALUES = ("cosine", "pair_rank", "rank", "flagged", "mis_rate")


@dataclass(frozen=True)
class RunPairs:
    """What comparing needs of one run: every pair's cosine, its flagged pairs, confusion rates.

    ``similarity``: class_a, class_b, cosine and, when present, the neighbour rank (one row per
    pair or per direction, as ``class_similarity``); ``flagged``: class_a, class_b (as
    ``overlap_pairs``); ``confusion``: True, Pred, MisRate (as ``confusion_pairs``) and
    ``classifier_classes`` the classes the classifier was trained on, or None when none ran.
    """

    name: str
    similarity: pa.Table
    flagged: pa.Table
    confusion: pa.Table | None = None
    classifier_classes: Sequence[str] | None = None


def _sorted_pair(frame: pl.DataFrame, first: str, second: str) -> pl.DataFrame:
    """Replace two name columns by class_a <= class_b."""
    return (
        frame.with_columns(
            pl.min_horizontal(first, second).alias("_a"),
            pl.max_horizontal(first, second).alias("_b"),
        )
        .drop(first, second)
        .rename({"_a": "class_a", "_b": "class_b"})
    )


def _run_rows(run: RunPairs) -> pl.DataFrame:
    """One row per unordered pair of one run: cosine, pair_rank, rank, flagged, mis_rate."""
    similarity = pl.from_arrow(run.similarity)
    if "rank" not in similarity.columns:
        similarity = similarity.with_columns(pl.lit(None, pl.Int32).alias("rank"))
    pairs = (
        _sorted_pair(similarity.select("class_a", "class_b", "cosine", "rank"), *PAIR)
        .group_by(PAIR)
        .agg(pl.col("cosine").mean(), pl.col("rank").min())
        .with_columns(
            pl.col("cosine").rank("min", descending=True).cast(pl.Int64).alias("pair_rank")
        )
    )
    flagged = _sorted_pair(pl.from_arrow(run.flagged).select(PAIR), *PAIR).unique()
    pairs = pairs.join(flagged.with_columns(pl.lit(True).alias("flagged")), on=PAIR, how="left")
    pairs = pairs.with_columns(pl.col("flagged").fill_null(False))
    return pairs.join(_mis_rates(run), on=PAIR, how="left").select(
        *PAIR, pl.lit(run.name).alias("run"), "cosine", "pair_rank", "rank", "flagged", "mis_rate"
    )


def _mis_rates(run: RunPairs) -> pl.DataFrame:
    """Per unordered pair, the larger MisRate of its two directions; 0 within the classifier's
    classes where neither direction was ever confused, null outside them or without one."""
    schema = {"class_a": pl.String, "class_b": pl.String, "mis_rate": pl.Float64}
    if run.confusion is None or run.classifier_classes is None:
        return pl.DataFrame(schema=schema)
    names = sorted(set(run.classifier_classes))
    every = pl.DataFrame(list(itertools.combinations(names, 2)), schema=PAIR, orient="row")
    confusion = pl.from_arrow(run.confusion).select("True", "Pred", "MisRate")
    seen = _sorted_pair(confusion, "True", "Pred").group_by(PAIR).agg(pl.col("MisRate").max())
    joined = every.join(seen, on=PAIR, how="left")
    return joined.select(*PAIR, pl.col("MisRate").fill_null(0.0).alias("mis_rate")).cast(schema)


def compare_pairs(runs: Sequence[RunPairs]) -> pa.Table:
    """Rows of ``compare_pairs``: one per class pair and run, pairs in name order, runs as given.

    Columns: class_a, class_b (names, class_a < class_b); ``run``; ``cosine`` (centroid cosine);
    ``pair_rank`` (1 = the run's most similar pair; ties share the best rank); ``rank`` (the
    neighbour rank of overlap_pairs: min over both directions); ``flagged`` (by the run's rule);
    ``mis_rate`` (larger MisRate of the two directions, null without a classifier on both).
    """
    names = [run.name for run in runs]
    if len(runs) < 2:
        raise ValueError(f"compare needs at least two runs, got {len(runs)}")
    if len(set(names)) != len(names):
        raise ValueError(f"run names must differ, got {names}; name each run once")
    frame = pl.concat([_run_rows(run) for run in runs])
    order = {name: index for index, name in enumerate(names)}
    frame = frame.with_columns(pl.col("run").replace_strict(order).alias("_order"))
    table = frame.sort([*PAIR, "_order"]).drop("_order").to_arrow()
    return table.cast(COMPARE_PAIRS)


def _matrix(long: pl.DataFrame, value: str) -> pl.DataFrame:
    """Pairs x runs of one value, pairs every run has."""
    return long.pivot(on="run", index=PAIR, values=value).drop_nulls()


def agreement_table(pairs: pa.Table) -> pa.Table:
    """Rows: one per two runs, in the order given. How far they agree on pairs and on flags.

    Columns: run_a, run_b; ``pairs`` (pairs both runs have); ``flagged_a``/``flagged_b`` and
    ``flagged_both`` (flagged sets among those pairs); ``jaccard`` (|both| / |either|; 1.0 when
    neither flags anything: they agree); ``spearman`` (rank correlation of the two runs' cosines).
    """
    long = pl.from_arrow(pairs)
    runs = list(dict.fromkeys(long.get_column("run").to_list()))
    cosine, flagged = _matrix(long, "cosine"), _matrix(long, "flagged")
    rows = []
    for first, second in itertools.combinations(runs, 2):
        a, b = (flagged.get_column(r).to_numpy().astype(bool) for r in (first, second))
        either = int((a | b).sum())
        rho, _ = spearman(*(cosine.get_column(r).to_numpy() for r in (first, second)))
        rows.append(
            {
                "run_a": first,
                "run_b": second,
                "pairs": flagged.height,
                "flagged_a": int(a.sum()),
                "flagged_b": int(b.sum()),
                "flagged_both": int((a & b).sum()),
                "jaccard": float((a & b).sum() / either) if either else 1.0,
                "spearman": rho,
            }
        )
    return pa.Table.from_pylist(rows, schema=COMPARE_AGREEMENT)


def consensus_table(pairs: pa.Table) -> pa.Table:
    """Rows: every pair some run flagged, the most agreed-on and most similar first.

    Columns: class_a, class_b; ``runs_flagged`` (how many runs flag it); ``consensus`` (every run
    flags it); ``mean_cosine``, ``min_cosine`` and ``worst_pair_rank`` over the runs with the pair.
    """
    long = pl.from_arrow(pairs)
    runs = long.get_column("run").n_unique()
    summary = (
        long.group_by(PAIR)
        .agg(
            pl.col("flagged").sum().cast(pl.Int64).alias("runs_flagged"),
            pl.col("cosine").mean().alias("mean_cosine"),
            pl.col("cosine").min().alias("min_cosine"),
            pl.col("pair_rank").max().alias("worst_pair_rank"),
        )
        .filter(pl.col("runs_flagged") > 0)
        .with_columns((pl.col("runs_flagged") == runs).alias("consensus"))
        .sort(["runs_flagged", "mean_cosine", *PAIR], descending=[True, True, False, False])
    )
    columns = [*PAIR, "runs_flagged", "consensus", "mean_cosine", "min_cosine", "worst_pair_rank"]
    return summary.select(columns).to_arrow().cast(COMPARE_CONSENSUS)


def by_run(pairs: pa.Table, keep: pa.Table | None = None) -> pa.Table:
    """Pairs x runs: class_a, class_b, then ``<value>[<run>]`` for each value and run.

    ``keep`` (class_a, class_b rows, e.g. the consensus table) limits and orders the pairs.
    """
    long = pl.from_arrow(pairs)
    runs = list(dict.fromkeys(long.get_column("run").to_list()))
    wide = long.pivot(on="run", index=PAIR, values=list(VALUES), separator="\x00")
    wide = wide.rename({c: f"{c.split(chr(0))[0]}[{c.split(chr(0))[1]}]" for c in wide.columns[2:]})
    if keep is not None:
        index = pl.from_arrow(keep).select(PAIR).with_row_index("_order")
        wide = index.join(wide, on=PAIR, how="left").sort("_order").drop("_order")
    ordered = [f"{v}[{r}]" for v in VALUES for r in runs]
    return wide.select(*PAIR, *ordered).to_arrow()


def consensus_pairs(consensus: pa.Table) -> list[tuple[str, str]]:
    """The pairs every run flags, as (class_a, class_b) name tuples."""
    rows = consensus.filter(pc.field("consensus")).select(PAIR).to_pylist()
    return [(row["class_a"], row["class_b"]) for row in rows]
