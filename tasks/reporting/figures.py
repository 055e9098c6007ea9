"""Report figures, part 1: shared plotting helpers, the two heatmaps and the agreement scatter."""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence

import matplotlib

matplotlib.use("Agg")  # headless: no display on servers, workers or CI

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import ListedColormap, PowerNorm
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from scipy import stats
from scipy.cluster.hierarchy import leaves_list, linkage
from scipy.spatial.distance import squareform

from storage.escape import mathtext

DPI = 100
ANNOTATE_MAX = 12  # write the value into each cell up to this many classes
NAME_LIMIT = 60  # characters of a class name shown in a figure (the tables have it whole)


def png_bytes(figure: Figure) -> bytes:
    """The figure as PNG bytes; closes it so long runs do not pile up open figures."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def cluster_order(similarity: np.ndarray) -> np.ndarray:
    """Leaf order of average-linkage clustering of a similarity matrix: similar rows together."""
    k = len(similarity)
    if k < 3:
        return np.arange(k)
    sim = np.nan_to_num((similarity + similarity.T) / 2, nan=np.nanmin(similarity))
    distance = sim.max() - sim
    np.fill_diagonal(distance, 0)
    tree = linkage(squareform(distance, checks=False), method="average", optimal_ordering=True)
    return leaves_list(tree)


def row_rates(counts: np.ndarray) -> np.ndarray:
    """Row-normalised confusion rates; NaN rows for classes without samples."""
    counts = np.asarray(counts, float)
    support = counts.sum(axis=1, keepdims=True)
    return np.where(support > 0, counts / np.maximum(support, 1), np.nan)


def _heatmap_axes(k: int) -> tuple[Figure, float]:
    """A square figure sized for ``k`` classes and the tick font size that fits one cell."""
    side = float(np.clip(0.18 * k + 3, 5, 24))
    cell_points = side * 72 * 0.75 / max(k, 1)
    return plt.figure(figsize=(side + 1.5, side)), float(np.clip(cell_points * 0.75, 4, 10))


def side_points(figure: Figure) -> float:
    """Height of a figure in points."""
    return figure.get_figheight() * 72


def _class_ticks(ax, names: Sequence[str], fontsize: float) -> None:
    """Class names on both axes, x rotated, every class labelled."""
    ticks = np.arange(len(names))
    names = [mathtext(name, limit=NAME_LIMIT) for name in names]  # names are data, not markup
    ax.set_xticks(ticks, names, rotation=90, fontsize=fontsize)
    ax.set_yticks(ticks, names, fontsize=fontsize)
    ax.tick_params(length=2, pad=1)


def text_colour(rgba: Sequence[float]) -> str:
    """Black on light cells, white on dark ones, by the cell colour's relative luminance."""
    r, g, b = (float(c) for c in rgba[:3])
    return "black" if 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.45 else "white"


def _annotate(
    ax, image, values: np.ndarray, shown: np.ndarray, fmt: str, skip_zero: bool, size: float = 8
) -> None:
    """Write each cell's ``shown`` value in a colour readable on the cell's own colour.

    ``values`` are what the cell is coloured by; zeros are left blank when ``skip_zero``.
    """
    for (i, j), value in np.ndenumerate(values):
        if np.isfinite(value) and not (skip_zero and value == 0):
            colour = text_colour(image.cmap(image.norm(value)))
            text = format(shown[i, j], fmt)
            ax.text(j, i, text, ha="center", va="center", fontsize=size, color=colour)


def cell_labels(values: np.ndarray) -> tuple[np.ndarray, str, str]:
    """(numbers to write, format, note) that tell a heatmap's cells apart.

    Two decimals when the values spread over 0.1 or more, up to four when they are closer;
    nearer still (a random-init model's cosines all read 1.0000) the deviation from the mean.
    """
    finite = values[np.isfinite(values)]
    spread = float(np.ptp(finite)) if finite.size else 0.0
    decimals = 2 if spread >= 0.1 else int(np.ceil(-np.log10(max(spread, 1e-12)))) + 1
    if decimals <= 4:
        return values, f".{decimals}f", ""
    mean = float(finite.mean())
    return values - mean, "+.1e", f"cells: cosine - mean (mean = {mean:.6f})"


