"""Bad inputs the other test files do not cover yet: each refused in one line, exit code non-zero.

test_cli.py covers unknown dataset and model, missing and one-class folders, an unwritable --out,
foreign and missing weights and four out-of-range values; test_images.py,
test_class_similarity.py and test_analyze_predictions.py check the same refusals at function
level. Decision for unreadable or non-image files in an image folder: skipped with a warning (and
listed in the images manifest); a class left without any readable image is refused.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image
from prefect import flow

from flows.cli import main
from flows.config import RunConfig
from storage.fs import Location
from storage.manifest import StageManifest
from storage.schemas.images import embeddings_schema
from storage.tables import shard_name, write_parquet
from tasks.class_similarity import class_similarity_task
from tasks.core.stage import Stage
from tasks.images import images_task
from tests.builders import dataset_stage, ovl_clusters, ovl_embeddings_table

NAMES = ["a", "b", "c"]


def _images(root: Path, classes: dict[str, int], broken: dict[str, int] | None = None) -> str:
    """An image folder with ``classes`` (name -> good PNGs) and ``broken`` non-image files."""
    for name, count in classes.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            Image.fromarray(np.full((8, 8, 3), i, np.uint8)).save(root / name / f"{i}.png")
    for name, count in (broken or {}).items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            (root / name / f"broken{i}.jpg").write_bytes(b"not an image")
    return f"imagefolder:{root}"


def _empty_folder(p: Path) -> list[str]:
    (p / "empty").mkdir()
    return ["--dataset", f"imagefolder:{p / 'empty'}"]


def _folders_without_images(p: Path) -> list[str]:
    for name in ("cat", "dog"):
        (p / "noimg" / name).mkdir(parents=True)
        (p / "noimg" / name / "notes.txt").write_text("not an image")
    return ["--dataset", f"imagefolder:{p / 'noimg'}"]


# (flags or a function of tmp_path giving them, the message the single error line must contain)
REFUSED_BEFORE_ANY_WORK: list[tuple[list[str] | Callable[[Path], list[str]], str]] = [
    (_empty_folder, "has 0 class sub-folder(s); overlap needs at least 2"),
    (_folders_without_images, "holds no images"),
    (["--test-fraction", "0"], "--test-fraction: Input should be greater than 0"),
    (["--confusion-k", "60"], "--confusion-k: Input should be less than or equal to 50"),
    (["--overlap-top-k", "0"], "--overlap-top-k: Input should be greater than or equal to 1"),
    (["--image-size", "8"], "--image-size: Input should be greater than or equal to 16"),
    (["--shard-size", "0"], "--shard-size: Input should be greater than or equal to 1"),
]


@pytest.mark.parametrize(("flags", "message"), REFUSED_BEFORE_ANY_WORK)
def test_run_refuses_before_any_work(tmp_path: Path, capsys, flags, message: str) -> None:
    argv = ["run", "--out", str(tmp_path / "out"), *(flags(tmp_path) if callable(flags) else flags)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("overlap: error: ") and message in err
    assert not any(p.is_file() for p in (tmp_path / "out").rglob("*"))  # no output written


def _predictions(p: Path, content: str) -> Path:
    (p / "names.txt").write_text("cat\ndog\nfox\n")
    (p / "p.csv").write_text(content)
    return p / "p.csv"


REFUSED_PREDICTIONS: list[tuple[str, list[str], str]] = [
    (
        "y_true,y_pred\n0,1\n2,5\n",
        ["--class-names", "{tmp}/names.txt"],
        "y_pred has labels outside the class list (0..2): 5",
    ),
    (
        "y_true,y_pred\ncat,dog\nfox,wolf\n",
        ["--class-names", "{tmp}/names.txt"],
        "class names not in the class list: wolf",
    ),
    ("y_true,y_pred\n-1,0\n", [], "y_true has labels outside the class list (0..0): -1"),
    ("", [], "is empty"),
    ("y_true,pred\n0,1\n", [], "predictions lack column(s) y_pred"),
]


@pytest.mark.parametrize(("content", "flags", "message"), REFUSED_PREDICTIONS)
def test_analyze_predictions_refuses_in_one_line(
    tmp_path: Path, capsys, content: str, flags: list[str], message: str
) -> None:
    path = _predictions(tmp_path, content)
    extra = [f.format(tmp=tmp_path) for f in flags]
    assert main(["analyze-predictions", str(path), "--out", str(tmp_path / "o"), *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("overlap: error: ") and message in err
    assert not (tmp_path / "o" / "confusion_pairs.parquet").exists()


def test_analyze_predictions_refuses_an_unwritable_out(tmp_path: Path, capsys) -> None:
    path = _predictions(tmp_path, "y_true,y_pred\n0,1\n")
    (tmp_path / "file").write_text("a file, not a folder")
    assert main(["analyze-predictions", str(path), "--out", str(tmp_path / "file" / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot write to output location" in err


# --- refused or accepted inside the flow (they need the data): through the Prefect engine -----


@flow(name="similarity only")
def similarity_only(embeddings: StageManifest, config: RunConfig) -> StageManifest:
    """The class similarity task, as the flow calls it."""
    images = dataset_stage(Path(config.out).parent / "dataset", NAMES)
    return class_similarity_task(images, embeddings, config)


def _embeddings(root: Path, parts: list[pa.Table]) -> StageManifest:
    location = Location(str(root / "embeddings"))
    rows = {}
    for index, part in enumerate(parts):
        dim = part.schema.field("embedding").type.list_size
        rows[shard_name(index)] = write_parquet(
            location, shard_name(index), part, embeddings_schema(dim)
        )
    info = {"dim": 8, "class_names": NAMES, "has_test_split": False}
    return Stage("embeddings").finish(location, rows, {}, info)


def _nan_shards() -> list[pa.Table]:
    x, labels = ovl_clusters(3, 10, dim=8)
    x[[4, 17]] = np.nan
    return [ovl_embeddings_table(x, labels, NAMES)]


def _mixed_dimension_shards() -> list[pa.Table]:
    x8, labels = ovl_clusters(3, 10, dim=8)
    x4, _ = ovl_clusters(3, 10, dim=4)
    return [ovl_embeddings_table(x8, labels, NAMES), ovl_embeddings_table(x4, labels, NAMES)]


@pytest.mark.usefixtures("prefect_server")
@pytest.mark.parametrize(
    ("shards", "message"),
    [
        (
            _nan_shards,
            "2 embedding(s) contain NaN or inf in shard 0 (sample_id [4, 17]); re-run extraction "
            "for those images (at fp32 with --precision fp32 if bf16 overflowed)",
        ),
        (
            _mixed_dimension_shards,
            "shard 1 has embeddings of dimension 4, expected 8: shards from different models are "
            "mixed; re-run extraction into a clean folder",
        ),
    ],
)
def test_bad_embeddings_fail_the_run_in_one_line(tmp_path: Path, shards, message: str) -> None:
    config = RunConfig(dataset="synthetic", out=str(tmp_path / "out"))
    state = similarity_only(_embeddings(tmp_path, shards()), config, return_state=True)
    assert state.is_failed()
    error = state.result(raise_on_failure=False)
    assert str(error) == message


@flow(name="load only")
def load_only(config: RunConfig) -> StageManifest:
    """The images task, as the flow calls it."""
    return images_task(config)


@pytest.mark.usefixtures("prefect_server")
def test_unreadable_files_are_skipped_with_a_warning_and_recorded(tmp_path: Path, caplog) -> None:
    dataset = _images(tmp_path / "images", {"cat": 2, "dog": 2}, broken={"dog": 1})
    config = RunConfig(dataset=dataset, out=str(tmp_path / "out"))
    manifest = load_only(config)
    assert manifest.info["rows"] == 4
    broken = tmp_path / "images" / "dog" / "broken0.jpg"
    assert manifest.info["skipped_files"] == [str(broken)]
    assert f"skipping unreadable image {broken}" in caplog.text


@pytest.mark.usefixtures("prefect_server")
def test_a_class_without_readable_images_fails_the_run_in_one_line(tmp_path: Path, capsys) -> None:
    dataset = _images(tmp_path / "images", {"cat": 2}, broken={"dog": 2})
    code = main(["run", "--dataset", dataset, "--out", str(tmp_path / "out"), "--no-pretrained"])
    assert code == 1
    last = capsys.readouterr().err.rstrip("\n").splitlines()[-1]
    assert last == (
        f"overlap: error: {dataset}: classes without readable images: dog; "
        "add images or remove those folders"
    )
    assert not any(p.is_file() for p in (tmp_path / "out").rglob("*"))  # no output written
