"""explorer.html: one self-contained page (Bokeh, its JavaScript inlined) linking heatmaps,
UMAPs, pair tables and the images behind them; ExplorerData in, an HTML string out."""

from __future__ import annotations

import html
import json
import math
from typing import Any

import numpy as np
import pyarrow as pa
from bokeh.embed import components
from bokeh.layouts import column
from bokeh.models import (
    AllLabels,
    ColumnDataSource,
    CustomJS,
    CustomJSHover,
    DataTable,
    Div,
    FixedTicker,
    HoverTool,
    NumberFormatter,
    RadioButtonGroup,
    ScientificFormatter,
    TableColumn,
    TabPanel,
    Tabs,
)
from bokeh.palettes import Category10, Category20, Viridis256, turbo
from bokeh.plotting import figure
from bokeh.resources import Resources
from bokeh.transform import linear_cmap

from tasks.reporting import figures
from tasks.reporting.explorer_data import ExplorerData, Scatter
from tasks.reporting.explorer_js import GALLERY_JS, PAGE_CSS

EXPLORER_HTML = "explorer.html"
OVERLAP_COLUMNS = ["class_a", "class_b", "cosine", "z", "rank", "same_superclass"]
CONFUSION_COLUMNS = [
    *("True", "Pred", "count", "MisRate", "Precision(Pred)", "Recall(True)"),
    *("F1(True)", "F1(Pred)", "q_value", "centroid_cosine", "flagged"),
]
CELL_PX = 10  # pixels per class in a heatmap: tick labels stay readable at 100 classes
# Tables fit beside the image panel in a 1400 px window (the panel takes 380 px); a heatmap of
# many classes is wider (readable labels) and scrolls sideways there, not under the panel.
CONTENT_PX = 960
COLOUR_BAR_PX = 90
# Columns of probabilities that can be tiny: shown as 1.2e-05, not 0.000.
SCIENTIFIC_COLUMNS = {"q_value", "p_value"}
# Inline only the bundles the page uses (no MathJax, no WebGL): 2 MB instead of 4 MB.
RESOURCES = Resources(mode="inline", components=["bokeh", "bokeh-widgets", "bokeh-tables"])
TOOLS = "pan,wheel_zoom,box_zoom,reset,tap,save"
VERDICT_COLOURS = {"wrong": "#d62728", "correct": "#2ca02c", "not tested": "#b0b0b0"}


def class_colours(n: int) -> list[str]:
    """One distinct colour per class."""
    if n <= 10:
        return list(Category10[10][:n])
    if n <= 20:
        return list(Category20[20][:n])
    return list(turbo(n))


def _tap(source: ColumnDataSource, call: str) -> None:
    """On a click (selection) of a glyph or table row, call a gallery function with its row."""
    code = f"const i = s.selected.indices[0]; if (i !== undefined) {{ const d = s.data; {call}; }}"
    source.selected.js_on_change("indices", CustomJS(args={"s": source}, code=code))


def heatmap(
    names: list[str],
    values: np.ndarray,
    *,
    title: str,
    name: str,
    tooltips: list,
    extra: dict,
    colour_title: str,
    high: float | None = None,
) -> tuple[Any, ColumnDataSource]:
    """A zoomable K x K heatmap (row i at the top), names on the axes, numbers on hover, a colour
    bar titled ``colour_title``; ``high``: the value at the top of the colour scale."""
    n = len(names)
    rows, cols = (a.ravel() for a in np.indices((n, n)))
    shown = np.nan_to_num(values.astype(float).ravel(), nan=0.0)
    source = ColumnDataSource(
        {
            "row": rows,
            "col": cols,
            "row_name": [names[i] for i in rows],
            "col_name": [names[j] for j in cols],
            "value": shown,
            "label": rounded(shown),  # what the hover shows: no "-0.000"
            **extra,
        }
    )
    side = int(np.clip(n * CELL_PX + 160, 560, 1200))
    fig = figure(
        title=title,
        name=name,
        width=side + COLOUR_BAR_PX,
        height=side,
        x_range=(-0.5, n - 0.5),
        y_range=(n - 0.5, -0.5),
        tools=TOOLS,
        active_scroll="wheel_zoom",
    )
    if high is None or not high > 0:
        high = float(shown.max()) if shown.size and shown.max() > 0 else 1.0
    cells = fig.rect(
        "col",
        "row",
        1,
        1,
        source=source,
        line_color=None,
        nonselection_fill_alpha=1.0,  # a click opens the gallery; the matrix stays readable
        fill_color=linear_cmap("value", Viridis256, float(min(shown.min(), 0.0)), high),
    )
    fig.add_tools(HoverTool(renderers=[cells], tooltips=tooltips))
    fig.add_layout(cells.construct_color_bar(title=colour_title, width=12), "right")
    ticks = {i: names[i] for i in range(n)}
    for axis in (fig.xaxis[0], fig.yaxis[0]):
        axis.ticker = FixedTicker(ticks=list(range(n)))
        axis.major_label_overrides = ticks
        axis.major_label_policy = AllLabels()
        axis.major_label_text_font_size = f"{min(CELL_PX, 12)}px"
    fig.xaxis.major_label_orientation = math.pi / 2
    fig.grid.visible = False
    return fig, source


