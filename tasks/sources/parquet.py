"""``parquet:PATH_OR_URL``: Parquet files with an image column, indexed in place.

The image column is the Hugging Face ``{bytes, path}`` struct or plain bytes; the label column
is an integer (class names from the Hugging Face features in the schema metadata, or
``--class-names``) or a string; an optional split column, else the split the file's path names.
Columns are detected (Hugging Face features first, then usual names, then types) and can be
named by flags. Indexing reads the footer and the label and split columns, never the images.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tasks.sources import DatasetError
from tasks.sources.shards import (
    ShardIndex,
    SourceShard,
    UnreadableShardError,
    list_shards,
    pointer_columns,
    split_of_path,
)

SUFFIXES = (".parquet", ".pq")
IMAGE_NAMES = ("image", "img", "jpg", "jpeg", "png", "webp")
LABEL_NAMES = ("label", "labels", "fine_label", "class", "target", "category")
SPLIT_NAMES = ("split",)
# Hugging Face `datasets` writes its features as JSON under this schema metadata key.
HF_METADATA_KEY = b"huggingface"


@dataclass(frozen=True)
class ParquetColumns:
    """Which columns hold the image, the label and the split (None: split from the path)."""

    image: str
    label: str
    split: str | None = None


def hf_features(schema: pa.Schema) -> dict[str, Any]:
    """The Hugging Face features stored in a schema's metadata, else {}."""
    raw = (schema.metadata or {}).get(HF_METADATA_KEY)
    if raw is None:
        return {}
    try:
        return json.loads(raw).get("info", {}).get("features", {}) or {}
    except (ValueError, AttributeError):  # metadata another tool wrote differently
        return {}


def hf_class_names(schema: pa.Schema, label: str) -> list[str] | None:
    """The ``ClassLabel`` names of column ``label``, when the metadata declares them."""
    feature = hf_features(schema).get(label, {})
    if isinstance(feature, dict) and feature.get("_type") == "ClassLabel":
        return list(feature.get("names") or []) or None
    return None


def _is_image_type(kind: pa.DataType) -> bool:
    if pa.types.is_struct(kind):
        index = kind.get_field_index("bytes")
        return index >= 0 and _is_image_type(kind.field(index).type)
    return pa.types.is_binary(kind) or pa.types.is_large_binary(kind)


def _is_label_type(kind: pa.DataType) -> bool:
    return pa.types.is_integer(kind) or pa.types.is_string(kind) or pa.types.is_large_string(kind)


def _pick(schema: pa.Schema, hf_type: str, names: tuple[str, ...], fits: Any) -> str | None:
    """A column by Hugging Face feature type, else by usual name, else the only one that fits."""
    for name, feature in hf_features(schema).items():
        if isinstance(feature, dict) and feature.get("_type") == hf_type and name in schema.names:
            return name
    for name in names:
        if name in schema.names and fits(schema.field(name).type):
            return name
    fitting = [f.name for f in schema if fits(f.type)]
    return fitting[0] if len(fitting) == 1 else None


def _require(
    schema: pa.Schema, where: str, name: str | None, role: str, flag: str, fits: Any, kinds: str
) -> str:
    """Column ``name`` checked for presence and type; one line saying which flag fixes it."""
    columns = ", ".join(f"{f.name} ({f.type})" for f in schema)
    if name is None:
        raise DatasetError(f"{where}: no {role} column found among {columns}; pass {flag} NAME")
    if name not in schema.names:
        raise DatasetError(f"{where}: no column {name!r} (columns: {columns}); fix {flag}")
    if not fits(schema.field(name).type):
        raise DatasetError(
            f"{where}: column {name!r} is {schema.field(name).type}, not {kinds}; fix {flag}"
        )
    return name


def detect_columns(
    schema: pa.Schema,
    where: str,
    *,
    image: str | None = None,
    label: str | None = None,
    split: str | None = None,
) -> ParquetColumns:
    """The image, label and split columns of ``schema``: the ones named, else detected."""
    image = _require(
        schema,
        where,
        image or _pick(schema, "Image", IMAGE_NAMES, _is_image_type),
        "image",
        "--image-column",
        _is_image_type,
        "a {bytes, path} struct or binary",
    )
    label = _require(
        schema,
        where,
        label or _pick(schema, "ClassLabel", LABEL_NAMES, _is_label_type),
        "label",
        "--label-column",
        _is_label_type,
        "an integer or a string",
    )
    if split is None:
        split = next((n for n in SPLIT_NAMES if n in schema.names), None)
    if split is not None:
        split = _require(
            schema, where, split, "split", "--split-column", pa.types.is_string, "a string"
        )
    return ParquetColumns(image=image, label=label, split=split)


