"""The table registry: every table declared once, its columns documented, typed read and write."""

from __future__ import annotations

import importlib
import io
import pkgutil
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flows.inspect_cmd import inspect_root
from flows.overlap_flow import class_overlap
from storage import schemas
from storage.catalog import list_tables
from storage.fs import Location
from storage.registry import TABLES, table
from storage.schema_docs import BEGIN, COMMAND, END, README, main, tables_markdown, with_tables
from storage.table_spec import embedding_dim
from storage.tables import shard_name
from tasks.analyze_predictions import analyze_predictions

DIM = 4


def _schema(name: str) -> pa.Schema:
    spec = TABLES[name]
    return spec.schema(DIM) if spec.needs_dim else spec.schema()


@pytest.mark.parametrize("name", sorted(TABLES))
def test_every_column_is_described_in_schema_order(name: str) -> None:
    spec = TABLES[name]
    assert list(spec.columns) == _schema(name).names
    for text in (spec.description, *spec.columns.values()):
        # one line each, and safe inside a markdown table cell
        assert text.strip() and "\n" not in text and "|" not in text, (name, text)
    assert spec.name == name and spec.file_name.endswith(".parquet")


def test_each_table_is_declared_beside_its_schema_in_one_schema_module() -> None:
    """A table's spec and its Arrow schema sit in the same module of storage.schemas, and the
    registry lists exactly the specs those modules declare, each once."""
    modules = [
        importlib.import_module(f"storage.schemas.{info.name}")
        for info in pkgutil.iter_modules(schemas.__path__)
    ]
    declared = [(spec.name, module) for module in modules for spec in getattr(module, "SPECS", ())]
    assert sorted(name for name, _ in declared) == sorted(TABLES)
    for name, module in declared:
        schema_names = [key for key, value in vars(module).items() if value is TABLES[name].arrow]
        assert schema_names, f"{name}: its schema is not defined in {module.__name__}"


def test_every_stage_table_is_declared() -> None:
    written = {
        "images": {"images"},
        "embeddings": {"embeddings"},
        "neighbours": {"neighbours", "near_duplicates", "label_suspects"},
        "class_similarity": {"centroids", "class_similarity"},
        "overlap": {
            "overlap_pairs",
            "overlap_classes",
            "pair_samples",
            "overlap_calibration",
            "overlap_stability",
        },
        "subset": {"subset", "splits"},
        "classifier": {"training_history"},
        "evaluate": {"predictions", "classification_report", "confusion_matrix"},
        "confusion": {"confusion_pairs"},
        "compare": {"compare_pairs", "compare_agreement", "compare_consensus"},  # a command's
    }
    declared: dict[str, set[str]] = {}
    for spec in TABLES.values():
        declared.setdefault(spec.stage, set()).add(spec.name)
    assert declared == written
    analyze = {n for n, s in TABLES.items() if "analyze_predictions" in s.also_written_by}
    assert analyze == {"classification_report", "confusion_matrix", "confusion_pairs"}


def _centroids() -> pa.Table:
    """Two classes' centroids, with a plain list column as numpy code makes it."""
    return pa.table(
        {
            "centroid": [np.ones(DIM, np.float32).tolist(), np.zeros(DIM, np.float32).tolist()],
            "count": [3, 4],
            "class_name": ["a", "b"],
            "label": [0, 1],
        }
    )


def test_write_casts_to_the_schema_and_read_selects_columns(tmp_path: Path) -> None:
    location = Location(str(tmp_path))
    spec = table("centroids")
    assert spec.write(location, _centroids(), dim=DIM) == 2
    written = pq.read_table(tmp_path / "centroids.parquet")
    assert written.schema.equals(spec.schema(DIM))  # column order and types from the registry
    assert spec.read(location, ["label"]).column("label").to_pylist() == [0, 1]


def test_write_takes_dim_from_a_fixed_size_list_column(tmp_path: Path) -> None:
    location = Location(str(tmp_path))
    spec = table("centroids")
    first = pq.read_table(_write(spec, location, _centroids(), DIM))
    assert spec.write(location, first) == 2  # no dim: the fixed-size list says 4
    with pytest.raises(ValueError, match="needs dim="):
        spec.write(location, _centroids())  # a plain list column does not


def _write(spec, location: Location, data: pa.Table, dim: int) -> str:
    spec.write(location, data, dim=dim)
    return location.file(spec.file_name)


def test_sharded_tables_write_shards_and_read_them_in_order(tmp_path: Path) -> None:
    location = Location(str(tmp_path))
    spec = table("embeddings")
    rows = [
        {"sample_id": i, "split": "train", "label": 0, "class_name": "a", "embedding": [i] * DIM}
        for i in range(5)
    ]
    for index, part in enumerate((rows[:3], rows[3:])):
        spec.write(location, pa.Table.from_pylist(part), dim=DIM, shard=index)
    assert sorted(p.name for p in tmp_path.iterdir()) == [shard_name(0), shard_name(1)]
    assert spec.read(location, ["sample_id"]).column("sample_id").to_pylist() == list(range(5))
    assert spec.file_name == "part-*.parquet"


