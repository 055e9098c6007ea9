"""Report stage: figures, report.md / report.html and Prefect artifacts of a run."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from prefect import get_run_logger, task

from storage import registry
from storage.fs import Location
from storage.layout import class_folders
from storage.manifest import StageManifest
from tasks.algorithms.correlation import spearman
from tasks.core import progress
from tasks.core.params import ReportParams
from tasks.core.progress import stage_progress
from tasks.core.results import EvaluateInfo, ReportInfo, RunStages
from tasks.core.stage import Output, Stage
from tasks.reporting import report_artifacts, report_data, report_render
from tasks.reporting import report_sections as sections
from tasks.reporting.report_data import RunTables
from tasks.reporting.report_render import (
    REPORT_HTML,
    Block,
    Figure,
    Heading,
    Link,
    Text,
    figure,
    report_files,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure as MplFigure

MAX_SIMILARITY_CLASSES = 100  # above this the similarity heatmap shows the overlapping ones only
PAIR_UMAP_POINTS = 1500
ALL_UMAP_POINTS = 3000
SUMMARY_ROWS = 10
# Figures every run's report draws: similarity, calibration, confusion, agreement, all-class UMAP.
FIXED_FIGURES = 5
EXPLORER_LINK_TEXT = (
    "Open the interactive explorer (explorer.html, next to this report): heatmaps, UMAPs and "
    "pair tables linked to their images"
)
SUMMARY_MD = "summary.md"


def similarity_figure(data: RunTables) -> Figure:
    """Centroid-cosine heatmap of every class (or only the overlapping ones when there are many)."""
    from tasks.reporting import figures

    n = len(data.all_names)
    shown = list(range(n)) if n <= MAX_SIMILARITY_CLASSES else list(data.original_labels)
    index = {c: i for i, c in enumerate(shown)}
    pairs = zip(
        *(data.overlap_pairs.column(c).to_pylist() for c in ("label_a", "label_b")), strict=True
    )
    flagged = [(index[a], index[b]) for a, b in pairs if a in index and b in index]
    fig = figures.similarity_heatmap(
        data.all_cosine[np.ix_(shown, shown)],
        [data.all_names[i] for i in shown],
        groups=[data.groups[i] for i in shown],
        flagged=flagged,
    )
    which = "every class" if len(shown) == n else f"the {len(shown)} overlapping classes"
    return figure("similarity", f"Centroid cosine of {which}", fig)


def umap_view(
    points: report_data.Points, names: list[str], title: str, cap: int, seed: int
) -> MplFigure:
    """A seeded UMAP of the given points (at most ``cap``, stratified) as a matplotlib figure."""
    from tasks.reporting import figures_pairs

    points = points.take(figures_pairs.stratified_sample(points.label, cap, seed))
    coords = figures_pairs.umap_2d(points.x, seed=seed)
    return figures_pairs.umap_figure(
        coords, points.label, names, wrong=points.wrong, title=f"{title} (n = {len(coords)})"
    )


def pair_figures(
    data: RunTables,
    rank: int,
    pair: tuple[int, int],
    rows: list[tuple[str, list[int]]],
    images: Mapping[int, bytes],
    config: ReportParams,
) -> list[Block]:
    """UMAP and image grid (``rows``: caption and sample ids) of one flagged pair."""
    from tasks.reporting import figures_pairs

    names = data.class_names
    a, b = (names[c] for c in pair)
    folders = class_folders([a, b], 30)  # names never build a path but through this mapping
    stem = f"pair-{rank:02d}-{folders[a]}-{folders[b]}"
    points = report_data.pair_points(data.points, pair)
    which = "test split" if set(points.split) == {"test"} else "all splits"
    title = f"{a} vs {b}, {which}"
    umap_fig = umap_view(points, names, title, PAIR_UMAP_POINTS, config.seed)
    grid = figures_pairs.image_grid(
        [(caption, [images[i] for i in ids if i in images]) for caption, ids in rows],
        per_row=config.grid_images,
        title=f"{a} / {b}: sample images and the confused ones",
    )
    return [
        Heading(f"{rank}. {a} / {b}", level=3),
        figure(f"umap-{stem}", f"UMAP of {a} and {b}; x: misclassified test images", umap_fig),
        figure(f"grid-{stem}", f"Images of {a} and {b}, and the confused test images", grid),
    ]


def expected_steps(data: RunTables, config: ReportParams) -> int:
    """About how many figures a run's report draws, plus one for the explorer page: the
    progress bar's total (it stretches if the report draws more)."""
    chosen, _ = report_data.pairs_to_draw(
        data.confusion_pairs, data.overlap_pairs, data.original_labels, config.report_pairs
    )
    return FIXED_FIGURES + 2 * len(chosen) + 1