@contextlib.contextmanager
def _open(shard: SourceShard) -> Iterator[pq.ParquetFile]:
    """The file's footer parsed; a file that is not Parquet raises ``UnreadableShardError``."""
    fs, path = fsspec.core.url_to_fs(shard.url)
    with fs.open(path, "rb") as handle:
        try:
            parquet = pq.ParquetFile(handle)
        except (pa.ArrowException, OSError) as error:
            raise UnreadableShardError(f"not a readable Parquet file ({error})") from None
        yield parquet


def list_parquet(spec: str) -> list[SourceShard]:
    """The Parquet files of ``spec``: a file, folder, glob or brace pattern, local or fsspec URL."""
    return list_shards(spec, SUFFIXES, "parquet")


def check_source(
    shards: list[SourceShard], spec: str, **flags: str | None
) -> tuple[ParquetColumns, list[ShardIndex]]:
    """Columns found in the first readable file's footer; the files that cannot be opened.

    Cheap (footers only), so bad column flags fail before any indexing or extraction.
    """
    unreadable = []
    for shard in shards:
        try:
            with _open(shard) as parquet:
                schema = parquet.schema_arrow
        except UnreadableShardError as error:
            unreadable.append(ShardIndex(shard, None, error=str(error)))
            continue
        return detect_columns(schema, f"parquet:{spec}", **flags), unreadable
    raise DatasetError(
        f"parquet:{spec}: none of the {len(shards)} file(s) is a readable Parquet file "
        f"({unreadable[0].error}); check the files"
    )


def _null_images(parquet: pq.ParquetFile, column: str) -> int:
    """Rows whose image bytes are null, from the footer's statistics (0 when not recorded)."""
    meta = parquet.metadata
    leaves = [
        i
        for i in range(meta.num_columns)
        if meta.schema.column(i).path in (column, f"{column}.bytes")
    ]
    nulls = 0
    for group in range(meta.num_row_groups):
        for leaf in leaves:
            stats = meta.row_group(group).column(leaf).statistics
            if stats is not None and stats.has_null_count:
                nulls += stats.null_count
    return nulls


def index_shard(shard: SourceShard, columns: ParquetColumns) -> ShardIndex:
    """One row per image of one file: split, raw label and pointer (file, row, image column).

    Reads the footer and the label and split columns only.
    """
    where = f"parquet file {shard.url}"
    with _open(shard) as parquet:
        schema = parquet.schema_arrow
        detect_columns(schema, where, image=columns.image, label=columns.label, split=columns.split)
        nulls = _null_images(parquet, columns.image)
        if nulls:
            raise DatasetError(
                f"{where}: {nulls} row(s) of {columns.image!r} hold no image bytes (a path "
                "only); write the files with the image bytes embedded"
            )
        wanted = [columns.label] + ([columns.split] if columns.split else [])
        try:
            table = parquet.read(columns=wanted)
        except (pa.ArrowException, OSError) as error:
            raise UnreadableShardError(f"its label column does not read ({error})") from None
    n = table.num_rows
    labels = table.column(columns.label)
    if labels.null_count:  # a null would become a class "None", or -2**63 for an integer column
        row = pc.index(pc.is_null(labels), True).as_py()
        raise DatasetError(
            f"{where}: row {row} has no label (null in column {columns.label!r}); "
            "fill in or drop the rows without a label"
        )
    raw = {
        "split": (
            table.column(columns.split).combine_chunks()
            if columns.split
            else pa.array([split_of_path(shard.url)] * n, pa.string())
        ),
        "raw_label": table.column(columns.label).combine_chunks(),
        **pointer_columns(shard.url, range(n), [columns.image] * n, [None] * n, [None] * n),
    }
    return ShardIndex(shard, pa.table(raw), class_names=hf_class_names(schema, columns.label))
