"""Report sections on trusting the overlaps: calibration, pair stability, the model-free report.

The model-free report is what a run whose rule flagged nothing ends with: the dataset and model,
the similarity heatmap, the calibration figure and one line naming a setting that would flag
something, instead of no report at all.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from storage import registry
from storage.manifest import StageManifest
from tasks.algorithms.overlap_rules import similarity_matrices
from tasks.core.results import ImagesInfo, OverlapInfo, RunStages
from tasks.reporting import figures
from tasks.reporting.figures_calibration import calibration_figure
from tasks.reporting.report_render import Block, Heading, Text, arrow_table, figure
from tasks.reporting.report_sections import (
    RANDOM_WARNING,
    key_values,
    overlap_rule_text,
    random_weights,
)

STABILITY_COLUMNS = ["class_a", "class_b", "cosine", "flagged", "ci_low", "ci_high", "flag_rate"]
MAX_HEATMAP_CLASSES = 100


def nothing_flagged_line(info: Mapping[str, Any]) -> str:
    """The one line a run whose rule flagged nothing ends with."""
    suggestion = info.get("suggestion") or "no setting of any rule flags a pair"
    return f"The rule flagged no pair of classes. Try: {suggestion}."


def calibration_blocks(overlap: StageManifest, num_classes: int) -> list[Block]:
    """What every setting of every rule would flag, the run's marked, as a figure."""
    spec = registry.table("overlap_calibration")
    if not overlap.location.exists(spec.file_name):  # an overlap stage from before calibration
        return []
    table = spec.read(overlap.location)
    chosen = [row for row in table.to_pylist() if row["chosen"]]
    said = (
        f"This run's setting flags {chosen[0]['n_pairs']} pair(s) over "
        f"{chosen[0]['n_classes']} classes. "
        if chosen
        else ""
    )
    text = (
        f"{said}Each panel shows how many classes a rule would flag at each value of its "
        "parameter (the `overlap_calibration` table has the pairs too); the diamond is this run."
    )
    fig = calibration_figure(table, num_classes)
    return [
        Heading("Calibration: what each setting would flag"),
        Text(text),
        figure("calibration", "Classes flagged against each rule's parameter", fig),
    ]


def stability_blocks(overlap: StageManifest) -> list[Block]:
    """The flagged pairs and those just below the cut, with bootstrap interval and flag rate."""
    resamples = OverlapInfo.of(overlap).bootstrap_resamples or 0
    if not resamples:
        return [
            Heading("Stability of the flagged pairs"),
            Text("No bootstrap (`--bootstrap-resamples 0`)."),
        ]
    table = registry.table("overlap_stability").read(overlap.location)
    text = (
        f"Poisson bootstrap of the class centroids, {resamples} resamples: `ci_low`-`ci_high` is "
        "the 95% percentile interval of the pair's cosine, `flag_rate` the share of resamples "
        "in which the run's rule flags the pair. The rows after the flagged pairs are the most "
        "similar pairs the rule left out. Resampled centroids are noisier, which pulls close "
        "pairs' cosines down a little, so a pair right at the cut reads below 0.5."
    )
    return [
        Heading("Stability of the flagged pairs"),
        Text(text),
        arrow_table(table, STABILITY_COLUMNS),
    ]


def similarity_blocks(
    similarity: StageManifest, overlap: StageManifest, names: list[str]
) -> list[Block]:
    """The centroid-cosine heatmap of every class (the most similar ones when there are many)."""
    columns = ["label_a", "label_b", "cosine", "rank"]
    cosine, _ = similarity_matrices(
        registry.table("class_similarity").read(similarity.location, columns), len(names)
    )
    shown = np.arange(len(names))
    if len(names) > MAX_HEATMAP_CLASSES:
        nearest = np.nanmax(cosine, axis=1)
        shown = np.sort(np.argsort(-nearest)[:MAX_HEATMAP_CLASSES])
    fig = figures.similarity_heatmap(cosine[np.ix_(shown, shown)], [names[i] for i in shown])
    which = "every class" if len(shown) == len(names) else f"the {len(shown)} most similar"
    return [figure("similarity", f"Centroid cosine of {which}", fig)]


def model_free_blocks(
    stages: RunStages, settings: Mapping[str, Any]
) -> tuple[list[Block], list[Block]]:
    """(report, summary) of a run whose rule flagged nothing: the model-free part only."""
    images, embeddings, overlap = stages.images, stages.embeddings, stages.overlap
    names = ImagesInfo.of(images).class_names
    line = nothing_flagged_line(overlap.info)
    blocks: list[Block] = [Text(RANDOM_WARNING, warning=True)] if random_weights(stages) else []
    blocks += [Text(line, warning=True)]
    blocks += key_values(
        "Dataset and model",
        {
            "dataset": images.info.get("name", images.params.get("dataset")),
            "classes": len(names),
            "images": images.info.get("rows"),
            "model": embeddings.info.get("model"),
            "embedding dimension": embeddings.info.get("dim"),
        },
    )
    blocks += [Heading("Overlapping classes (model-free)"), Text(overlap_rule_text(overlap.info))]
    blocks += similarity_blocks(stages.class_similarity, overlap, names)
    blocks += calibration_blocks(overlap, len(names))
    blocks += key_values("Parameters", dict(settings))
    summary: list[Block] = [Text(line, warning=True)]
    return blocks, summary
