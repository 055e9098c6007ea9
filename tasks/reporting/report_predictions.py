"""The report parts that apply to bring-your-own predictions (``overlap analyze-predictions``)."""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa

from storage.fs import Location
from storage.manifest import StageManifest
from tasks.algorithms.confusion_pairs import counts_from_table
from tasks.reporting import figures, report_data
from tasks.reporting import report_sections as sections
from tasks.reporting.report_render import Block, Text, figure, write_report

FOCUS_CLASSES = 40  # the focused heatmap shows the classes of the top flagged pairs, up to this
FULL_HEATMAP_MAX = 120  # all classes in one heatmap only up to this many


def confused_classes(pairs: pa.Table, limit: int = FOCUS_CLASSES) -> list[int]:
    """Labels of the classes in flagged pairs, highest MisRate first, at most ``limit``."""
    chosen: list[int] = []
    for a, b in report_data.top_confused_pairs(pairs, len(pairs)):
        new = [c for c in (a, b) if c not in chosen]
        if len(chosen) + len(new) > limit:
            break
        chosen += new
    return chosen


def predictions_blocks(manifest: StageManifest, tables: dict[str, pa.Table]) -> list[Block]:
    """Overview, confusion pairs, classification report and heatmaps of analysed predictions."""
    info = manifest.info
    names: Sequence[str] = info["class_names"]
    counts = counts_from_table(tables["confusion_matrix"], len(names))
    blocks = sections.key_values(
        "Predictions",
        {
            "source": info.get("source"),
            "class names": info.get("class_names_file"),
            "rows": info.get("rows"),
            "classes": len(names),
            "accuracy": info.get("accuracy"),
            "flagged confusion pairs (directed)": info.get("flagged"),
        },
    )
    heatmaps = []
    focus = confused_classes(tables["confusion_pairs"])
    if len(focus) >= 2:
        fig = figures.confusion_heatmap(
            counts, names, classes=focus, title="Confusion among the most confused classes"
        )
        caption = (
            f"Confusion among the {len(focus)} classes of the top flagged pairs "
            "(rates divide by each class's full support)"
        )
        heatmaps.append(figure("confusion-focus", caption, fig))
    if len(names) <= FULL_HEATMAP_MAX:
        fig = figures.confusion_heatmap(counts, names)
        heatmaps.append(figure("confusion", "Confusion matrix of every class", fig))
    blocks += sections.confusion_section(tables["confusion_pairs"], manifest.params, info, heatmaps)
    blocks += sections.classification_section(tables["classification_report"], None)
    return blocks + sections.tables_section({"analyze_predictions": manifest})


def write_predictions_report(manifest: StageManifest, out: Location) -> dict[str, str]:
    """Write the figures, report.md and report.html of ``analyze_predictions`` output into ``out``.

    Returns file name -> URL of everything written. ``out`` may be the analysis folder itself:
    the report files are not listed in its manifest, so they do not change its fingerprint.
    """
    names = ("classification_report", "confusion_matrix", "confusion_pairs")
    tables = {name: report_data.read_table(manifest, name) for name in names}
    blocks: list[Block] = predictions_blocks(manifest, tables)
    if not tables["confusion_pairs"].num_rows:
        blocks.insert(0, Text("No class is ever confused with another: nothing to show."))
    title = "Class overlap report: predictions"
    files = write_report(out, title, blocks)
    return {name: out.child(name).url for name in files}
