"""The table registry: every Parquet table the project writes, declared once.

Each ``TableSpec`` names a table, the stage that writes it, one line about its rows and one line
per column; its Arrow schema comes from ``storage.schemas``. Stages write and read through it
(``table("splits").read(location)``), the README's schema tables are rendered from it
(``python -m storage.schema_docs``) and ``overlap inspect`` shows its descriptions.
"""

from __future__ import annotations

from storage.schemas import classifier, images, neighbours, overlap, trust
from storage.table_spec import TableSpec

__all__ = ["TABLES", "TableSpec", "table"]

# Column descriptions shared by several tables.
_KEYS = {
    "sample_id": "stable id of the image, the key shared by every table",
    "split": "source split: `train` or `test`",
    "label": "the dataset's class index",
    "class_name": "class name",
}
_PAIR = {
    "label_a": "label of class a",
    "class_a": "name of class a",
    "label_b": "label of class b",
    "class_b": "name of class b",
}
# The neighbours stage's counts per class pair (overlap_pairs, confusion_pairs).
_PAIR_DEFECTS = {
    "cross_class_duplicates": "near-duplicate pairs with one copy in each of the two classes "
    "(the same picture under both labels); null without the neighbours stage",
    "leaked_test": "test images of either class with a near-copy in train, under any label",
}
_IMAGE = (
    "PNG bytes (CIFAR, synthetic) or the original file's bytes (image folders), and the "
    "original file name; Hugging Face `datasets` reads this struct as an Image column; null "
    "for `parquet:` and `webdataset:` sources, read in place through the `source_*` columns"
)
_POINTER = {
    "source_file": "read in place: the Parquet file or tar shard (path or URL) holding the image; "
    "null where `image` holds the bytes",
    "source_row": "row in the Parquet file, or sample number in the tar",
    "source_member": "tar member of the image, or the Parquet column that holds it",
    "source_offset": "byte offset of the tar member's data (null for Parquet)",
    "source_size": "byte size of the tar member's data (null for Parquet)",
}
_COARSE = {
    "coarse_label": "superclass index (CIFAR-100); null where the dataset has none",
    "coarse_name": "superclass name; null where the dataset has none",
}