def confusion_heatmap(
    counts: np.ndarray,
    class_names: Sequence[str],
    *,
    classes: Sequence[int] | None = None,
    title: str = "Confusion matrix",
) -> Figure:
    """Row-normalised confusion heatmap, classes ordered so that confused classes sit together.

    ``classes`` shows only those rows and columns; rates still divide by each row's full support.
    """
    rates = row_rates(counts)
    if classes is not None:
        rates = rates[np.ix_(classes, classes)]
        class_names = [class_names[i] for i in classes]
    confused = np.nan_to_num(rates, nan=0.0)
    np.fill_diagonal(confused, 0)
    order = cluster_order(confused + confused.T)
    rates = rates[np.ix_(order, order)]
    names = [class_names[i] for i in order]
    figure, fontsize = _heatmap_axes(len(names))
    ax = figure.add_subplot()
    cmap = plt.get_cmap("Blues").with_extremes(bad="lightgrey")
    # sqrt colour scale: a 5% confusion stays visible next to a 90% diagonal.
    image = ax.imshow(np.ma.masked_invalid(rates), cmap=cmap, norm=PowerNorm(0.5, 0, 1))
    _class_ticks(ax, names, fontsize)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(mathtext(f"{title} (row-normalised, {len(names)} classes, clustered order)"))
    if len(names) <= ANNOTATE_MAX:
        _annotate(ax, image, rates, rates, ".2f", skip_zero=True)
    figure.colorbar(image, ax=ax, fraction=0.04, pad=0.02, label="share of the true class (sqrt)")
    return figure


def _group_strips(ax, groups: Sequence[int | None]) -> None:
    """Colour strips above and left of a heatmap: one colour per overlap group, none blank."""
    codes = np.array([-1 if g is None or g < 0 else g % 20 for g in groups], float)
    colours = ListedColormap(plt.get_cmap("tab20").colors)
    strip = np.ma.masked_less(codes, 0)
    for where, shape in (("top", (1, -1)), ("left", (-1, 1))):
        strip_ax = ax.inset_axes([0, 1.005, 1, 0.02] if where == "top" else [-0.025, 0, 0.02, 1])
        strip_ax.imshow(strip.reshape(shape), cmap=colours, vmin=0, vmax=19, aspect="auto")
        strip_ax.set_axis_off()


def similarity_heatmap(
    cosine: np.ndarray,
    class_names: Sequence[str],
    *,
    groups: Sequence[int | None] | None = None,
    flagged: Iterable[tuple[int, int]] = (),
    title: str = "Class similarity (centroid cosine)",
) -> Figure:
    """Centroid-cosine heatmap in clustered order; overlap groups as strips, flagged cells boxed."""
    cosine = np.array(cosine, float)
    np.fill_diagonal(cosine, np.nan)
    order = cluster_order(np.nan_to_num(cosine, nan=1.0))
    position = np.empty(len(order), int)
    position[order] = np.arange(len(order))
    shown = cosine[np.ix_(order, order)]
    names = [class_names[i] for i in order]
    figure, fontsize = _heatmap_axes(len(names))
    ax = figure.add_subplot()
    cmap = plt.get_cmap("viridis").with_extremes(bad="white")
    finite = shown[np.isfinite(shown)]
    low, high = (finite.min(), finite.max()) if finite.size else (0.0, 1.0)
    image = ax.imshow(np.ma.masked_invalid(shown), cmap=cmap, vmin=low, vmax=max(high, low + 1e-6))
    _class_ticks(ax, names, fontsize)
    for a, b in flagged:
        for i, j in ((position[a], position[b]), (position[b], position[a])):
            ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, ec="red", lw=1.2))
    if groups is not None:
        _group_strips(ax, [groups[i] for i in order])
        ax.tick_params(axis="y", pad=0.03 * side_points(figure))
    notes = (
        ["red boxes: flagged overlap pairs; strips: overlap groups"] if groups is not None else []
    )
    if len(names) <= ANNOTATE_MAX:
        labels, fmt, how = cell_labels(shown)
        size = 8 if fmt == ".2f" else 6.5
        _annotate(ax, image, shown, labels, fmt, skip_zero=False, size=size)
        notes += [how] if how else []
    note = "; ".join(notes)
    ax.set_title(
        mathtext(f"{title}, {len(names)} classes, clustered order\n{note}", lines=True), pad=14
    )
    figure.colorbar(image, ax=ax, fraction=0.04, pad=0.02, label="cosine (diagonal blank)")
    return figure