def confusion_view(data: ExplorerData) -> Any:
    """The test confusion matrix, coloured by row rate; a click shows that cell's images."""
    rate = np.nan_to_num(figures.row_rates(data.counts))  # a class without test images: 0
    fig, source = heatmap(
        data.class_names,
        rate,
        title="Confusion matrix (test split, rate per true class): click a cell",
        name="confusion-heatmap",
        tooltips=[
            ("true", "@row_name"),
            ("predicted", "@col_name"),
            ("count", "@count"),
            ("rate", "@label{0.000}"),
        ],
        extra={"count": data.counts.ravel().astype(int)},
        colour_title="share of the true class's test images (scale: off-diagonal maximum)",
        high=float(
            np.max(rate - np.diag(np.diag(rate)), initial=0.0)
        ),  # mistakes, not the diagonal
    )
    _tap(source, "window.overlapCell(d.row[i], d.col[i])")
    return fig


def similarity_view(data: ExplorerData) -> Any:
    """Centroid cosine of the classes; a click on a flagged pair shows its pair_samples."""
    fig, source = heatmap(
        data.similarity_names,
        data.similarity,
        title="Centroid cosine (model-free): click an outlined pair",
        name="similarity-heatmap",
        tooltips=[("classes", "@row_name / @col_name"), ("cosine", "@label{0.000}")],
        extra={},
        colour_title="cosine similarity of the class centroids",
    )
    _tap(source, "window.overlapPair(d.row_name[i], d.col_name[i])")
    if data.overlap_pairs is not None:  # outline the flagged pairs, both triangles
        index = {name: i for i, name in enumerate(data.similarity_names)}
        a, b = (data.overlap_pairs.column(c).to_pylist() for c in ("class_a", "class_b"))
        cells = [
            (index[x], index[y]) for x, y in zip(a, b, strict=True) if x in index and y in index
        ]
        rows = [i for i, j in cells] + [j for i, j in cells]
        cols = [j for i, j in cells] + [i for i, j in cells]
        fig.rect(cols, rows, 1, 1, fill_color=None, line_color="red", line_width=2)
    return fig


def scatter_source(scatter: Scatter, colours: list[str]) -> ColumnDataSource:
    """A UMAP's points with both colourings (class, correct/wrong) as columns."""
    table = scatter.table
    labels = table.column("label").to_numpy()
    wrong = table.column("wrong").to_numpy(zero_copy_only=False)
    tested = np.asarray([p != "" for p in table.column("prediction").to_pylist()])
    verdict = np.where(tested, np.where(wrong, "wrong", "correct"), "not tested")
    data = {c: table.column(c).to_pylist() for c in table.column_names}
    data["class_colour"] = [colours[i] for i in labels]
    data["verdict"] = verdict.tolist()
    data["verdict_colour"] = [VERDICT_COLOURS[v] for v in verdict]
    return ColumnDataSource(data)


# Inline style: Bokeh draws tooltips in a shadow root, which the page's stylesheet does not reach.
THUMB_TOOLTIP = """
<div class="overlap-tip">
  <img class="overlap-thumb" src="@sample_id{custom}" alt="sample @sample_id"
       style="width:64px;height:64px;image-rendering:pixelated;object-fit:contain">
  <div><b>@class_name</b> · @split</div>
  <div>predicted: @prediction (@verdict)</div>
</div>
"""


