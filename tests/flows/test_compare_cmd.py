"""The compare and reference commands refuse bad calls with one line and exit status 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.cli import main


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["compare", "{tmp}"], "compare needs at least two runs"),
        (["compare", "{tmp}/nowhere", "{tmp}"], "no output root at"),
        (["compare", "{tmp}", "{tmp}"], "holds no finished run"),
        (["compare", "{tmp}/runs/x.json", "{tmp}"], "no run record at"),
        (["compare", "{tmp}", "{tmp}", "--names", "a"], "--names gives 1 name(s) for 2 runs"),
        (["reference", "{tmp}/nowhere"], "no output root at"),
    ],
)
def test_bad_calls_are_one_line_with_exit_status_2(
    tmp_path: Path, capsys, argv: list[str], said: str
) -> None:
    args = [a.format(tmp=tmp_path) for a in argv]
    out = ["--out", str(tmp_path / "compare")] if argv[0] == "compare" else []
    assert main([*args, *out]) == 2
    err = capsys.readouterr().err
    assert err.startswith("overlap: error: ") and err.count("\n") == 1
    assert said in err
