"""Stage manifests: what a stage wrote, checked before any cached result is trusted."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from pydantic import BaseModel, Field

from storage.fingerprint import hash_file, hash_value
from storage.fs import Location
from storage.integrity import Stamp, content_problem, stamp

MANIFEST_NAME = "_manifest.json"


class FileRecord(BaseModel):
    """One file a stage wrote."""

    rows: int | None = None
    bytes: int
    sha256: str
    # big files only (storage/integrity.py): what the cheap check on each cache hit compares
    mtime: str | None = None
    sample: str | None = None


class StageManifest(BaseModel):
    """Small, JSON-able description of a stage's outputs; what tasks return instead of arrays."""

    stage: str
    key: str
    url: str
    code_version: str
    params: dict[str, Any] = Field(default_factory=dict)
    files: dict[str, FileRecord] = Field(default_factory=dict)
    info: dict[str, Any] = Field(default_factory=dict)
    created: str = Field(
        default_factory=lambda: dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    )

    @property
    def location(self) -> Location:
        """The folder holding this stage's files."""
        return Location(self.url)

    @property
    def rows(self) -> int:
        """Total rows over the stage's tables."""
        return sum(record.rows or 0 for record in self.files.values())

    @property
    def fingerprint(self) -> str:
        """Content fingerprint: changes whenever any output file's bytes change."""
        return hash_value({name: rec.sha256 for name, rec in sorted(self.files.items())})

    def path(self, name: str) -> str:
        """Full URL of one of this stage's files."""
        return self.location.child(name).url

    def problems(self) -> list[str]:
        """Why the files on disk no longer match this manifest ([] when they do).

        Checks existence, size and content at a small cost (storage/integrity.py: small files
        hashed in full, big ones by modification time and sampled blocks); ``verify_hashes``
        reads every byte. Changes no file: a big file re-hashed intact under a new modification
        time (a copied output root) only has its new time recorded in the manifest, so the next
        check is cheap again.
        """
        return [why for _name, why in self.damage()]

    def damage(self) -> list[tuple[str, str]]:
        """(file name, why) for each file missing, resized or changed (see ``problems``)."""
        location = self.location
        found = set(location.listdir())
        issues, restamped = [], False
        for name, record in self.files.items():
            problem, fresh = file_problem(location, name, record, found)
            if problem:
                issues.append((name, problem))
            if fresh is not None:
                record.mtime, record.sample, restamped = fresh.mtime, fresh.sample, True
        if restamped and not issues:
            write_manifest(self)
        return issues

    def verify_hashes(self) -> list[tuple[str, str]]:
        """(file name, why) for each file missing, resized or whose sha256 no longer matches, in
        name order (slow: reads every byte)."""
        location = self.location
        damage = []
        for name, record in sorted(self.files.items()):
            if not location.exists(name):
                damage.append((name, "missing"))
            elif (size := location.size(name)) != record.bytes:
                damage.append((name, f"{size} bytes, manifest says {record.bytes}"))
            elif hash_file(location, name) != record.sha256:
                damage.append((name, "sha256 differs from its manifest"))
        return damage


def file_problem(
    location: Location, name: str, record: FileRecord, found: set[str]
) -> tuple[str | None, Stamp | None]:
    """Why one recorded file of ``location`` (whose listing is ``found``) is missing, resized or
    changed (None when intact), and a fresh stamp to record when it was re-hashed intact."""
    if name not in found:
        return f"{name} is missing", None
    if (size := location.size(name)) != record.bytes:
        return f"{name} changed size ({size} != {record.bytes} bytes)", None
    recorded = Stamp(record.mtime, record.sample)
    return content_problem(location, name, record.bytes, record.sha256, recorded)


def record_file(location: Location, name: str, rows: int | None = None) -> FileRecord:
    """Describe a file already written in ``location``."""
    size = location.size(name)
    checks = stamp(location, name, size)
    return FileRecord(
        rows=rows,
        bytes=size,
        sha256=hash_file(location, name),
        mtime=checks.mtime,
        sample=checks.sample,
    )


def write_manifest(manifest: StageManifest) -> StageManifest:
    """Write the manifest last and atomically: its presence marks the stage complete."""
    manifest.location.write_bytes(MANIFEST_NAME, manifest.model_dump_json(indent=2).encode())
    return manifest


def read_manifest(location: Location) -> StageManifest | None:
    """The manifest in ``location``, or None when absent or unreadable."""
    try:
        return StageManifest.model_validate(json.loads(location.read_bytes(MANIFEST_NAME)))
    except (FileNotFoundError, ValueError):
        return None


def intact_or_cleared(location: Location) -> StageManifest | None:
    """For a stage about to run into ``location``: the earlier manifest when every file it lists
    is intact; else None, after removing the listed files that are there but changed, and the
    manifest (it describes files that are about to change). One check of the files either way.

    A changed file that still reads (a shard with its row count intact) would otherwise count as
    done when the stage resumes; a file that is merely missing needs nothing.
    """
    manifest = read_manifest(location)
    if manifest is None:
        return None
    damage = manifest.damage()
    if not damage:
        return manifest
    found = set(location.listdir())
    for name in (name for name, _why in damage if name in found):
        location.fs.rm(location.file(name))
    location.fs.rm(location.file(MANIFEST_NAME))
    return None


def valid_manifest(location: Location) -> StageManifest | None:
    """The manifest when present and every file it lists is intact, else None."""
    manifest = read_manifest(location)
    if manifest is None or manifest.problems():
        return None
    return manifest
