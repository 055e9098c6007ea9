"""Bad inputs the other test files do not cover yet: each refused in one line, exit code non-zero.

test_cli.py covers unknown dataset and model, missing and one-class folders, an unwritable --out,
foreign and missing weights and four out-of-range values; test_images.py,
test_class_similarity.py and test_analyze_predictions.py check the same refusals at function
level. Decision for unreadable or non-image files in an image folder: skipped with a warning (and
listed in the images manifest); a class left without any readable image is refused.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import timm
from PIL import Image
from prefect import flow
from safetensors.torch import save_file

from flows.cli import main
from flows.config import RunConfig
from storage.fs import Location
from storage.manifest import StageManifest
from storage.schemas.images import embeddings_schema
from storage.tables import shard_name, write_parquet
from tasks.class_similarity import class_similarity_task
from tasks.core.stage import Stage
from tasks.images import images_task
from tests.support.builders import dataset_stage, ovl_clusters, ovl_embeddings_table

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


def _truncated_safetensors(p: Path) -> list[str]:
    model = timm.create_model("vit_tiny_patch16_224", num_classes=0, img_size=64)
    save_file(model.state_dict(), p / "w.safetensors")
    data = (p / "w.safetensors").read_bytes()
    (p / "w.safetensors").write_bytes(data[: len(data) // 2])
    return ["--dataset", "synthetic", "--weights", str(p / "w.safetensors")]


def _text_weights(suffix: str) -> Callable[[Path], list[str]]:
    def flags(p: Path) -> list[str]:
        (p / f"w{suffix}").write_text("these are not weights\n")
        return ["--dataset", "synthetic", "--weights", str(p / f"w{suffix}")]

    return flags


def _symlink_loop(p: Path) -> list[str]:
    _images(p / "loop", {"cat": 2, "dog": 2})
    (p / "loop" / "cat" / "x.png").symlink_to(p / "loop" / "cat" / "x.png")
    return ["--dataset", f"imagefolder:{p / 'loop'}"]


def _file_as_folder(p: Path) -> list[str]:
    (p / "images.zip").write_bytes(b"PK")
    return ["--dataset", f"imagefolder:{p / 'images.zip'}"]


def _more_overlap_classes_than_folders(p: Path) -> list[str]:
    folder = _images(p / "three", {"a": 2, "b": 2, "c": 2})
    return ["--dataset", folder, "--overlap-rule", "classes", "--overlap-classes", "4"]


# (flags or a function of tmp_path giving them, the message the single error line must contain)
REFUSED_BEFORE_ANY_WORK: list[tuple[list[str] | Callable[[Path], list[str]], str]] = [
    (_truncated_safetensors, "w.safetensors is not a readable checkpoint"),
    (_text_weights(".pth"), "w.pth is not a readable checkpoint"),
    (_text_weights(".txt"), "w.txt is not a readable checkpoint"),
    (_symlink_loop, "x.png (Too many levels of symbolic links); remove or fix that entry"),
    (_file_as_folder, "images.zip is a file; pass imagefolder:PATH of a folder"),
    (["--out", ""], "--out: the output location is empty"),
    (["--download-url", "http://"], "--download-url: 'http://' names no host"),
    (_empty_folder, "has 0 class sub-folder(s); overlap needs at least 2"),
    (_folders_without_images, "holds no images"),
    (["--test-fraction", "0"], "--test-fraction: Input should be greater than 0"),
    (["--confusion-k", "60"], "--confusion-k: Input should be less than or equal to 50"),
    (["--overlap-top-k", "0"], "--overlap-top-k: Input should be greater than or equal to 1"),
    (["--image-size", "8"], "--image-size: Input should be greater than or equal to 16"),
    (["--shard-size", "0"], "--shard-size: Input should be greater than or equal to 1"),
    (
        ["--dataset", "synthetic", "--overlap-rule", "classes", "--overlap-classes", "13"],
        "--overlap-classes 13 is more than the 12 classes of synthetic; pass --overlap-classes 2..",
    ),
    (_more_overlap_classes_than_folders, "more than the 3 classes of imagefolder:"),
]


@pytest.mark.parametrize(("flags", "message"), REFUSED_BEFORE_ANY_WORK)
def test_run_refuses_before_any_work(tmp_path: Path, capsys, flags, message: str) -> None:
    argv = ["run", "--out", str(tmp_path / "out"), *(flags(tmp_path) if callable(flags) else flags)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("overlap: error: ") and message in err, err
    assert not any(p.is_file() for p in (tmp_path / "out").rglob("*"))  # no output written


def test_a_bucket_without_credentials_is_refused_before_any_work(
    tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    moto_server = pytest.importorskip("moto.server", reason="moto[server] is not installed")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://{host}:{port}")
        monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
        monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
        monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
        code = main(["run", "--dataset", "synthetic", "--out", "s3://bucket/runs"])
    finally:
        server.stop()
        # s3fs caches instances by their arguments: a credential-less one must not outlive this
        fsspec.get_filesystem_class("s3").clear_instance_cache()
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and "cannot write to output location 's3://bucket/runs'" in err


def _predictions(p: Path, content: str) -> Path:
    (p / "names.txt").write_text("cat\ndog\nfox\n")
    (p / "names.tsv").write_text("label\tclass_name\n0\tcat\nx\tdog\n")
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
    ("y_true,y_pred\n0,1\nnan,1\n", [], "y_true has 1 empty values"),
    ("y_true,y_pred\n0,300000\n", [], "label 300000 without a class list would mean 300001"),
    (
        "y_true,y_pred\n0,1\n",
        ["--class-names", "{tmp}/names.tsv"],
        "names.tsv, line 3, column 1 (label): 'x' is not an integer label",
    ),
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
    return class_similarity_task(images, embeddings, config.params.class_similarity)


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
    return images_task(config.params.images)


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


@pytest.mark.slow
def test_a_bad_parquet_file_is_refused_with_exit_2_every_time(tmp_path: Path) -> None:
    """Arrow's reader threads once outlived the error: 'terminate called', exit 134, 4 in 14."""
    bad = tmp_path / "p.parquet"
    pq.write_table(pa.table({"y_true": [0.0, float("nan")], "y_pred": [0, 1]}), bad)
    command = [sys.executable, "-m", "flows.cli", "analyze-predictions", str(bad), "--out"]
    codes, errs = [], set()
    for attempt in range(20):
        done = subprocess.run(
            [*command, str(tmp_path / f"o{attempt}")], capture_output=True, text=True, timeout=300
        )
        codes.append(done.returncode)
        errs.add(done.stderr)
    assert codes == [2] * 20
    assert errs == {"overlap: error: y_true has 1 NaN value(s); every row needs a label\n"}


