"""The class-overlap flow: a table of contents of the stages, no arithmetic, no paths."""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows import runners
from flows.config import RunConfig
from flows.preflight import check_run
from tasks.class_similarity import class_similarity_task
from tasks.classifier import classifier_task
from tasks.confusion import confusion_task
from tasks.core import params
from tasks.core.clock import StageClock
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
    """Every stage in order, each given its own parameters; embeddings spread over a cluster.

    Each stage's wall time is lapped as it returns, for the run record (stages run in turn).
    """
    clock = StageClock()
    common = config.params_of(params.StageParams)
    images = images_stage(
        config.params_of(params.ImagesParams), on_cluster=runners.on_cluster(config)
    )
    clock.lap("images")
    embeddings = embeddings_stage(
        images, config.params_of(params.EmbeddingsParams), on_cluster=runners.on_cluster(config)
    )
    clock.lap("embeddings")
    neighbours = neighbours_task(images, embeddings, config.params_of(params.NeighboursParams))
    clock.lap("neighbours")
    class_similarity = class_similarity_task(
        images, embeddings, config.params_of(params.SimilarityParams)
    )
    clock.lap("class_similarity")
    overlap = overlap_task(
        images,
        class_similarity,
        embeddings,
        config.params_of(params.OverlapParams),
        neighbours=neighbours,
    )
    clock.lap("overlap")
    if not overlap.info.get("n_pairs"):  # nothing flagged: the model-free report, then stop
        model_free = {"images": images, "embeddings": embeddings, "neighbours": neighbours}
        model_free |= {"class_similarity": class_similarity, "overlap": overlap}
        return report_and_record(model_free, config, clock)
    subset = subset_task(images, overlap, config.params_of(params.SubsetParams))
    clock.lap("subset")
    classifier = classifier_task(embeddings, subset, config.params_of(params.ClassifierParams))
    clock.lap("classifier")
    evaluate = evaluate_task(classifier, embeddings, subset, common)
    clock.lap("evaluate")
    confusion = confusion_task(
        images,
        evaluate,
        subset,
        class_similarity,
        config.params_of(params.ConfusionParams),
        neighbours=neighbours,
    )
    clock.lap("confusion")
    stages = {
        "images": images,
        "embeddings": embeddings,
        "neighbours": neighbours,
        "class_similarity": class_similarity,
        "overlap": overlap,
        "subset": subset,
        "classifier": classifier,
        "evaluate": evaluate,
        "confusion": confusion,
    }
    return report_and_record(stages, config, clock)


def report_and_record(
    stages: dict[str, Any], config: RunConfig, clock: StageClock
) -> dict[str, Any]:
    """The report of the stages that ran, its Prefect artifacts, then the run record."""
    settings = config.model_dump(mode="json")
    report = report_task(stages, settings, config.params_of(params.ReportParams))
    publish_report_task(report, stages)
    clock.lap("report")
    common = config.params_of(params.StageParams)
    return record_task({**stages, "report": report}, settings, common, clock.as_record())
