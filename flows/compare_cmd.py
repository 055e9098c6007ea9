"""``overlap compare RUN RUN ...``: do runs (models, seeds, dataset versions) agree on overlaps?"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import TYPE_CHECKING, TextIO

import pyarrow as pa

from flows.inspect_cmd import format_table
from storage import registry
from storage.finished_run import FinishedRun, open_run
from storage.fs import Location
from tasks.core.results import SubsetInfo
from tasks.reporting import report_render
from tasks.reporting.report_render import Block, Heading, Text

if TYPE_CHECKING:
    from tasks.algorithms.compare import RunPairs

REPORT_MD = "compare.md"
SHOWN_PAIRS = 30


def add_compare_parser(commands: argparse._SubParsersAction) -> None:
    """The ``compare`` subcommand and its flags."""
    parser = commands.add_parser(
        "compare",
        help="compare the overlaps of two or more runs (models, seeds, dataset versions)",
        description="Line up the class pairs of finished runs by class name: cosine, rank, "
        "flagged and MisRate per run, the Jaccard overlap of the flagged sets, the Spearman "
        "correlation of the cosines and the pairs every run flags.",
    )
    parser.add_argument(
        "runs",
        nargs="+",
        metavar="RUN",
        help="output root (its latest run) or run record (OUT/runs/<name>.json); folder or URL",
    )
    parser.add_argument(
        "--names", help="comma-separated run names (default: each root's last path part)"
    )
    parser.add_argument(
        "--out", default="./outputs/compare", help="output folder (default: ./outputs/compare)"
    )


def algorithms() -> ModuleType:
    """``tasks.algorithms.compare``, imported on use: it loads polars, which the CLI's other
    commands (``overlap run`` included) never need."""
    from tasks.algorithms import compare

    return compare


def run_pairs(run: FinishedRun) -> RunPairs:
    """What comparing needs of one finished run, read through the registry."""
    similarity = run.table("class_similarity", ["class_a", "class_b", "cosine", "rank"])
    flagged = run.table("overlap_pairs", ["class_a", "class_b"])
    if similarity is None or flagged is None:
        raise FileNotFoundError(
            f"run {run.name!r} at {run.root.url} has no class_similarity or overlap_pairs table; "
            "compare needs runs that finished the overlap stage"
        )
    confusion = run.table("confusion_pairs", ["True", "Pred", "MisRate"])
    subset = run.manifest("subset")
    classes = None if subset is None else SubsetInfo.of(subset).class_names
    return algorithms().RunPairs(run.name, similarity, flagged, confusion, classes)


def run_names(sources: Sequence[str], names: str | None) -> list[str | None]:
    """The names given with --names, one per run, or None each (then named by their root)."""
    if names is None:
        return [None] * len(sources)
    given = [n.strip() for n in names.split(",")]
    if len(given) != len(sources):
        raise ValueError(
            f"--names gives {len(given)} name(s) for {len(sources)} runs; give one each"
        )
    return list(given)


def compare_report(pairs: pa.Table, agreement: pa.Table, consensus: pa.Table) -> list[Block]:
    """The short report: agreement per two runs, consensus, the top pairs side by side."""
    agreed = consensus.filter(consensus.column("consensus")).num_rows
    wide = algorithms().by_run(pairs, consensus)
    return [
        Heading("Agreement of the runs"),
        Text(
            "Jaccard: flagged by both / flagged by either. Spearman: rank correlation of the "
            "centroid cosines over the pairs both runs have."
        ),
        report_render.arrow_table(agreement, agreement.column_names, agreement.num_rows),
        Heading("Consensus"),
        Text(f"{agreed} pair(s) flagged by every run; below, every pair some run flags."),
        report_render.arrow_table(consensus, consensus.column_names, SHOWN_PAIRS),
        Heading("Flagged pairs, run by run"),
        report_render.arrow_table(wide, wide.column_names, SHOWN_PAIRS),
    ]


def compare(
    sources: Sequence[str], out: str, names: str | None = None, stream: TextIO | None = None
) -> dict[str, pa.Table]:
    """Compare the runs, write the tables and compare.md under ``out``, print the summary."""
    stream = stream or sys.stdout
    if len(sources) < 2:
        raise ValueError("compare needs at least two runs; pass two or more output roots")
    target = Location(out)
    target.check_writable()
    runs = [open_run(s, n) for s, n in zip(sources, run_names(sources, names), strict=True)]
    shown = [run.name for run in runs]
    if len(set(shown)) != len(shown):  # two roots both named "outputs": fall back to the paths
        runs = [
            FinishedRun(run.root, run.record, source)
            for run, source in zip(runs, sources, strict=True)
        ]
    algorithm = algorithms()
    pairs = algorithm.compare_pairs([run_pairs(run) for run in runs])
    tables = {
        "compare_pairs": pairs,
        "compare_agreement": algorithm.agreement_table(pairs),
        "compare_consensus": algorithm.consensus_table(pairs),
    }
    for name, table in tables.items():
        registry.table(name).write(target, table)
    blocks = compare_report(*tables.values())
    target.write_bytes(REPORT_MD, report_render.to_markdown("Run comparison", blocks).encode())
    print("Agreement\n" + format_table(tables["compare_agreement"]), file=stream)
    consensus = tables["compare_consensus"]
    agreed = consensus.filter(consensus.column("consensus"))
    print(f"\nConsensus: {agreed.num_rows} pair(s) flagged by every run", file=stream)
    if agreed.num_rows:
        print(format_table(agreed.select(["class_a", "class_b", "mean_cosine"])), file=stream)
    print(f"\ntables and {REPORT_MD}: {target.url}", file=stream)
    return tables


def compare_command(args: argparse.Namespace) -> int:
    """Entry of ``overlap compare``; errors are the caller's to print."""
    compare(args.runs, args.out, args.names)
    return 0
