"""End to end: the synthetic flow under a Prefect test server, its tables, caching and re-runs."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import duckdb
import polars as pl
import pyarrow.parquet as pq
import pytest

from flows.config import RunConfig
from flows.overlap_flow import class_overlap
from storage.schemas.images import IMAGES, embeddings_schema
from tests.support.flow_states import assert_only, task_states

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]


def run(config: RunConfig) -> tuple[dict, dict[str, str]]:
    """Run the flow; return its record and each task's final state name."""
    state = class_overlap(config, return_state=True)
    return state.result(), task_states(state)


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[RunConfig, dict, dict[str, str]]:
    out = tmp_path_factory.mktemp("flow") / "out"
    config = RunConfig(dataset="synthetic", out=str(out))
    record, states = run(config)
    return config, record, states


def _table_dir(record: dict, stage: str) -> Path:
    return Path(record["stages"][stage]["url"])


def test_images_and_embeddings_read_in_pyarrow_polars_and_duckdb(first_run) -> None:
    _config, record, states = first_run
    assert set(states.values()) == {"Completed"}
    images, embeddings = _table_dir(record, "images"), _table_dir(record, "embeddings")
    image_table = pq.read_table(images)
    assert image_table.schema.equals(IMAGES)
    emb = pl.read_parquet(embeddings / "*.parquet")
    assert emb.height == image_table.num_rows == 1200
    assert emb["sample_id"].is_unique().all()
    assert pq.read_table(embeddings).schema.equals(embeddings_schema(192))
    query = f"select split, count(*) from '{embeddings}/*.parquet' group by split order by split"
    assert duckdb.sql(query).fetchall() == [("test", 240), ("train", 960)]


def test_the_model_free_rule_flags_exactly_the_planted_pairs(first_run) -> None:
    _config, record, _ = first_run
    manifest = _table_dir(record, "images") / "_manifest.json"
    planted = {tuple(p) for p in pl.read_json(manifest)["info"][0]["planted_pairs"]}
    pairs = pl.read_parquet(_table_dir(record, "overlap") / "overlap_pairs.parquet")
    found = {tuple(sorted(p)) for p in pairs.select("class_a", "class_b").iter_rows()}
    assert found == planted


def test_the_run_record_says_where_the_wall_time_went(first_run) -> None:
    _config, record, _ = first_run
    seconds = record["timing"]["stage_seconds"]
    assert list(seconds) == [*(s for s in record["stages"] if s != "report"), "report"]
    assert all(value >= 0 for value in seconds.values()) and seconds["embeddings"] > 0
    assert record["timing"]["flow_started"] < datetime.fromisoformat(record["finished"]).timestamp()


def test_a_second_identical_run_is_served_from_cache(first_run) -> None:
    config, record, _ = first_run
    again, states = run(config)
    assert_only(states)
    assert again["stages"] == record["stages"]


def test_a_deleted_shard_is_noticed_and_only_extraction_reruns(first_run) -> None:
    config, record, _ = first_run
    shard = _table_dir(record, "embeddings") / "part-00000.parquet"
    before = pq.read_table(shard)
    shard.unlink()
    _, states = run(config)
    assert_only(states, "embeddings")  # the same embeddings again: the rest stay cached
    assert pq.read_table(shard).equals(before)


def test_changing_the_confusion_rule_reruns_only_the_analysis(first_run) -> None:
    config, _record, _ = first_run
    changed = config.model_copy(update={"confusion_rule": "sigma", "confusion_k": 1.0})
    _, states = run(changed)
    assert_only(states, "confusion", "report")  # the report shows the new pairs


def test_the_classifier_confuses_only_the_planted_pairs(first_run) -> None:
    _config, record, _ = first_run
    manifest = _table_dir(record, "images") / "_manifest.json"
    planted = {tuple(p) for p in pl.read_json(manifest)["info"][0]["planted_pairs"]}
    pairs = pl.read_parquet(_table_dir(record, "confusion") / "confusion_pairs.parquet")
    flagged = {tuple(sorted(p)) for p in pairs.filter("flagged").select("True", "Pred").iter_rows()}
    assert flagged and flagged <= planted
    report = pl.read_parquet(_table_dir(record, "evaluate") / "classification_report.parquet")
    accuracy = report.filter(pl.col("class_name") == "accuracy")["f1"][0]
    assert 0.4 < accuracy < 0.95  # the subset is the planted twins: confused, not hopeless
