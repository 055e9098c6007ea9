"""Schemas of the classifier, evaluation and confusion-pair stages."""

from __future__ import annotations

import pyarrow as pa

from storage.schemas.neighbours import CONFUSION_DEFECTS

TRAINING_HISTORY = pa.schema(
    [
        pa.field("epoch", pa.int32(), nullable=False),
        pa.field("train_loss", pa.float64(), nullable=False),
        pa.field("val_loss", pa.float64(), nullable=False),
        pa.field("train_accuracy", pa.float64(), nullable=False),
        pa.field("val_accuracy", pa.float64(), nullable=False),
    ]
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
