"""The ``overlap`` command: flags mirror the fields of RunConfig, one-line errors."""

from __future__ import annotations

import argparse
import errno
import logging
import os
import shlex
import shutil
import sys
import time
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from uuid import UUID

from pydantic import ValidationError
from pydantic.fields import FieldInfo

from flows.compare_cmd import add_compare_parser, compare_command
from flows.config import RunConfig
from flows.inspect_cmd import add_inspect_parser, inspect_command, print_top_confusion_pairs
from flows.reference_cmd import add_reference_parser, reference_command
from flows.stopping import (
    RunStopped,
    StopOnSignals,
    mark_cancelled,
    stop_on_signals,
    stop_signal_behind,
)
from flows.verify_cmd import add_verify_parser, verify_command
from storage.escape import terminal
from storage.fs import Location
from storage.runs import RunRecord
from tasks.core.clock import process_started, time_by_stage, time_by_stage_line

# Errors a user can fix by changing the call: shown as one line, no traceback.
USER_ERRORS = (ValueError, PermissionError, FileNotFoundError)
# Prefect waits 20 s for its temporary server by default; a loaded 2-core machine needs more.
EPHEMERAL_STARTUP_VARIABLE = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"
EPHEMERAL_STARTUP_SECONDS = "180"
# A run that finished with the model-free report only: its overlap rule flagged nothing.
NOTHING_FLAGGED = 3


class _QuietOwnErrors(logging.Filter):
    """Drop Prefect's traceback for this project's own errors: the CLI prints them as one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if error is not None and type(error).__module__.split(".")[0] in ("tasks", "storage"):
            record.exc_info, record.exc_text = None, None
        return True


def _quiet_own_errors() -> None:
    """Install the filter on every handler of Prefect's loggers (set up once Prefect runs)."""
    quiet = _QuietOwnErrors()
    names = [n for n in logging.root.manager.loggerDict if n.split(".")[0] == "prefect"]
    for name in names:
        for handler in logging.getLogger(name).handlers:
            handler.addFilter(quiet)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _base_type(annotation: Any) -> Any:
    """The non-None member of ``X | None``."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        return members[0]
    return annotation


def _add_field(parser: argparse.ArgumentParser, name: str, field: FieldInfo) -> None:
    """One flag for one config field, typed, with the field's description and default."""
    base = _base_type(field.annotation)
    kwargs: dict[str, Any] = {"dest": name, "default": argparse.SUPPRESS}
    # Fields whose default is None say in their description what happens without them.
    shown = "" if field.default is None else f" (default: {field.default})"
    kwargs["help"] = f"{field.description}{shown}"
    if base is bool:
        kwargs["action"] = argparse.BooleanOptionalAction
    elif typing.get_origin(base) is typing.Literal:
        kwargs["choices"] = typing.get_args(base)
    else:
        kwargs["type"] = {int: int, float: float, Path: Path}.get(base, str)
        kwargs["metavar"] = "PATH" if base is Path else name.upper()
    parser.add_argument(_flag(name), **kwargs)


DESCRIPTION = (
    "Find the classes of an image-classification dataset that a self-supervised vision model "
    "cannot tell apart well, model-free and through a classifier. Start with "
    "`overlap run --dataset synthetic --out outputs/demo` (offline); "
    "`overlap COMMAND --help` describes each command."
)


def build_parser() -> argparse.ArgumentParser:
    """``overlap run`` with a flag per RunConfig field, plus the other subcommands."""
    parser = argparse.ArgumentParser(prog="overlap", description=DESCRIPTION)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser(
        "run",
        help="run the whole flow",
        description="Run the class-overlap flow. Plain `overlap run` downloads CIFAR-100 and the "
        "DINO weights on first use; `overlap run --dataset synthetic --out DIR` runs offline.",
    )
    for name, field in RunConfig.model_fields.items():
        _add_field(run, name, field)
    _add_analyze_parser(commands)
    add_inspect_parser(commands)
    add_verify_parser(commands)
    add_compare_parser(commands)
    add_reference_parser(commands)
    return parser


