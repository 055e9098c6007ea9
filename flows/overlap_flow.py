"""The class-overlap flow: a table of contents of the stages, no arithmetic, no paths."""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows import runners
from flows.config import RunConfig
from tasks.class_similarity import class_similarity_task
from tasks.classifier import train_classifier_task
from tasks.confusion import confusion_pairs_task
from tasks.core.preflight import check_run
from tasks.evaluate import evaluate_task
from tasks.images import load_dataset_task
from tasks.models.shard_map import extract_embeddings
from tasks.overlap import find_overlaps_task
from tasks.record import record_run_task
from tasks.report import build_report_task
from tasks.subset import write_subset_task


@flow(name="class-overlap", log_prints=True)
def class_overlap(config: RunConfig) -> dict[str, Any]:
    """Find the overlapping classes of an image dataset, model-free and through a classifier."""
    runners.check_runner(config)
    check_run(config)
    if runners.shared_results(config):
        # A subflow carries the run's own task runner and result storage (Prefect fixes both
        # when a flow starts), so the parameter chooses them, from the CLI or a deployment.
        return runners.configured(class_overlap_stages, config)(config)
    return overlap_stages(config)


@flow(name="class-overlap-stages", log_prints=True)
def class_overlap_stages(config: RunConfig) -> dict[str, Any]:
    """The stages of a run on a Dask or Ray cluster, or with outputs in a bucket."""
    return overlap_stages(config)


def overlap_stages(config: RunConfig) -> dict[str, Any]:
    """Every stage in order; the embeddings are spread over the cluster when there is one."""
    images = load_dataset_task(config)
    embeddings = extract_embeddings(images, config, on_cluster=runners.on_cluster(config))
    similarity = class_similarity_task(embeddings, config)
    overlap = find_overlaps_task(similarity, embeddings, config)
    subset = write_subset_task(images, overlap, config)
    classifier = train_classifier_task(embeddings, subset, config)
    evaluation = evaluate_task(classifier, embeddings, subset, config)
    confusion = confusion_pairs_task(evaluation, subset, similarity, config)
    stages = {
        "images": images,
        "embeddings": embeddings,
        "similarity": similarity,
        "overlap": overlap,
        "subset": subset,
        "classifier": classifier,
        "evaluation": evaluation,
        "confusion": confusion,
    }
    report = build_report_task(stages, config)
    return record_run_task(config, {**stages, "report": report})
