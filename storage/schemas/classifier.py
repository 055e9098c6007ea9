"""The classifier's tables, schema and spec: training history, test predictions, report,
confusion matrix and confusion pairs."""

from __future__ import annotations

import pyarrow as pa

from storage.schemas.shared_columns import CONFUSION_DEFECTS, KEYS, PAIR_DEFECTS
from storage.table_spec import TableSpec

TRAINING_HISTORY = pa.schema(
    [
        pa.field("epoch", pa.int32(), nullable=False),
        pa.field("train_loss", pa.float64(), nullable=False),
        pa.field("val_loss", pa.float64(), nullable=False),
        pa.field("train_accuracy", pa.float64(), nullable=False),
        pa.field("val_accuracy", pa.float64(), nullable=False),
    ]
)
TRAINING_HISTORY_TABLE = TableSpec(
    "training_history",
    "classifier",
    "One row per training epoch of the MLP, until early stopping.",
    {
        "epoch": "1-based epoch",
        "train_loss": "mean cross-entropy on train, measured with dropout on, during the epoch",
        "val_loss": "cross-entropy on val after the epoch",
        "train_accuracy": "accuracy on train during the epoch",
        "val_accuracy": "accuracy on val after the epoch",
    },
    arrow=TRAINING_HISTORY,
)

PREDICTIONS = pa.schema(
    [
        pa.field("sample_id", pa.int64(), nullable=False),
        pa.field("y_true", pa.int32(), nullable=False),
        pa.field("y_pred", pa.int32(), nullable=False),
        pa.field("true_name", pa.string(), nullable=False),
        pa.field("pred_name", pa.string(), nullable=False),
        pa.field("probability", pa.float32(), nullable=False),
        pa.field("top5_labels", pa.list_(pa.int32()), nullable=False),
        pa.field("top5_probabilities", pa.list_(pa.float32()), nullable=False),
    ]
)
PREDICTIONS_TABLE = TableSpec(
    "predictions",
    "evaluate",
    "One row per test image of the subset: the classifier's prediction.",
    {
        "sample_id": KEYS["sample_id"],
        "y_true": "true label of the subset (0..K−1)",
        "y_pred": "predicted label of the subset (0..K−1)",
        "true_name": "true class name",
        "pred_name": "predicted class name",
        "probability": "softmax probability of the predicted class",
        "top5_labels": "the 5 most probable labels, best first (all K when K < 5)",
        "top5_probabilities": "their probabilities",
    },
    arrow=PREDICTIONS,
)

# Per-class rows first, then the summary rows (accuracy, macro avg, weighted avg) with null label.
CLASSIFICATION_REPORT = pa.schema(
    [
        pa.field("label", pa.int32()),
        pa.field("class_name", pa.string(), nullable=False),
        pa.field("precision", pa.float64(), nullable=False),
        pa.field("recall", pa.float64(), nullable=False),
        pa.field("f1", pa.float64(), nullable=False),
        pa.field("support", pa.int64(), nullable=False),
    ]
)
CLASSIFICATION_REPORT_TABLE = TableSpec(
    "classification_report",
    "evaluate",
    "scikit-learn's `classification_report(labels=range(K), zero_division=0)` numbers: one "
    "row per class (support 0 included), then the summary rows `accuracy`, `macro avg`, "
    "`weighted avg` with a null `label`; also written as `classification_report.md`.",
    {
        "label": "class label; null in the summary rows",
        "class_name": "class name, or the summary row's name",
        "precision": "precision",
        "recall": "recall",
        "f1": "F1 score",
        "support": "test samples of the class (all test samples in summary rows)",
    },
    arrow=CLASSIFICATION_REPORT,
    also_written_by=("analyze_predictions",),
)

