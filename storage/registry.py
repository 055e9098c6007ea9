"""The table registry: every Parquet table the project writes, declared once.

Each ``TableSpec`` names a table, the stage that writes it, one line about its rows, one line
per column and its Arrow schema; it is declared beside that schema, in the ``storage.schemas``
module named after what it holds (``images``, ``overlap``, ...), and listed here. Stages write
and read through it (``table("splits").read(location)``), the README's schema tables are
rendered from it (``python -m storage.schema_docs``) and ``overlap inspect`` shows its
descriptions.
"""

from __future__ import annotations

from storage.schemas import (
    class_similarity,
    classifier,
    compare,
    images,
    neighbours,
    overlap,
    subset,
)
from storage.table_spec import TableSpec

__all__ = ["TABLES", "TableSpec", "table"]

# In the order the README lists them: by stage, as a run writes them.
_SPECS = [
    *images.SPECS,
    *neighbours.SPECS,
    *class_similarity.SPECS,
    *overlap.SPECS,
    *subset.SPECS,
    *classifier.SPECS,
    *compare.SPECS,
]

TABLES: dict[str, TableSpec] = {spec.name: spec for spec in _SPECS}


def table(name: str) -> TableSpec:
    """The spec of table ``name``; a one-line error listing the known tables otherwise."""
    try:
        return TABLES[name]
    except KeyError:
        raise KeyError(f"no table {name!r}; known tables: {', '.join(TABLES)}") from None
