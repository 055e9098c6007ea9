"""What stages hand each other: typed info, the set of stages that ran, the run record."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from prefect.logging import disable_run_logger
from pydantic import ValidationError

from storage.fs import Location
from storage.layout import OutputLayout
from storage.manifest import StageManifest
from storage.runs import RunRecord, read_latest, run_record, write_run_record
from tasks.core.params import StageParams
from tasks.core.results import ImagesInfo, RunStages, SubsetInfo
from tasks.core.stage import Output, Stage, fingerprint


def _finished(root: Path, name: str, **info: object) -> StageManifest:
    location = Location(str(root / name))
    location.write_bytes("note.txt", name.encode())
    return Stage(name).finish(location, {"note.txt": None}, {}, info)


def test_a_stage_that_stops_recording_what_others_read_fails_before_writing(
    tmp_path: Path,
) -> None:
    stage = Stage("subset", "v1", info_type=SubsetInfo)

    @stage.task()
    def subset(params: StageParams) -> Output:
        # original_labels forgotten: confusion and the report read it
        return Output(files={"note.txt": b"x"}, info={"class_names": ["cat", "dog"]})

    params = StageParams(dataset="synthetic", out=str(tmp_path))
    with disable_run_logger(), pytest.raises(ValidationError, match="original_labels"):
        subset.fn(params)
    assert not list(tmp_path.rglob("note.txt")) and not list(tmp_path.rglob("_manifest.json"))


def test_typed_info_reads_what_the_stage_recorded_and_keeps_the_rest(tmp_path: Path) -> None:
    subset = _finished(
        tmp_path, "subset", class_names=["cat", "dog"], original_labels=[3, 7], png_files=0
    )
    kept = SubsetInfo.of(subset)
    assert kept.class_names == ["cat", "dog"] and kept.original_labels == [3, 7]
    assert kept.coarse_names is None
    assert kept.model_dump() == subset.info | {"coarse_names": None}  # png_files kept as is
    with pytest.raises(ValidationError, match="class_names"):
        ImagesInfo.of(_finished(tmp_path, "images", rows=3))


def test_the_stages_that_ran_in_order_and_whether_the_classifier_did(tmp_path: Path) -> None:
    names = ["images", "embeddings", "neighbours", "class_similarity", "overlap"]
    manifests = {name: _finished(tmp_path, name) for name in names}
    model_free = RunStages(**manifests)
    assert not model_free.trained and list(model_free.ran()) == names
    classifier_path = ["subset", "classifier", "evaluate", "confusion"]
    trained = RunStages(**manifests, **{n: _finished(tmp_path, n) for n in classifier_path})
    assert trained.trained
    report = _finished(tmp_path, "report", report="r.html")
    assert list(trained.with_report(report).ran()) == [*names, *classifier_path, "report"]
    # the report's key hashes the stages as it did when they were a mapping: keys unchanged
    assert fingerprint(trained) == fingerprint(trained.ran())


def test_a_run_record_reads_back_as_it_was_written(tmp_path: Path) -> None:
    layout = OutputLayout.at(str(tmp_path))
    images = _finished(tmp_path, "images", class_names=["a", "b"])
    timing = {"flow_started": 1.5, "stage_seconds": {"images": 0.25}}
    record = run_record({"seed": 0, "dataset": "synthetic"}, {"images": images}, timing=timing)
    write_run_record(layout, record)
    written = json.loads((tmp_path / "latest.json").read_text())
    assert list(written) == ["name", "finished", "params", "stages", "timing"]  # no changes
    assert list(written["params"]) == ["dataset", "seed"]  # sorted, as canonical JSON
    assert written["stages"]["images"]["tables"] == {"note.txt": images.path("note.txt")}
    assert read_latest(layout) == record == RunRecord.model_validate(record.as_json())
    assert record.stages["images"].rows == {"note.txt": None} and record.changes is None
