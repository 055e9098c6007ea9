"""The output layout: one place decides where every stage writes.

    OUT/
      <dataset>/<stage>/<key>/      one folder per stage and parameter set, with _manifest.json
      runs/<run-name>.json          each run's parameters and the folders it used
      latest.json                   a copy of the newest run record

``key`` is a short hash of everything that determines the stage's output (its inputs'
fingerprints and its parameters), so different parameter sets never overwrite each other and a
re-run with the same ones finds its outputs again.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from storage.fingerprint import hash_value
from storage.fs import Location

_SLUG = re.compile(r"[^A-Za-z0-9._-]+")


def slug(text: str, max_length: int = 48) -> str:
    """A file-name-safe version of ``text``."""
    cleaned = _SLUG.sub("-", text).strip("-.")
    return cleaned[:max_length] or "x"


@dataclass(frozen=True)
class OutputLayout:
    """Paths under one output root."""

    root: Location

    @classmethod
    def at(cls, url: str) -> OutputLayout:
        """Layout under a path or fsspec URL."""
        return cls(Location(url))

    def stage_key(self, stage: str, inputs: dict) -> str:
        """Folder key for a stage: 12 hex digits of its inputs' hash."""
        return hash_value({"stage": stage, **inputs}, length=12)

    def stage_dir(self, dataset: str, stage: str, key: str) -> Location:
        """Folder of one stage's outputs for one parameter set."""
        return self.root.child(slug(dataset), stage, key)

    @property
    def runs(self) -> Location:
        """Folder of run records."""
        return self.root.child("runs")

    @property
    def latest_name(self) -> str:
        """File name of the newest run record, at the root."""
        return "latest.json"
