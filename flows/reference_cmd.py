"""``overlap reference OUT``: a finished run's figures beside the reference result, row by row."""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

from storage.finished_run import FinishedRun, open_run
from tasks.algorithms.reference import (
    beside_reference_text,
    pairs_beside_reference,
    summary_beside_reference,
)
from tasks.core.results import EvaluateInfo, OverlapInfo


def add_reference_parser(commands: argparse._SubParsersAction) -> None:
    """The ``reference`` subcommand and its flags."""
    parser = commands.add_parser(
        "reference",
        help="print a run's figures beside the reference result (CIFAR-100, DINO ViT-S/16)",
        description="Print the run's classes, accuracy and each reference pair's MisRate, "
        "Precision(Pred), Recall(True), F1(True), F1(Pred) and flags beside the reference "
        "result, with the spread expected by chance.",
    )
    parser.add_argument("out", help="output root (its latest run) or a run record (.json)")


def beside_reference(run: FinishedRun) -> str:
    """The printout for one finished run."""
    overlap, evaluate = run.manifest("overlap"), run.manifest("evaluate")
    if overlap is None:
        raise FileNotFoundError(
            f"the run at {run.root.url} has no overlap stage; it did not get that far"
        )
    tested = EvaluateInfo.of(evaluate) if evaluate is not None else EvaluateInfo()
    summary = summary_beside_reference(
        classes=OverlapInfo.of(overlap).n_classes,
        accuracy=tested.accuracy,
        test_images=tested.test_rows,
    )
    flagged = run.table("overlap_pairs", ["class_a", "class_b"])
    names = [] if flagged is None else zip(*flagged.to_pydict().values(), strict=True)
    pairs = pairs_beside_reference(
        run.table("confusion_pairs"), run.table("classification_report"), names
    )
    header = f"run {run.record.name} at {run.root.url} beside the reference result"
    return f"{header}\n\n{beside_reference_text(summary, pairs)}"


def reference_command(args: argparse.Namespace, stream: TextIO | None = None) -> int:
    """Entry of ``overlap reference``; errors are the caller's to print."""
    print(beside_reference(open_run(args.out)), file=stream or sys.stdout)
    return 0
