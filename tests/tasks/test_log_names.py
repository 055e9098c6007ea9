"""Names are data in log lines too: a class name cannot fake a log line; hidden class folders
are reported, not dropped without a word."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from prefect.logging import disable_run_logger

from flows.config import RunConfig
from tasks.images import images_task
from tasks.overlap import _log_summary

FAKE = "cat\n12:00:00.000 | ERROR   | Flow run 'x' - Crashed\x1b[2K"


def _folder(root: Path, classes: tuple[str, ...]) -> Path:
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(np.full((8, 8, 3), 50 * c + i, np.uint8)).save(root / name / f"{i}.png")
    return root


def test_flagged_class_names_are_escaped_in_the_overlap_log(caplog) -> None:
    summary = {
        "rule": "sigma", "k": 2.0, "mu": 0.1, "sigma": 0.2, "n_pairs": 1, "n_classes": 2,
        "flagged_class_names": [FAKE, "dog"],
    }  # fmt: skip
    logger = logging.getLogger("test-overlap-log")
    with caplog.at_level(logging.INFO, logger="test-overlap-log"):
        _log_summary(logger, summary, 5)
    message = caplog.records[-1].getMessage()
    assert "\n" not in message and "\x1b" not in message
    assert "cat\\n12:00:00.000 | ERROR" in message and "\\x1b[2K" in message


@pytest.mark.usefixtures("prefect_server")
def test_an_unreadable_file_in_a_hostile_class_folder_is_one_log_line(
    tmp_path: Path, caplog
) -> None:
    root = _folder(tmp_path / "folder", ("dog", FAKE.replace("\x1b", "")))
    (root / FAKE.replace("\x1b", "") / "broken.png").write_bytes(b"not an image")
    config = RunConfig(dataset=f"imagefolder:{root}", out=str(tmp_path / "out"))
    with disable_run_logger(), caplog.at_level(logging.WARNING, logger="tasks.sources"):
        manifest = images_task.fn(config.params.images)
    assert len(manifest.info["skipped_files"]) == 1
    warned = [r.getMessage() for r in caplog.records if "broken.png" in r.getMessage()]
    assert warned and all("\n" not in line for line in warned)


@pytest.mark.usefixtures("prefect_server")
def test_hidden_class_folders_are_reported(tmp_path: Path) -> None:
    root = _folder(tmp_path / "folder", ("cat", "dog", ".cache"))
    config = RunConfig(dataset=f"imagefolder:{root}", out=str(tmp_path / "out"))
    with disable_run_logger():
        manifest = images_task.fn(config.params.images)
    assert manifest.info["class_names"] == ["cat", "dog"]
    assert manifest.info["skipped_folders"] == [".cache"]
