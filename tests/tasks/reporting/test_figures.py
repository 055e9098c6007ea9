"""Report figures on small hand-built arrays: valid, non-blank PNGs of sensible size."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import stats

from tasks.algorithms.correlation import spearman
from tasks.reporting import figures, figures_pairs, report_render
from tests.support.pictures import png_image, tiny_png


def block_confusion(k: int, seed: int = 0) -> np.ndarray:
    """Counts where class 2i and 2i+1 confuse each other, shuffled so pairs are not adjacent."""
    rng = np.random.default_rng(seed)
    counts = np.diag(np.full(k, 40))
    for i in range(0, k - 1, 2):
        counts[i, i + 1] = counts[i + 1, i] = 10
    counts += rng.integers(0, 2, size=(k, k))
    order = rng.permutation(k)
    return counts[np.ix_(order, order)]


def test_cluster_order_puts_confused_classes_together() -> None:
    counts = block_confusion(10)
    rates = figures.row_rates(counts)
    np.fill_diagonal(rates, 0)
    order = figures.cluster_order(rates + rates.T)
    assert sorted(order) == list(range(10))
    position = np.argsort(order)
    strong = np.argwhere(np.triu(counts, 1) >= 10)
    assert all(abs(position[a] - position[b]) == 1 for a, b in strong)


def test_confusion_heatmap_readable_at_60_classes() -> None:
    names = [f"class_with_long_name_{i:02d}" for i in range(60)]
    pixels = png_image(figures.png_bytes(figures.confusion_heatmap(block_confusion(60), names)))
    assert pixels.shape[0] >= 1000  # ~16 px per row: every name gets its own line


def test_confusion_heatmap_subset_keeps_full_support() -> None:
    counts = np.array([[5, 5, 0], [0, 10, 0], [1, 0, 9]])
    fig = figures.confusion_heatmap(counts, ["a", "b", "c"], classes=[0, 2])
    values = fig.axes[0].images[0].get_array()
    assert values.shape == (2, 2)
    # rows are shares of the whole row: row 0 keeps 0.5 (its other half went to the hidden b)
    assert sorted(np.ravel(values)) == pytest.approx([0.0, 0.1, 0.5, 0.9])
    png_image(figures.png_bytes(fig), min_side=150)


def test_similarity_heatmap_with_groups_and_flagged_pairs() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(14, 6))
    x[1] = x[0] + 0.05 * rng.normal(size=6)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    cosine = x @ x.T
    groups = [0, 0] + [None] * 12
    fig = figures.similarity_heatmap(
        cosine, [f"c{i}" for i in range(14)], groups=groups, flagged=[(0, 1)]
    )
    assert len(fig.axes[0].patches) == 2  # one box per direction of the flagged pair
    png_image(figures.png_bytes(fig))


def _cell_texts(fig) -> dict[tuple[int, int], tuple[str, str]]:
    """(row, column) -> (text, colour) of every annotated heatmap cell."""
    ax = fig.axes[0]
    return {
        (round(t.get_position()[1]), round(t.get_position()[0])): (t.get_text(), t.get_color())
        for t in ax.texts
    }


def test_similarity_annotations_readable_on_dark_and_light_cells() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(6, 8))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    fig = figures.similarity_heatmap(x @ x.T, [f"c{i}" for i in range(6)])
    image = fig.axes[0].images[0]
    cells = _cell_texts(fig)
    assert len(cells) == 30  # every off-diagonal cell
    dark = light = 0
    for (i, j), (_, colour) in cells.items():
        r, g, b, _ = image.cmap(image.norm(image.get_array()[i, j]))
        luminance = 0.2126 * r + 0.7152 * g + 0.0722 * b
        assert colour == ("black" if luminance > 0.45 else "white")
        dark, light = dark + (luminance < 0.3), light + (luminance > 0.6)
    assert dark and light  # both kinds of cell were checked
    assert figures.text_colour((0.267, 0.005, 0.329)) == "white"  # viridis' darkest purple
    assert figures.text_colour((0.993, 0.906, 0.144)) == "black"  # viridis' yellow


def test_near_equal_cosines_are_told_apart() -> None:
    rng = np.random.default_rng(3)
    x = np.ones(8) + 1e-3 * rng.normal(size=(5, 8))  # a random-init model: all cosines ~0.99999
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    cosine = x @ x.T
    fig = figures.similarity_heatmap(cosine, [f"c{i}" for i in range(5)])
    cells = _cell_texts(fig)
    texts = {text for text, _ in cells.values()}
    assert len(texts) >= 5  # each distinct pair reads differently, not all "1.00"
    assert "cosine - mean" in fig.axes[0].get_title()
    off = cosine[~np.eye(5, dtype=bool)]
    shown = sorted(float(text) for text, _ in cells.values())  # clustered order: compare sorted
    assert shown == pytest.approx(sorted(off - off.mean()), rel=0.06)  # the real deviations
    spread = figures.cell_labels(np.array([[0.5, 0.51], [0.52, np.nan]]))
    assert spread[1] == ".3f"  # close but not equal: more decimals, still the cosine


def test_spearman_and_agreement_scatter() -> None:
    counts = block_confusion(8)
    rng = np.random.default_rng(2)
    cosine = rng.uniform(0, 1, size=(8, 8))
    cosine = (cosine + cosine.T) / 2
    i, _, x, y = figures.pair_agreement(counts, cosine)
    assert len(i) == 28
    rho, n = spearman(x, y)
    assert n == 28 and np.isclose(rho, stats.spearmanr(x, y).statistic)
    assert np.isnan(spearman(x, np.zeros_like(x))[0])
    fig = figures.agreement_scatter(counts, cosine, [f"c{k}" for k in range(8)], flagged=[(0, 1)])
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert any(f"{rho:.3f}" in t and "Spearman" in t for t in texts)
    png_image(figures.png_bytes(fig))


def test_umap_is_seeded_and_adapts_to_small_inputs() -> None:
    rng = np.random.default_rng(3)
    labels = np.repeat([0, 1, 2], 20)
    x = rng.normal(size=(60, 16)) + 4 * np.eye(16)[labels]
    first = figures_pairs.umap_2d(x, seed=0)
    assert first.shape == (60, 2) and np.isfinite(first).all()
    assert np.allclose(first, figures_pairs.umap_2d(x, seed=0))
    assert figures_pairs.umap_2d(x[:8], seed=0).shape == (8, 2)  # n_neighbors capped at n - 1
    assert figures_pairs.umap_2d(x[:3], seed=0).shape == (3, 2)  # too few for UMAP: PCA
    wrong = np.zeros(60, bool)
    wrong[[3, 25]] = True
    fig = figures_pairs.umap_figure(first, labels, ["a", "b", "c"], wrong=wrong, title="t")
    assert "misclassified, test images only (2)" in fig.axes[0].get_legend_handles_labels()[1]
    png_image(figures.png_bytes(fig))


def test_cosine_knn_is_exact_with_each_row_first() -> None:
    rng = np.random.default_rng(5)
    x = rng.normal(size=(70, 8)).astype(np.float32)
    x[1] = x[0]  # a duplicate: each of the two still lists itself first
    indices, distances = figures_pairs.cosine_knn(x, 6)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    brute = 1 - unit @ unit.T
    assert np.array_equal(indices[:, 0], np.arange(70)) and np.all(distances[:, 0] == 0)
    assert indices[0, 1] == 1 and indices[1, 1] == 0
    np.fill_diagonal(brute, np.inf)
    nearest = np.sort(brute, axis=1)[:, :5]  # rows 0 and 1 tie for the others: any order
    assert np.allclose(distances[:, 1:], nearest, atol=1e-5)
    assert np.allclose(distances[:, 1:], np.take_along_axis(brute, indices[:, 1:], 1), atol=1e-5)


def test_umap_from_the_exact_graph_is_umaps_own_graph_and_separates_classes() -> None:
    import umap

    rng = np.random.default_rng(3)
    labels = np.repeat([0, 1, 2], 100)
    x = (rng.normal(size=(300, 16)) + 4 * np.eye(16)[labels]).astype(np.float32)
    model = figures_pairs.umap_model(x, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = model.fit(x)
        own = umap.UMAP(
            n_neighbors=15,
            min_dist=0.1,
            metric="cosine",
            random_state=0,
            n_epochs=figures_pairs.UMAP_EPOCHS,  # the graph's weakest edges drop by epochs
        ).fit(x)  # below 4,096 rows: UMAP's own exact search
    assert abs(ours.graph_ - own.graph_).max() < 1e-4
    coords = figures_pairs.umap_2d(x, seed=0)
    near = np.argsort(((coords[:, None] - coords[None]) ** 2).sum(-1), axis=1)[:, 1:11]
    assert (labels[near] == labels[:, None]).mean() > 0.95


def test_umap_searches_itself_above_the_exact_knn_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    x = np.random.default_rng(6).normal(size=(40, 8)).astype(np.float32)
    indices, _ = figures_pairs.umap_model(x, seed=0).precomputed_knn
    assert indices.shape == (40, 15)
    monkeypatch.setattr(figures_pairs, "EXACT_KNN_MAX_POINTS", 39)
    assert figures_pairs.umap_model(x, seed=0).precomputed_knn == (None, None, None)


def test_umap_figure_names_classes_when_many() -> None:
    rng = np.random.default_rng(4)
    labels = np.repeat(np.arange(15), 4)
    coords = rng.normal(size=(60, 2)) + labels[:, None]
    fig = figures_pairs.umap_figure(coords, labels, [f"n{i}" for i in range(15)], title="many")
    assert {t.get_text() for t in fig.axes[0].texts} == {f"n{i}" for i in range(15)}
    png_image(figures.png_bytes(fig))


def test_stratified_sample() -> None:
    labels = np.repeat([0, 1, 2], [100, 50, 5])
    rows = figures_pairs.stratified_sample(labels, 30, seed=0)
    assert len(rows) <= 30 and np.all(np.diff(rows) > 0)
    assert set(labels[rows]) == {0, 1, 2}
    assert np.array_equal(figures_pairs.stratified_sample(labels, 1000, seed=0), np.arange(155))


@pytest.mark.parametrize("per_row", [1, 4, 8])
def test_image_grid(per_row: int) -> None:
    rows = [
        ("cat", [tiny_png((200, 0, 0))] * 5),
        ("dog", [tiny_png((0, 0, 200))] * 2),
        ("cat\npredicted dog\n(11 test images)", []),
    ]
    fig = figures_pairs.image_grid(rows, per_row=per_row, title="cat / dog")
    assert len(fig.axes) == 3 * per_row
    png = figures.png_bytes(fig)
    png_image(png, min_side=100)
    # 8 a row (--grid-images' default) fits report.html's page: no sideways scrolling
    assert report_render.png_width(png) <= report_render.PAGE_WIDTH_PX
