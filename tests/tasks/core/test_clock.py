"""Where a run's wall time goes: laps per stage and the line printed at the end of a run."""

from __future__ import annotations

import time

import pytest

from tasks.core.clock import StageClock, process_started, time_by_stage, time_by_stage_line


def test_laps_charge_the_time_since_the_previous_lap() -> None:
    clock = StageClock()
    time.sleep(0.05)
    clock.lap("images")
    clock.lap("embeddings")
    record = clock.as_record()
    assert record["stage_seconds"]["images"] >= 0.05
    assert record["stage_seconds"]["embeddings"] < 0.05
    assert list(record["stage_seconds"]) == ["images", "embeddings"]


def test_a_run_splits_into_start_up_stages_and_finish() -> None:
    timing = {"flow_started": 110.0, "stage_seconds": {"images": 5.0, "embeddings": 80.0}}
    parts = time_by_stage(timing, process_started=100.0, finished=200.0)
    assert parts == [("start-up", 10.0), ("images", 5.0), ("embeddings", 80.0), ("finish", 5.0)]
    line = time_by_stage_line(parts)
    assert "embeddings 80.0 s (80%)" in line
    assert line.endswith("total 100.0 s, all but extraction 20.0 s (20%)")


def test_this_process_started_before_now() -> None:
    assert process_started() == pytest.approx(time.time(), abs=3600)
    assert process_started() <= time.time()
