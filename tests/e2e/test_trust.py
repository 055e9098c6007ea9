"""Overlaps a user can trust, end to end on the synthetic data: the classes rule, calibration,
bootstrap stability, a rule that flags nothing, comparing runs and the reference printout."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from flows.cli import NOTHING_FLAGGED, main
from flows.config import RunConfig
from flows.overlap_flow import class_overlap
from flows.reference_cmd import beside_reference
from storage.finished_run import open_run
from storage.tables import embedding_matrix, stage_shards
from tasks.algorithms.bootstrap import run_stability
from tasks.algorithms.overlap_rules import similarity_matrices

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]

CLASSES_RULE = {"overlap_rule": "classes", "overlap_classes": 6, "report_pairs": 0}


def _planted(run) -> set[tuple[str, str]]:
    return {tuple(sorted(p)) for p in run.manifest("images").info["planted_pairs"]}


def _flagged(run) -> set[tuple[str, str]]:
    pairs = run.table("overlap_pairs", ["class_a", "class_b"]).to_pylist()
    return {tuple(sorted(p.values())) for p in pairs}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    """A synthetic run with vit_tiny (random weights) and the classes rule at 6 classes."""
    out = tmp_path_factory.mktemp("tiny") / "vit_tiny"
    record = class_overlap(RunConfig(dataset="synthetic", out=str(out), **CLASSES_RULE))
    # by its record, not the root's latest run: a later test runs another rule into this root
    return open_run(str(out / "runs" / f"{record['name']}.json"))


def test_six_classes_flag_exactly_the_three_planted_pairs(tiny) -> None:
    assert _flagged(tiny) == _planted(tiny)
    info = tiny.manifest("overlap").info
    assert (info["rule"], info["classes"], info["n_pairs"], info["n_classes"]) == (
        "classes",
        6,
        3,
        6,
    )


def test_the_calibration_row_of_the_run_is_what_the_run_flagged(tiny) -> None:
    calibration = tiny.table("overlap_calibration").to_pylist()
    (chosen,) = [row for row in calibration if row["chosen"]]
    info = tiny.manifest("overlap").info
    assert (chosen["rule"], chosen["value"]) == ("classes", 6.0)
    assert (chosen["n_pairs"], chosen["n_classes"]) == (info["n_pairs"], info["n_classes"])
    assert chosen["cutoff"] == pytest.approx(info["cutoff"])
    assert {row["rule"] for row in calibration} == {"sigma", "threshold", "topk", "classes"}


def test_planted_pairs_are_stable_and_the_rest_are_not_over_several_seeds(tiny) -> None:
    pairs = tiny.table("overlap_pairs")
    assert min(pairs.column("flag_rate").to_pylist()) >= 0.95
    stability = tiny.table("overlap_stability")
    assert stability.num_rows == 3 + 10
    names = list(tiny.manifest("images").info["class_names"])
    cosine, _ = similarity_matrices(tiny.table("class_similarity"), len(names))
    flagged = np.array([[r["label_a"], r["label_b"]] for r in pairs.to_pylist()])
    embeddings = tiny.manifest("embeddings")
    for seed in (1, 2, 3):
        arrays = (
            (s.column("sample_id").to_numpy(), s.column("label").to_numpy(), embedding_matrix(s))
            for s in stage_shards(embeddings, ["sample_id", "label", "embedding"])
        )
        rows = run_stability(
            arrays,
            cosine,
            flagged,
            names,
            rule={"rule": "classes", "classes": 6},
            resamples=100,
            seed=seed,
        ).to_pylist()
        assert all(r["flag_rate"] >= 0.95 for r in rows if r["flagged"]), seed
        assert all(r["flag_rate"] <= 0.05 for r in rows if not r["flagged"]), seed


def test_the_report_shows_calibration_and_stability(tiny) -> None:
    report = tiny.manifest("report")
    text = report.location.read_bytes("report.md").decode()
    assert "figure-calibration.png" in text and report.location.exists("figure-calibration.png")
    assert "flag_rate" in text and "Stability of the flagged pairs" in text


def test_the_reference_printout_of_a_finished_run(tiny, capsys) -> None:
    text = beside_reference(tiny)
    lines = text.splitlines()
    assert lines[2].split() == ["item", "reference", "run", "spread", "close"]
    assert lines[3].split()[:3] == ["classes", "54", "6"]
    accuracy = tiny.manifest("evaluate").info["accuracy"]
    assert lines[4].split()[:3] == ["accuracy", "0.7835", f"{accuracy:.4f}"]
    assert lines[5].split()[:3] == ["test", "images", "5,400"]
    firsts = [line.split()[0] for line in lines[8:13]]
    assert firsts == ["maple_tree", "girl", "girl", "man", "mouse"]
    # No reference class exists in the synthetic data: every pair's figures are missing, and
    # neither the class count nor the test images can match.
    assert re.fullmatch(
        r"[01] of 8 figures within their spread of the reference \(5 missing from this run\)",
        lines[-1],
    )
    assert main(["reference", f"{tiny.root.url}/runs/{tiny.record.name}.json"]) == 0
    assert "beside the reference result" in capsys.readouterr().out


def test_a_rule_that_flags_nothing_ends_with_the_model_free_report(tiny, capsys) -> None:
    argv = ["run", "--dataset", "synthetic", "--out", tiny.root.url]
    code = main([*argv, "--overlap-rule", "threshold", "--overlap-threshold", "1.0"])
    assert code == NOTHING_FLAGGED
    said = capsys.readouterr().out
    assert "--overlap-rule threshold --overlap-threshold" in said and "would flag" in said
    run = open_run(tiny.root.url)
    assert set(run.record.stages) == {
        "images",
        "embeddings",
        "neighbours",
        "class_similarity",
        "overlap",
        "report",
    }
    report = run.manifest("report").location
    text = report.read_bytes("report.md").decode()
    assert "The rule flagged no pair of classes. Try: --overlap-rule threshold" in text
    assert report.exists("figure-similarity.png") and report.exists("figure-calibration.png")


def test_compare_two_models_finds_the_planted_pairs_as_consensus(
    tiny, tmp_path: Path, capsys
) -> None:
    small = tiny.root.url.rsplit("/", 1)[0] + "/vit_small"
    config = RunConfig(
        dataset="synthetic", out=small, model="vit_small_patch16_224", image_size=64, **CLASSES_RULE
    )
    class_overlap(config)
    out = tmp_path / "compare"
    record = f"{tiny.root.url}/runs/{tiny.record.name}.json"
    assert main(["compare", record, small, "--out", str(out)]) == 0
    consensus = pq.read_table(out / "compare_consensus.parquet").to_pylist()
    agreed = {(r["class_a"], r["class_b"]) for r in consensus if r["consensus"]}
    assert agreed == _planted(tiny)
    (agreement,) = pq.read_table(out / "compare_agreement.parquet").to_pylist()
    assert (agreement["run_a"], agreement["run_b"], agreement["jaccard"]) == (
        "vit_tiny",
        "vit_small",
        1.0,
    )
    # Two random-weight models agree on the planted twins only, not on the order of the rest.
    assert -1 <= agreement["spearman"] <= 1
    assert pq.read_table(out / "compare_pairs.parquet").num_rows == 66 * 2
    assert (out / "compare.md").exists()
    assert "Consensus: 3 pair(s) flagged by every run" in capsys.readouterr().out


def test_compare_reads_runs_and_writes_through_fsspec_urls(tiny) -> None:
    import fsspec

    memory = fsspec.filesystem("memory")
    local = Path(tiny.root.url)
    for name in ("a", "b"):  # the same run copied to two in-memory roots
        memory.put(str(local), f"/trust/{name}", recursive=True)
    first, second = (f"memory://trust/{n}/runs/{tiny.record.name}.json" for n in ("a", "b"))
    code = main(["compare", first, second, "--out", "memory://trust/compare"])
    assert code == 0
    with memory.open("/trust/compare/compare_consensus.parquet") as handle:
        consensus = pq.read_table(handle).to_pylist()
    assert {(r["class_a"], r["class_b"]) for r in consensus if r["consensus"]} == _planted(tiny)
    assert memory.exists("/trust/compare/compare.md")
