"""Report stage: report.md / report.html from hand-built stage tables, artifacts, predictions."""

from __future__ import annotations

import asyncio
import io
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from markdown_it import MarkdownIt
from PIL import Image
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

from flows.config import RunConfig
from storage import registry
from storage.fs import Location
from storage.manifest import StageManifest
from storage.schemas import class_similarity as similarity_schemas
from storage.schemas import classifier as clf_schemas
from storage.schemas import overlap as schemas
from storage.schemas import subset as subset_schemas
from storage.schemas.images import POINTER, embeddings_schema
from storage.tables import shard_name, table_name, write_parquet
from tasks import evaluate
from tasks.algorithms import centroids as similarity
from tasks.algorithms import confusion_pairs as confusion
from tasks.algorithms.classification import confusion_counts
from tasks.algorithms.overlap_rules import flag_pairs, overlap_classes_table, overlap_pairs_table
from tasks.analyze_predictions import analyze_predictions
from tasks.core.results import RunStages
from tasks.core.stage import Stage
from tasks.report import publish_report_task, report_task
from tasks.reporting import report_artifacts
from tasks.reporting.report_predictions import write_predictions_report
from tasks.reporting.report_render import (
    REPORT_HTML,
    REPORT_MD,
    Figure,
    Heading,
    Table,
    Text,
    to_html,
    to_markdown,
)
from tests.support.builders import REAL, write_real_predictions
from tests.support.pictures import png_image, tiny_png

NAMES = ["apple", "pear", "cat", "dog", "car", "bus"]
PAIRS = ((0, 1), (2, 3))  # planted look-alikes; car and bus stay apart
PER_CLASS, TEST_PER_CLASS, DIM = 12, 6, 8
KEYS = ["class-overlap-summary", "overlap-pairs", "confusion-pairs", "overlap-report"]


def _finish(root: Path, name: str, tables: dict, info: dict, params: dict | None = None):
    """Write the given tables (name -> (table, schema)) and a manifest for a stage ``name``."""
    location = Location(str(root / name))
    rows = {file: write_parquet(location, file, t, schema) for file, (t, schema) in tables.items()}
    return Stage(name).finish(location, rows, params or {}, info)


