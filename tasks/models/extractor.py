"""The model role of extraction: an ``Extractor`` built exactly as a run's parameters say, once
per worker process, and the fingerprint of a weights file."""

from __future__ import annotations

import functools
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from storage.fingerprint import hash_local_file, hash_value

if TYPE_CHECKING:
    # torch and timm load where a model is built: a cached run never needs them. The parameters
    # are a type only, so that editing them (a help line, a new option) keeps stored embeddings.
    from tasks.core.params import EmbeddingsParams
    from tasks.models.embed import Extractor


def build_extractor(params: EmbeddingsParams) -> Extractor:
    """Model, preprocessing, device and precision exactly as a run of ``params`` uses them."""
    from tasks.models import models
    from tasks.models.embed import Extractor

    device = models.resolve_device(params.device)
    precision = models.resolve_precision(params.precision, device)
    model = models.build_model(
        params.model,
        pretrained=params.pretrained,
        weights=params.weights,
        image_size=params.image_size,
        seed=params.seed,
    )
    return Extractor(
        model=models.prepare(model, device, precision),
        prep=models.preprocessing_of(model),
        device=device,
        precision=precision,
        batch_size=params.batch_size,
    )


def weights_fingerprint(path: Path) -> str:
    """sha256 of a weights file, read once per process while its size and mtime stay the same."""
    stat = path.stat()
    return _hash_file(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _hash_file(path: str, size: int, mtime_ns: int) -> str:
    return hash_local_file(Path(path))


# One model per worker process and model spec: building it takes longer than a small shard.
_EXTRACTORS: dict[str, Extractor] = {}
_BUILD_LOCK = threading.Lock()


def model_spec(params: EmbeddingsParams) -> str:
    """Everything that decides which model (and how) a worker builds."""
    fields = ("model", "pretrained", "weights", "image_size", "seed", "device", "precision")
    return hash_value({f: getattr(params, f) for f in fields} | {"batch": params.batch_size})


def worker_extractor(params: EmbeddingsParams) -> Extractor:
    """This process's extractor for ``params``'s model, built on first use."""
    key = model_spec(params)
    with _BUILD_LOCK:
        if key not in _EXTRACTORS:
            _EXTRACTORS[key] = build_extractor(params)
        return _EXTRACTORS[key]
