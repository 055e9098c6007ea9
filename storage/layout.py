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

import hashlib
import json
import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from storage.fingerprint import hash_value
from storage.fs import Location

_SLUG = re.compile(r"[^A-Za-z0-9._-]+")
# An archive's suffix at the end of a dataset (webdataset:.../train-{000..009}.tar): a folder
# named like an archive file reads as one in a listing, and tools open it as one.
_ARCHIVE_SUFFIX = re.compile(r"\.(tar|tar\.gz|tgz|zip)$", re.IGNORECASE)


def slug(text: str, max_length: int = 48) -> str:
    """A file-name-safe version of ``text`` (``x.tar`` becomes ``x-tar``: no archive-like name)."""
    cleaned = _SLUG.sub("-", text).strip("-.")
    cleaned = _ARCHIVE_SUFFIX.sub(lambda m: "-" + m.group(1).replace(".", "-"), cleaned)
    return cleaned[:max_length] or "x"


CLASS_FOLDERS_FILE = "class_folders.tsv"


def duplicate_names(names: Sequence[str]) -> list[str]:
    """Names that occur more than once once Unicode-normalised (NFC), sorted; [] when none.

    "é" written as one code point or as "e" plus an accent are different strings that show (and
    on some file systems are stored) the same, so they count as one name.
    """
    counts = Counter(unicodedata.normalize("NFC", name) for name in names)
    return sorted(name for name, n in counts.items() if n > 1)


def class_folders(names: Sequence[str], max_length: int = 48) -> dict[str, str]:
    """Folder name per class name: unique, file-name-safe and reversible (with the mapping file).

    A name that is already a safe folder name is kept; any other gets its slug plus 8 hex digits
    of its exact text's sha256, so "chat noir" and "chat-noir", or two names that both slug to
    "x" ("日本語", "中文"), never share a folder. Names equal but for case get the suffix too,
    since case-insensitive file systems (macOS, Windows) would merge them.
    """
    if duplicates := duplicate_names(names):
        raise ValueError(f"duplicate class names: {', '.join(map(repr, duplicates))}")
    folded = Counter(name.casefold() for name in names)
    folders = {}
    for name in names:
        base = slug(name, max_length)
        if base != name or folded[name.casefold()] > 1:
            base = f"{base}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"
        folders[name] = base
    if len({f.casefold() for f in folders.values()}) < len(folders):  # 2^-32: say so, not merge
        raise ValueError("two class names map to one folder name; rename one of the classes")
    return folders


def class_folders_tsv(folders: dict[str, str]) -> bytes:
    """The mapping file: a ``folder<TAB>class_name`` line per class, names JSON-quoted.

    JSON quoting keeps a tab, a newline or any other character of a name on its one line.
    """
    lines = ["folder\tclass_name"] + [
        f"{folder}\t{json.dumps(name, ensure_ascii=False)}" for name, folder in folders.items()
    ]
    return ("\n".join(lines) + "\n").encode()


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