def pair_agreement(counts: np.ndarray, cosine: np.ndarray) -> tuple[np.ndarray, ...]:
    """(i, j, cosine, confusion rate) per unordered pair; rate = (C_ij + C_ji) / (n_i + n_j)."""
    counts = np.asarray(counts, float)
    i, j = np.triu_indices(len(counts), k=1)
    support = counts.sum(axis=1)
    trials = support[i] + support[j]
    rate = np.where(trials > 0, (counts[i, j] + counts[j, i]) / np.maximum(trials, 1), np.nan)
    return i, j, np.asarray(cosine, float)[i, j], rate


def spearman(x: np.ndarray, y: np.ndarray) -> tuple[float, int]:
    """Spearman rank correlation over the finite pairs, and their number (NaN if undefined)."""
    keep = np.isfinite(x) & np.isfinite(y)
    n = int(keep.sum())
    if n < 3 or np.ptp(x[keep]) == 0 or np.ptp(y[keep]) == 0:
        return float("nan"), n
    return float(stats.spearmanr(x[keep], y[keep]).statistic), n


def agreement_scatter(
    counts: np.ndarray,
    cosine: np.ndarray,
    class_names: Sequence[str],
    *,
    flagged: Iterable[tuple[int, int]] = (),
    label_top: int = 8,
) -> Figure:
    """Model-free versus classifier: centroid cosine against confusion rate for every class pair."""
    i, j, x, y = pair_agreement(counts, cosine)
    rho, n = spearman(x, y)
    marked = {frozenset(p) for p in flagged}
    hit = np.array([frozenset((a, b)) in marked for a, b in zip(i, j, strict=True)], bool)
    figure, ax = plt.subplots(figsize=(8, 6))
    ax.scatter(x[~hit], y[~hit], s=14, c="tab:blue", alpha=0.5, lw=0, label="class pair")
    if hit.any():
        ax.scatter(x[hit], y[hit], s=30, c="tab:red", marker="D", label="flagged confusion pair")
    top = np.argsort(-np.nan_to_num(y, nan=-1))[: min(label_top, len(y))]
    for t in top:
        if np.isfinite(y[t]) and y[t] > 0:
            text = " / ".join(mathtext(class_names[k[t]], limit=NAME_LIMIT) for k in (i, j))
            ax.annotate(text, (x[t], y[t]), fontsize=7, xytext=(4, 2), textcoords="offset points")
    shown = f"{rho:.3f}" if np.isfinite(rho) else "undefined"
    ax.text(
        0.02,
        0.97,
        f"Spearman rank correlation = {shown}  (n = {n} pairs)",
        transform=ax.transAxes,
        va="top",
        fontsize=11,
        bbox={"facecolor": "white", "edgecolor": "grey", "alpha": 0.9},
    )
    ax.set_xlabel("centroid cosine (model-free)")
    ax.set_ylabel("confusion rate of the pair, both directions (classifier)")
    ax.set_title("Model-free similarity versus classifier confusion")
    ax.legend(loc="upper left", bbox_to_anchor=(0.01, 0.9), fontsize=8)
    ax.grid(alpha=0.3)
    return figure
