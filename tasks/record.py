"""Final stage: write the run record that points at every output of the run."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.logging import get_run_logger

from storage.layout import OutputLayout
from storage.manifest import StageManifest
from storage.runs import run_record, write_run_record


@task(name="record run")
def record_run_task(config: Any, stages: dict[str, StageManifest]) -> dict[str, Any]:
    """Write runs/<name>.json and latest.json; return the record."""
    record = run_record(config.model_dump(mode="json"), stages)
    url = write_run_record(OutputLayout.at(config.out), record)
    get_run_logger().info("run record: %s", url)
    return record