def report_stages(root: Path) -> RunStages:
    """Every stage the report reads, with tiny real-format tables: 6 classes, 4 overlapping."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(len(NAMES), DIM))
    for a, b in PAIRS:
        centres[b] = centres[a] + 0.1 * rng.normal(size=DIM)
    labels = np.repeat(np.arange(len(NAMES)), PER_CLASS)
    x = (centres[labels] + 0.3 * rng.normal(size=(len(labels), DIM))).astype(np.float32)
    ids = np.arange(len(labels), dtype=np.int64) + 100
    split = np.tile(["train"] * (PER_CLASS - TEST_PER_CLASS) + ["test"] * TEST_PER_CLASS, 6)
    info = {"class_names": NAMES, "coarse_labels": [0, 0, 1, 1, 2, 2], "has_test_split": True}
    images = Stage("images").finish(
        Location(str(root / "images")), {}, {"dataset": "handmade"}, {**info, "rows": len(ids)}
    )
    embed_table = pa.table(
        {
            "sample_id": ids,
            "split": split,
            "label": labels.astype(np.int32),
            "class_name": [NAMES[i] for i in labels],
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), DIM),
        }
    )
    embeddings = _finish(
        root,
        "embeddings",
        {shard_name(0): (embed_table, embeddings_schema(DIM))},
        {**info, "model": "tiny", "weights_source": "random-init", "dim": DIM},
        {"pretrained": False},
    )
    centroids, _ = similarity.stream_centroids([embed_table], NAMES)
    cosine = similarity.cosine_matrix(centroids)
    sim = _finish(
        root,
        "similarity",
        {
            table_name("class_similarity"): (
                similarity.similarity_table(cosine, NAMES),
                similarity_schemas.CLASS_SIMILARITY,
            )
        },
        {**info},
    )
    cos_nan = cosine.astype(float)
    np.fill_diagonal(cos_nan, np.nan)
    flagged = flag_pairs(
        cos_nan, similarity.neighbour_ranks(cosine), rule="threshold", threshold=0.95
    )
    original = sorted({int(v) for v in flagged.pairs.ravel()})
    assert original == [0, 1, 2, 3]
    overlap = _finish(
        root,
        "overlap",
        {
            table_name("overlap_pairs"): (
                overlap_pairs_table(flagged, cos_nan, similarity.neighbour_ranks(cosine), NAMES),
                schemas.OVERLAP_PAIRS,
            ),
            table_name("overlap_classes"): (
                overlap_classes_table(flagged.pairs, cos_nan, NAMES),
                schemas.OVERLAP_CLASSES,
            ),
        },
        {
            "rule": "threshold",
            "threshold": 0.95,
            "mu": flagged.mu,
            "sigma": flagged.sigma,
            "n_pairs": 2,
        },
    )
    keep = np.isin(labels, original)
    sub_names = [NAMES[i] for i in original]
    png = [tiny_png(tuple(int(v) for v in rng.integers(0, 255, 3))) for _ in range(keep.sum())]
    subset_table = pa.table(
        {
            "sample_id": ids[keep],
            "split": split[keep],
            "label": labels[keep].astype(np.int32),
            "class_name": [NAMES[i] for i in labels[keep]],
            "new_label": labels[keep].astype(np.int32),  # original 0..3 are new 0..3 here
            "coarse_label": pa.nulls(keep.sum(), pa.int32()),
            "coarse_name": pa.nulls(keep.sum(), pa.string()),
            "image": pa.array(
                [{"bytes": b, "path": None} for b in png], subset_schemas.SUBSET.field("image").type
            ),
            **{f.name: pa.nulls(keep.sum(), f.type) for f in POINTER},
        }
    )
    splits_table = pa.table(
        {
            "sample_id": ids[keep],
            "split": split[keep],
            "label": labels[keep].astype(np.int32),
            "class_name": [NAMES[i] for i in labels[keep]],
            "original_label": labels[keep].astype(np.int32),
        }
    )
    subset = _finish(
        root,
        "subset",
        {
            table_name("subset"): (subset_table, subset_schemas.SUBSET),
            table_name("splits"): (splits_table, subset_schemas.SPLITS),
        },
        {"class_names": sub_names, "original_labels": original, "split_counts": {"test": 24}},
    )
    # Predictions: apple and pear swap 3 of 6 test images each way; everything else right.
    test = keep & (split == "test")
    y_true = labels[test]
    y_pred = y_true.copy()
    for a, b in ((0, 1), (1, 0)):
        y_pred[np.flatnonzero(y_true == a)[:3]] = b
    proba = np.eye(4, dtype=np.float32)[y_pred]
    eval_location = Location(str(root / "evaluation"))
    files = {
        table_name("predictions"): write_parquet(
            eval_location,
            table_name("predictions"),
            evaluate.predictions_table(ids[test], y_true, proba, sub_names),
            clf_schemas.PREDICTIONS,
        )
    }
    tables, other_files = evaluate.evaluation_output(y_true, y_pred, sub_names)
    for name, table in tables.items():
        spec = registry.table(name)
        files[spec.file_name] = spec.write(eval_location, table)
    for name, data in other_files.items():
        eval_location.write_bytes(name, data)
        files[name] = None
    evaluation = Stage("evaluate").finish(
        eval_location, files, {}, {"accuracy": float((y_true == y_pred).mean())}
    )
    pairs = confusion.confusion_pairs(
        confusion_counts(y_true, y_pred, 4), sub_names, k=1.0, alpha=0.5, rule="sigma"
    )
    conf_location = Location(str(root / "confusion"))
    conf = Stage("confusion").finish(
        conf_location,
        {"confusion_pairs.parquet": registry.table("confusion_pairs").write(conf_location, pairs)},
        {"rule": "sigma", "k": 1.0},
        {"flagged": confusion.pair_summary(pairs)["flagged"], "threshold": 0.1},
    )
    classifier = Stage("classifier").finish(Location(str(root / "classifier")), {}, {}, {})
    return RunStages(
        images=images,
        embeddings=embeddings,
        class_similarity=sim,
        overlap=overlap,
        subset=subset,
        classifier=classifier,
        evaluate=evaluation,
        confusion=conf,
    )


def external_references(html: str) -> list[str]:
    """src/href values that would need the network or another file."""
    refs = re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)["']""", html)
    return [r for r in refs if not r.startswith("data:")] + re.findall(r"url\((?!data:)", html)


def test_render_markdown_and_html() -> None:
    png = png_bytes_of_one_pixel()
    blocks = [
        Heading("Pairs"),
        Text("careful", warning=True),
        Table(["a", "b"], [["x|y", 0.123456], [None, 1e-7]], note="cut"),
        Figure("figure-x.png", "A <figure>", png),
    ]
    markdown, html = to_markdown("T", blocks), to_html("T", blocks)
    assert "| x\\|y | 0.1235 |" in markdown and "1.00e-07" in markdown
    assert "![A &lt;figure&gt;](figure-x.png)" in markdown and "**WARNING:**" in markdown
    assert "data:image/png;base64," in html and "A &lt;figure&gt;" in html
    assert "<td>x|y</td>" in html and external_references(html) == []


