"""Train an MLP on the subset's embeddings, with early stopping on the validation split."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from prefect import get_run_logger

from storage import registry
from storage.manifest import StageManifest
from storage.tables import read_embeddings
from tasks.core.params import ClassifierParams, StageParams
from tasks.core.progress import stage_progress
from tasks.core.results import ClassifierInfo, SubsetInfo
from tasks.core.stage import Output, Stage

if TYPE_CHECKING:  # torch is imported where a model is built: a cached run never needs it
    import torch
    from torch import nn

MODEL_FILE = "model.pt"


def build_mlp(input_dim: int, num_classes: int, hidden_size: int, dropout: float) -> nn.Module:
    """One hidden layer: enough on DINO features, where a linear probe is already strong."""
    from torch import nn

    return nn.Sequential(
        nn.Linear(input_dim, hidden_size),
        nn.ReLU(),
        nn.Dropout(dropout),
        nn.Linear(hidden_size, num_classes),
    )


def split_arrays(
    ids: np.ndarray, matrix: np.ndarray, splits: pa.Table
) -> dict[str, tuple[np.ndarray, ...]]:
    """Join embeddings (ids, rows) to the subset's splits by sample_id: split -> (ids, X, y)."""
    row_of = {int(sample_id): row for row, sample_id in enumerate(ids)}
    split_ids = splits.column("sample_id").to_numpy()
    missing = [int(s) for s in split_ids if int(s) not in row_of]
    if missing:
        raise ValueError(f"{len(missing)} subset samples have no embedding (first: {missing[0]})")
    rows = np.fromiter((row_of[int(s)] for s in split_ids), dtype=np.int64, count=len(split_ids))
    names = np.asarray(splits.column("split").to_pylist())
    labels = splits.column("label").to_numpy().astype(np.int64)
    return {
        name: (split_ids[names == name], matrix[rows[names == name]], labels[names == name])
        for name in ("train", "val", "test")
    }


def _epoch(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    batches: list[torch.Tensor],
    optimizer: torch.optim.Optimizer | None,
) -> tuple[float, float]:
    """One pass (training when an optimizer is given): mean loss and accuracy."""
    import torch
    from torch import nn

    model.train(optimizer is not None)
    loss_sum, correct = 0.0, 0
    with torch.set_grad_enabled(optimizer is not None):
        for index in batches:
            logits = model(x[index])
            loss = nn.functional.cross_entropy(logits, y[index], reduction="sum")
            if optimizer is not None:
                optimizer.zero_grad()
                (loss / len(index)).backward()
                optimizer.step()
            loss_sum += float(loss.detach())
            correct += int((logits.argmax(1) == y[index]).sum())
    return loss_sum / len(y), correct / len(y)


