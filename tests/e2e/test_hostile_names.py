"""Hostile class names, end to end: every output shows each name as the text it is.

One image folder whose class folders are named with markup, table syntax, a backtick, a newline,
an ANSI colour sequence, mathtext, a very long name and right-to-left text runs through the real
flow; then every markdown file and artifact is parsed, report.html is opened in headless
Chromium and ``overlap inspect`` is read back.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from markdown_it import MarkdownIt
from PIL import Image
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

from flows.cli import main
from flows.config import SYNTHETIC_MODEL, RunConfig
from flows.overlap_flow import class_overlap
from storage.escape import visible
from tests.support.browser import browser_fixture  # noqa: F401 (the ``browser`` fixture)

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]

HOSTILE = [
    "<img src=x onerror=alert(1)>",
    "pipe | in a name",
    "back`tick",
    "new\nline",
    "\x1b[31mred\x1b[0m",
    "$\\alpha$ price",
    "long " + "x" * 200,
    "\u05e9\u05dc\u05d5\u05dd \u202eright-to-left",
]
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
# Every element report.html may hold (div: the scroll box of a figure wider than the page; a: the
# link to explorer.html); anything else would have been made from a name.
REPORT_TAGS = {
    "a",
    *("html", "head", "meta", "title", "style", "body", "h1", "h2", "h3", "p", "em", "code"),
    *("table", "thead", "tbody", "tr", "th", "td", "figure", "img", "figcaption", "div"),
}


def image_folder(root: Path) -> list[str]:
    """One class folder per hostile name (those the file system accepts), 16 small PNGs each."""
    rng = np.random.default_rng(0)
    names = []
    for n, name in enumerate(HOSTILE):
        try:
            (root / name).mkdir(parents=True)
        except OSError:  # e.g. a newline on a file system that refuses one
            continue
        names.append(name)
        colour = np.array([(n * 70) % 256, (n * 130) % 256, (n * 200) % 256])
        for i in range(16):
            pixels = np.clip(colour + rng.normal(0, 30, (16, 16, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return names


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunConfig, dict, list]]:
    tmp = tmp_path_factory.mktemp("hostile")
    names = image_folder(tmp / "images")
    config = RunConfig(
        dataset=f"imagefolder:{tmp / 'images'}",
        out=str(tmp / "out"),
        model=SYNTHETIC_MODEL,
        pretrained=False,
        image_size=32,
        shard_size=64,
        epochs=5,
        # every pair flagged: every name reaches the subset, the classifier and the report
        overlap_rule="threshold",
        overlap_threshold=-1.0,
        report_pairs=2,
        grid_images=2,
        export_pngs=True,
    )
    state = class_overlap(config, return_state=True)
    yield config, state.result(), names, state.state_details.flow_run_id


def stage_file(record: dict, stage: str, name: str) -> Path:
    return Path(record["stages"][stage]["url"]) / name


def markdown_tables(text: str) -> list[list[list[str]]]:
    """Every table of a markdown text as rows of cell texts; asserts no HTML came from a name."""
    tokens = MarkdownIt("commonmark").enable("table").parse(text)
    tables: list[list[list[str]]] = []
    row: list[str] | None = None  # the row being read; None outside table rows
    for token in tokens:
        assert token.type not in ("html_block", "html_inline"), token
        for child in token.children or []:
            assert child.type != "html_inline", child
        if token.type == "table_open":
            tables.append([])
        elif token.type == "tr_open":
            row = []
        elif token.type == "inline" and row is not None:
            row.append("".join(c.content for c in token.children or []))
        elif token.type == "tr_close" and row is not None:
            tables[-1].append(row)
            row = None
    return tables


def assert_tables_whole(text: str) -> list[str]:
    """Every row of every table has the header's column count; returns all cell texts."""
    cells = []
    tables = markdown_tables(text)
    assert tables
    for table in tables:
        assert [row for row in table if len(row) != len(table[0])] == [], table[0]
        cells += [c for row in table for c in row]
    return cells


def test_markdown_files_show_every_name_as_text_in_whole_tables(finished) -> None:
    _, record, names, _ = finished
    shown = {visible(name) for name in names}
    report = assert_tables_whole(stage_file(record, "report", "report.md").read_text())
    summary = assert_tables_whole(stage_file(record, "report", "summary.md").read_text())
    classes = assert_tables_whole(
        stage_file(record, "evaluate", "classification_report.md").read_text()
    )
    assert shown <= set(report) and shown <= set(classes)
    assert shown & set(summary)
    for text in (report, summary, classes):
        assert not any(unicodedata.category(c) == "Cc" for cell in text for c in cell)