def test_a_100_class_confusion_matrix_is_shown_full_size() -> None:
    from tasks.reporting import figures

    counts = np.diag(np.full(100, 20)) + np.eye(100, k=1, dtype=int)
    png = figures.png_bytes(figures.confusion_heatmap(counts, [f"class_{i}" for i in range(100)]))
    small = png_bytes_of_one_pixel()
    html = to_html(
        "T", [Figure("figure-confusion.png", "Confusion", png), Figure("s.png", "S", small)]
    )
    wide, narrow = html.split("<figure>")[1:]
    assert '<div class="wide">' in wide and "scroll sideways" in wide  # its own size, not shrunk
    assert ".wide img{max-width:none}" in html and "figure-confusion.png" in wide
    assert '<div class="wide">' not in narrow
    assert external_references(html) == []  # still one self-contained file


def test_summary_rows_stay_short_and_floats_short() -> None:
    from tasks.reporting.report_sections import key_values

    prep = {
        "image_size": 224,
        "interpolation": "bicubic",
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
        "resize": "whole image to image_size, no crop",
    }
    table = key_values("Dataset and model", {"preprocessing": prep, "accuracy": 0.5583333333})[1]
    rows = {name: value for name, value in table.rows}
    assert rows["preprocessing: mean"] == "0.485, 0.456, 0.406"
    assert len(rows) == 6 and rows["accuracy"] == "0.5583"
    assert report_artifacts.plain(0.4878048780487805) == 0.4878


def test_the_report_says_when_training_stopped() -> None:
    from types import SimpleNamespace

    from tasks.reporting.report_sections import training_text

    stopped = SimpleNamespace(info={"stopped_early": True, "epochs_run": 54, "best_epoch": 44})
    assert training_text(stopped) == "stopped early at epoch 54, best epoch 44"
    full = SimpleNamespace(info={"stopped_early": False, "epochs_run": 100, "best_epoch": 100})
    assert training_text(full) == "ran all 100 epochs (no early stop), best epoch 100"


def png_bytes_of_one_pixel() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buffer, format="PNG")
    return buffer.getvalue()


def read_artifacts(keys: list[str]) -> list:
    """Artifacts with the given keys from the test server, oldest first."""

    async def read() -> list:
        async with get_client() as client:
            found = await client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=keys))
            )
            return sorted(found, key=lambda a: a.created)

    return asyncio.run(read())


@pytest.mark.usefixtures("prefect_server")
def test_report_task_writes_report_figures_and_artifacts(tmp_path: Path) -> None:
    stages = report_stages(tmp_path / "stages")
    config = RunConfig(dataset="synthetic", out=str(tmp_path / "out"), grid_images=3)

    @flow
    def report_flow() -> StageManifest:
        report = report_task(stages, config.model_dump(mode="json"), config.params.report)
        publish_report_task(report, stages)
        return report

    manifest = report_flow()
    location = manifest.location
    figures = sorted(f for f in manifest.files if f.endswith(".png"))
    assert "figure-confusion.png" in figures and "figure-similarity.png" in figures
    assert "figure-agreement.png" in figures and "figure-umap-overlap.png" in figures
    assert any(f.startswith("figure-umap-pair-01-apple-pear") for f in figures)
    assert any(f.startswith("figure-grid-pair-01-apple-pear") for f in figures)
    for name in figures:
        png_image(location.read_bytes(name), min_side=150)
    markdown = location.read_bytes(REPORT_MD).decode()
    html = location.read_bytes(REPORT_HTML).decode()
    assert "RANDOM weights" in markdown and "RANDOM weights" in html
    assert "| apple | pear |" in markdown  # the overlap table, most similar pair first
    assert "| True | Pred | MisRate |" in markdown and "| apple | pear | 0.5000 |" in markdown
    assert "| class_name | precision | recall | f1 | support |" in markdown
    assert stages.confusion.path("confusion_pairs.parquet") in markdown
    assert html.count("data:image/png;base64,") == len(figures)
    # self-contained; the report and the explorer find each other: a link to the page next to it
    assert external_references(html) == ["explorer.html"]
    assert re.findall(r'<a href="([^"]*)"', html) == ["explorer.html"]
    assert "](explorer.html)" in markdown and "explorer.html" in manifest.files
    summary = location.read_bytes("summary.md").decode()
    assert f"`{manifest.info['explorer']}`" in summary
    for name in figures:
        assert f"({name})" in markdown
    artifacts = read_artifacts(KEYS)
    assert sorted({a.key for a in artifacts}) == sorted(KEYS)
    by_key = {a.key: a for a in artifacts}
    # the full path as copyable text (a browser opens no file:// link from the Prefect UI)
    assert Path(manifest.info["report"]) == Path(location.file(REPORT_HTML)).resolve()
    assert f"`{manifest.info['report']}`" in by_key["overlap-report"].data
    assert "apple" in str(by_key["confusion-pairs"].data)
    progress = read_artifacts(["report-figures"])[-1]  # figures drawn, then the explorer
    assert progress.type == "progress" and progress.data == 100.0

    before = len(read_artifacts(["overlap-pairs"]))  # other tests' flows may publish it too
    again = report_flow()  # reused from its folder, artifacts published again
    assert again.created == manifest.created and again.url == manifest.url
    assert len(read_artifacts(["overlap-pairs"])) == before + 1