def _add_analyze_parser(commands: argparse._SubParsersAction) -> None:
    """``overlap analyze-predictions FILE``: report and confusion pairs of your own predictions."""
    fields = RunConfig.model_fields
    parser = commands.add_parser(
        "analyze-predictions",
        help="classification report and confusion pairs of your own predictions",
        description="Analyse your own predictions without embeddings or training: a Parquet or "
        "CSV table with y_true and y_pred (labels or class names), or NumPy arrays as cleanlab "
        "has them (predicted labels or pred_probs in FILE.npy, true labels in --labels).",
    )
    parser.add_argument(
        "file",
        type=Path,
        help="predictions: a .parquet or .csv table, or a .npy of predicted labels (N) or "
        "pred_probs (N x K)",
    )
    parser.add_argument(
        "--labels",
        type=Path,
        metavar="PATH",
        help="true labels (.npy of N integers, cleanlab's labels.npy) when FILE is a .npy",
    )
    parser.add_argument(
        "--class-names",
        type=Path,
        metavar="PATH",
        help="class names: one per line, or a TSV with class_name (and label, coarse_name) columns",
    )
    parser.add_argument(
        "--out",
        default="./outputs/predictions",
        help="output folder (default: ./outputs/predictions)",
    )
    for name in ("confusion_rule", "confusion_k", "confusion_alpha"):
        _add_field(parser, name, fields[name])


def _validation_message(error: ValidationError) -> str:
    first = error.errors()[0]
    where = _flag(str(first["loc"][0])) if first["loc"] else "config"
    return f"{where}: {first['msg'].removeprefix('Value error, ')}"


def _own_error(error: BaseException) -> bool:
    """True for errors this project raises with a message for the user (tasks, storage)."""
    return type(error).__module__.split(".")[0] in ("tasks", "storage")


def _server_did_not_start(error: BaseException) -> bool:
    """True for Prefect's error when its temporary API server does not answer in time."""
    return "attempting to connect to ephemeral Prefect API server" in str(error)


def server_hint() -> str:
    """The line shown when Prefect's temporary server did not start."""
    waited = os.environ.get(EPHEMERAL_STARTUP_VARIABLE, EPHEMERAL_STARTUP_SECONDS)
    return (
        f"Prefect's temporary API server did not start within {waited} s (a busy machine?); "
        f"raise {EPHEMERAL_STARTUP_VARIABLE}, or start a server once with `prefect server start` "
        "and run with PREFECT_API_URL=http://127.0.0.1:4200/api"
    )


def _disk_full(error: BaseException) -> OSError | None:
    """The ENOSPC error in ``error``'s chain (causes and contexts), if any."""
    seen: set[int] = set()
    chain: BaseException | None = error
    while chain is not None and id(chain) not in seen:
        seen.add(id(chain))
        if isinstance(chain, OSError) and chain.errno == errno.ENOSPC:
            return chain
        chain = chain.__cause__ or chain.__context__
    return None


def disk_full_message(error: OSError, fallback: str) -> str:
    """One line for a full disk: where, how much is free there, what to do."""
    where = str(error.filename or fallback)
    folder = Path(where)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    free = shutil.disk_usage(folder).free if folder.exists() else 0
    return (
        f"no space left on device writing {where} ({free / 2**20:.1f} MiB free on that disk); "
        "free space there (a CIFAR-100 run writes about 0.3 GiB of tables) or "
        "choose another --out / --data-dir; nothing half-written is kept"
    )


def fail(message: str, code: int = 1) -> int:
    """Print a one-line error and return the exit code."""
    print(terminal(f"overlap: error: {message}"), file=sys.stderr)  # messages quote user data
    return code


