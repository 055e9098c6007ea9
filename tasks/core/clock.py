"""Where a run's wall time goes: seconds per stage, measured in the flow as the stages run."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

_IMPORTED = time.time()

# Stages that are not extraction, for the share a reader wants: everything but this one.
EXTRACTION_STAGE = "embeddings"


@dataclass
class StageClock:
    """Laps of wall time: ``lap(name)`` charges the time since the last lap to ``name``."""

    started: float = field(default_factory=time.time)  # Unix time the flow began
    _last: float = field(default_factory=time.perf_counter)
    seconds: dict[str, float] = field(default_factory=dict)

    def lap(self, name: str) -> None:
        """Charge the wall time since the previous lap (or the start) to stage ``name``."""
        now = time.perf_counter()
        self.seconds[name] = round(self.seconds.get(name, 0.0) + now - self._last, 3)
        self._last = now

    def as_record(self) -> dict[str, object]:
        """JSON-able: when the flow started (Unix seconds) and each stage's wall seconds."""
        return {"flow_started": round(self.started, 3), "stage_seconds": dict(self.seconds)}


def process_started() -> float:
    """Unix time this process started (Linux: from /proc, 10 ms steps), else when this module
    was imported: the start-up part then misses the interpreter's own start."""
    try:
        boot = next(
            float(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime")
        )
        # field 22 of /proc/self/stat, counted after the ")" that ends the command name
        ticks = float(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return _IMPORTED


def time_by_stage(timing: dict, process_started: float, finished: float) -> list[tuple[str, float]]:
    """(part, seconds) of a whole run: start-up (process start to flow start: imports, server),
    each stage, and the finish (record written to process end)."""
    stages = dict(timing.get("stage_seconds", {}))
    flow_started = float(timing.get("flow_started", process_started))
    parts = [("start-up", max(0.0, flow_started - process_started)), *stages.items()]
    parts.append(("finish", max(0.0, finished - flow_started - sum(stages.values()))))
    return parts


def time_by_stage_line(parts: list[tuple[str, float]]) -> str:
    """One line: each part's seconds and share of the total, extraction's share named."""
    total = sum(seconds for _, seconds in parts) or 1.0
    shown = ", ".join(f"{name} {seconds:.1f} s ({seconds / total:.0%})" for name, seconds in parts)
    other = sum(seconds for name, seconds in parts if name != EXTRACTION_STAGE)
    return (
        f"time by stage: {shown}; total {total:.1f} s, "
        f"all but extraction {other:.1f} s ({other / total:.0%})"
    )
