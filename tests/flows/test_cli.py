"""The command line: every config field has a flag, and each bad input is one clear line."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from flows.cli import build_parser, main
from flows.config import RunConfig
from tests.support.paths import REPO


def test_run_help_lists_a_flag_for_every_config_field(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = capsys.readouterr().out
    for name in RunConfig.model_fields:
        assert "--" + name.replace("_", "-") in text
    assert "--no-pretrained" in text


@pytest.mark.parametrize(
    "command", [[], ["run"], ["analyze-predictions"], ["inspect"], ["verify"], ["compare"]]
)
def test_help_is_plain_text_without_rst_markup(command: list[str], capsys) -> None:
    with pytest.raises(SystemExit):
        main([*command, "--help"])
    text = capsys.readouterr().out
    assert "``" not in text and "usage: overlap" in text


def test_flags_map_onto_the_config_model() -> None:
    args = build_parser().parse_args(
        [
            "run",
            "--dataset",
            "synthetic",
            "--no-pretrained",
            "--batch-size",
            "7",
            "--overlap-k",
            "1.5",
        ]
    )
    values = {k: v for k, v in vars(args).items() if k != "command"}
    config = RunConfig(**values)
    assert (config.batch_size, config.overlap_k, config.pretrained) == (7, 1.5, False)
    assert config.model == "vit_tiny_patch16_224"  # the offline demo's model


def _one_class_folder(tmp_path: Path) -> str:
    folder = tmp_path / "one" / "cat"
    folder.mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(folder / "a.png")
    return f"imagefolder:{tmp_path / 'one'}"


def _foreign_weights(tmp_path: Path) -> str:
    path = tmp_path / "resnet.pth"
    torch.save(timm.create_model("resnet18", num_classes=0).state_dict(), path)
    return str(path)


BAD_INPUTS = [
    (["--dataset", "imagenet"], "--dataset: unknown dataset 'imagenet'"),
    (
        ["--model", "vit_smal_patch16_224"],
        "unknown timm model 'vit_smal_patch16_224'. Did you mean",
    ),
    (["--dataset", "imagefolder:/no/such/folder"], "image folder /no/such/folder does not exist"),
    ([lambda p: ["--dataset", _one_class_folder(p)]], "has 1 class sub-folder"),
    ([lambda p: ["--out", str(p / "file" / "out")]], "cannot write to output location"),
    (
        [lambda p: ["--dataset", "synthetic", "--weights", _foreign_weights(p)]],
        "does not fit model vit_tiny_patch16_224",
    ),
    (["--weights", "/no/such.pth"], "weights file /no/such.pth does not exist"),
    (["--download-url", "not-a-url"], "--download-url: 'not-a-url' is not a URL"),
    (["--weights", "/no/such.pth", "--no-pretrained"], "contradict each other"),
    (["--overlap-k", "-1"], "--overlap-k: Input should be greater than or equal to 0"),
    (
        ["--overlap-threshold", "1.5"],
        "--overlap-threshold: Input should be less than or equal to 1",
    ),
    (["--val-fraction", "1"], "--val-fraction: Input should be less than 1"),
    (["--confusion-alpha", "0"], "--confusion-alpha: Input should be greater than 0"),
    (["--device", "cuda"], None),  # refused only where no GPU is visible
]


@pytest.mark.parametrize(("flags", "message"), BAD_INPUTS)
def test_bad_input_is_one_line_and_a_nonzero_exit(tmp_path: Path, capsys, flags, message) -> None:
    (tmp_path / "file").write_text("a file, not a folder")
    argv = ["run", "--out", str(tmp_path / "out")]
    for flag in flags:
        argv += flag(tmp_path) if callable(flag) else [flag]
    if message is None:
        if torch.cuda.is_available():
            pytest.skip("a GPU is visible")
        message = "no CUDA device is visible; use --device cpu"
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("overlap: error: ")
    assert message in err
    assert not any(p.is_file() for p in (tmp_path / "out").rglob("*"))  # no output written


def test_analyze_predictions_bad_file_is_one_line(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "p.csv"
    bad.write_text("y_true,other\n1,2\n")
    assert main(["analyze-predictions", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("overlap: error: ") and err.count("\n") == 1 and "y_pred" in err


def test_readme_documents_every_flag() -> None:
    readme = (REPO / "README.md").read_text()
    missing = [n for n in RunConfig.model_fields if "--" + n.replace("_", "-") not in readme]
    assert missing == []


def _record_with(error: Exception) -> logging.LogRecord:
    try:
        raise error
    except Exception:
        return logging.LogRecord(
            "prefect", logging.ERROR, __file__, 1, "failed", None, sys.exc_info()
        )


def test_prefect_logs_no_traceback_for_our_own_errors_but_keep_it_for_bugs() -> None:
    from flows.cli import _QuietOwnErrors
    from tasks.sources import DatasetError

    ours, bug = _record_with(DatasetError("no images")), _record_with(ValueError("a bug"))
    assert _QuietOwnErrors().filter(ours) and ours.exc_info is None
    assert _QuietOwnErrors().filter(bug) and bug.exc_info is not None


def test_preflight_runs_once_per_configuration(tmp_path: Path, monkeypatch) -> None:
    """The CLI checks before the flow starts and the flow checks again: the second is free."""
    from flows import preflight
    from tasks.models import models

    built: list[str] = []
    monkeypatch.setattr(models, "build_model", lambda name, **_: built.append(name))
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"")
    config = RunConfig(dataset="synthetic", out=str(tmp_path / "out"), weights=weights)
    preflight.check_run(config)
    preflight.check_run(config)  # as the flow does after the CLI: the model is not built again
    assert built == [config.model]
    preflight.check_run(config.model_copy(update={"out": str(tmp_path / "other")}))
    assert built == [config.model] * 2  # other parameters: checked again