@pytest.mark.usefixtures("prefect_server")
def test_a_class_with_a_single_image_says_what_to_do(tmp_path: Path, capsys) -> None:
    dataset = _images(tmp_path / "images", {"cat": 12, "dog": 12, "owl": 1})
    argv = ["run", "--dataset", dataset, "--out", str(tmp_path / "out"), "--no-pretrained"]
    argv += ["--model", "vit_tiny_patch16_224", "--image-size", "32", "--overlap-rule", "threshold"]
    argv += ["--overlap-threshold", "-1", "--epochs", "1"]
    assert main(argv) == 1
    last = capsys.readouterr().err.rstrip("\n").splitlines()[-1]
    assert last.startswith("overlap: error: cannot hold out") and "least populated" not in last
    assert "add images to the small classes, use an overlap rule that leaves them out" in last


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs (root only): a real full disk."""
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1M", "tmpfs", str(mount)], capture_output=True
    )
    if made.returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


@pytest.mark.usefixtures("prefect_server")
def test_a_full_disk_ends_in_one_line(small_disk: Path, capsys) -> None:
    out = small_disk / "out"
    assert main(["run", "--dataset", "synthetic", "--out", str(out)]) == 1
    last = capsys.readouterr().err.rstrip("\n").splitlines()[-1]
    assert last.startswith(f"overlap: error: no space left on device writing {out}")
    assert "MiB free on that disk" in last and "choose another --out" in last
    assert not list(out.rglob("*.parquet")) and not list(out.rglob("_manifest.json"))


def _closed_port() -> int:
    """A loopback port with nothing listening (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_unreachable_weights_fail_fast_after_one_probe(
    tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import constants

    endpoint = f"http://127.0.0.1:{_closed_port()}"
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))  # nothing cached
    argv = ["run", "--dataset", "synthetic", "--pretrained", "--out", str(tmp_path / "out")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(
        "overlap: error: could not download pretrained weights for vit_tiny_patch16_224 "
        f"({endpoint} unreachable: [Errno 111] Connection refused); no network?"
    )


@pytest.mark.usefixtures("prefect_server")
def test_no_network_ends_in_one_line_after_the_retries(tmp_path: Path, capfd) -> None:
    url = f"http://127.0.0.1:{_closed_port()}/cifar-100-python.tar.gz"
    argv = ["run", "--no-pretrained", "--download-url", url, "--out", str(tmp_path / "out")]
    argv += ["--data-dir", str(tmp_path / "data")]
    assert main(argv) == 1
    out, err = capfd.readouterr()
    lines = err.rstrip("\n").splitlines()
    assert lines[-1] == (
        f"overlap: error: could not download cifar100 from {url} ([Errno 111] Connection "
        "refused); check the network, use --download-url MIRROR, or put cifar-100-python/ in "
        "--data-dir"
    )
    # Nothing else but Prefect's log lines ("12:00:00.000 | LEVEL | ...").
    assert "Traceback" not in err and "Traceback" not in out
    others = [line for line in lines[:-1] if not re.match(r"\d\d:\d\d:\d\d\.\d+ \| ", line)]
    assert others == [], others
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == []
