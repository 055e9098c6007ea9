"""Bring your own predictions: reading, validation errors, and the real CIFAR-100 predictions."""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
import pytest

from tasks.analyze_predictions import (
    PredictionsError,
    analyze_predictions,
    read_class_names,
    validate_predictions,
)
from tests.support.builders import REAL, write_real_predictions

TABLES = ["classification_report", "confusion_matrix", "confusion_pairs"]


@pytest.fixture(scope="module")
def cifar(tmp_path_factory) -> Path:
    """The real predictions as a Parquet file of y_true and y_pred."""
    return write_real_predictions(tmp_path_factory.mktemp("cifar") / "predictions.parquet")


def _top_pairs(pairs: pl.DataFrame, n: int) -> set[frozenset[str]]:
    top = pairs.filter(pl.col("flagged")).head(n)
    return {frozenset(p) for p in zip(top["True"], top["Pred"], strict=True)}


def test_real_cifar100_predictions(cifar, tmp_path) -> None:
    manifest = analyze_predictions(cifar, REAL / "classes.tsv", tmp_path / "out")
    assert manifest.info["accuracy"] == pytest.approx(0.6929)
    assert manifest.problems() == []
    pairs = pl.read_parquet(manifest.path("confusion_pairs.parquet"))
    known = {frozenset(p) for p in (("maple_tree", "oak_tree"), ("girl", "woman"), ("boy", "man"))}
    assert known <= _top_pairs(pairs, 10)
    # Most of the top pairs share a superclass (the data's README says so too).
    assert pairs.filter(pl.col("flagged")).head(20)["same_superclass"].sum() >= 15
    report = pl.read_parquet(manifest.path("classification_report.parquet"))
    assert report.filter(pl.col("class_name") == "accuracy")["f1"][0] == pytest.approx(0.6929)
    assert report["support"][:100].to_list() == [100] * 100


@pytest.mark.parametrize(
    ("rule", "k", "alpha", "flagged"),
    [
        ("sigma", 2.0, 0.05, 299),
        ("sigma", 3.0, 0.05, 191),
        ("sigma", 5.0, 0.05, 84),
        ("binomial", 5.0, 0.05, 191),
        ("binomial", 5.0, 0.001, 84),
    ],
)
def test_real_flag_counts(cifar, tmp_path, rule, k, alpha, flagged) -> None:
    """The counts peers.md reports for the sigma rule, and the binomial rule's."""
    manifest = analyze_predictions(
        cifar, REAL / "classes.tsv", tmp_path, k=k, rule=rule, alpha=alpha
    )
    assert manifest.info["flagged"] == flagged
    assert manifest.files["confusion_pairs.parquet"].rows == 1557  # non-zero off-diagonal cells


def test_tables_read_in_polars_and_duckdb(cifar, tmp_path) -> None:
    manifest = analyze_predictions(cifar, REAL / "classes.tsv", tmp_path)
    for name in TABLES:
        path = manifest.path(f"{name}.parquet")
        rows = duckdb.sql(f"select count(*) from '{path}'").fetchall()[0][0]
        assert rows == pl.read_parquet(path).height == manifest.files[f"{name}.parquet"].rows
    cells = duckdb.sql(
        f"select sum(count) from '{manifest.path('confusion_matrix.parquet')}'"
    ).fetchall()
    assert cells[0][0] == 10000
    assert (tmp_path / "classification_report.md").read_text().count("\n") == 2 + 100 + 3


def test_csv_with_names_in_columns(tmp_path) -> None:
    csv = tmp_path / "p.csv"
    csv.write_text("y_true,y_pred,true_name,pred_name\n0,0,cat,cat\n0,1,cat,dog\n1,1,dog,dog\n")
    manifest = analyze_predictions(csv, None, tmp_path / "out", k=0.0, rule="sigma")
    assert manifest.info["class_names"] == ["cat", "dog"]
    pairs = pl.read_parquet(manifest.path("confusion_pairs.parquet"))
    assert pairs.select("True", "Pred", "count").rows() == [("cat", "dog", 1)]


def test_string_labels_and_plain_names_file(tmp_path) -> None:
    names = tmp_path / "names.txt"
    names.write_text("cat\ndog\nbird\n")
    assert read_class_names(names) == (["cat", "dog", "bird"], None)
    table = pa.table({"y_true": ["dog", "bird"], "y_pred": ["dog", "dog"]})
    y_true, y_pred, found = validate_predictions(table, ["cat", "dog", "bird"])
    assert (y_true.tolist(), y_pred.tolist(), found) == ([1, 2], [1, 1], ["cat", "dog", "bird"])


def test_tsv_class_names_with_coarse(tmp_path) -> None:
    shutil.copy(REAL / "classes.tsv", tmp_path / "classes.tsv")
    names, coarse = read_class_names(tmp_path / "classes.tsv")
    assert len(names) == 100 and names[47] == "maple_tree" and coarse[47] == "trees"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "is empty"),
        ("y_true,label\n1,2\n", "lack column.*y_pred"),
        ("y_true,y_pred\n", "no rows"),
        ("y_true,y_pred\n0,1\n2,7\n", r"y_pred has labels outside the class list \(0..2\): 7"),
        ("y_true,y_pred\n0,\n", "empty values"),
        ("y_true,y_pred\n0,cat\n", "both be integer labels or both class names"),
    ],
)
def test_bad_files_give_one_line_errors(tmp_path, content, message) -> None:
    csv = tmp_path / "bad.csv"
    csv.write_text(content)
    names = tmp_path / "names.txt"
    names.write_text("a\nb\nc\n")
    with pytest.raises(PredictionsError, match=message) as error:
        analyze_predictions(csv, names, tmp_path / "out")
    assert "\n" not in str(error.value)


def test_conflicting_names_and_missing_file(tmp_path) -> None:
    table = pa.table({"y_true": [0, 0], "y_pred": [0, 0], "true_name": ["cat", "dog"]})
    with pytest.raises(PredictionsError, match="named both"):
        validate_predictions(table)
    with pytest.raises(PredictionsError, match="not found"):
        analyze_predictions(tmp_path / "nope.parquet", None, tmp_path / "out")