def run_command(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """Validate the flags, check the inputs cheaply, then run the flow until done or stopped."""
    with stop_on_signals() as stops:
        try:
            return _checked_run(args, stops)
        except RunStopped as stop:
            return _stopped(stop, stops.flow_run_id, argv)


def _checked_run(args: argparse.Namespace, stops: StopOnSignals) -> int:
    from flows.overlap_flow import class_overlap
    from flows.preflight import check_run

    values = {k: v for k, v in vars(args).items() if k != "command"}
    try:
        config = RunConfig(**values)
        check_run(config)
    except ValidationError as error:
        return fail(_validation_message(error), code=2)
    except USER_ERRORS as error:
        return fail(str(error), code=2)
    _quiet_own_errors()
    if config.random_weights:
        print("WARNING: random weights (--no-pretrained): embeddings and results are meaningless.")
    return _run_flow(class_overlap, config, stops)


def _run_flow(flow: Any, config: RunConfig, stops: StopOnSignals) -> int:
    """Run the flow under Prefect's temporary server (when no API URL is set); print where."""
    from tasks.core.prefect_private import start_temporary_server

    try:
        if (server := start_temporary_server()) is not None:
            stops.children.append(server)
        result = flow.with_options(on_running=[stops.remember_flow_run])(config)
    except Exception as error:
        if (signum := stop_signal_behind(error)) is not None:
            raise RunStopped(signum) from error
        if _server_did_not_start(error):
            return fail(server_hint())
        if (full := _disk_full(error)) is not None:
            return fail(disk_full_message(full, config.out))
        if isinstance(error, USER_ERRORS) or _own_error(error):
            return fail(str(error))
        raise
    record = RunRecord.model_validate(result)
    report = record.stages.get("report")
    pages = report.tables if report is not None else {}
    if record.timing:
        parts = time_by_stage(record.timing, process_started(), time.time())
        print(terminal(time_by_stage_line(parts)))
    print(terminal(f"outputs: {config.out}  (run record: runs/{record.name}.json)"))
    for page in ("report.html", "explorer.html"):  # the two pages to open, by full path
        if page in pages:
            print(terminal(f"{page.removesuffix('.html')}: {pages[page]}"))
    if "subset" not in record.stages:  # the overlap rule flagged nothing
        print(terminal(_nothing_flagged(record)))
        return NOTHING_FLAGGED
    return 0


def _stopped(stop: RunStopped, flow_run_id: UUID | None, argv: Sequence[str]) -> int:
    """Record the stopped run as Cancelled, say how to resume; the signal's exit status."""
    reason = f"stopped by {stop.name}"
    if flow_run_id is not None:
        mark_cancelled(flow_run_id, f"{reason}; the same command resumes it")
    command = shlex.join(["overlap", *argv])
    print(
        terminal(f"overlap: {reason}; finished stages and shards are kept. Resume: {command}"),
        file=sys.stderr,
    )
    return stop.exit_code


def _nothing_flagged(record: RunRecord) -> str:
    """The line naming a setting that would flag something, from the run's overlap manifest."""
    from storage.manifest import read_manifest
    from tasks.reporting.report_trust import nothing_flagged_line

    overlap = read_manifest(Location(record.stages["overlap"].url))
    return nothing_flagged_line(overlap.info if overlap else {})


def analyze_command(args: argparse.Namespace) -> int:
    """Analyse a predictions file: tables (and report) under --out."""
    from tasks.analyze_predictions import analyze_predictions
    from tasks.reporting.report_predictions import write_predictions_report

    defaults = RunConfig()
    if not str(args.out).strip():
        return fail("--out: the output location is empty; give a folder", code=2)
    try:
        Location(args.out).check_writable()
        manifest = analyze_predictions(
            args.file,
            args.class_names,
            args.out,
            k=getattr(args, "confusion_k", defaults.confusion_k),
            rule=getattr(args, "confusion_rule", defaults.confusion_rule),
            alpha=getattr(args, "confusion_alpha", defaults.confusion_alpha),
            labels_path=args.labels,
        )
    except USER_ERRORS as error:
        return fail(str(error), code=2)
    report = write_predictions_report(manifest, manifest.location)
    info = manifest.info
    print(f"accuracy {info['accuracy']:.4f} on {info['rows']} predictions")
    print(
        f"flagged confusion pairs: {info['flagged']} -> {manifest.path('confusion_pairs.parquet')}"
    )
    print_top_confusion_pairs(manifest.location)
    print(terminal(f"report: {report.get('report.html', manifest.location.url)}"))
    if "explorer.html" in manifest.files:
        print(terminal(f"explorer: {manifest.path('explorer.html')}"))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``overlap`` command."""
    # The ephemeral server's telemetry heartbeat only logs "database is locked" noise here.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # Before Prefect is imported: its settings are read once, at import.
    os.environ.setdefault(EPHEMERAL_STARTUP_VARIABLE, EPHEMERAL_STARTUP_SECONDS)
    args = build_parser().parse_args(argv)
    if args.command == "run":
        return run_command(args, sys.argv[1:] if argv is None else argv)
    if args.command == "analyze-predictions":
        return analyze_command(args)
    reading = {  # commands over finished outputs: a bad argument ends in one line, exit 2
        "compare": compare_command,
        "reference": reference_command,
        "inspect": inspect_command,
        "verify": verify_command,
    }
    if args.command in reading:
        try:
            return reading[args.command](args)
        except USER_ERRORS as error:
            return fail(str(error), code=2)
    return fail(f"unknown command {args.command}")


if __name__ == "__main__":
    sys.exit(main())
