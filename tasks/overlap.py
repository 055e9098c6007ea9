"""Find overlaps: flag similar class pairs, group them, and pick the images behind each pair."""

from __future__ import annotations

import sys
from typing import Any

from prefect import get_run_logger

from storage import registry
from storage.fingerprint import code_version
from storage.manifest import StageManifest
from storage.schemas import overlap as schemas
from storage.tables import embedding_matrix, stage_shards
from tasks.algorithms import label_noise, overlap_rules, pair_samples
from tasks.algorithms.overlap_rules import (
    flag_pairs,
    overlap_classes_table,
    overlap_pairs_table,
    planted_check,
    similarity_matrices,
)
from tasks.algorithms.pair_samples import top_pair_samples
from tasks.core.params import OverlapParams
from tasks.core.stage import Output, Stage


def rule_params(params: OverlapParams) -> dict[str, Any]:
    """The parameters of the chosen rule only: changing an unused one must not re-run the stage."""
    extra = {
        "sigma": {"k": params.overlap_k},
        "threshold": {"threshold": params.overlap_threshold},
        "topk": {"top_k": params.overlap_top_k},
    }[params.overlap_rule]
    return {"rule": params.overlap_rule, **extra}


def describe_rule(params: dict[str, Any]) -> str:
    """The rule in words, for logs and warnings."""
    return {
        "sigma": lambda p: f"cosine >= mu + {p.get('k')}*sigma",
        "threshold": lambda p: f"cosine >= {p.get('threshold')}",
        "topk": lambda p: f"mutual top-{p.get('top_k')} nearest classes",
    }[params["rule"]](params)


def _key_params(params: OverlapParams) -> dict[str, Any]:
    return {"rule": rule_params(params), "pair_samples": params.pair_samples}


CODE = code_version(sys.modules[__name__], overlap_rules, pair_samples, label_noise, schemas)
STAGE = Stage("overlap", CODE, _key_params)


@STAGE.task()
def overlap_task(
    images: StageManifest,
    similarity: StageManifest,
    embeddings: StageManifest,
    params: OverlapParams,
    neighbours: StageManifest | None = None,
) -> Output:
    """Flag overlapping class pairs by the configured rule; write pairs, classes and samples."""
    dataset = images.info
    names = list(dataset["class_names"])
    cosine, ranks = similarity_matrices(
        registry.table("class_similarity").read(similarity.location), len(names)
    )
    rule = rule_params(params)
    flagged = flag_pairs(cosine, ranks, **rule)
    centroids = embedding_matrix(registry.table("centroids").read(similarity.location), "centroid")
    shards = stage_shards(embeddings, ["sample_id", "split", "label", "class_name", "embedding"])
    defects = None
    if neighbours is not None:  # how much of each pair near-duplicates and suspects explain
        defects = label_noise.pair_count_matrices(
            len(names),
            registry.table("near_duplicates").read(neighbours.location),
            registry.table("label_suspects").read(neighbours.location, ["label", "majority_label"]),
        )
    tables = {
        "overlap_pairs": overlap_pairs_table(
            flagged, cosine, ranks, names, dataset.get("coarse_labels"), defects
        ),
        "overlap_classes": overlap_classes_table(flagged.pairs, cosine, names),
        "pair_samples": top_pair_samples(
            shards, centroids, flagged.pairs, names, params.pair_samples
        ),
    }
    labels = sorted({int(x) for x in flagged.pairs.ravel()})
    summary = {
        **rule,
        "mu": flagged.mu,
        "sigma": flagged.sigma,
        "cutoff": flagged.cutoff,
        "n_pairs": len(flagged.pairs),
        "n_classes": len(labels),
        "flagged_labels": labels,
        "flagged_class_names": [names[i] for i in labels],
    }
    if dataset.get("planted_pairs"):
        summary["planted"] = planted_check(flagged.pairs, names, dataset["planted_pairs"])
    _log_summary(get_run_logger(), summary, len(names))
    return Output(tables=tables, params={**rule, "pair_samples": params.pair_samples}, info=summary)


def _log_summary(logger: Any, summary: dict[str, Any], num_classes: int) -> None:
    """Say how many pairs and classes were flagged, and warn loudly when none were."""
    rule = describe_rule(summary)
    stats = f"mu={summary['mu']:.4f}, sigma={summary['sigma']:.4f}"
    if summary["n_pairs"] == 0:
        logger.warning(
            "overlap: the rule (%s; %s) flagged no pair of the %d classes: the subset, classifier "
            "and confusion stages have nothing to work on. Loosen the rule (lower --overlap-k, "
            "lower --overlap-threshold, or --overlap-rule topk)",
            rule,
            stats,
            num_classes,
        )
        return
    logger.info(
        "overlap: %s (%s) flagged %d pair(s) over %d of %d classes: %s",
        rule,
        stats,
        summary["n_pairs"],
        summary["n_classes"],
        num_classes,
        ", ".join(summary["flagged_class_names"]),
    )
    if "planted" in summary:
        planted = summary["planted"]
        logger.info(
            "overlap: planted pairs found %d, missed %d %s, extra %d %s",
            len(planted["found"]),
            len(planted["missed"]),
            planted["missed"],
            len(planted["extra"]),
            planted["extra"],
        )
