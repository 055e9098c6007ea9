"""Report figures, part 2: UMAP projections and sample image grids of confused classes."""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from matplotlib import patheffects
from matplotlib.figure import Figure
from PIL import Image

from storage.escape import mathtext
from tasks.reporting.figures import (  # selects the headless backend before pyplot loads
    NAME_LIMIT,
    plt,
)

if TYPE_CHECKING:
    import umap

MIN_UMAP_POINTS = 5  # below this UMAP cannot build a neighbour graph; fall back to PCA
LEGEND_MAX = 10  # up to this many classes get a legend; more get their names on the plot
# UMAP's own count above 10,000 points; below, it runs 500, each epoch single-threaded when
# seeded: the report's few thousand points settle well within 200, and the output is a picture.
UMAP_EPOCHS = 200
# Up to this many points the exact kNN (a matrix product, O(n^2)) takes seconds; above it (a
# large --explorer-images) UMAP's own approximate search (NNDescent) is the faster one.
EXACT_KNN_MAX_POINTS = 20_000


def cosine_knn(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest rows of each row of ``x`` by cosine distance (1 - cosine), each row
    itself first: (indices, distances), both (n, k), as UMAP's ``precomputed_knn`` takes them.

    The neighbours stage's exact search (``neighbours.exact_search``): well under a second for
    6,000 x 1,280 (the explorer's default), where UMAP's own search (scikit-learn calling a
    numba metric pair by pair below 4,096 rows, NNDescent above) took tens of seconds on the
    whole Fashion-MNIST."""
    from tasks.algorithms.neighbours import exact_search

    unit = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    others = exact_search(lambda: [unit], len(unit), k - 1, gpu=False)  # itself left out
    indices = np.hstack([others.queries[:, None], others.positions])
    distances = np.hstack([np.zeros((len(x), 1)), np.clip(1.0 - others.cosine, 0.0, 2.0)])
    return indices, distances.astype(np.float32)


def umap_model(x: np.ndarray, *, seed: int, n_neighbors: int = 15) -> umap.UMAP:
    """The seeded UMAP (cosine metric) ``umap_2d`` fits to the rows of ``x`` (at least
    ``MIN_UMAP_POINTS``), ``n_neighbors`` capped at their number.

    Its neighbour graph is the exact cosine kNN (``cosine_knn``) handed over through UMAP's
    public ``precomputed_knn``: below 4,096 rows UMAP builds the same graph itself. Above
    ``EXACT_KNN_MAX_POINTS`` rows UMAP searches itself (NNDescent)."""
    import umap  # slow import (numba): only when a projection is drawn

    neighbours = int(np.clip(n_neighbors, 2, len(x) - 1))
    init = "spectral" if len(x) >= 50 else "random"  # spectral init is unstable on tiny graphs
    return umap.UMAP(
        n_neighbors=neighbours,
        min_dist=0.1,
        metric="cosine",
        init=init,
        random_state=seed,
        n_epochs=UMAP_EPOCHS,
        precomputed_knn=(
            cosine_knn(x, neighbours) if len(x) <= EXACT_KNN_MAX_POINTS else (None, None, None)
        ),
    )


def umap_2d(x: np.ndarray, *, seed: int, n_neighbors: int = 15) -> np.ndarray:
    """Seeded 2-D UMAP of the rows of ``x`` (cosine metric), adapted to small inputs."""
    x = np.asarray(x, np.float32)
    if len(x) < MIN_UMAP_POINTS:
        return _pca_2d(x)
    reducer = umap_model(x, seed=seed, n_neighbors=n_neighbors)
    with warnings.catch_warnings():
        # "n_jobs overridden by random_state", "no NNDescent index: transform unavailable"
        warnings.simplefilter("ignore")
        return np.asarray(reducer.fit_transform(x), np.float64)


def _pca_2d(x: np.ndarray) -> np.ndarray:
    """First two principal components (zeros where there are fewer)."""
    out = np.zeros((len(x), 2))
    if len(x) < 2:
        return out
    centred = x - x.mean(axis=0)
    u, s, _ = np.linalg.svd(centred, full_matrices=False)
    width = min(2, len(s))
    out[:, :width] = u[:, :width] * s[:width]
    return out


def stratified_sample(labels: np.ndarray, max_points: int, seed: int) -> np.ndarray:
    """Sorted indices of at most ``max_points`` rows, an equal share per class (seeded)."""
    labels = np.asarray(labels)
    if len(labels) <= max_points:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    per_class = max(1, max_points // len(classes))
    keep = [rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in classes]
    return np.sort(np.concatenate(keep))


def umap_figure(
    coords: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    *,
    wrong: np.ndarray | None = None,
    title: str,
) -> Figure:
    """Scatter of a 2-D projection coloured by true class; misclassified points marked with x."""
    labels = np.asarray(labels)
    present = [int(c) for c in np.unique(labels)]
    many = len(present) > LEGEND_MAX
    figure, ax = plt.subplots(figsize=(10, 8) if many else (7, 6))
    palette = plt.get_cmap("tab20" if many else "tab10").colors
    anchors: list[np.ndarray] = []
    for n, c in enumerate(present):
        rows = labels == c
        colour = palette[n % len(palette)]
        ax.scatter(
            *coords[rows].T,
            s=10 if many else 16,
            color=colour,
            alpha=0.75,
            lw=0,
            label=mathtext(class_names[c], limit=NAME_LIMIT),
        )
        if many:
            # Names at each class's median point: more classes than any palette tells apart.
            anchors.append(np.median(coords[rows], axis=0))
    if many:
        names = [mathtext(class_names[c], limit=NAME_LIMIT) for c in present]
        for (x, y), name in zip(
            spread_labels(np.array(anchors), names, coords), names, strict=True
        ):
            text = ax.text(x, y, name, fontsize=7, ha="center", va="center", weight="bold")
            text.set_path_effects([patheffects.withStroke(linewidth=2.5, foreground="white")])
    if wrong is not None and np.any(wrong):
        # Thin, small crosses: they mark errors without hiding the class colour underneath.
        ax.scatter(
            *coords[wrong].T,
            s=18 if many else 28,
            marker="x",
            c="black",
            lw=0.8,
            alpha=0.8,
            # Predictions exist for the test split only, whatever splits the points come from.
            label=f"misclassified, test images only ({int(np.sum(wrong))})",
        )
    if not many or (wrong is not None and np.any(wrong)):
        handles, names = ax.get_legend_handles_labels()
        if many:
            handles, names = handles[-1:], names[-1:]
        ax.legend(handles, names, fontsize=8, loc="best", markerscale=1.5)
    if wrong is not None and not np.any(wrong):
        title += ", no misclassified test point"
    ax.set_title(mathtext(title, lines=True, limit=2 * NAME_LIMIT + 40))
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel("UMAP 1")
    ax.set_ylabel("UMAP 2")
    return figure


def spread_labels(anchors: np.ndarray, names: Sequence[str], coords: np.ndarray) -> np.ndarray:
    """Label positions near their anchors, moved down greedily until no two labels overlap."""
    span = np.ptp(coords, axis=0) + 1e-9
    height, char = 0.028 * span[1], 0.0105 * span[0]  # one 7-pt line on a 10 x 8 inch plot
    placed: list[tuple[float, float, float]] = []  # (x, y, half width)
    out = np.array(anchors, float)
    for n, name in enumerate(names):
        x, y = out[n]
        half = char * len(name) / 2
        while any(abs(x - px) < half + ph and abs(y - py) < height for px, py, ph in placed):
            y -= height
        placed.append((x, y, half))
        out[n] = x, y
    return out


def decode_image(data: bytes) -> np.ndarray:
    """RGB pixels of encoded image bytes."""
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def image_grid(rows: Sequence[tuple[str, Sequence[bytes]]], *, per_row: int, title: str) -> Figure:
    """One row per (caption, images): a caption on the left, up to ``per_row`` images, '(none)'."""
    per_row = max(1, per_row)
    height = max(1, len(rows))
    # 1.05 in an image: 8 a row (--grid-images' default) and the captions fit the report's page
    figure, axes = plt.subplots(
        height, per_row, figsize=(1.05 * per_row + 2.6, 1.2 * height + 0.6), squeeze=False
    )
    for r, (caption, images) in enumerate(rows):
        for c in range(per_row):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < len(images):
                ax.imshow(decode_image(images[c]), interpolation="nearest")
            else:
                for side in ax.spines.values():
                    side.set_visible(False)
                if c == 0:
                    ax.text(0.5, 0.5, "(none)", ha="center", va="center", color="grey")
        caption = mathtext(caption, lines=True, limit=NAME_LIMIT)
        axes[r, 0].set_ylabel(caption, rotation=0, ha="right", va="center", fontsize=9, labelpad=8)
    figure.suptitle(mathtext(title, lines=True, limit=2 * NAME_LIMIT + 60), fontsize=11)
    figure.tight_layout()
    return figure
