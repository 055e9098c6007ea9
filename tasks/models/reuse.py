"""Embed only the images an embedding store has never seen; take the rest from the store."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from storage.embedding_store import EmbeddingStore
from tasks.algorithms.delta import assemble, content_hashes, unseen

if TYPE_CHECKING:  # torch loads where a model is built
    from tasks.models.embed import Extractor


@dataclass
class Reuse:
    """What a run did for its images: ``embedded`` now (run through the model), ``reused``
    (taken from the store: embedded by an earlier or a concurrent run), ``cached`` (in an
    embeddings shard already finished when the run began: a resumed or a cached run)."""

    embedded: int = 0
    reused: int = 0
    cached: int = 0

    def add(self, other: Reuse) -> None:
        """Count ``other``'s images too."""
        self.embedded += other.embedded
        self.reused += other.reused
        self.cached += other.cached


def embed_with_store(
    extractor: Extractor,
    store: EmbeddingStore,
    images: Sequence[bytes],
    on_batch: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, Reuse]:
    """Embeddings of ``images`` in order; unseen ones are embedded and added to the store first.

    The store is written before the caller writes its shard, so a run killed in between finds
    this work in the store next time and does not embed these images again. Images a concurrent
    run stored while these were embedded are not stored twice: the shard takes the stored vector.
    """
    hashes = content_hashes(images)
    store.refresh()  # another run may have embedded some of these since we last looked
    todo = unseen(hashes, store)
    if on_batch is not None and len(hashes) > len(todo):
        on_batch(len(hashes) - len(todo))  # progress counts reused images as done
    if todo:
        fresh = extractor.embed_encoded([images[i] for i in todo], on_batch=on_batch)
        store.add([hashes[i] for i in todo], fresh)
    vectors = store.vectors(hashes)
    return assemble(hashes, vectors, extractor.dim), Reuse(len(todo), len(hashes) - len(todo))