def train_mlp(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    num_classes: int,
    params: ClassifierParams,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> tuple[nn.Module, list[dict[str, Any]]]:
    """Train on CPU, stop after `patience` epochs without a better val loss; keep the best.

    ``on_epoch`` is called with each epoch's history row as it ends (progress)."""
    import torch

    if len(y_train) == 0 or len(y_val) == 0:
        raise ValueError(
            "training needs samples in both the train and val splits; "
            "lower --val-fraction or pick classes with more images"
        )
    xt, yt = torch.from_numpy(x_train).float(), torch.from_numpy(y_train).long()
    xv, yv = torch.from_numpy(x_val).float(), torch.from_numpy(y_val).long()
    # fork_rng: seeding must not change the caller's global random state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(params.seed)
        model = build_mlp(xt.shape[1], num_classes, params.hidden_size, params.dropout)
        optimizer = torch.optim.AdamW(
            model.parameters(), lr=params.learning_rate, weight_decay=params.weight_decay
        )
        order = torch.Generator().manual_seed(params.seed)
        val_batches = list(torch.arange(len(yv)).split(params.train_batch_size))
        best_loss, best_state, stale, history = float("inf"), None, 0, []
        for epoch in range(1, params.epochs + 1):
            batches = list(torch.randperm(len(yt), generator=order).split(params.train_batch_size))
            train_loss, train_acc = _epoch(model, xt, yt, batches, optimizer)
            val_loss, val_acc = _epoch(model, xv, yv, val_batches, None)
            history.append(
                dict(
                    epoch=epoch,
                    train_loss=train_loss,
                    val_loss=val_loss,
                    train_accuracy=train_acc,
                    val_accuracy=val_acc,
                )
            )
            if on_epoch is not None:
                on_epoch(history[-1])
            if val_loss < best_loss:
                best_loss, stale = val_loss, 0
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                stale += 1
                if stale >= params.patience:
                    break
        model.load_state_dict(best_state)
    return model.eval(), history


def stopping(history: list[dict[str, Any]], params: ClassifierParams) -> dict[str, Any]:
    """How training ended: epochs run, best epoch, and whether early stopping ended it."""
    best = min(history, key=lambda row: row["val_loss"])
    return {
        "epochs_run": len(history),
        "best_epoch": best["epoch"],
        "stopped_early": len(history) < params.epochs,
        "best_val_loss": best["val_loss"],
        "best_val_accuracy": best["val_accuracy"],
    }


def stopping_text(stop: dict[str, Any], patience: int) -> str:
    """One line on how training ended, for the log and the report."""
    run = stop["epochs_run"]
    how = (
        f"stopped early at epoch {run} ({patience} epochs without a lower val loss)"
        if stop["stopped_early"]
        else f"ran all {run} epochs, no early stop (raise --epochs if the best is the last)"
    )
    return (
        f"{how}; best epoch {stop['best_epoch']} "
        f"(val loss {stop['best_val_loss']:.4f}, val accuracy {stop['best_val_accuracy']:.4f})"
    )


def history_table(history: list[dict[str, Any]]) -> pa.Table:
    """``training_history``: a row per epoch run; epoch, train_loss, val_loss, train_accuracy,
    val_accuracy."""
    return pa.Table.from_pylist(history, schema=registry.table("training_history").schema())


def model_bytes(model: nn.Module, config: dict[str, Any]) -> bytes:
    """Weights plus everything needed to rebuild the model, as torch.save bytes."""
    import torch

    buffer = io.BytesIO()
    torch.save({"state_dict": model.state_dict(), "config": config}, buffer)
    return buffer.getvalue()


def load_model(data: bytes) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a model saved by ``model_bytes`` (weights_only: no pickled code runs)."""
    import torch

    saved = torch.load(io.BytesIO(data), weights_only=True)
    config = saved["config"]
    model = build_mlp(
        config["input_dim"], config["num_classes"], config["hidden_size"], config["dropout"]
    )
    model.load_state_dict(saved["state_dict"])
    return model.eval(), config


def load_split_arrays(
    embeddings: StageManifest, subset: StageManifest, only: str | None = None
) -> dict[str, tuple]:
    """Read the subset's splits (or split ``only``) and their embeddings, and join them."""
    splits = registry.table("splits").read(subset.location, ["sample_id", "split", "label"])
    if only is not None:
        splits = splits.filter(pc.equal(splits.column("split"), only))
    return split_arrays(*read_embeddings(embeddings, splits.column("sample_id")), splits)


def _key_params(params: ClassifierParams) -> dict[str, Any]:
    """The classifier's own fields and the seed: what training depends on."""
    own = ClassifierParams.model_fields.keys() - StageParams.model_fields.keys()
    key = params.model_dump(include=own | {"seed"})
    # train_batch_size as "batch_size": the name earlier runs' stage keys hash (kept, so that
    # their outputs stay cached)
    key["batch_size"] = key.pop("train_batch_size")
    return key


STAGE = Stage("classifier", key_params=_key_params, module=__name__, info_type=ClassifierInfo)


@STAGE.task()
def classifier_task(
    embeddings: StageManifest, subset: StageManifest, params: ClassifierParams
) -> Output:
    """Train the MLP on the subset's train split; write ``model.pt`` and ``training_history``."""
    arrays = load_split_arrays(embeddings, subset)
    class_names = SubsetInfo.of(subset).class_names
    (_, x_train, y_train), (_, x_val, y_val) = arrays["train"], arrays["val"]
    with stage_progress(
        params.epochs,
        unit="epoch",
        desc="classifier",
        key="classifier-training",
        description="epochs trained (of --epochs; early stopping may end it sooner)",
    ) as progress:
        model, history = train_mlp(
            *(x_train, y_train, x_val, y_val, len(class_names), params),
            on_epoch=lambda row: progress.advance(val_loss=f"{row['val_loss']:.4f}"),
        )
    stop = stopping(history, params)
    get_run_logger().info("classifier: %s", stopping_text(stop, params.patience))
    model_config = dict(
        input_dim=int(x_train.shape[1]),
        num_classes=len(class_names),
        hidden_size=params.hidden_size,
        dropout=params.dropout,
        class_names=class_names,
    )
    return Output(
        tables={"training_history": history_table(history)},
        files={MODEL_FILE: model_bytes(model, model_config)},
        info={
            **stop,
            "train_rows": len(y_train),
            "val_rows": len(y_val),
        },
    )
