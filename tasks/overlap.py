"""Find overlaps: flag similar class pairs, group them, and pick the images behind each pair."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger

from storage import registry
from storage.escape import terminal
from storage.manifest import StageManifest
from storage.tables import embedding_matrix, split_shards, stage_shards
from tasks.algorithms import label_noise
from tasks.algorithms.bootstrap import run_stability, with_stability
from tasks.algorithms.calibration import apply_rule, calibration_table, suggest_setting
from tasks.algorithms.overlap_rule import RULES
from tasks.algorithms.overlap_rules import (
    overlap_classes_table,
    overlap_pairs_table,
    planted_check,
    similarity_matrices,
)
from tasks.algorithms.pair_samples import top_pair_samples
from tasks.core.params import OverlapParams
from tasks.core.results import ImagesInfo, OverlapInfo
from tasks.core.stage import Output, Stage


def rule_params(params: OverlapParams) -> dict[str, Any]:
    """The parameters of the chosen rule only: changing an unused one must not re-run the stage."""
    return RULES[params.overlap_rule].chosen(params)


def _bootstrap_params(params: OverlapParams) -> dict[str, Any]:
    """Resamples, and the seed only when there are any (it changes nothing otherwise)."""
    resamples = params.bootstrap_resamples
    return {"bootstrap_resamples": resamples, "bootstrap_seed": params.seed if resamples else None}


def _key_params(params: OverlapParams) -> dict[str, Any]:
    return {
        **rule_params(params),
        "pair_samples": params.pair_samples,
        **_bootstrap_params(params),
        # the bootstrap resamples the centroids' images: a key field only when not all of them
        **({} if params.centroid_split == "all" else {"centroid_split": params.centroid_split}),
    }


STAGE = Stage("overlap", key_params=_key_params, module=__name__, info_type=OverlapInfo)


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
    names = ImagesInfo.of(images).class_names
    cosine, ranks = similarity_matrices(
        registry.table("class_similarity").read(similarity.location), len(names)
    )
    rule = rule_params(params)
    flagged = apply_rule(cosine, ranks, **rule)
    calibration_rows = calibration_table(cosine, ranks, chosen=rule)
    stability = None
    if params.bootstrap_resamples:
        columns = ["sample_id", "label", "embedding"]
        arrays = (
            (s.column("sample_id").to_numpy(), s.column("label").to_numpy(), embedding_matrix(s))
            for s in split_shards(embeddings, params.centroid_split, columns)
        )
        stability = run_stability(
            arrays,
            cosine,
            flagged.pairs,
            names,
            rule=rule,
            resamples=params.bootstrap_resamples,
            seed=params.seed,
        )
    centroids = embedding_matrix(registry.table("centroids").read(similarity.location), "centroid")
    shards = stage_shards(embeddings, ["sample_id", "split", "label", "class_name", "embedding"])
    defects = None
    if neighbours is not None:  # how much of each pair near-duplicates and suspects explain
        inputs = label_noise.DEFECT_INPUTS.items()
        read = (registry.table(name).read(neighbours.location, cols) for name, cols in inputs)
        defects = label_noise.pair_count_matrices(len(names), *read)
    tables = {
        "overlap_pairs": with_stability(
            overlap_pairs_table(
                flagged, cosine, ranks, names, dataset.get("coarse_labels"), defects
            ),
            stability,
        ),
        "overlap_calibration": calibration_rows,
        "overlap_classes": overlap_classes_table(flagged.pairs, cosine, names),
        "pair_samples": top_pair_samples(
            shards, centroids, flagged.pairs, names, params.pair_samples
        ),
    }
    if stability is not None:
        tables["overlap_stability"] = stability
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
        **_bootstrap_params(params),
        # a rule that flags nothing: the one setting to try, for the log, the report and the CLI
        "suggestion": None if len(labels) else suggest_setting(calibration_rows, rule["rule"]),
    }
    if dataset.get("planted_pairs"):
        summary["planted"] = planted_check(flagged.pairs, names, dataset["planted_pairs"])
    _log_summary(get_run_logger(), summary, len(names))
    return Output(tables=tables, info=summary)


def _log_summary(logger: Any, summary: dict[str, Any], num_classes: int) -> None:
    """Say how many pairs and classes were flagged, and warn loudly when none were."""
    rule = RULES[summary["rule"]].describe(summary)
    stats = f"mu={summary['mu']:.4f}, sigma={summary['sigma']:.4f}"
    if summary["n_pairs"] == 0:
        logger.warning(
            "overlap: the rule (%s; %s) flagged no pair of the %d classes: the subset, classifier "
            "and confusion stages have nothing to work on. Loosen the rule (lower --overlap-k, "
            "lower --overlap-threshold, or --overlap-rule topk or classes): %s",
            rule,
            stats,
            num_classes,
            summary.get("suggestion"),
        )
        return
    logger.info(
        "overlap: %s (%s) flagged %d pair(s) over %d of %d classes: %s",
        rule,
        stats,
        summary["n_pairs"],
        summary["n_classes"],
        num_classes,
        ", ".join(map(terminal, summary["flagged_class_names"])),  # a name is one log line
    )
    if "planted" in summary:
        planted = summary["planted"]
        logger.info(
            "overlap: planted pairs found %d, missed %d %s, extra %d %s",
            len(planted["found"]),
            len(planted["missed"]),
            terminal(planted["missed"]),
            len(planted["extra"]),
            terminal(planted["extra"]),
        )
