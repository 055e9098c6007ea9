"""A stage's key does not depend on how ``--out`` is spelled: one location, one key."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.config import RunConfig
from tasks.core.params import StageParams
from tasks.images import STAGE as IMAGES


def folder(out: str) -> str:
    params = RunConfig(dataset="synthetic", out=out).params.images
    return IMAGES.location(params=params).url


def test_every_spelling_of_a_local_root_gives_one_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    spellings = [
        "outputs/demo",  # the README's demo
        "./outputs/demo",  # the synthetic deployment
        "outputs/demo/",
        "./outputs/./demo",
        "outputs/x/../demo",
        str(tmp_path / "outputs" / "demo"),
        f"file://{tmp_path}/outputs/demo",
    ]
    folders = {folder(out) for out in spellings}
    assert len(folders) == 1  # one key, one folder
    assert folders.pop().startswith(f"{tmp_path}/outputs/demo/synthetic/images/")
    assert RunConfig(dataset="synthetic").out == str(tmp_path / "outputs")  # the default too


def test_a_bucket_url_loses_only_its_trailing_slash() -> None:
    urls = {RunConfig(dataset="synthetic", out=u).out for u in ("s3://b/p", "s3://b/p/")}
    assert urls == {"s3://b/p"}
    assert StageParams(out="s3://b/p/").out == "s3://b/p"


def test_other_roots_still_get_other_keys(tmp_path: Path) -> None:
    assert folder(str(tmp_path / "a")) != folder(str(tmp_path / "b"))