def umap_views(data: ExplorerData) -> Any:
    """The UMAPs as tabs, a hover shows a point's thumbnail; a toggle recolours every UMAP."""
    colours = class_colours(len(data.class_names))
    thumb = CustomJSHover(code="return window.OVERLAP.thumbs[value] || '';")
    renderers, panels = [], []
    for k, scatter in enumerate(data.scatters):
        fig = figure(
            title=f"UMAP: {scatter.title}",
            name=f"umap-{k}",
            width=760,
            height=560,
            tools=TOOLS,
            active_scroll="wheel_zoom",
        )
        source = scatter_source(scatter, colours)
        renderer = fig.scatter(
            "x", "y", source=source, size=7, fill_color="class_colour", line_color=None, alpha=0.8
        )
        fig.add_tools(
            HoverTool(
                renderers=[renderer],
                tooltips=THUMB_TOOLTIP,
                formatters={"@sample_id": thumb},
            )
        )
        _tap(source, "window.overlapSample(d.sample_id[i])")
        renderers.append(renderer)
        panels.append(TabPanel(child=fig, title=scatter.title))
    toggle = RadioButtonGroup(labels=["colour by class", "colour by correct / wrong"], active=0)
    toggle.js_on_change(
        "active",
        CustomJS(
            args={"rs": renderers},
            code="const f = this.active == 0 ? 'class_colour' : 'verdict_colour';"
            "for (const r of rs) { r.glyph.fill_color = {field: f}; }",
        ),
    )
    return column(toggle, colour_legend(data.class_names, colours), Tabs(tabs=panels))


# Inline styles: Bokeh draws a Div in a shadow root, which the page's stylesheet does not reach.
SWATCH = (
    '<span style="display:inline-block;margin-right:12px;white-space:nowrap">'
    '<span style="display:inline-block;width:10px;height:10px;border-radius:50%;'
    'margin-right:4px;vertical-align:middle;background:{colour}"></span>{label}</span>'
)
LEGEND_ROW = '<div style="font-size:12px;margin:4px 0;line-height:1.8">{}</div>'


def colour_legend(names: list[str], colours: list[str]) -> Div:
    """What the UMAPs' colours mean: one swatch per class, and the correct / wrong colouring."""
    classes = "".join(
        SWATCH.format(colour=c, label=html.escape(n)) for n, c in zip(names, colours, strict=True)
    )
    verdicts = "".join(SWATCH.format(colour=c, label=v) for v, c in VERDICT_COLOURS.items())
    return Div(
        text=LEGEND_ROW.format(f"<b>Colour by class:</b> {classes}")
        + LEGEND_ROW.format(
            "<b>Colour by correct / wrong</b> (the classifier's prediction on the test split; "
            f"train images are not tested): {verdicts}"
        ),
        width=CONTENT_PX,
        name="colour-legend",
    )


def rounded(values: np.ndarray, decimals: int = 3) -> np.ndarray:
    """Values rounded for display; adding 0.0 turns -0.0 into 0.0 (no "-0.000" shown)."""
    return np.round(values.astype(float), decimals) + 0.0


def table_column(field: pa.Field) -> TableColumn:
    """A table column: floats to 3 decimals (q-values in scientific notation), wide enough for
    its title (the table scrolls sideways rather than cutting headers)."""
    width = max(60, 8 * len(field.name) + 16)
    if field.name in SCIENTIFIC_COLUMNS:
        formatter = ScientificFormatter(precision=2, power_limit_low=0)
        return TableColumn(field=field.name, title=field.name, formatter=formatter, width=width)
    if pa.types.is_floating(field.type):
        formatter = NumberFormatter(format="0.000")
        return TableColumn(field=field.name, title=field.name, formatter=formatter, width=width)
    if pa.types.is_string(field.type) or pa.types.is_large_string(field.type):
        width = max(width, 110)  # class names
    return TableColumn(field=field.name, title=field.name, width=width)


def table_view(table: pa.Table, columns: list[str], call: str, name: str, title: str) -> Any:
    """A sortable table of some columns; selecting a row shows its images."""
    present = [c for c in columns if c in table.column_names]
    data = {c: _plain(table.column(c), scientific=c in SCIENTIFIC_COLUMNS) for c in present}
    source = ColumnDataSource(data)
    fields = [table_column(table.schema.field(c)) for c in present]
    _tap(source, call)
    height = int(np.clip(28 * table.num_rows + 40, 80, 420))
    widget = DataTable(
        source=source,
        columns=fields,
        width=CONTENT_PX,
        height=height,
        autosize_mode="none",  # the columns' own widths; a sideways scroll bar if they are wider
        sortable=True,
        name=name,
    )
    return column(Div(text=f"<h2>{html.escape(title)}</h2>"), widget)


