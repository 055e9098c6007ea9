"""The report's sections as blocks: run summary, tables, figures and where the Parquet files are."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa

from storage.manifest import StageManifest
from tasks.algorithms.overlap_rule import RULES
from tasks.core.results import RunStages
from tasks.reporting.report_data import flagged_pairs
from tasks.reporting.report_render import Block, Figure, Heading, Table, Text, arrow_table

OVERLAP_COLUMNS = [
    "class_a",
    "class_b",
    "cosine",
    "z",
    "rank",
    "same_superclass",
    "ci_low",
    "ci_high",
    "flag_rate",
]
SEED_COLUMNS = [
    "True",
    "Pred",
    "MisRate",
    "Precision(Pred)",
    "Recall(True)",
    "F1(True)",
    "F1(Pred)",
]
PAIR_COLUMNS = [*SEED_COLUMNS, "count", "support", "q_value", "same_superclass", "centroid_cosine"]
REPORT_COLUMNS = ["class_name", "precision", "recall", "f1", "support"]
RANDOM_WARNING = (
    "this run used a model with RANDOM weights (random-init, no pretrained weights): the "
    "embeddings, overlaps and confusions below are meaningless; use them to test the pipeline only."
)


def random_weights(stages: RunStages) -> bool:
    """True when the embeddings came from a randomly initialised model."""
    return not stages.embeddings.params.get("pretrained", True)


def shown(value: Any) -> str:
    """A parameter or info value as short text: floats as %g, dicts as ``k: v`` pairs."""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, Mapping):
        return "; ".join(f"{k}: {shown(v)}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return ", ".join(shown(v) for v in value)
    return "" if value is None else str(value)


def key_values(title: str, values: Mapping[str, Any]) -> list[Block]:
    """A heading and a two-column table of names and values; a dict value gives a row per key.

    One row per key keeps every cell short: a long cell is cut in narrow views (Prefect's UI).
    """
    rows = []
    for key, value in values.items():
        if isinstance(value, Mapping) and value:
            rows += [[f"{key}: {k}", shown(v)] for k, v in value.items()]
        else:
            rows.append([key, shown(value)])
    return [Heading(title), Table(["name", "value"], rows)]


def training_text(classifier: StageManifest | None) -> str | None:
    """How the classifier's training ended (stopping epoch, best epoch), when it is known."""
    info = classifier.info if classifier is not None else {}
    if "stopped_early" not in info:
        return None
    ending = (
        f"stopped early at epoch {info['epochs_run']}"
        if info["stopped_early"]
        else f"ran all {info['epochs_run']} epochs (no early stop)"
    )
    return f"{ending}, best epoch {info['best_epoch']}"


def run_overview(stages: RunStages, accuracy: float | None) -> list[Block]:
    """Warning, dataset, model and counts of one run (that trained); the stages' facts shown."""
    images, embeddings = stages.images.info, stages.embeddings.info
    overlap, subset, confusion = stages.overlap.info, stages.subset.info, stages.confusion.info
    blocks: list[Block] = [Text(RANDOM_WARNING, warning=True)] if random_weights(stages) else []
    blocks += key_values(
        "Dataset and model",
        {
            "dataset": images.get("name", stages.images.params.get("dataset")),
            "model": embeddings.get("model"),
            "weights source": embeddings.get("weights_source"),
            "preprocessing": embeddings.get("preprocessing"),
            "precision / device": f"{embeddings.get('precision')} / {embeddings.get('device')}",
            "embedding dimension": embeddings.get("dim"),
        },
    )
    blocks += key_values(
        "Counts",
        {
            "images": images.get("rows"),
            "classes": len(images.get("class_names") or []),
            "overlapping class pairs (model-free)": overlap.get("n_pairs"),
            "overlapping classes (the subset)": overlap.get("n_classes"),
            "subset images per split": subset.get("split_counts"),
            "classifier training": training_text(stages.classifier),
            "test accuracy of the classifier": accuracy,
            "flagged confusion pairs (directed)": confusion.get("flagged"),
        },
    )
    return blocks


def overlap_rule_text(info: Mapping[str, Any]) -> str:
    """How the model-free rule flagged pairs, in words."""
    rule = info.get("rule")
    known = RULES.get(str(rule))
    detail = str(rule) if known is None else known.describe(info)
    if known is not None and known.via:  # a cutoff found from the data: say which
        detail += f" (cosine >= {info.get('cutoff') or float('nan'):.4f})"
    stats = (
        f"mu = {info.get('mu', float('nan')):.4f}, sigma = {info.get('sigma', float('nan')):.4f}"
    )
    return f"Rule `{rule}`: {detail} over all class pairs' centroid cosine ({stats})."


def overlap_section(info: Mapping[str, Any], pairs: pa.Table, figure: Figure | None) -> list[Block]:
    """Model-free overlap: rule, flagged pairs, similarity heatmap."""
    blocks: list[Block] = [
        Heading("Overlapping classes (model-free)"),
        Text(overlap_rule_text(info)),
    ]
    blocks.append(arrow_table(pairs, OVERLAP_COLUMNS))
    return blocks + ([figure] if figure else [])


def confusion_section(
    pairs: pa.Table, params: Mapping[str, Any], info: Mapping[str, Any], figures: Sequence[Figure]
) -> list[Block]:
    """Flagged confusion pairs with the rule that flagged them, then the given figures."""
    flagged = flagged_pairs(pairs)
    rule = params.get("rule")
    how = (
        f"binomial test per pair against the base rate {info.get('base_rate', 0):.4f}, "
        f"Benjamini-Hochberg q <= {params.get('alpha')}"
        if rule == "binomial"
        else f"MisRate >= mu + {params.get('k')}*sigma = {info.get('threshold', 0):.4f}"
    )
    text = (
        f"{flagged.num_rows} of {pairs.num_rows} directed pairs with any confusion are flagged "
        f"(rule `{rule}`: {how})."
    )
    columns = [c for c in PAIR_COLUMNS if c in pairs.column_names]
    blocks: list[Block] = [Heading("Confusion pairs (classifier)"), Text(text)]
    blocks.append(arrow_table(flagged, columns) if flagged.num_rows else Text("No pair flagged."))
    return blocks + list(figures)


def classification_section(report: pa.Table, figure: Figure | None) -> list[Block]:
    """The classification report table and the confusion heatmap."""
    blocks: list[Block] = [Heading("Classification report (test split)")]
    blocks.append(arrow_table(report, REPORT_COLUMNS, limit=report.num_rows))
    return blocks + ([figure] if figure else [])


def tables_section(stages: Mapping[str, StageManifest]) -> list[Block]:
    """Where each stage's files live, with row counts."""
    rows = [
        [name, file, record.rows, manifest.path(file)]
        for name, manifest in stages.items()
        for file, record in sorted(manifest.files.items())
        if file.endswith((".parquet", ".pt", ".md", ".html"))
    ]
    return [Heading("Where the tables are"), Table(["stage", "file", "rows", "path"], rows)]