def test_artifacts_show_names_as_text(finished) -> None:
    _, _, names, flow_run_id = finished
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    kinds = {a.key: a for a in artifacts}
    summary = assert_tables_whole(kinds["class-overlap-summary"].data)
    assert {visible(name) for name in names} & set(summary)
    for key in ("overlap-pairs", "confusion-pairs"):
        rows = json.loads(kinds[key].data)
        assert len({tuple(row) for row in rows}) <= 1  # every row has the same columns
        for row in rows:  # Prefect's V1 UI renders text cells as Markdown: each shows as text
            for value in row.values():
                assert not isinstance(value, str) or markdown_tables(f"|x|\n|-|\n|{value}|")
    overlap = json.loads(kinds["overlap-pairs"].data)
    shown = {markdown_tables(f"|x|\n|-|\n|{row[c]}|")[0][1][0] for row in overlap for c in AB}
    assert shown == {visible(name) for name in names}


AB = ("class_a", "class_b")


def test_report_html_in_chromium_holds_no_element_made_from_a_name(finished) -> None:
    webdriver = pytest.importorskip("selenium.webdriver")
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.skip("needs /usr/bin/chromium and /usr/bin/chromedriver")
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.by import By

    _, record, names, _ = finished
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-background-networking"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=webdriver.ChromeService(CHROMEDRIVER), options=options)
    try:
        driver.get(stage_file(record, "report", "report.html").resolve().as_uri())
        tags = {e.tag_name.lower() for e in driver.find_elements(By.XPATH, "//*")}
        assert tags <= REPORT_TAGS, tags - REPORT_TAGS
        for image in driver.find_elements(By.TAG_NAME, "img"):
            assert image.get_attribute("src").startswith("data:image/png;base64,")
            assert image.get_attribute("onerror") is None
        cells = {e.text for e in driver.find_elements(By.TAG_NAME, "td")}
        for name in names:
            # the browser shows the text; whitespace is collapsed in what it reports
            assert " ".join(visible(name).split()) in cells, name
        with pytest.raises(NoAlertPresentException):
            driver.switch_to.alert.text  # noqa: B018  (reading it is the check)
    finally:
        driver.quit()


def test_explorer_in_chromium_holds_no_element_made_from_a_name(finished, browser) -> None:
    _, record, names, _ = finished
    browser.open(stage_file(record, "report", "explorer.html"))
    # Fill the image panel the way a click does, for every pair of classes: names go into it.
    count = len(names)
    browser.driver.execute_script(
        "for (let t = 0; t < arguments[0]; t++) for (let p = 0; p < arguments[0]; p++)"
        " { window.overlapCell(t, p); window.overlapPair(O_NAMES[t], O_NAMES[p]); }".replace(
            "O_NAMES", "window.OVERLAP.names"
        ),
        count,
    )
    page = browser.driver
    from selenium.webdriver.common.by import By

    for image in page.find_elements(By.TAG_NAME, "img"):
        assert (image.get_attribute("src") or "").startswith("data:image/"), image
        assert image.get_attribute("onerror") is None
    panel = page.find_element(By.ID, "gallery").get_attribute("innerHTML")
    assert "onerror" not in panel and "<img src=x" not in panel
    assert browser.console_errors() == []
    from selenium.common.exceptions import NoAlertPresentException

    with pytest.raises(NoAlertPresentException):
        page.switch_to.alert.text  # noqa: B018  (reading it is the check)


def test_inspect_output_holds_no_raw_control_character(finished, capsys) -> None:
    config, _, _, _ = finished
    assert main(["inspect", config.out, "--top", "50"]) == 0
    text = capsys.readouterr().out
    raw = sorted({c for c in text if unicodedata.category(c) in ("Cc", "Cf") and c != "\n"})
    assert raw == []
    assert "\\x1b[31mred\\x1b[0m" in text  # the ANSI name, visible


def test_exported_pngs_keep_one_folder_per_class(finished) -> None:
    _, record, names, _ = finished
    pngs = Path(record["stages"]["subset"]["url"]) / "pngs"
    rows = (pngs / "class_folders.tsv").read_text().splitlines()[1:]
    folder_of = {json.loads(n): f for f, n in (row.split("\t") for row in rows)}
    assert set(folder_of) == set(names)
    for split in pngs.iterdir():
        if split.is_dir():
            assert {p.name for p in split.iterdir()} <= set(folder_of.values())