# Dense: all K*K cells, zeros included; rate is null in rows whose class has no samples.
CONFUSION_MATRIX = pa.schema(
    [
        pa.field("true_label", pa.int32(), nullable=False),
        pa.field("true_name", pa.string(), nullable=False),
        pa.field("pred_label", pa.int32(), nullable=False),
        pa.field("pred_name", pa.string(), nullable=False),
        pa.field("count", pa.int64(), nullable=False),
        pa.field("rate", pa.float64()),
    ]
)
CONFUSION_MATRIX_TABLE = TableSpec(
    "confusion_matrix",
    "evaluate",
    "The test confusion matrix, dense and long: all K×K cells, zeros kept (a zero says the "
    "pair is never confused).",
    {
        "true_label": "true class label",
        "true_name": "true class name",
        "pred_label": "predicted class label",
        "pred_name": "predicted class name",
        "count": "test samples of the true class predicted as this class",
        "rate": "count / row support; null when the true class has no test samples",
    },
    arrow=CONFUSION_MATRIX,
    also_written_by=("analyze_predictions",),
)

# The seed's seven columns first, under their seed names, then ours.
CONFUSION_PAIRS = pa.schema(
    [
        pa.field("True", pa.string(), nullable=False),
        pa.field("Pred", pa.string(), nullable=False),
        pa.field("MisRate", pa.float64(), nullable=False),
        pa.field("Precision(Pred)", pa.float64(), nullable=False),
        pa.field("Recall(True)", pa.float64(), nullable=False),
        pa.field("F1(True)", pa.float64(), nullable=False),
        pa.field("F1(Pred)", pa.float64(), nullable=False),
        pa.field("true_label", pa.int32(), nullable=False),
        pa.field("pred_label", pa.int32(), nullable=False),
        pa.field("count", pa.int64(), nullable=False),
        pa.field("support", pa.int64(), nullable=False),
        pa.field("ci_low", pa.float64(), nullable=False),
        pa.field("ci_high", pa.float64(), nullable=False),
        pa.field("p_value", pa.float64(), nullable=False),
        pa.field("q_value", pa.float64(), nullable=False),
        pa.field("threshold", pa.float64(), nullable=False),
        pa.field("flagged_sigma", pa.bool_(), nullable=False),
        pa.field("flagged_binomial", pa.bool_(), nullable=False),
        pa.field("flagged", pa.bool_(), nullable=False),
        pa.field("same_superclass", pa.bool_()),
        pa.field("centroid_cosine", pa.float64()),
        *CONFUSION_DEFECTS,
    ]
)
CONFUSION_PAIRS_TABLE = TableSpec(
    "confusion_pairs",
    "confusion",
    "Directed pairs (True, Pred) of different classes with count > 0, each rule's verdict, "
    "sorted by `MisRate` descending; the seed's seven columns first.",
    {
        "True": "true class (the seed's column)",
        "Pred": "the class it is mistaken for",
        "MisRate": "count / support of True (row-normalised confusion)",
        "Precision(Pred)": "precision of the predicted class",
        "Recall(True)": "recall of the true class",
        "F1(True)": "F1 of the true class",
        "F1(Pred)": "F1 of the predicted class",
        "true_label": "label of True",
        "pred_label": "label of Pred",
        "count": "test samples of True predicted as Pred",
        "support": "test samples of True",
        "ci_low": "lower end of the 95% Wilson interval of MisRate",
        "ci_high": "upper end of the 95% Wilson interval of MisRate",
        "p_value": "one-sided binomial test of count against the off-diagonal base rate",
        "q_value": "Benjamini-Hochberg adjusted p_value over all off-diagonal cells",
        "threshold": "T = mu + k·sigma over all off-diagonal rates of this matrix",
        "flagged_sigma": "MisRate ≥ threshold (the seed's rule)",
        "flagged_binomial": "q_value ≤ `--confusion-alpha`",
        "flagged": "the verdict of the chosen rule (`--confusion-rule`)",
        "same_superclass": "both classes share a coarse label; null when unknown",
        "centroid_cosine": "cosine of the two class centroids (the model-free view); null "
        "for analyze-predictions",
        **PAIR_DEFECTS,
        "suspects_true_to_pred": "label suspects labelled True whose neighbours vote Pred "
        "(likely label errors behind the confusion)",
        "suspects_pred_to_true": "label suspects labelled Pred whose neighbours vote True",
    },
    arrow=CONFUSION_PAIRS,
    also_written_by=("analyze_predictions",),
)

SPECS = (
    TRAINING_HISTORY_TABLE,
    PREDICTIONS_TABLE,
    CLASSIFICATION_REPORT_TABLE,
    CONFUSION_MATRIX_TABLE,
    CONFUSION_PAIRS_TABLE,
)