_SPECS = [
    TableSpec(
        "images",
        "images",
        "One row per image of the source dataset, both source splits; `--shard-size` rows a "
        "shard (8192 by default), or one shard per source file for `parquet:` and `webdataset:`.",
        {**_KEYS, **_COARSE, "image": _IMAGE, **_POINTER},
        sharded=True,
        arrow=images.IMAGES,
    ),
    TableSpec(
        "embeddings",
        "embeddings",
        "One row per image: one shard per images shard, the same rows in the same order.",
        {
            **_KEYS,
            "embedding": "the model's pooled features (CLS token for DINO ViTs), "
            "**L2-normalised**, so a dot product is a cosine",
        },
        sharded=True,
        arrow=images.embeddings_schema,
    ),
    TableSpec(
        "neighbours",
        "neighbours",
        "One row per image: its `--knn-k` nearest other images by cosine, nearest first (exact "
        "on a GPU and up to 50,000 images, FAISS IVF beyond, its recall in the manifest; exact "
        "means exactly what a brute-force fp32 search finds).",
        {
            "sample_id": _KEYS["sample_id"],
            "label": _KEYS["label"],
            "neighbour_ids": "sample_ids of the nearest other images, nearest first",
            "neighbour_labels": "their labels, in the same order",
            "neighbour_cosines": "their cosines to this image, in the same order",
        },
        arrow=neighbours.NEIGHBOURS,
    ),
    TableSpec(
        "near_duplicates",
        "neighbours",
        "Unordered pairs of images, among each other's nearest neighbours, with cosine ≥ the "
        "duplicate threshold (the manifest's `duplicate_threshold`); most similar first.",
        {
            "sample_id_a": "the copy with the smaller sample_id",
            "split_a": "its source split",
            "label_a": "its label",
            "class_a": "its class name",
            "sample_id_b": "the other copy",
            "split_b": "its source split",
            "label_b": "its label",
            "class_b": "its class name",
            "cosine": "cosine of the two embeddings",
            "kind": "`cross_class` (labels differ), `train_test_leak` (same label, one copy in "
            "train and one in test) or `same_class`",
        },
        arrow=neighbours.NEAR_DUPLICATES,
    ),
    TableSpec(
        "label_suspects",
        "neighbours",
        "Images whose neighbours mostly carry another label, more than their class explains; "
        "most suspect first.",
        {
            **_KEYS,
            "score": "−log10(`p_value`), capped at 300: higher is more suspect",
            "p_value": "binomial P(X ≥ votes for `majority_label`) given `expected_share`",
            "own_share": "share of the neighbours that carry the image's own label (< 0.5)",
            "majority_label": "the most voted other label (ties: the nearer neighbour's)",
            "majority_class": "its class name",
            "majority_share": "its share of the neighbours",
            "expected_share": "its share among the neighbours of the rest of the image's class "
            "(leave-one-out, +1 smoothed)",
        },
        arrow=neighbours.LABEL_SUSPECTS,
    ),
    TableSpec(
        "centroids",
        "class_similarity",
        "One row per class; computed from per-shard partial sums, so memory does not grow with "
        "the number of images.",
        {
            "label": _KEYS["label"],
            "class_name": _KEYS["class_name"],
            "count": "embeddings of the class",
            "centroid": "mean of the class's L2-normalised embeddings, re-normalised to unit "
            "length",
        },
        arrow=overlap.centroids_schema,
    ),
    TableSpec(
        "class_similarity",
        "class_similarity",
        "Every ordered pair of classes a != b, **both directions** (C·(C−1) rows; (a, b) and "
        "(b, a) have the same cosine), sorted by `label_a`, `rank`.",
        {
            **_PAIR,
            "cosine": "cosine of the two class centroids (a matrix product of the unit centroids)",
            "rank": "place of b among a's most similar other classes (1 = nearest; ties go to "
            "the lower label)",
        },
        arrow=overlap.CLASS_SIMILARITY,
    ),
    TableSpec(
        "overlap_pairs",
        "overlap",
        "The flagged unordered class pairs, `label_a` < `label_b`, most similar first; "
        "`pair_id` elsewhere is the 0-based row number here.",
        {
            **_PAIR,
            "cosine": "cosine of the two class centroids",
            "z": "(cosine − mu) / sigma over all unordered pairs",
            "rank": "min(`rank_a`, `rank_b`)",
            "rank_a": "rank of b among a's nearest classes",
            "rank_b": "rank of a among b's nearest classes",
            "same_superclass": "both classes share a coarse label; null when the dataset has no "
            "superclasses",
            "ci_low": "2.5% point of the pair's cosine over the bootstrap resamples; null with "
            "`--bootstrap-resamples 0`",
            "ci_high": "97.5% point of the same",
            "flag_rate": "share of bootstrap resamples in which the run's rule flags the pair",
            **_PAIR_DEFECTS,
            "suspects_a_to_b": "label suspects labelled a whose neighbours vote b",
            "suspects_b_to_a": "label suspects labelled b whose neighbours vote a",
        },
        arrow=overlap.OVERLAP_PAIRS,
    ),
    TableSpec(
        "overlap_calibration",
        "overlap",
        "What every rule would flag at each value of its parameter, this run's setting marked; "
        "one row per rule and value, values ascending.",
        {
            "rule": "sigma, threshold, topk or classes",
            "parameter": "the rule's parameter: k, threshold, top_k or classes",
            "value": "its value (the run's own is always a row)",
            "cutoff": "the cosine bound it gives (sigma, threshold, classes); null for topk",
            "n_pairs": "unordered pairs it flags",
            "n_classes": "classes in at least one of them",
            "chosen": "this run's rule and value",
        },
        arrow=trust.OVERLAP_CALIBRATION,
    ),
    TableSpec(
        "overlap_stability",
        "overlap",
        "Poisson bootstrap of the class centroids (`--bootstrap-resamples`, seeded by `--seed`): "
        "the flagged pairs in `overlap_pairs` order, then the ten most similar pairs the rule "
        "left out. Not written with `--bootstrap-resamples 0`.",
        {
            **_PAIR,
            "cosine": "cosine of the two class centroids (all images)",
            "flagged": "flagged by the run's rule",
            "ci_low": "2.5% point of the pair's cosine over the resamples",
            "ci_high": "97.5% point of the same",
            "flag_rate": "share of resamples in which the run's rule flags the pair",
        },
        arrow=trust.OVERLAP_STABILITY,
    ),
    TableSpec(
        "overlap_classes",
        "overlap",
        "One row per class in at least one flagged pair, sorted by `group`, `label`.",
        {
            "label": _KEYS["label"],
            "class_name": _KEYS["class_name"],
            "partners": "names of the classes it is flagged with, nearest first",
            "partner_labels": "their labels, in the same order",
            "group": "connected component of the flagged pairs, numbered 0.. by smallest label",
            "group_size": "classes in the group",
            "max_cosine": "centroid cosine to its nearest partner",
        },
        arrow=overlap.OVERLAP_CLASSES,
    ),
    TableSpec(
        "pair_samples",
        "overlap",
        "For each flagged pair and each of its two classes, the `--pair-samples` images closest "
        "to the other class's centroid; sorted by `pair_id`, `label`, `rank`; streamed by shard.",
        {
            "pair_id": "0-based row of the pair in `overlap_pairs`",
            **_PAIR,
            "sample_id": _KEYS["sample_id"],
            "split": _KEYS["split"],
            "label": "the image's own class (`label_a` or `label_b`)",
            "class_name": "the image's own class name",
            "cos_own": "cosine of the embedding to its own class's centroid",
            "cos_other": "cosine of the embedding to the other class's centroid",
            "margin": "cos_own − cos_other (≤ 0: closer to the other class)",
            "rank": "1-based place among its class's images for this pair, by `cos_other`, "
            "highest first (ties by `sample_id`)",
        },
        arrow=overlap.PAIR_SAMPLES,
    ),
    TableSpec(
        "subset",
        "subset",
        "The images of the flagged classes only (the `images` rows plus `new_label`), sorted by "
        "`sample_id`.",
        {
            **_KEYS,
            "label": "original label (the dataset's class index)",
            "new_label": "the subset's own label 0..K−1, contiguous, in original-label order",
            **_COARSE,
            "image": "the image: as in `images`, but filled from the source for `parquet:` and "
            "`webdataset:` sources (path: the tar member, or `file#row`)",
            **_POINTER,
        },
        arrow=overlap.SUBSET,
    ),
    TableSpec(
        "splits",
        "subset",
        "The subset's train/val/test split: test = the source test split when there is one "
        "(else a stratified seeded `--test-fraction`), val = a stratified seeded "
        "`--val-fraction` of train; disjoint, the same seed gives the same split.",
        {
            "sample_id": _KEYS["sample_id"],
            "split": "`train`, `val` or `test`",
            "label": "the subset's label (`new_label`, 0..K−1)",
            "class_name": _KEYS["class_name"],
            "original_label": "the dataset's class index",
        },
        arrow=overlap.SPLITS,
    ),
    TableSpec(
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
        arrow=classifier.TRAINING_HISTORY,
    ),
    TableSpec(
        "predictions",
        "evaluate",
        "One row per test image of the subset: the classifier's prediction.",
        {
            "sample_id": _KEYS["sample_id"],
            "y_true": "true label of the subset (0..K−1)",
            "y_pred": "predicted label of the subset (0..K−1)",
            "true_name": "true class name",
            "pred_name": "predicted class name",
            "probability": "softmax probability of the predicted class",
            "top5_labels": "the 5 most probable labels, best first (all K when K < 5)",
            "top5_probabilities": "their probabilities",
        },
        arrow=classifier.PREDICTIONS,
    ),
    TableSpec(
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
        arrow=classifier.CLASSIFICATION_REPORT,
        also_written_by=("analyze_predictions",),
    ),
    TableSpec(
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
        arrow=classifier.CONFUSION_MATRIX,
        also_written_by=("analyze_predictions",),
    ),
    TableSpec(
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
            **_PAIR_DEFECTS,
            "suspects_true_to_pred": "label suspects labelled True whose neighbours vote Pred "
            "(likely label errors behind the confusion)",
            "suspects_pred_to_true": "label suspects labelled Pred whose neighbours vote True",
        },
        arrow=classifier.CONFUSION_PAIRS,
        also_written_by=("analyze_predictions",),
    ),
    TableSpec(
        "compare_pairs",
        "compare",
        "`overlap compare`: one row per class pair (by name) and run, pairs in name order, runs "
        "as given.",
        {
            "class_a": "name of class a (class_a < class_b)",
            "class_b": "name of class b",
            "run": "the run's name (its output root's last path part, or `--names`)",
            "cosine": "cosine of the two class centroids in this run",
            "pair_rank": "1 = the run's most similar pair; ties share the best rank",
            "rank": "neighbour rank: min over both directions (as `overlap_pairs.rank`)",
            "flagged": "flagged by the run's overlap rule",
            "mis_rate": "the larger MisRate of the two directions; null where the classifier "
            "did not see both classes",
        },
        arrow=trust.COMPARE_PAIRS,
    ),
    TableSpec(
        "compare_agreement",
        "compare",
        "`overlap compare`: one row per two runs, in the order given.",
        {
            "run_a": "first run",
            "run_b": "second run",
            "pairs": "class pairs both runs have",
            "flagged_a": "pairs the first run flags (among those)",
            "flagged_b": "pairs the second run flags",
            "flagged_both": "pairs both flag",
            "jaccard": "flagged_both / pairs either flags; 1.0 when neither flags any",
            "spearman": "rank correlation of the two runs' cosines; NaN when undefined",
        },
        arrow=trust.COMPARE_AGREEMENT,
    ),
    TableSpec(
        "compare_consensus",
        "compare",
        "`overlap compare`: every pair some run flags, most runs first, then by mean cosine.",
        {
            "class_a": "name of class a",
            "class_b": "name of class b",
            "runs_flagged": "runs that flag the pair",
            "consensus": "every run flags it",
            "mean_cosine": "mean of the runs' cosines",
            "min_cosine": "lowest of the runs' cosines",
            "worst_pair_rank": "highest `pair_rank` over the runs",
        },
        arrow=trust.COMPARE_CONSENSUS,
    ),
]

TABLES: dict[str, TableSpec] = {spec.name: spec for spec in _SPECS}


def table(name: str) -> TableSpec:
    """The spec of table ``name``; a one-line error listing the known tables otherwise."""
    try:
        return TABLES[name]
    except KeyError:
        raise KeyError(f"no table {name!r}; known tables: {', '.join(TABLES)}") from None
