"""Final stage: write the run record that points at every output of the run."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.logging import get_run_logger

from storage.layout import OutputLayout
from storage.manifest import StageManifest
from storage.runs import run_record, write_run_record
from tasks.core.params import StageParams


@task(name="record")
def record_task(
    stages: dict[str, StageManifest], settings: dict[str, Any], params: StageParams
) -> dict[str, Any]:
    """Write runs/<name>.json and latest.json under the output root; return the record.

    ``settings``: every parameter of the run, as recorded.
    """
    record = run_record(settings, stages)
    url = write_run_record(OutputLayout.at(params.out), record)
    get_run_logger().info("run record: %s", url)
    return record
