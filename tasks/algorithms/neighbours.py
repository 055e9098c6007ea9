"""k nearest neighbours of every embedding by cosine, streamed shard by shard.

Exact search ("flat") on a GPU and on a CPU with native bf16 (``tasks/algorithms/exact_knn.py``:
torch, bf16 candidates proven exact in fp32), up to ``EXACT_MAX_ROWS_BF16`` rows on such a CPU;
on a CPU without native bf16, FAISS's ``IndexFlatIP`` up to ``EXACT_MAX_ROWS``. Beyond those sizes
on a CPU an inverted-file index (IVF), whose queries go one shard at a time and whose recall
against exact search is measured on a sample of queries (``sample_recall``) so that a run can log
what it traded. Kind "faiss-flat" forces FAISS's exact index anywhere; HNSW is kept for
comparison (``benchmarks/knn.py``): HNSW on 60k x 384 was 1.6x slower than IVF at the same
recall, and needs more memory (its graph).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

if TYPE_CHECKING:  # FAISS loads where an index is built: importing the flow needs none
    import faiss

IndexKind = Literal["flat", "hnsw", "ivf", "faiss-flat"]
# A reader returns a fresh iterator over the unit float32 shards, in the same order every time.
ShardReader = Callable[[], Iterable[np.ndarray]]

DEFAULT_K = 10
# Exact all-vs-all costs O(N^2 d): on 60k x 384 (2 loaded CPU cores, one run) FAISS exact took
# 257 s, IVF 79 s at recall 0.9998, HNSW 125 s (benchmarks/knn.py, RESULTS.md). Up to this many
# rows on a CPU without native bf16, exact.
EXACT_MAX_ROWS = 50_000
# The torch bf16 search did 60k x 384 in 9.2 s idle, 1.3x FAISS exact (4.1x under load,
# RESULTS.md): at this size it costs about what IVF costs at 60k, so a CPU with native bf16 stays
# exact to here.
EXACT_MAX_ROWS_BF16 = 200_000
# HNSW (for comparison): links per node and the search breadth; efSearch trades time for recall.
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = 128
# IVF: lists ~ 4 sqrt(N), trained on 64 rows per list; nprobe lists searched per query.
IVF_TRAIN_PER_LIST = 64
IVF_NPROBE = 32
RECALL_SAMPLE = 1000


@dataclass(frozen=True)
class Neighbours:
    """Each query row's k nearest other rows, best first.

    ``positions`` are row numbers in reader order (-1 where fewer than k were found, cosine then
    -inf); ``queries`` are the query rows' own positions.
    """

    queries: np.ndarray  # (n,) int64
    positions: np.ndarray  # (n, k) int64
    cosine: np.ndarray  # (n, k) float32

    @property
    def k(self) -> int:
        """Neighbours per row."""
        return int(self.positions.shape[1])


def concat(parts: Iterable[Neighbours]) -> Neighbours:
    """One ``Neighbours`` of several blocks, in order."""
    parts = list(parts)
    if not parts:
        raise ValueError("no neighbour blocks to concatenate: the reader yielded no shards")
    return Neighbours(
        np.concatenate([p.queries for p in parts]),
        np.concatenate([p.positions for p in parts]),
        np.concatenate([p.cosine for p in parts]),
    )


def choose_index(rows: int, *, gpu: bool, exact_max_rows: int = EXACT_MAX_ROWS) -> IndexKind:
    """Exact on a GPU and up to ``exact_max_rows``; IVF (approximate) beyond, on a CPU."""
    return "flat" if gpu or rows <= exact_max_rows else "ivf"


def torch_exact(gpu: bool) -> bool:
    """Whether exact search runs in torch here: on a GPU, or a CPU with native bf16 (elsewhere
    FAISS's fp32 index is as fast as an fp32 product in torch)."""
    from tasks.models.hardware import native_bf16

    return gpu or native_bf16("cpu")


def ivf_lists(rows: int) -> int:
    """IVF list count: about 4 sqrt(N), and never more lists than training rows allow."""
    return max(1, min(int(4 * np.sqrt(rows)), rows // IVF_TRAIN_PER_LIST))


def _stride_sample(read: ShardReader, rows: int, wanted: int) -> np.ndarray:
    """About ``wanted`` rows spread evenly over all shards (a sorted dataset's first shard can hold
    only a few classes, which would train IVF lists that miss the rest)."""
    step = max(1, rows // wanted)
    parts, seen = [], 0
    for shard in read():
        offset = (-seen) % step
        parts.append(shard[offset::step])
        seen += len(shard)
    return np.ascontiguousarray(np.concatenate(parts), dtype=np.float32)


def build_index(read: ShardReader, rows: int, dim: int, kind: IndexKind) -> faiss.Index:
    """A FAISS inner-product index (CPU) holding every row of ``read()``, added shard by shard."""
    import faiss

    if kind == "faiss-flat":
        index = faiss.IndexFlatIP(dim)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        index.hnsw.efSearch = HNSW_EF_SEARCH
    elif kind == "ivf":
        lists = ivf_lists(rows)
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, lists, faiss.METRIC_INNER_PRODUCT)
        index.train(_stride_sample(read, rows, lists * IVF_TRAIN_PER_LIST))
        index.nprobe = min(IVF_NPROBE, lists)
    else:
        raise ValueError(f"unknown index kind {kind!r}: use faiss-flat, hnsw or ivf")
    for shard in read():
        index.add(np.ascontiguousarray(shard, dtype=np.float32))
    _check_rows(index.ntotal, rows)
    return index


def _check_rows(found: int, rows: int) -> None:
    if found != rows:
        raise ValueError(
            f"the shards hold {found} rows, the manifest says {rows}: re-run extraction"
        )


def exact_search(read: ShardReader, rows: int, k: int = DEFAULT_K, *, gpu: bool) -> Neighbours:
    """Every row's exact k nearest other rows, all rows in memory at once (as an exact index
    holds them): bf16 candidates where the device runs bf16 natively, fp32 ranks."""
    from tasks.algorithms.exact_knn import exact_knn
    from tasks.models.hardware import native_bf16

    matrix = np.concatenate([np.asarray(shard, dtype=np.float32) for shard in read()])
    _check_rows(len(matrix), rows)
    device = "cuda" if gpu else "cpu"
    positions, scores, _ = exact_knn(matrix, k + 1, device=device, bf16=native_bf16(device))
    return drop_self(np.arange(rows, dtype=np.int64), positions, scores)


def drop_self(queries: np.ndarray, positions: np.ndarray, cosine: np.ndarray) -> Neighbours:
    """k of k+1 hits without the query row itself (found by position, as exact duplicates tie
    with it; where the search missed it, the last hit goes instead)."""
    own = positions == queries[:, None]
    own[~own.any(axis=1), -1] = True
    # Exactly one True per row: keep the other k in their order.
    first = own & (np.cumsum(own, axis=1) == 1)
    keep = ~first
    n, k = len(queries), positions.shape[1] - 1
    return Neighbours(queries, positions[keep].reshape(n, k), cosine[keep].reshape(n, k))


def _clean(positions: np.ndarray, cosine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """FAISS marks missing hits with -1 and a huge negative score; make that -1 and -inf."""
    positions = positions.astype(np.int64)
    cosine = np.where(positions >= 0, cosine, -np.inf).astype(np.float32)
    return positions, cosine


def search_shards(
    index: faiss.Index, read: ShardReader, k: int = DEFAULT_K
) -> Iterator[Neighbours]:
    """Every row's k nearest other rows, one block per shard of ``read()``."""
    start = 0
    for shard in read():
        scores, hits = index.search(np.ascontiguousarray(shard, dtype=np.float32), k + 1)
        queries = np.arange(start, start + len(shard), dtype=np.int64)
        yield drop_self(queries, *_clean(hits, scores))
        start += len(shard)


def exact_neighbours(
    queries: np.ndarray, vectors: np.ndarray, read: ShardReader, k: int = DEFAULT_K
) -> Neighbours:
    """Exact k nearest other rows of a few query rows (positions ``queries``, ``vectors``), by a
    streamed brute force: the reference an approximate index is measured against."""
    best_pos = np.full((len(queries), 0), -1, dtype=np.int64)
    best_cos = np.empty((len(queries), 0), dtype=np.float32)
    start = 0
    for shard in read():
        scores = vectors @ np.asarray(shard, dtype=np.float32).T
        pos = np.broadcast_to(np.arange(start, start + len(shard)), scores.shape)
        best_pos = np.concatenate([best_pos, pos], axis=1)
        best_cos = np.concatenate([best_cos, scores], axis=1)
        # Keep k+1 per row: the query itself is among them.
        top = np.argsort(-best_cos, axis=1, kind="stable")[:, : k + 1]
        best_pos = np.take_along_axis(best_pos, top, axis=1)
        best_cos = np.take_along_axis(best_cos, top, axis=1)
        start += len(shard)
    return drop_self(np.asarray(queries, dtype=np.int64), best_pos, best_cos)


def recall(approximate: Neighbours, exact: Neighbours) -> float:
    """Mean share of each row's exact k neighbours that the approximate search found."""
    found = [
        np.intersect1d(a[a >= 0], e).size / e.size
        for a, e in zip(approximate.positions, exact.positions, strict=True)
    ]
    return float(np.mean(found))


def sample_rows(rows: int, size: int = RECALL_SAMPLE, seed: int = 0) -> np.ndarray:
    """Sorted positions of a seeded random sample of at most ``size`` rows."""
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(rows, size=min(size, rows), replace=False))


def gather(read: ShardReader, positions: np.ndarray) -> np.ndarray:
    """The rows at sorted ``positions``, collected while streaming the shards."""
    parts, start = [], 0
    for shard in read():
        inside = positions[(positions >= start) & (positions < start + len(shard))]
        parts.append(np.asarray(shard[inside - start], dtype=np.float32))
        start += len(shard)
    return np.concatenate(parts)


def sample_recall(
    found: Neighbours,
    read: ShardReader,
    k: int = DEFAULT_K,
    *,
    size: int = RECALL_SAMPLE,
    seed: int = 0,
) -> float:
    """Recall@k of ``found`` (all rows, in reader order) against exact search on a sample."""
    rows = sample_rows(len(found.queries), size, seed)
    exact = exact_neighbours(rows, gather(read, rows), read, k)
    picked = Neighbours(found.queries[rows], found.positions[rows], found.cosine[rows])
    return recall(picked, exact)


@dataclass(frozen=True)
class Knn:
    """All rows' neighbours, the index kind that found them and its sampled recall (exact: 1)."""

    neighbours: Neighbours
    kind: IndexKind
    recall: float


def check_k(k: int, rows: int) -> None:
    """Refuse a k that the rows cannot answer, before any search."""
    if not 1 <= k < rows:
        raise ValueError(f"k must lie in 1..{rows - 1} (one less than the {rows} rows), got {k}")


def knn(
    read: ShardReader,
    rows: int,
    dim: int,
    k: int = DEFAULT_K,
    *,
    gpu: bool | None = None,
    kind: IndexKind | None = None,
    exact_max_rows: int | None = None,
    recall_sample: int = RECALL_SAMPLE,
) -> Knn:
    """Every row's k nearest other rows by cosine; ``read`` yields unit float32 shards.

    ``gpu`` None searches on a GPU when torch sees one. ``kind`` None picks exact or IVF by
    size (``choose_index``; ``exact_max_rows`` None: ``EXACT_MAX_ROWS_BF16`` where exact search
    runs in torch, else ``EXACT_MAX_ROWS``); an approximate index's recall is measured against
    exact search on ``recall_sample`` rows.
    """
    if gpu is None:
        from tasks.models.hardware import device_name

        gpu = device_name("auto") == "cuda"
    check_k(k, rows)
    in_torch = torch_exact(gpu)
    if exact_max_rows is None:
        exact_max_rows = EXACT_MAX_ROWS_BF16 if in_torch else EXACT_MAX_ROWS
    kind = choose_index(rows, gpu=gpu, exact_max_rows=exact_max_rows) if kind is None else kind
    if kind == "flat" and in_torch:
        return Knn(exact_search(read, rows, k, gpu=gpu), kind, 1.0)
    index = build_index(read, rows, dim, "faiss-flat" if kind == "flat" else kind)
    found = concat(search_shards(index, read, k))
    del index  # the sample check below streams the shards again; the index is no longer needed
    exact = kind in ("flat", "faiss-flat")
    measured = 1.0 if exact else sample_recall(found, read, k, size=recall_sample)
    return Knn(found, kind, measured)
