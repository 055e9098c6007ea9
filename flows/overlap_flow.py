"""The class-overlap flow: a table of contents of the stages, no arithmetic, no paths."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from prefect import flow

from flows import runners
from flows.config import RunConfig
from flows.preflight import check_run
from tasks.class_similarity import class_similarity_task
from tasks.classifier import classifier_task
from tasks.confusion import confusion_task
from tasks.core.clock import StageClock
from tasks.core.results import OverlapInfo, RunStages
from tasks.embeddings import embeddings as embeddings_stage
from tasks.evaluate import evaluate_task
from tasks.images import images as images_stage
from tasks.neighbours import neighbours_task
from tasks.overlap import overlap_task
from tasks.record import record_task
from tasks.report import publish_report_task, report_task
from tasks.subset import subset_task


@flow(name="class-overlap", log_prints=True)
def class_overlap(config: RunConfig) -> dict[str, Any]:
    """Find the overlapping classes of an image dataset, model-free and through a classifier.

    Returns the run record as written (``RunRecord.as_json()``; ``RunRecord.model_validate``
    reads it back): a flow's result is plain JSON, the same whether run here or by a worker.
    """
    check_run(config)  # a run started by the CLI passed them already; a deployment's has not
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
    """Every stage in order, each given its own parameters; embeddings spread over a cluster.

    Each stage's wall time is lapped as it returns, for the run record (stages run in turn).
    """
    params, on_cluster = config.params, runners.on_cluster(config)
    clock = StageClock()
    images = images_stage(params.images, on_cluster=on_cluster)
    clock.lap("images")
    embeddings = embeddings_stage(images, params.embeddings, on_cluster=on_cluster)
    clock.lap("embeddings")
    neighbours = neighbours_task(images, embeddings, params.neighbours)
    clock.lap("neighbours")
    class_similarity = class_similarity_task(images, embeddings, params.class_similarity)
    clock.lap("class_similarity")
    overlap = overlap_task(
        images, class_similarity, embeddings, params.overlap, neighbours=neighbours
    )
    clock.lap("overlap")
    model_free = RunStages(images, embeddings, neighbours, class_similarity, overlap)
    if not OverlapInfo.of(overlap).n_pairs:  # nothing flagged: the model-free report, then stop
        return report_and_record(model_free, config, clock)
    subset = subset_task(images, overlap, params.subset)
    clock.lap("subset")
    classifier = classifier_task(embeddings, subset, params.classifier)
    clock.lap("classifier")
    evaluate = evaluate_task(classifier, embeddings, subset, params.common)
    clock.lap("evaluate")
    confusion = confusion_task(
        images, evaluate, subset, class_similarity, params.confusion, neighbours=neighbours
    )
    clock.lap("confusion")
    trained = replace(
        model_free, subset=subset, classifier=classifier, evaluate=evaluate, confusion=confusion
    )
    return report_and_record(trained, config, clock)


def report_and_record(stages: RunStages, config: RunConfig, clock: StageClock) -> dict[str, Any]:
    """The report of the stages that ran, its Prefect artifacts, then the run record (JSON)."""
    settings = config.model_dump(mode="json")
    report = report_task(stages, settings, config.params.report)
    publish_report_task(report, stages)
    clock.lap("report")
    record = record_task(
        stages.with_report(report), settings, config.params.common, clock.as_record()
    )
    return record.as_json()
