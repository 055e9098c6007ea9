"""`overlap inspect`, and two parameter sets under one output root keeping both their outputs."""

from __future__ import annotations

import json
from pathlib import Path

import fsspec
import pyarrow.parquet as pq
import pytest

from flows.cli import main
from flows.config import RunConfig
from flows.overlap_flow import class_overlap
from storage.catalog import list_tables
from storage.fs import Location
from storage.manifest import valid_manifest

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, dict]:
    """Two synthetic runs into one root that differ only in the overlap rule's k."""
    out = tmp_path_factory.mktemp("inspect") / "out"
    # report_pairs=0: no per-pair UMAPs, which only cost time here.
    first = class_overlap(RunConfig(dataset="synthetic", out=str(out), report_pairs=0))
    second = class_overlap(
        RunConfig(dataset="synthetic", out=str(out), report_pairs=0, overlap_k=2.5)
    )
    return out, first, second


def test_different_overlap_parameters_keep_both_outputs(two_runs) -> None:
    out, first, second = two_runs
    old, new = first["stages"]["overlap"]["url"], second["stages"]["overlap"]["url"]
    assert old != new and Path(old).parent == Path(new).parent == out / "synthetic" / "overlap"
    for url, k in ((old, 3.0), (new, 2.5)):
        manifest = valid_manifest(Location(url))  # present, every file intact
        assert manifest is not None and manifest.params["k"] == k
        assert pq.read_table(Path(url) / "overlap_pairs.parquet").num_rows > 0
    # What did not change is shared, not copied: one embeddings folder for both runs.
    assert first["stages"]["embeddings"] == second["stages"]["embeddings"]
    records = {p.stem: json.loads(p.read_text()) for p in (out / "runs").glob("*.json")}
    assert set(records) == {first["name"], second["name"]}
    assert records[first["name"]]["params"]["overlap_k"] == 3.0
    assert json.loads((out / "latest.json").read_text()) == second


def test_inspect_lists_every_table_with_rows_schema_and_size(two_runs, capsys) -> None:
    out, first, second = two_runs
    assert main(["inspect", str(out)]) == 0
    text = capsys.readouterr().out
    tables = list_tables(str(out))
    for record in (first, second):
        for stage in record["stages"].values():
            for name, rows in stage["rows"].items():
                if name.endswith(".parquet"):
                    folder = "/".join(stage["url"].rsplit("/", 3)[-3:])
                    match = [t for t in tables if t.folder == folder and name in t.files]
                    assert len(match) == 1 and match[0].bytes > 0, (folder, name)
                    assert f"{rows:,} rows" in text
    by_folder = {(t.folder, t.name): t for t in tables}
    newest = "/".join(second["stages"]["overlap"]["url"].rsplit("/", 3)[-3:])
    older = "/".join(first["stages"]["overlap"]["url"].rsplit("/", 3)[-3:])
    assert by_folder[(newest, "overlap_pairs")].latest
    assert not by_folder[(older, "overlap_pairs")].latest
    assert f"* {newest}" in text and f"  {older}" in text
    assert "sample_id int64" in text and "embedding fixed_size_list" in text  # schemas


def test_inspect_shows_parameters_top_pairs_and_reports(two_runs, capsys) -> None:
    out, _, second = two_runs
    assert main(["inspect", str(out), "--top", "2", "--no-schema"]) == 0
    text = capsys.readouterr().out
    assert f"Latest run: {second['name']}" in text
    assert "overlap_k=2.5" in text and 'dataset="synthetic"' in text
    overlap = text.split("Top overlap pairs")[1].split("Top confusion pairs")[0]
    assert "class_a" in overlap and len(overlap.strip().splitlines()) == 1 + 1 + 2  # title, head
    confusion = text.split("Top confusion pairs")[1].split("Reports")[0]
    assert "MisRate" in confusion and "True" in confusion
    reports = text.split("\nReports\n")[1].split("\n\n")[0].split()
    assert reports and all(Path(p).is_file() for p in reports)
    assert "sample_id int64" not in text


def test_inspect_reads_an_fsspec_url(two_runs, capsys) -> None:
    out, _, second = two_runs
    memory = fsspec.filesystem("memory")
    memory.put(str(out), "/inspect-copy", recursive=True)
    try:
        assert main(["inspect", "memory://inspect-copy", "--no-schema"]) == 0
    finally:
        memory.rm("/inspect-copy", recursive=True)
    text = capsys.readouterr().out
    assert f"Latest run: {second['name']}" in text
    assert "memory://inspect-copy/synthetic/" in text  # report paths resolved under the copy
    assert "overlap_pairs" in text


def test_inspect_of_a_folder_that_is_no_output_root_is_one_line(tmp_path, capsys) -> None:
    assert main(["inspect", str(tmp_path / "nowhere")]) == 2
    assert main(["inspect", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("overlap: error: ") for line in err)
