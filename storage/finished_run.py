"""A finished run, opened from its output root or its run record, and its tables by name."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

import pyarrow as pa

from storage.catalog import latest_table, stage_folder
from storage.fs import Location
from storage.layout import OutputLayout
from storage.manifest import StageManifest, read_manifest
from storage.runs import RunRecord, read_latest, read_record


@dataclass(frozen=True)
class FinishedRun:
    """One run: the output root it wrote under, its record, and a name to show it by."""

    root: Location
    record: RunRecord
    name: str

    def manifest(self, stage: str) -> StageManifest | None:
        """A stage's manifest, or None when the run did not run that stage."""
        folder = stage_folder(self.root, self.record, stage)
        return None if folder is None else read_manifest(folder)

    def table(self, name: str, columns: list[str] | None = None) -> pa.Table | None:
        """A registry table of this run, or None when the run did not write it."""
        return latest_table(self.root, self.record, name, columns)


def open_run(source: str, name: str | None = None) -> FinishedRun:
    """The latest run under an output root, or the run of a record file (``runs/<name>.json``).

    ``name`` defaults to the root's last path part (``outputs/dino`` -> ``dino``).
    """
    if source.endswith(".json"):
        folder, file_name = posixpath.split(source.rstrip("/"))
        runs = Location(folder or ".")
        if not runs.exists(file_name):
            raise FileNotFoundError(f"no run record at {source!r}; pass an output root or its json")
        record = read_record(runs.read_bytes(file_name))
        # OUT/runs/<name>.json -> OUT; OUT/latest.json -> OUT
        inside_runs = posixpath.basename(folder) == "runs"
        root = Location((posixpath.dirname(folder) if inside_runs else folder) or ".")
    else:
        root = Location(source)
        if not root.exists():
            raise FileNotFoundError(f"no output root at {source!r}; pass the --out of a run")
        record = read_latest(OutputLayout(root))
        if record is None:
            raise FileNotFoundError(
                f"{source!r} holds no finished run (no latest.json); run `overlap run --out` first"
            )
    shown = name or posixpath.basename(root.url.rstrip("/")) or root.url
    return FinishedRun(root, record, shown)
