"""The ``overlap`` command: flags mirror the fields of RunConfig, one-line errors."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from pydantic.fields import FieldInfo

from flows.config import RunConfig
from flows.inspect_cmd import add_inspect_parser, inspect_command
from storage.fs import Location

# Errors a user can fix by changing the call: shown as one line, no traceback.
USER_ERRORS = (ValueError, PermissionError, FileNotFoundError)


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


def build_parser() -> argparse.ArgumentParser:
    """``overlap run`` with a flag per RunConfig field, plus the other subcommands."""
    parser = argparse.ArgumentParser(prog="overlap", description=__doc__)
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
    return parser


def _add_analyze_parser(commands: argparse._SubParsersAction) -> None:
    """``overlap analyze-predictions FILE``: report and confusion pairs of your own predictions."""
    fields = RunConfig.model_fields
    parser = commands.add_parser(
        "analyze-predictions",
        help="classification report and confusion pairs of your own predictions",
        description="Analyse a predictions table (Parquet or CSV with y_true and y_pred, labels or "
        "class names) without embeddings or training.",
    )
    parser.add_argument("file", type=Path, help="predictions file (.parquet or .csv)")
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


def fail(message: str, code: int = 1) -> int:
    """Print a one-line error and return the exit code."""
    print(f"overlap: error: {message}", file=sys.stderr)
    return code


def run_command(args: argparse.Namespace) -> int:
    """Validate the flags, check the inputs cheaply, then run the flow."""
    from flows.overlap_flow import class_overlap
    from flows.runners import check_runner
    from tasks.core.preflight import check_run

    values = {k: v for k, v in vars(args).items() if k != "command"}
    try:
        config = RunConfig(**values)
        check_runner(config)
        check_run(config)
    except ValidationError as error:
        return fail(_validation_message(error), code=2)
    except USER_ERRORS as error:
        return fail(str(error), code=2)
    _quiet_own_errors()
    if config.random_weights:
        print("WARNING: random weights (--no-pretrained): embeddings and results are meaningless.")
    try:
        record = class_overlap(config)
    except USER_ERRORS as error:
        return fail(str(error))
    report = record["stages"].get("report", {}).get("tables", {}).get("report.html")
    print(f"outputs: {config.out}  (run record: runs/{record['name']}.json)")
    if report:
        print(f"report: {report}")
    return 0


def analyze_command(args: argparse.Namespace) -> int:
    """Analyse a predictions file: tables (and report) under --out."""
    from tasks.analyze_predictions import analyze_predictions
    from tasks.reporting.report_predictions import write_predictions_report

    defaults = RunConfig()
    try:
        Location(args.out).check_writable()
        manifest = analyze_predictions(
            args.file,
            args.class_names,
            args.out,
            k=getattr(args, "confusion_k", defaults.confusion_k),
            rule=getattr(args, "confusion_rule", defaults.confusion_rule),
            alpha=getattr(args, "confusion_alpha", defaults.confusion_alpha),
        )
    except USER_ERRORS as error:
        return fail(str(error), code=2)
    report = write_predictions_report(manifest, manifest.location)
    info = manifest.info
    print(f"accuracy {info['accuracy']:.4f} on {info['rows']} predictions")
    print(
        f"flagged confusion pairs: {info['flagged']} -> {manifest.path('confusion_pairs.parquet')}"
    )
    print(f"report: {report.get('report.html', manifest.location.url)}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``overlap`` command."""
    # The ephemeral server's telemetry heartbeat only logs "database is locked" noise here.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    args = build_parser().parse_args(argv)
    if args.command == "run":
        return run_command(args)
    if args.command == "analyze-predictions":
        return analyze_command(args)
    if args.command == "inspect":
        try:
            return inspect_command(args)
        except USER_ERRORS as error:
            return fail(str(error), code=2)
    return fail(f"unknown command {args.command}")


if __name__ == "__main__":
    sys.exit(main())
