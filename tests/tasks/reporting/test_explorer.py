"""explorer.html of a synthetic run in headless Chromium: offline, no errors, hovers and clicks."""

from __future__ import annotations

import base64
import io
import re
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from PIL import Image

from flows.config import RunConfig
from flows.overlap_flow import class_overlap
from tasks.analyze_predictions import analyze_predictions
from tasks.reporting.explorer import EXPLORER_HTML, table_view
from tasks.reporting.explorer_data import THUMB_PX, thumbnail_uri
from tests.support.browser import (
    Browser,
    browser_fixture,  # noqa: F401 (the ``browser`` fixture)
)
from tests.support.builders import REAL, write_real_predictions

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]
LOCAL = ("file:", "data:", "blob:", "about:")

# Page coordinates of a glyph's data point (x, y) in the Bokeh plot named ``name``.
LOCATE = """
const [name, x, y] = arguments;
const view = Bokeh.index.query_one((v) => v.model.name === name);
view.el.scrollIntoView({block: 'center'});
const box = (view.canvas_view ?? view).el.getBoundingClientRect();
return [box.left + view.frame.x_scale.compute(x), box.top + view.frame.y_scale.compute(y)];
"""
# Whether a tooltip shows an embedded thumbnail (Bokeh draws tooltips inside shadow roots).
THUMB_SHOWN = """
const seen = [];
const walk = (root) => {
  for (const el of root.querySelectorAll('*')) {
    if (el.matches('img.overlap-thumb') && el.src.startsWith('data:image/')
        && el.getBoundingClientRect().width > 0) seen.push(el.src.length);
    if (el.shadowRoot) walk(el.shadowRoot);
  }
};
walk(document);
return seen;
"""
# The text of every tooltip shown.
TOOLTIP_TEXT = """
const texts = [];
const walk = (root) => {
  for (const el of root.querySelectorAll('*')) {
    if (el.className && String(el.className).includes('tooltip')) texts.push(el.textContent);
    if (el.shadowRoot) walk(el.shadowRoot);
  }
};
walk(document);
return texts.join(' ');
"""
# The gallery's sections: (group, sample ids of its images).
SHOWN = """
return [...document.querySelectorAll('#gallery section')].map((s) =>
  [s.dataset.group, [...s.querySelectorAll('img')].map((i) => Number(i.dataset.sid))]);
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A synthetic run's stage folders."""
    out = tmp_path_factory.mktemp("explorer") / "out"
    record = class_overlap(RunConfig(dataset="synthetic", out=str(out)))
    return {name: Path(stage["url"]) for name, stage in record["stages"].items()}


def _wait_rendered(page: Browser) -> None:
    """Until Bokeh has built the views of the page."""
    for _ in range(120):
        ready = page.driver.execute_script(
            "return window.Bokeh !== undefined && Bokeh.index.roots.length > 0 &&"
            " Bokeh.index.query_one((v) => v.model.name === 'confusion-heatmap') != null"
        )
        if ready:
            return
        time.sleep(0.5)
    raise AssertionError("the explorer page never finished rendering")


def _open(page: Browser, run: dict[str, Path]) -> None:
    page.open(run["report"] / EXPLORER_HTML)
    _wait_rendered(page)
    time.sleep(1)  # a frame to paint after the views exist


def test_the_page_is_offline_and_error_free(run, browser) -> None:
    browser.reset()
    _open(browser, run)
    browser.screenshot("explorer-top")
    assert browser.console_errors() == []
    remote = [u for u in browser.requested_urls() if not u.startswith(LOCAL)]
    assert remote == []


# Every text shown on the page, inside Bokeh's shadow roots too (not their style sheets).
PAGE_TEXT = """
const texts = [document.body.innerText];
const walk = (root) => {
  for (const el of root.querySelectorAll('*')) {
    if (!el.shadowRoot) continue;
    for (const child of el.shadowRoot.children) {
      if (!['STYLE', 'SCRIPT', 'LINK'].includes(child.tagName)) texts.push(child.innerText);
    }
    walk(el.shadowRoot);
  }
};
walk(document);
return texts.join('\\n');
"""
# Right edges (page pixels) of the tables, and where the image panel starts.
TABLE_EDGES = """
const views = ['overlap-table', 'confusion-table'].map(
  (name) => Bokeh.index.query_one((v) => v.model.name === name));
return [views.map((v) => v.el.getBoundingClientRect().right),
        document.getElementById('gallery').getBoundingClientRect().left];
"""


def test_the_page_explains_itself_at_1400_px(run, browser) -> None:
    """Colour legend and bars, tables beside the image panel, readable numbers, flag names."""
    browser.driver.set_window_size(1400, 1000)
    try:
        _open(browser, run)
        browser.screenshot("explorer-1400")
        tables, panel = browser.driver.execute_script(TABLE_EDGES)
        text = browser.driver.execute_script(PAGE_TEXT)
    finally:
        browser.driver.set_window_size(1600, 1200)
    assert len(tables) == 2 and max(tables) <= panel
    page = (run["report"] / EXPLORER_HTML).read_text()
    assert page.count('"name":"ColorBar"') == 2  # one per heatmap
    names = pq.read_table(run["subset"] / "splits.parquet").column("class_name").unique()
    legend = text[text.index("Colour by class:") :]
    assert all(name in legend for name in names.to_pylist())
    assert all(verdict in legend for verdict in ("wrong", "correct", "not tested"))
    assert "-0.000" not in text
    assert re.search(r"\n\d\.\d\de-\d+\n", text)  # a q-value in scientific notation
    assert "--explorer-images" in text and "max_images" not in text and "`" not in text