def test_artifact_cells_and_paths_show_as_text_in_markdown() -> None:
    """Prefect's V1 UI renders a table artifact's text cells as Markdown: escaped, each shows as
    the name it is (no HTML, no link, no emphasis)."""
    names = [
        "<img src=x onerror=alert(1)>",
        "[x](http://example.com/a)",
        "www.example.com",
        "me@example.com",
        "*bold* __init__ `code` a|b ~~s~~ # h",
        "AT&amp;T",
        "[label]: http://example.com",
        "![image](x.png)",
    ]
    rows = report_artifacts.table_rows(pa.table({"class_a": names}), ["class_a"])
    parser = MarkdownIt("commonmark")
    for name, row in zip(names, rows, strict=True):
        tokens = parser.parseInline(row["class_a"])[0].children
        assert [t.type for t in tokens] == ["text"] * len(tokens), name
        assert "".join(t.content for t in tokens) == name
        # what starts a GitHub-flavoured autolink (the UI's Markdown has them) is broken up
        assert not re.search(r"[a-z]://|www\.|\w@\w", row["class_a"]), row["class_a"]
    for plain in ("maple_tree", "cosine[demo]", "t-shirt/top"):  # ordinary names unchanged
        assert report_artifacts.plain(plain) == plain
    text = report_artifacts.where_markdown("report.html", "/tmp/a `b`/report.html")
    spans = [t for t in parser.parseInline(text)[0].children if t.type == "code_inline"]
    assert [t.content for t in spans] == ["/tmp/a `b`/report.html"]
    assert "[Open](https://x.org/r%20a/report.html)" in report_artifacts.where_markdown(
        "report.html", "https://x.org/r a/report.html"
    )


def test_the_agreement_sentence_says_when_spearman_is_not_defined() -> None:
    from tasks.algorithms.correlation import spearman
    from tasks.report import agreement_text

    one = agreement_text(*spearman(np.array([0.5]), np.array([0.1])))
    assert "nan" not in one and "not defined over 1 class pair (" in one
    three = agreement_text(*spearman(np.array([0.1, 0.2, 0.3]), np.array([0.0, 0.1, 0.3])))
    assert three.endswith("over 3 class pairs: 1.000.")


def test_artifact_rows_are_plain_python() -> None:
    table = pa.table({"a": [1.5, float("nan")], "b": [np.int64(3), None]})
    rows = report_artifacts.table_rows(table, ["a", "b", "missing"])
    assert rows == [{"a": 1.5, "b": 3}, {"a": None, "b": None}]
    assert report_artifacts.plain(np.float32(0.5)) == 0.5
    assert type(report_artifacts.plain(np.int32(2))) is int


def test_predictions_report_on_real_cifar(tmp_path: Path) -> None:
    predictions = write_real_predictions(tmp_path / "predictions.parquet")
    manifest = analyze_predictions(predictions, REAL / "classes.tsv", tmp_path / "analysis")
    out = Location(str(tmp_path / "analysis" / "report"))
    files = write_predictions_report(manifest, out)
    assert set(files) == {
        "figure-confusion-focus.png",
        "figure-confusion.png",
        REPORT_MD,
        REPORT_HTML,
    }
    full = png_image(out.read_bytes("figure-confusion.png"))
    assert full.shape[0] > 1500  # 100 classes, one readable line each
    png_image(out.read_bytes("figure-confusion-focus.png"))
    markdown = out.read_bytes(REPORT_MD).decode()
    assert "| boy | man | 0.1800 |" in markdown and "| maple_tree | oak_tree | 0.1800 |" in markdown
    assert "centroid_cosine" not in markdown  # empty without embeddings: left out
    html = out.read_bytes(REPORT_HTML).decode()
    assert html.count("data:image/png;base64,") == 2 and external_references(html) == []
