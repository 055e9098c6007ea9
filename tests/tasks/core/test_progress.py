"""Progress of the long stages: the classifier's epochs, in the terminal and in Prefect."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

from tasks import classifier
from tasks.core.progress import stage_progress, step
from tests.support.builders import (
    clf_clusters,
    clf_config,
    clf_embeddings_stage,
    clf_single_thread,
    clf_splits,
    clf_subset_stage,
)
from tests.support.paths import REPO

NAMES = [f"class_{i}" for i in range(5)]


def latest_artifact(key: str):
    """The newest artifact with ``key`` on the test server."""

    async def read():
        async with get_client() as client:
            found = await client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key]))
            )
            return max(found, key=lambda a: a.created)

    return asyncio.run(read())


def _stages(root: Path):
    """A classifier's inputs whose training stops early (as in test_classifier.py)."""
    x, labels = clf_clusters(5, 40, noise=0.4)
    embeddings = clf_embeddings_stage(root, x, labels, NAMES)
    subset = clf_subset_stage(root, labels, clf_splits(labels), NAMES)
    config = clf_config(root, epochs=300, patience=3, learning_rate=1e-2, hidden_size=64)
    return embeddings, subset, config


@pytest.mark.usefixtures("prefect_server")
def test_the_classifier_shows_its_epochs_in_prefect(tmp_path) -> None:
    embeddings, subset, config = _stages(tmp_path)

    @flow
    def train():
        return classifier.classifier_task.fn(embeddings, subset, config.params.classifier)

    with clf_single_thread():
        manifest = train()
    assert manifest.info["stopped_early"]  # ends before --epochs: the artifact still reads 100
    artifact = latest_artifact("classifier-training")
    assert artifact.type == "progress" and artifact.data == 100.0


TRAIN = """
import sys
from pathlib import Path
from prefect.logging import disable_run_logger
from tasks import classifier
from tests.tasks.core.test_progress import _stages
with disable_run_logger():
    manifest = classifier.classifier_task.fn(*_stages(Path(sys.argv[1])))
print(manifest.info["epochs_run"])
"""


def test_the_classifier_shows_its_epochs_in_the_terminal(tmp_path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "TQDM_DISABLE"}  # the suite hides bars
    env["PYTHONPATH"] = str(REPO)
    done = subprocess.run(
        [sys.executable, "-c", TRAIN, str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    epochs = int(done.stdout.split()[-1])
    assert epochs < 300  # an early stop: the bar ends at the epochs run, at 100 %
    final = [line for line in re.split(r"[\r\n]", done.stderr) if line.strip()][-1]
    assert final.startswith("classifier: 100%") and f"{epochs}/{epochs}" in final
    assert "epoch/s" in final and "val_loss=" in final


def test_a_low_estimate_stretches_and_steps_outside_a_progress_do_nothing() -> None:
    step(figure="none")  # no stage progress active: nothing happens
    with stage_progress(2, unit="figure", desc="report", key="k", description="d") as progress:
        assert progress.artifact is None  # outside a Prefect run: the terminal bar only
        for _ in range(3):
            step(figure="x")
        assert progress.done == progress.total == 3 and progress.percent == 100.0


def test_a_failing_stage_leaves_its_progress_unfinished() -> None:
    with (
        pytest.raises(RuntimeError),
        stage_progress(4, unit="epoch", desc="c", key="k", description="d") as progress,
    ):
        progress.advance()
        raise RuntimeError("boom")
    assert progress.done == 1 and progress.percent == 25.0
