"""Find overlaps: flag similar class pairs, group them, and pick the images behind each pair."""

from __future__ import annotations

import sys
from typing import Any

from prefect import get_run_logger, task

from flows.config import RunConfig
from storage.fingerprint import code_version
from storage.manifest import StageManifest
from storage.schemas import overlap as schemas
from storage.tables import embedding_matrix, read_parquet, stage_shards, table_name, write_parquet
from tasks.algorithms import overlap_rules, pair_samples
from tasks.algorithms.overlap_rules import (
    flag_pairs,
    overlap_classes_table,
    overlap_pairs_table,
    planted_check,
    similarity_matrices,
)
from tasks.algorithms.pair_samples import top_pair_samples
from tasks.core.stage import Stage

OVERLAP_PAIRS = table_name("overlap_pairs")
OVERLAP_CLASSES = table_name("overlap_classes")
PAIR_SAMPLES = table_name("pair_samples")


def rule_params(config: RunConfig) -> dict[str, Any]:
    """The parameters of the chosen rule only: changing an unused one must not re-run the stage."""
    extra = {
        "sigma": {"k": config.overlap_k},
        "threshold": {"threshold": config.overlap_threshold},
        "topk": {"top_k": config.overlap_top_k},
    }[config.overlap_rule]
    return {"rule": config.overlap_rule, **extra}


def describe_rule(params: dict[str, Any]) -> str:
    """The rule in words, for logs and warnings."""
    return {
        "sigma": lambda p: f"cosine >= mu + {p.get('k')}*sigma",
        "threshold": lambda p: f"cosine >= {p.get('threshold')}",
        "topk": lambda p: f"mutual top-{p.get('top_k')} nearest classes",
    }[params["rule"]](params)


def _inputs(similarity: StageManifest, embeddings: StageManifest, config: RunConfig) -> dict:
    return {
        "similarity": similarity.fingerprint,
        "embeddings": embeddings.fingerprint,
        "rule": rule_params(config),
        "pair_samples": config.pair_samples,
        "code": CODE,
    }


CODE = code_version(sys.modules[__name__], overlap_rules, pair_samples, schemas)
STAGE = Stage("overlap", _inputs)


@task(name="find overlaps", cache_policy=STAGE.cache_policy, persist_result=True)
def find_overlaps_task(
    similarity: StageManifest, embeddings: StageManifest, config: RunConfig
) -> StageManifest:
    """Flag overlapping class pairs by the configured rule; write pairs, classes and samples."""
    params = {"similarity": similarity, "embeddings": embeddings, "config": config}
    if (done := STAGE.completed(**params)) is not None:
        return done
    logger = get_run_logger()
    info = similarity.info
    names = list(info["class_names"])
    cosine, ranks = similarity_matrices(
        read_parquet(similarity.location, table_name("class_similarity")), len(names)
    )
    rule = rule_params(config)
    flagged = flag_pairs(cosine, ranks, **rule)
    centroids = embedding_matrix(
        read_parquet(similarity.location, table_name("centroids")), "centroid"
    )
    shards = stage_shards(embeddings, ["sample_id", "split", "label", "class_name", "embedding"])
    tables = {
        OVERLAP_PAIRS: (
            overlap_pairs_table(flagged, cosine, ranks, names, info.get("coarse_labels")),
            schemas.OVERLAP_PAIRS,
        ),
        OVERLAP_CLASSES: (
            overlap_classes_table(flagged.pairs, cosine, names),
            schemas.OVERLAP_CLASSES,
        ),
        PAIR_SAMPLES: (
            top_pair_samples(shards, centroids, flagged.pairs, names, config.pair_samples),
            schemas.PAIR_SAMPLES,
        ),
    }
    location = STAGE.location(**params)
    rows = {name: write_parquet(location, name, t, schema) for name, (t, schema) in tables.items()}
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
    if info.get("planted_pairs"):
        summary["planted"] = planted_check(flagged.pairs, names, info["planted_pairs"])
    _log_summary(logger, summary, len(names))
    carried = ("class_names", "coarse_labels", "coarse_names", "has_test_split")
    return STAGE.finish(
        location,
        rows,
        {**rule, "pair_samples": config.pair_samples},
        {**{key: info.get(key) for key in carried}, **summary},
        CODE,
    )


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
