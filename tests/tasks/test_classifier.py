"""The MLP stage: accuracy on separable data, reproducibility, early stopping, the task."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import polars as pl
import pytest
import torch
from prefect.logging import disable_run_logger

from storage.tables import read_parquet
from tasks import classifier
from tasks.classifier import load_model, train_mlp
from tasks.core.params import ClassifierParams
from tasks.evaluate import predict_proba
from tests.support.builders import (
    clf_clusters,
    clf_config,
    clf_embeddings_stage,
    clf_single_thread,
    clf_splits,
    clf_subset_stage,
)

NAMES = [f"class_{i}" for i in range(5)]
FAST = ClassifierParams(hidden_size=32, epochs=60, patience=8, train_batch_size=32, seed=3)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    with clf_single_thread():
        yield


def _arrays(x: np.ndarray, labels: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    split = clf_splits(labels)
    return {name: (x[split == name], labels[split == name]) for name in ("train", "val", "test")}


def test_near_perfect_on_separated_clusters() -> None:
    data = _arrays(*clf_clusters(5, 60))
    model, history = train_mlp(*data["train"], *data["val"], 5, FAST)
    x_test, y_test = data["test"]
    accuracy = (predict_proba(model, x_test).argmax(1) == y_test).mean()
    assert accuracy >= 0.98
    assert history[-1]["train_accuracy"] >= 0.98


def test_same_seed_same_model_and_history() -> None:
    data = _arrays(*clf_clusters(5, 40))
    first, history_a = train_mlp(*data["train"], *data["val"], 5, FAST)
    second, history_b = train_mlp(*data["train"], *data["val"], 5, FAST)
    assert history_a == history_b
    for name, tensor in first.state_dict().items():
        assert torch.equal(tensor, second.state_dict()[name])
    other, _ = train_mlp(*data["train"], *data["val"], 5, FAST.model_copy(update={"seed": 4}))
    assert not torch.equal(first[0].weight, other[0].weight)


def test_seeding_leaves_global_rng_alone() -> None:
    data = _arrays(*clf_clusters(3, 20))
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    train_mlp(*data["train"], *data["val"], 3, FAST)
    assert torch.equal(torch.rand(3), expected)


def test_confuses_planted_near_identical_pair() -> None:
    data = _arrays(*clf_clusters(4, 80, planted=((0, 1),), noise=0.05))
    model, _ = train_mlp(*data["train"], *data["val"], 4, FAST)
    x_test, y_test = data["test"]
    y_pred = predict_proba(model, x_test).argmax(1)
    wrong = y_pred != y_test
    planted = np.isin(y_test, [0, 1]) & np.isin(y_pred, [0, 1])
    assert wrong.sum() >= 8  # same centre: about half of classes 0 and 1 go the wrong way
    assert (wrong & ~planted).sum() == 0


def test_early_stopping_keeps_best_epoch() -> None:
    data = _arrays(*clf_clusters(5, 40, noise=0.4))
    params = ClassifierParams(
        hidden_size=64, epochs=300, patience=3, train_batch_size=16, learning_rate=1e-2, seed=0
    )
    model, history = train_mlp(*data["train"], *data["val"], 5, params)
    assert len(history) < 300
    best = min(history, key=lambda row: row["val_loss"])
    assert len(history) == best["epoch"] + params.patience
    x_val, y_val = data["val"]
    logits = torch.log(torch.from_numpy(predict_proba(model, x_val)))
    val_loss = torch.nn.functional.nll_loss(logits, torch.from_numpy(y_val)).item()
    assert val_loss == pytest.approx(best["val_loss"], rel=1e-4)


def test_stopping_says_where_training_ended() -> None:
    data = _arrays(*clf_clusters(5, 40, noise=0.4))
    params = ClassifierParams(
        hidden_size=64, epochs=300, patience=3, train_batch_size=16, learning_rate=1e-2, seed=0
    )
    _, history = train_mlp(*data["train"], *data["val"], 5, params)
    stop = classifier.stopping(history, params)
    assert stop["stopped_early"] and stop["epochs_run"] == stop["best_epoch"] + 3
    assert "stopped early at epoch" in classifier.stopping_text(stop, params.patience)
    # A run that used every epoch says so, and how to give it more.
    full = classifier.stopping(history, ClassifierParams(epochs=len(history)))
    assert not full["stopped_early"]
    assert "raise --epochs" in classifier.stopping_text(full, 3)


def test_needs_train_and_val() -> None:
    x, y = clf_clusters(2, 5)
    with pytest.raises(ValueError, match="train and val"):
        train_mlp(x, y, x[:0], y[:0], 2, FAST)


def test_task_writes_model_and_history(tmp_path) -> None:
    x, labels = clf_clusters(5, 40)
    embeddings = clf_embeddings_stage(tmp_path, x, labels, NAMES)
    subset = clf_subset_stage(tmp_path, labels, clf_splits(labels), NAMES)
    config = clf_config(tmp_path)
    with disable_run_logger():
        manifest = classifier.classifier_task.fn(embeddings, subset, config.params.classifier)
    assert set(manifest.files) == {"model.pt", "training_history.parquet"}
    assert manifest.problems() == []
    assert manifest.key == classifier.STAGE.key(
        embeddings=embeddings, subset=subset, params=config.params.classifier
    )
    history = pl.read_parquet(manifest.path("training_history.parquet"))
    assert history.columns == ["epoch", "train_loss", "val_loss", "train_accuracy", "val_accuracy"]
    assert history.height == manifest.info["epochs_run"]
    best = history.sort("val_loss").row(0, named=True)["epoch"]
    assert manifest.info["best_epoch"] == best
    assert manifest.info["stopped_early"] == (history.height < config.epochs)
    _, saved = load_model(manifest.location.read_bytes("model.pt"))
    assert saved["num_classes"] == 5 and saved["input_dim"] == x.shape[1]
    assert read_parquet(manifest.location, "training_history.parquet").num_rows == history.height
    # A changed training parameter is a different stage folder (and cache key).
    other = clf_config(tmp_path, hidden_size=16)
    assert classifier.STAGE.key(embeddings=embeddings, subset=subset, params=other) != manifest.key


def test_missing_embeddings_is_one_line_error(tmp_path) -> None:
    x, labels = clf_clusters(3, 10)
    embeddings = clf_embeddings_stage(tmp_path, x[:-1], labels[:-1], NAMES[:3])
    subset = clf_subset_stage(tmp_path, labels, clf_splits(labels), NAMES[:3])
    with pytest.raises(ValueError, match="have no embedding"):
        classifier.load_split_arrays(embeddings, subset)


def test_one_split_reads_only_its_embeddings(tmp_path) -> None:
    x, labels = clf_clusters(3, 10)
    split = clf_splits(labels)
    embeddings = clf_embeddings_stage(tmp_path, x, labels, NAMES[:3])
    # four more train rows that have no embedding: reading every split fails, test alone must not
    subset = clf_subset_stage(
        tmp_path,
        np.concatenate([labels, labels[:4]]),
        np.concatenate([split, ["train"] * 4]),
        NAMES[:3],
    )
    with pytest.raises(ValueError, match="4 subset samples have no embedding"):
        classifier.load_split_arrays(embeddings, subset)
    arrays = classifier.load_split_arrays(embeddings, subset, only="test")
    assert len(arrays["test"][2]) == (split == "test").sum() and len(arrays["train"][2]) == 0


def test_the_key_holds_every_training_field_under_the_name_earlier_runs_hashed() -> None:
    from tasks.classifier import _key_params

    params = ClassifierParams(dataset="synthetic", hidden_size=7, train_batch_size=9, seed=4)
    assert _key_params(params) == {
        "hidden_size": 7,
        "dropout": params.dropout,
        "learning_rate": params.learning_rate,
        "weight_decay": params.weight_decay,
        "epochs": params.epochs,
        "patience": params.patience,
        "batch_size": 9,  # train_batch_size, under the name the stage's keys have always hashed
        "seed": 4,
    }
