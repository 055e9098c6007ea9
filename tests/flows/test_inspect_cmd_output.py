"""What `overlap inspect` and `overlap analyze-predictions` print: counts, numbers, nulls, hints."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flows.cli import main
from flows.inspect_cmd import format_table
from storage.catalog import top_confusion


def _pairs(n: int) -> pa.Table:
    """A confusion_pairs-like table: n flagged pairs with tiny q-values, one unflagged."""
    return pa.table(
        {
            "True": [f"t{i}" for i in range(n + 1)],
            "Pred": [f"p{i}" for i in range(n + 1)],
            "MisRate": [0.5 - 0.01 * i for i in range(n + 1)],
            "F1(True)": [0.4] * (n + 1),
            "F1(Pred)": [0.6] * (n + 1),
            "q_value": [10.0 ** -(8 + i) for i in range(n)] + [0.9],
            "flagged": [True] * n + [False],
            "same_superclass": pa.array([None] * (n + 1), pa.bool_()),
        }
    )


def _root(tmp_path: Path, pairs: pa.Table) -> Path:
    """An output root with a run record whose confusion stage holds ``pairs``."""
    out = tmp_path / "out"
    folder = out / "synthetic" / "confusion" / "abc123"
    folder.mkdir(parents=True)
    pq.write_table(pairs, folder / "confusion_pairs.parquet")
    table = {"confusion_pairs.parquet": str(folder / "confusion_pairs.parquet")}
    entry = {"url": str(folder), "key": "abc123", "tables": table, "rows": {}}
    record = {"name": "run-1", "finished": "", "params": {}, "stages": {"confusion": entry}}
    (out / "runs").mkdir()
    (out / "runs" / "run-1.json").write_text(json.dumps(record))
    (out / "latest.json").write_text(json.dumps(record))
    return out


def test_q_values_in_scientific_notation_and_nulls_as_a_dash() -> None:
    text = format_table(_pairs(2))
    lines = text.splitlines()
    assert "1.00e-08" in lines[1] and "1.00e-09" in lines[2]
    assert "0.0000" not in text and "None" not in text
    assert lines[1].rstrip().endswith("-")  # same_superclass unknown


def test_top_all_shows_every_flagged_pair(tmp_path: Path, capsys) -> None:
    out = _root(tmp_path, _pairs(12))
    assert main(["inspect", str(out), "--top", "all", "--no-schema"]) == 0
    shown = capsys.readouterr().out.split("Top confusion pairs")[1].split("Reports")[0]
    assert sum(line.strip().startswith("t") for line in shown.splitlines()) == 12
    assert top_confusion(_pairs(12), None).num_rows == 12


@pytest.mark.parametrize("top", ["0", "-1", "x"])
def test_top_below_one_is_refused(tmp_path: Path, top: str, capsys) -> None:
    out = _root(tmp_path, _pairs(3))
    with pytest.raises(SystemExit) as exit_:
        main(["inspect", str(out), "--top", top])
    assert exit_.value.code == 2
    assert "pass a count of 1 or more, or 'all'" in capsys.readouterr().err


@pytest.mark.parametrize("inside", ["synthetic", "synthetic/confusion"])
def test_a_folder_inside_an_output_root_names_the_root(tmp_path: Path, inside, capsys) -> None:
    out = _root(tmp_path, _pairs(1))
    assert main(["inspect", str(out / inside)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"pass the root: overlap inspect {out}" in err


def test_analyze_predictions_prints_the_top_pairs(tmp_path: Path, capsys) -> None:
    rng = np.random.default_rng(0)
    y_true = np.repeat(np.arange(8), 50)
    y_pred = y_true.copy()
    y_pred[(y_true == 1) & (rng.random(400) < 0.5)] = 2  # class 1 often called 2
    csv = tmp_path / "p.csv"
    csv.write_text(
        "y_true,y_pred\n" + "".join(f"{t},{p}\n" for t, p in zip(y_true, y_pred, strict=True))
    )
    assert main(["analyze-predictions", str(csv), "--out", str(tmp_path / "o")]) == 0
    text = capsys.readouterr().out
    table = text.split("Top confusion pairs")[1].splitlines()
    assert "MisRate" in table[1] and "q_value" in table[1]
    assert table[2].split()[:2] == ["1", "2"] and "e-" in table[2]  # the pair, its q-value
