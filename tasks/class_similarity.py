"""Class similarity: streaming class centroids and the cosine of every pair of them."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger

from storage.manifest import StageManifest
from storage.tables import split_shards
from tasks.algorithms.centroids import (
    centroids_table,
    cosine_matrix,
    similarity_table,
    stream_centroids,
)
from tasks.core.params import SimilarityParams
from tasks.core.results import EmbeddingsInfo, ImagesInfo
from tasks.core.stage import Output, Stage


def _key_params(params: SimilarityParams) -> dict[str, Any]:
    # a key field only when set: runs of the default hash as before
    return {} if params.centroid_split == "all" else {"centroid_split": params.centroid_split}


STAGE = Stage("class_similarity", key_params=_key_params, module=__name__)


@STAGE.task()
def class_similarity_task(
    images: StageManifest, embeddings: StageManifest, params: SimilarityParams
) -> Output:
    """Class centroids (of ``--centroid-split``'s images) and the cosine of every pair."""
    names = ImagesInfo.of(images).class_names
    split = params.centroid_split
    shards = split_shards(embeddings, split, ["sample_id", "label", "embedding"])
    centroids, counts = stream_centroids(shards, names, EmbeddingsInfo.of(embeddings).dim)
    similarity = similarity_table(cosine_matrix(centroids), names)
    get_run_logger().info(
        "class similarity: %d classes, %d pairs, centroids of %s images (%d)",
        len(names),
        similarity.num_rows // 2,
        split,
        int(counts.sum()),
    )
    return Output(
        tables={
            "centroids": centroids_table(centroids, counts, names),
            "class_similarity": similarity,
        },
        info={
            "dim": int(centroids.shape[1]),
            "num_classes": len(names),
            "centroid_split": split,
            "centroid_images": int(counts.sum()),
        },
    )