def agreement_text(rho: float, n: int) -> str:
    """The sentence on how the model-free and classifier views agree (Spearman over pairs)."""
    pairs = f"{n} class pair{'' if n == 1 else 's'}"
    what = "Spearman rank correlation of centroid cosine and confusion rate"
    if np.isfinite(rho):
        return f"{what} over {pairs}: {rho:.3f}."
    return f"{what}: not defined over {pairs} (it needs 3 pairs whose cosines and rates vary)."


def run_blocks(
    stages: RunStages,
    data: RunTables,
    config: ReportParams,
    settings: Mapping[str, Any],
) -> tuple[list[Block], list[Block]]:
    """(report blocks, summary blocks) of a run; every figure drawn here."""
    from tasks.reporting import figures

    evaluation, confusion = stages.evaluate, stages.confusion
    overview = sections.run_overview(stages, EvaluateInfo.of(evaluation).accuracy)
    _, _, cos, rate = figures.pair_agreement(data.counts, data.cosine)
    agreement = Text(agreement_text(*spearman(cos, rate)))
    flagged = report_data.flagged_pairs(data.confusion_pairs)
    flagged_labels = zip(
        *(flagged.column(c).to_pylist() for c in ("true_label", "pred_label")), strict=True
    )
    scatter = figures.agreement_scatter(
        data.counts, data.cosine, data.class_names, flagged=list(flagged_labels)
    )
    heatmap = figures.confusion_heatmap(data.counts, data.class_names)
    blocks = overview + sections.overlap_section(
        stages.overlap.info, data.overlap_pairs, similarity_figure(data)
    )
    from tasks.reporting import report_trust

    blocks += report_trust.calibration_blocks(stages.overlap, len(data.all_names))
    blocks += report_trust.stability_blocks(stages.overlap)
    blocks += sections.classification_section(
        data.classification_report, figure("confusion", "Confusion matrix (test split)", heatmap)
    )
    blocks += sections.confusion_section(
        data.confusion_pairs,
        confusion.params,
        confusion.info,
        [agreement, figure("agreement", "Model-free versus classifier", scatter)],
    )
    blocks += pair_section(stages, data, config)
    if stages.neighbours is not None:
        from tasks.reporting import inside

        blocks += inside.inside_section(stages, data.overlap_pairs, config.report_pairs, figure)
    blocks += sections.key_values("Parameters", dict(settings))
    blocks += sections.tables_section(stages.ran())
    summary = [*overview, agreement, Heading("Top overlapping pairs (model-free)")]
    summary.append(
        report_render.arrow_table(data.overlap_pairs, sections.OVERLAP_COLUMNS, SUMMARY_ROWS)
    )
    summary += [Heading("Top confusion pairs (classifier)")]
    summary.append(
        report_render.arrow_table(flagged, sections.SEED_COLUMNS, SUMMARY_ROWS)
        if flagged.num_rows
        else Text("No confusion pair flagged.")
    )
    return blocks, summary


def pair_section(stages: RunStages, data: RunTables, config: ReportParams) -> list[Block]:
    """UMAP of all overlapping classes, then a UMAP and an image grid per top flagged pair."""
    points = data.points
    test = points.take(np.flatnonzero(points.split == "test"))
    shown = test if len(test) >= report_data.MIN_TEST_PER_CLASS * len(data.class_names) else points
    which = "test split" if shown is test else "all splits"
    fig = umap_view(
        shown,
        data.class_names,
        f"All overlapping classes, {which}",
        ALL_UMAP_POINTS,
        config.seed,
    )
    blocks: list[Block] = [
        Heading("Embeddings and images of the confused classes"),
        figure("umap-overlap", "UMAP of all overlapping classes", fig),
    ]
    chosen, text = report_data.pairs_to_draw(
        data.confusion_pairs, data.overlap_pairs, data.original_labels, config.report_pairs
    )
    blocks.append(Text(text))
    rows = [
        report_data.grid_samples(points, p, data.class_names, config.grid_images, config.seed)
        for p in chosen
    ]
    wanted = {i for grid in rows for _, ids in grid for i in ids}
    images = report_data.read_image_bytes(stages.subset, sorted(wanted)) if wanted else {}
    for rank, (pair, grid) in enumerate(zip(chosen, rows, strict=True), start=1):
        blocks += pair_figures(data, rank, pair, grid, images, config)
    return blocks