def test_hovering_a_umap_point_shows_its_thumbnail(run, browser) -> None:
    _open(browser, run)
    x, y = browser.driver.execute_script(
        "const v = Bokeh.index.query_one((v) => v.model.name === 'umap-0');"
        "const d = v.model.renderers[0].data_source.data; return [d.x[0], d.y[0]];"
    )
    px, py = browser.driver.execute_script(LOCATE, "umap-0", x, y)
    browser.mouse("moved", px, py)
    time.sleep(1)
    browser.screenshot("umap-hover")
    assert browser.driver.execute_script(THUMB_SHOWN), "no thumbnail in the UMAP tooltip"
    assert browser.console_errors() == []


def test_clicking_a_confusion_cell_shows_that_cells_test_images(run, browser) -> None:
    predictions = pq.read_table(run["evaluate"] / "predictions.parquet")
    wrong = predictions.filter(
        pc.not_equal(predictions.column("y_true"), predictions.column("y_pred"))
    )
    true, pred = (wrong.column(c)[0].as_py() for c in ("y_true", "y_pred"))
    cell = wrong.filter(
        pc.and_(pc.equal(wrong.column("y_true"), true), pc.equal(wrong.column("y_pred"), pred))
    )
    _open(browser, run)
    browser.click(*browser.driver.execute_script(LOCATE, "confusion-heatmap", pred, true))
    time.sleep(1)
    browser.screenshot("confusion-click")
    (group, shown), *_ = browser.driver.execute_script(SHOWN)
    assert group == "cell"
    assert sorted(shown) == sorted(cell.column("sample_id").to_pylist())
    assert browser.console_errors() == []


def test_clicking_an_overlap_pair_shows_both_classes_closest_first(run, browser) -> None:
    pairs = pq.read_table(run["overlap"] / "overlap_pairs.parquet")
    a, b = (pairs.column(c)[0].as_py() for c in ("class_a", "class_b"))
    samples = pq.read_table(run["overlap"] / "pair_samples.parquet").to_pylist()
    expected = {
        side: [
            r["sample_id"]
            for r in sorted(samples, key=lambda r: r["rank"])
            if (r["class_a"], r["class_b"], r["class_name"]) == (a, b, side)
        ][:24]
        for side in (a, b)
    }
    la, lb = (pairs.column(c)[0].as_py() for c in ("label_a", "label_b"))
    _open(browser, run)
    browser.click(*browser.driver.execute_script(LOCATE, "similarity-heatmap", lb, la))
    time.sleep(1)
    browser.screenshot("pair-click")
    shown = dict(browser.driver.execute_script(SHOWN))
    assert shown == expected
    assert all(shown.values())
    assert browser.console_errors() == []


def test_the_predictions_page_names_all_100_classes_on_hover(tmp_path, browser) -> None:
    predictions = write_real_predictions(tmp_path / "predictions.parquet")
    manifest = analyze_predictions(predictions, REAL / "classes.tsv", tmp_path / "analysis")
    page = manifest.location.file(EXPLORER_HTML)
    browser.open(Path(page))
    _wait_rendered(browser)
    names = manifest.info["class_names"]
    true, pred = names.index("maple_tree"), names.index("oak_tree")
    browser.mouse("moved", *browser.driver.execute_script(LOCATE, "confusion-heatmap", pred, true))
    time.sleep(1)
    browser.screenshot("predictions-hover")
    text = browser.driver.execute_script(TOOLTIP_TEXT)
    assert "maple_tree" in text and "oak_tree" in text
    assert browser.console_errors() == []
    assert [u for u in browser.requested_urls() if not u.startswith(LOCAL)] == []


def test_shown_numbers_have_no_negative_zero_and_q_values_are_scientific() -> None:
    table = pa.table({"cosine": [-0.0001, 0.12345, float("nan")], "q_value": [3.02e-6, 0.5, 1.0]})
    shown = table_view(table, ["cosine", "q_value"], "", "t", "T").children[1]
    assert shown.source.data["cosine"] == [0.0, 0.123, None]
    assert str(shown.source.data["cosine"][0]) == "0.0"  # not -0.0, which shows as "-0.000"
    assert shown.source.data["q_value"] == [3.02e-6, 0.5, 1.0]
    assert [type(c.formatter).__name__ for c in shown.columns] == [
        "NumberFormatter",
        "ScientificFormatter",
    ]


def test_thumbnails_keep_32_px_pngs_and_shrink_large_images() -> None:
    small, large = io.BytesIO(), io.BytesIO()
    Image.new("RGB", (32, 32), "red").save(small, format="PNG")
    Image.new("RGB", (500, 250), "blue").save(large, format="PNG")
    assert thumbnail_uri(small.getvalue()).endswith(base64.b64encode(small.getvalue()).decode())
    shrunk = Image.open(io.BytesIO(base64.b64decode(thumbnail_uri(large.getvalue()).split(",")[1])))
    assert shrunk.size == (THUMB_PX, THUMB_PX // 2)
