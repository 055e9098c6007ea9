"""Significant confusion pairs: the seed's mu + k*sigma rule and a per-pair binomial test."""

from __future__ import annotations

from typing import Any

import numpy as np
from prefect import get_run_logger

from storage import registry
from storage.manifest import StageManifest
from tasks.algorithms import label_noise
from tasks.algorithms.confusion_pairs import (
    base_rate,
    confusion_pairs,
    counts_from_table,
    pair_summary,
    sigma_threshold,
)
from tasks.algorithms.overlap_rules import similarity_matrices
from tasks.core.params import ConfusionParams
from tasks.core.results import ImagesInfo, SubsetInfo
from tasks.core.stage import Output, Stage


def rule_params(params: ConfusionParams) -> dict[str, Any]:
    """The rule's parameters, as the manifest records them."""
    return {"rule": params.confusion_rule, "k": params.confusion_k, "alpha": params.confusion_alpha}


STAGE = Stage("confusion", key_params=rule_params, module=__name__)


@STAGE.task()
def confusion_task(
    images: StageManifest,
    evaluate: StageManifest,
    subset: StageManifest,
    class_similarity: StageManifest | None,
    params: ConfusionParams,
    neighbours: StageManifest | None = None,
) -> Output:
    """Flag the directed class pairs the classifier confuses; write ``confusion_pairs``."""
    kept = SubsetInfo.of(subset)
    class_names = kept.class_names
    dataset_classes = len(ImagesInfo.of(images).class_names)
    counts = counts_from_table(
        registry.table("confusion_matrix").read(evaluate.location), len(class_names)
    )
    cosine = None
    if class_similarity is not None:
        columns = ["label_a", "label_b", "cosine", "rank"]
        table = registry.table("class_similarity").read(class_similarity.location, columns)
        all_cosine, _ = similarity_matrices(table, dataset_classes)
        cosine = all_cosine[np.ix_(kept.original_labels, kept.original_labels)]
    defects = None
    if neighbours is not None:  # the neighbours stage's counts, over the subset's classes
        inputs = label_noise.DEFECT_INPUTS.items()
        read = (registry.table(name).read(neighbours.location, cols) for name, cols in inputs)
        defects = label_noise.pair_count_matrices(
            dataset_classes, *read, classes=kept.original_labels
        )
    pairs = confusion_pairs(
        counts,
        class_names,
        k=params.confusion_k,
        alpha=params.confusion_alpha,
        rule=params.confusion_rule,
        coarse_names=kept.coarse_names,
        cosine=cosine,
        defects=defects,
    )
    summary = pair_summary(pairs)
    get_run_logger().info(
        "confusion pairs: %d of %d candidate pairs flagged (%s rule)",
        summary["flagged"],
        pairs.num_rows,
        params.confusion_rule,
    )
    return Output(
        tables={"confusion_pairs": pairs},
        info={
            **summary,
            "threshold": sigma_threshold(counts, params.confusion_k),
            "base_rate": base_rate(counts),
        },
    )
