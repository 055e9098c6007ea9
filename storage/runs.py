"""Run records: which parameters a run used and which stage folders hold its outputs."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from storage.fingerprint import canonical_json, hash_value
from storage.layout import OutputLayout
from storage.manifest import StageManifest


def run_record(
    params: dict[str, Any], stages: dict[str, StageManifest], extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A JSON-able record of one run: parameters, each stage's folder and tables, extras."""
    now = dt.datetime.now(dt.UTC)
    return {
        "name": f"{now:%Y%m%dT%H%M%SZ}-{hash_value(params, 8)}",
        "finished": now.isoformat(timespec="seconds"),
        "params": json.loads(canonical_json(params)),
        "stages": {
            name: {
                "url": manifest.url,
                "key": manifest.key,
                "tables": {f: manifest.path(f) for f in manifest.files},
                "rows": {f: r.rows for f, r in manifest.files.items()},
            }
            for name, manifest in stages.items()
        },
        **(extra or {}),
    }


def write_run_record(layout: OutputLayout, record: dict[str, Any]) -> str:
    """Write ``runs/<name>.json`` and refresh ``latest.json``; return the record's URL."""
    data = json.dumps(record, indent=2).encode()
    layout.runs.write_bytes(f"{record['name']}.json", data)
    layout.root.write_bytes(layout.latest_name, data)
    return layout.runs.child(f"{record['name']}.json").url


def read_latest(layout: OutputLayout) -> dict[str, Any] | None:
    """The newest run record under an output root, or None."""
    if not layout.root.exists(layout.latest_name):
        return None
    return json.loads(layout.root.read_bytes(layout.latest_name))