def explorer_page(stages: RunStages, tables: RunTables, params: ReportParams) -> bytes:
    """explorer.html, the interactive page of the run (see tasks/reporting/explorer.py)."""
    from tasks.reporting import explorer, explorer_data

    data = explorer_data.gather_run(
        stages,
        tables,
        title=f"Class overlap explorer: {params.dataset}",
        max_images=params.explorer_images,
        report_pairs=params.report_pairs,
        seed=params.seed,
    )
    return explorer.explorer_html(data).encode()


# The figure and explorer modules load matplotlib, SciPy, UMAP and Bokeh: they are imported in the
# functions that draw, so a run whose report is cached (and the flow's import) loads none of them;
# their code version is read from their files.


def _key_params(params: ReportParams) -> dict[str, Any]:
    """The report's own parameters (the run's others reach it through ``settings``)."""
    return params.model_dump(include={"grid_images", "report_pairs", "explorer_images", "seed"})


STAGE = Stage("report", key_params=_key_params, module=__name__, info_type=ReportInfo)


# Cached like every stage (its inputs' fingerprints, settings, parameters, code): a warm run draws
# nothing; its Prefect artifacts are published again from the stored files by publish_report_task.
@STAGE.task()
def report_task(
    stages: RunStages,
    settings: dict[str, Any],
    params: ReportParams,
    target: Location,
) -> Output:
    """Figures, report.md, report.html and summary.md of a run; ``settings``: its parameters."""
    from tasks.reporting import explorer, report_trust

    tables = None
    if stages.trained:
        tables = report_data.read_run_tables(stages)  # once, for the report and the explorer
        with stage_progress(
            expected_steps(tables, params),
            unit="figure",
            desc="report",
            key="report-figures",
            description="report figures drawn, then the explorer page",
        ):
            blocks, summary = run_blocks(stages, tables, params, settings)
            page = explorer_page(stages, tables, params)
            progress.step(figure="explorer.html")
        # the explorer's views need the classifier's tables: linked at the top, after any warning
        top = next(i for i, b in enumerate([*blocks, None]) if not getattr(b, "warning", False))
        blocks.insert(top, Link(EXPLORER_LINK_TEXT, explorer.EXPLORER_HTML))
    else:  # the overlap rule flagged nothing: the model-free part
        blocks, summary = report_trust.model_free_blocks(stages, settings)
    files = report_files(f"Class overlap report: {params.dataset}", blocks)
    link = report_artifacts.report_link(target, REPORT_HTML)
    summary.append(Text(f"Full report with every figure: `{link}`"))
    info = {"report": link}
    if tables is not None:
        files[explorer.EXPLORER_HTML] = page
        info["explorer"] = report_artifacts.report_link(target, explorer.EXPLORER_HTML)
        summary.append(Text(f"Interactive explorer: `{info['explorer']}`"))
    files[SUMMARY_MD] = report_render.to_markdown("Class overlap", summary).encode()
    return Output(files=files, info=info)


@task(name="publish report")
def publish_report_task(report: StageManifest, stages: RunStages) -> None:
    """The report's Prefect artifacts (summary, top pairs, link), on every run."""
    pages = ReportInfo.of(report)
    report_artifacts.publish_artifacts(
        report.location.read_bytes(SUMMARY_MD).decode(),
        report_data.read_table(stages.overlap, "overlap_pairs"),
        report_data.read_table(stages.confusion, "confusion_pairs")
        if stages.confusion is not None
        else registry.table("confusion_pairs").schema().empty_table(),
        pages.report,
    )
    get_run_logger().info("report: %s", pages.report)
    if pages.explorer is not None:
        report_artifacts.publish_explorer_link(pages.explorer)
        get_run_logger().info("explorer: %s", pages.explorer)