def _plain(values: pa.ChunkedArray, *, scientific: bool = False) -> list:
    """A column as Python values: NaN and None as None so the table shows them empty, other
    floats rounded for display unless shown in scientific notation (no "-0.000")."""
    if pa.types.is_floating(values.type) and not scientific:
        values = pa.array(rounded(values.to_numpy(zero_copy_only=False)))
    return [
        None if isinstance(v, float) and not math.isfinite(v) else v for v in values.to_pylist()
    ]


def gallery_state(data: ExplorerData) -> dict[str, Any]:
    """The JSON the gallery reads: images, captions, confusion cells and pair samples."""
    state: dict[str, Any] = {
        "thumbs": {str(k): v for k, v in data.thumbs.items()},
        "captions": {str(k): v for k, v in data.captions.items()},
        "names": data.class_names,
        "counts": data.counts.astype(int).tolist(),
        "cells": {f"{t},{p}": ids for (t, p), ids in data.cells.items()},
        "pairs": {},
    }
    if data.overlap_pairs is not None:
        for a, b, cos in zip(
            *(data.overlap_pairs.column(c).to_pylist() for c in ("class_a", "class_b", "cosine")),
            strict=True,
        ):
            state["pairs"][f"{a}|{b}"] = {"a": a, "b": b, "cosine": cos, "sides": {a: [], b: []}}
    if data.pair_samples is not None:
        columns = ("class_a", "class_b", "class_name", "sample_id", "margin", "rank")
        rows = zip(*(data.pair_samples.column(c).to_pylist() for c in columns), strict=True)
        for a, b, own, sid, margin, _rank in sorted(rows, key=lambda r: (r[0], r[1], r[2], r[5])):
            pair = state["pairs"].get(f"{a}|{b}")
            if pair is not None:
                pair["sides"][own].append([sid, margin])
    return state


def _script_json(value: Any) -> str:
    """JSON safe inside a <script> element."""
    return json.dumps(value, separators=(",", ":")).replace("</", "<\\/")


def _note_html(text: str) -> str:
    """A note as HTML, its `code` spans (flag names) as <code>."""
    parts = html.escape(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def explorer_html(data: ExplorerData) -> str:
    """The whole self-contained explorer page."""
    views = []
    if data.similarity is not None and len(data.similarity_names):
        views.append(similarity_view(data))
    views.append(confusion_view(data))
    if data.scatters:
        views.append(umap_views(data))
    if data.overlap_pairs is not None:
        views.append(
            table_view(
                data.overlap_pairs,
                OVERLAP_COLUMNS,
                "window.overlapPair(d.class_a[i], d.class_b[i])",
                "overlap-table",
                "Overlap pairs (model-free): select a row for its images",
            )
        )
    pairs = data.confusion_pairs
    if "count" in pairs.column_names:
        pairs = pairs.filter(pa.compute.greater(pairs.column("count"), 0))
    views.append(
        table_view(
            pairs,
            [*CONFUSION_COLUMNS, "true_label", "pred_label"],
            "window.overlapCell(d.true_label[i], d.pred_label[i])",
            "confusion-table",
            "Confusion pairs (classifier, test split): select a row for its images",
        )
    )
    script, div = components(column(*views))
    notes = "".join(f"<p class='note'>{_note_html(n)}</p>" for n in data.notes)
    return PAGE.format(
        title=html.escape(data.title),
        resources=RESOURCES.render(),
        css=PAGE_CSS,
        state=_script_json(gallery_state(data)),
        gallery_js=GALLERY_JS,
        notes=notes,
        div=div,
        script=script,
    )


PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
{resources}
<style>{css}</style>
<script>window.OVERLAP = {state};</script>
<script>{gallery_js}</script>
</head>
<body>
<aside id="gallery"><p>Click a confusion cell, a flagged overlap pair, a table row or a UMAP
point to see its images here.</p></aside>
<main>
<h1>{title}</h1>
{notes}
{div}
</main>
{script}
</body>
</html>
"""
