"""Final stage: write the run record that points at every output of the run."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.logging import get_run_logger
from prefect.runtime import flow_run

from storage.layout import OutputLayout
from storage.runs import RunRecord, run_record, write_run_record
from tasks.algorithms.delta import rerun_summary
from tasks.core.params import StageParams
from tasks.core.results import RunStages


@task(name="record")
def record_task(
    stages: RunStages,
    settings: dict[str, Any],
    params: StageParams,
    timing: dict[str, Any] | None = None,
) -> RunRecord:
    """Write runs/<name>.json and latest.json under the output root; return the record.

    ``settings``: every parameter of the run, as recorded; ``timing``: when the flow started
    and each stage's wall seconds in this run (``tasks/core/clock.py``), recorded as ``timing``.
    """
    logger = get_run_logger()
    changes = rerun_summary(stages.images.info, stages.embeddings.info, flow_run.id)
    # the images version's changes, also on a cache hit (they made these outputs); the
    # extraction's counts are this run's own
    if changes:
        logger.info("images: %s", ", ".join(f"{n} {k}" for k, n in changes.items()))
    record = run_record(settings, stages.ran(), changes, timing)
    url = write_run_record(OutputLayout.at(params.out), record)
    logger.info("run record: %s", url)
    return record
