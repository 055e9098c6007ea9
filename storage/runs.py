"""Run records: which parameters a run used and which stage folders hold its outputs."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict

from storage.fingerprint import canonical_json, hash_value
from storage.layout import OutputLayout
from storage.manifest import StageManifest


class StageEntry(BaseModel):
    """Where one stage of a run wrote: its folder, key, files (name -> URL) and row counts."""

    model_config = ConfigDict(frozen=True)

    url: str
    key: str
    tables: dict[str, str]
    rows: dict[str, int | None]

    @classmethod
    def of(cls, manifest: StageManifest) -> StageEntry:
        """The entry of a finished stage."""
        return cls(
            url=manifest.url,
            key=manifest.key,
            tables={f: manifest.path(f) for f in manifest.files},
            rows={f: r.rows for f, r in manifest.files.items()},
        )


class RunRecord(BaseModel):
    """One run: its name, when it finished, its parameters, each stage's folder, and extras.

    ``changes``: what the images version changed and the extraction did (absent when nothing
    was counted); ``timing``: when the flow started and each stage's wall seconds.
    """

    model_config = ConfigDict(frozen=True)

    name: str
    finished: str
    params: dict[str, Any]
    stages: dict[str, StageEntry]
    changes: dict[str, int] | None = None
    timing: dict[str, Any] | None = None

    def as_json(self) -> dict[str, Any]:
        """The record as written to ``runs/<name>.json``: the extras only when given."""
        return self.model_dump(mode="json", exclude_unset=True)


def run_record(
    params: Mapping[str, Any],
    stages: Mapping[str, StageManifest],
    changes: Mapping[str, int] | None = None,
    timing: Mapping[str, Any] | None = None,
) -> RunRecord:
    """The record of one run: parameters, each stage's folder and tables, extras when given."""
    now = dt.datetime.now(dt.UTC)
    extras = {"changes": changes, "timing": timing}
    return RunRecord(
        name=f"{now:%Y%m%dT%H%M%SZ}-{hash_value(params, 8)}",
        finished=now.isoformat(timespec="seconds"),
        params=json.loads(canonical_json(params)),
        stages={name: StageEntry.of(manifest) for name, manifest in stages.items()},
        **{name: dict(value) for name, value in extras.items() if value},
    )


def write_run_record(layout: OutputLayout, record: RunRecord) -> str:
    """Write ``runs/<name>.json`` and refresh ``latest.json``; return the record's URL."""
    data = json.dumps(record.as_json(), indent=2).encode()
    layout.runs.write_bytes(f"{record.name}.json", data)
    layout.root.write_bytes(layout.latest_name, data)
    return layout.runs.child(f"{record.name}.json").url


def read_record(data: bytes) -> RunRecord:
    """A run record read back from its JSON."""
    return RunRecord.model_validate_json(data)


def read_latest(layout: OutputLayout) -> RunRecord | None:
    """The newest run record under an output root, or None."""
    if not layout.root.exists(layout.latest_name):
        return None
    return read_record(layout.root.read_bytes(layout.latest_name))