@pytest.mark.parametrize(
    ("name", "kwargs", "message"),
    [
        ("embeddings", {"dim": DIM}, "is sharded: pass shard="),
        ("splits", {"shard": 0}, "has one file: no shard"),
        ("splits", {"dim": DIM}, "do not pass dim"),
    ],
)
def test_wrong_write_arguments_fail_before_writing(
    tmp_path: Path, name: str, kwargs: dict, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        table(name).write(Location(str(tmp_path)), pa.table({"x": [1]}), **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_unknown_names_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(KeyError, match="known tables: images, embeddings"):
        table("embedding")
    with pytest.raises(ValueError, match=r"no column\(s\) labels; its columns: sample_id"):
        table("splits").read(Location(str(tmp_path)), ["labels"])


def test_readme_schema_tables_are_the_registry_s() -> None:
    text = README.read_text(encoding="utf-8")
    assert with_tables(text, tables_markdown()) == text, (
        f"README.md's schema tables differ from storage/registry.py; run `{COMMAND}`"
    )


def test_schema_docs_rewrites_only_the_marked_block(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"# intro\n\n{BEGIN}\nstale\n{END}\n\nrest\n", encoding="utf-8")
    assert main(["--readme", str(readme), "--check"]) == 1
    assert main(["--readme", str(readme)]) == 0
    text = readme.read_text(encoding="utf-8")
    assert text.startswith("# intro\n\n") and text.endswith(f"{END}\n\nrest\n")
    assert "stale" not in text and "| top5_labels | list<int32> |" in text
    assert "| embedding | fixed_size_list<float32>[dim] |" in text
    assert main(["--readme", str(readme), "--check"]) == 0
    readme.write_text("# no markers\n", encoding="utf-8")
    with pytest.raises(ValueError, match="README lacks the marker lines"):
        main(["--readme", str(readme)])


def test_inspect_shows_each_table_s_description_and_columns_once(tmp_path: Path) -> None:
    root = Location(str(tmp_path))
    pairs = table("overlap_pairs")
    for key in ("aaa", "bbb"):  # two parameter sets: the same table in two folders
        pairs.write(root.child("synthetic", "overlap", key), pairs.schema().empty_table())
    rows = [
        {"sample_id": i, "split": "test", "label": 1, "class_name": "b", "embedding": [0.5] * DIM}
        for i in range(3)
    ]
    table("embeddings").write(
        root.child("synthetic", "embeddings", "k"), pa.Table.from_pylist(rows), dim=DIM, shard=0
    )
    text = io.StringIO()
    assert inspect_root(str(tmp_path), out=text) == 0
    lines = [line.strip() for line in text.getvalue().splitlines()]
    words = " ".join(text.getvalue().split())  # wrapping aside
    assert words.count(pairs.description) == 1
    for column, meaning in pairs.columns.items():
        assert len(re.findall(rf"{re.escape(column)} \S+ {re.escape(meaning)}", words)) == 1
    # the second folder of the same table lists its types only
    assert "label_a int32, class_a string, label_b int32, class_b string, cosine float" in words
    assert "embedding fixed_size_list<float32>[4]" in lines  # a long type: meaning below
    text = io.StringIO()
    assert inspect_root(str(tmp_path), out=text, show_schema=False) == 0
    assert pairs.columns["z"] not in text.getvalue()


def test_analyze_predictions_writes_exactly_its_declared_tables(tmp_path: Path) -> None:
    csv = tmp_path / "predictions.csv"
    csv.write_text("y_true,y_pred\n0,0\n0,1\n1,1\n2,2\n2,0\n")
    out = tmp_path / "out"
    analyze_predictions(csv, None, out, k=0.0, rule="sigma")
    written = {p.stem: pq.read_schema(p) for p in out.glob("*.parquet")}
    declared = {n for n, s in TABLES.items() if "analyze_predictions" in s.also_written_by}
    assert set(written) == declared
    for name, schema in written.items():
        assert schema.remove_metadata().equals(table(name).schema()), name


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server")
def test_a_run_writes_only_declared_tables_in_their_schemas(synthetic_config) -> None:
    config = synthetic_config.model_copy(update={"report_pairs": 0})  # no per-pair UMAPs
    class_overlap(config)
    found = list_tables(config.out)
    assert {t.name for t in found} == {n for n, s in TABLES.items() if s.stage != "compare"}
    for info in found:
        spec = TABLES[info.name]
        assert info.stage == spec.stage, info.name
        dim = embedding_dim(info.schema)
        assert info.schema.remove_metadata().equals(spec.schema(dim)), info.name
