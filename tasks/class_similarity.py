"""Class similarity: streaming class centroids and the cosine of every pair of them (FAISS)."""

from __future__ import annotations

from prefect import get_run_logger

from storage.manifest import StageManifest
from storage.tables import stage_shards
from tasks.algorithms.centroids import (
    centroids_table,
    cosine_matrix,
    similarity_table,
    stream_centroids,
)
from tasks.core.params import StageParams
from tasks.core.stage import Output, Stage

STAGE = Stage("class_similarity", module=__name__)


@STAGE.task()
def class_similarity_task(
    images: StageManifest, embeddings: StageManifest, params: StageParams
) -> Output:
    """Class centroids and the cosine similarity of every pair of classes."""
    import faiss

    names = list(images.info["class_names"])
    shards = stage_shards(embeddings, ["sample_id", "label", "embedding"])
    centroids, counts = stream_centroids(shards, names, embeddings.info.get("dim"))
    similarity = similarity_table(cosine_matrix(centroids), names)
    get_run_logger().info(
        "class similarity: %d classes, %d pairs", len(names), similarity.num_rows // 2
    )
    return Output(
        tables={
            "centroids": centroids_table(centroids, counts, names),
            "class_similarity": similarity,
        },
        info={
            "dim": int(centroids.shape[1]),
            "num_classes": len(names),
            "gpu": faiss.get_num_gpus() > 0,
        },
    )
