"""Progress of a long stage: a terminal bar (tqdm) mirrored to a Prefect progress artifact.

``Progress`` counts extraction's images (images/s, resumable); ``StageProgress`` counts the
steps of the other long stages (epochs, figures).

The stage owns one ``StageProgress`` while it computes and advances it step by step (epochs,
figures); code deeper down that does not know the stage advances the current one through
``step()``, a no-op when no stage progress is active (a unit test, a cached stage).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.context import get_run_context
from tqdm.auto import tqdm

_CURRENT: ContextVar[StageProgress | None] = ContextVar("stage_progress", default=None)


def _in_a_run() -> bool:
    """Whether a Prefect flow or task run is active (artifacts need one)."""
    try:
        get_run_context()
    except RuntimeError:
        return False
    return True


class StageProgress:
    """``total`` steps of ``unit``: a terminal bar labelled ``desc``, and the Prefect progress
    artifact ``key`` (percent done), updated on every whole percent and at the end."""

    def __init__(self, total: int, *, unit: str, desc: str, key: str, description: str) -> None:
        self.total, self.done, self.reported = max(total, 1), 0, 0.0
        self.bar = tqdm(total=self.total, unit=unit, desc=desc)
        self.artifact = (
            create_progress_artifact(progress=0.0, key=key, description=description)
            if _in_a_run()
            else None
        )

    @property
    def percent(self) -> float:
        return min(100.0, 100.0 * self.done / self.total)

    def _publish(self, percent: float) -> None:
        if self.artifact is None:
            return
        if percent - self.reported >= 1.0 or percent == 100.0:
            self.reported = percent
            update_progress_artifact(self.artifact, progress=percent)

    def advance(self, n: int = 1, **shown: Any) -> None:
        """``n`` more steps done; ``shown``: values for the bar's postfix (val_loss=0.31)."""
        self.done += n
        if self.done > self.total:  # an estimated total was too low: stretch it
            self.total = self.bar.total = self.done
        self.bar.update(n)
        if shown:
            self.bar.set_postfix(shown, refresh=False)
        self._publish(min(self.percent, 99.0))

    def finish(self) -> None:
        """All done (an early stop ends before ``total``): the artifact reads 100 %."""
        self.bar.total = self.done
        self.bar.refresh()
        self.bar.close()
        self._publish(100.0)


@contextmanager
def stage_progress(
    total: int, *, unit: str, desc: str, key: str, description: str
) -> Iterator[StageProgress]:
    """A StageProgress that ``step()`` advances while the block runs; finished at its end."""
    progress = StageProgress(total, unit=unit, desc=desc, key=key, description=description)
    token = _CURRENT.set(progress)
    try:
        yield progress
    except BaseException:
        progress.bar.close()  # the artifact keeps the share reached: the stage did not finish
        raise
    finally:
        _CURRENT.reset(token)
    progress.finish()


def step(**shown: Any) -> None:
    """One step of the active stage progress, if any."""
    progress = _CURRENT.get()
    if progress is not None:
        progress.advance(**shown)


class Progress(StageProgress):
    """Extraction's progress: images (a resumed run starts at those already embedded), the
    artifact at 100 % once every image is in, as the other stages' at their end."""

    def __init__(self, total: int) -> None:
        super().__init__(
            total, unit="img", desc="extract", key="embedding-extraction",
            description="images embedded",
        )  # fmt: skip
        self.bar.smoothing = 0.1

    def start_at(self, done: int) -> None:
        """Count images a resumed run finds already embedded (not in the images/s rate)."""
        self.done = self.bar.initial = self.bar.n = done
        self.bar.refresh()
        self._publish(self.percent)

    def __call__(self, n: int) -> None:
        self.done += n
        self.bar.update(n)
        self._publish(self.percent)

    def close(self) -> None:
        self.bar.close()
