"""Outputs in object storage: the synthetic flow against an S3 server (moto) on 127.0.0.1.

The endpoint is given the way a user gives it, by the standard AWS environment variables
(``AWS_ENDPOINT_URL_S3``, keys, region), which s3fs, boto3 and Dask or Ray workers all read.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

pytest.importorskip("s3fs", reason="the s3 extra is not installed: pip install '.[s3]'")
moto_server = pytest.importorskip("moto.server", reason="moto[server] is not installed")

import fsspec  # noqa: E402
import polars as pl  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from flows.config import RunConfig  # noqa: E402
from flows.inspect_cmd import inspect_root  # noqa: E402
from flows.overlap_flow import class_overlap  # noqa: E402
from flows.runners import RESULTS_FOLDER  # noqa: E402
from tests.support.flow_states import assert_only, task_states  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]
BUCKET = "overlap-test"


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """A moto S3 server on a free port, with a bucket; the AWS variables point at it."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AWS_ACCESS_KEY_ID", "testing")
        env.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        env.setenv("AWS_DEFAULT_REGION", "us-east-1")
        env.setenv("AWS_ENDPOINT_URL_S3", endpoint)
        fsspec.get_filesystem_class("s3").clear_instance_cache()  # none made for another server
        fsspec.filesystem("s3").mkdir(BUCKET)
        yield endpoint
        fsspec.filesystem("s3").clear_instance_cache()
    server.stop()


@pytest.fixture(scope="module")
def s3_run(s3_endpoint: str) -> tuple[RunConfig, dict]:
    config = RunConfig(dataset="synthetic", out=f"s3://{BUCKET}/run")
    return config, class_overlap(config)


def rerun(config: RunConfig) -> tuple[dict, dict[str, str]]:
    """Run the flow again; return its record and each task's final state."""
    state = class_overlap(config, return_state=True)
    return state.result(), task_states(state)


def test_every_stage_writes_into_the_bucket(s3_run) -> None:
    _config, record = s3_run
    fs = fsspec.filesystem("s3")
    for stage in record["stages"].values():
        assert stage["url"].startswith(f"s3://{BUCKET}/run/")
        assert fs.exists(stage["url"] + "/_manifest.json")
    assert fs.exists(f"{BUCKET}/run/latest.json")
    assert fs.ls(f"{BUCKET}/run/{RESULTS_FOLDER}"), "Prefect's cache records follow --out"
    leftovers = [p for p in fs.find(f"{BUCKET}/run") if ".tmp-" in p]
    assert leftovers == []


def test_tables_read_back_with_pyarrow_and_polars(s3_run) -> None:
    _config, record = s3_run
    fs = fsspec.filesystem("s3")
    embeddings = record["stages"]["embeddings"]["url"].removeprefix("s3://")
    table = pq.read_table(embeddings, filesystem=fs)
    assert table.num_rows == 1200
    with fs.open(record["stages"]["overlap"]["tables"]["overlap_pairs.parquet"]) as handle:
        pairs = pl.read_parquet(io.BytesIO(handle.read()))
    assert pairs.height > 0 and {"class_a", "class_b", "cosine"} <= set(pairs.columns)


def test_overlap_inspect_reads_the_bucket(s3_run) -> None:
    config, _record = s3_run
    text = io.StringIO()
    assert inspect_root(config.out, top=3, show_schema=False, out=text) == 0
    shown = text.getvalue()
    assert f"Output root: s3://{BUCKET}/run" in shown
    assert "embeddings" in shown and "overlap_pairs" in shown
    assert "Top overlap pairs" in shown and "(not written by this run)" not in shown


def test_a_second_run_on_the_bucket_is_served_from_its_cache(s3_run) -> None:
    config, record = s3_run
    again, states = rerun(config)
    assert_only(states)
    assert again["stages"] == record["stages"]


def test_a_shard_deleted_from_the_bucket_is_recomputed(s3_run) -> None:
    config, record = s3_run
    fs = fsspec.filesystem("s3")
    shard = record["stages"]["embeddings"]["url"].removeprefix("s3://") + "/part-00000.parquet"
    before = pq.read_table(shard, filesystem=fs)
    fs.rm(shard)
    _again, states = rerun(config)
    assert_only(states, "embeddings")  # the stale cache record in the bucket is noticed
    assert pq.read_table(shard, filesystem=fs).equals(before)


def test_a_url_as_data_folder_is_refused_with_the_fix() -> None:
    with pytest.raises(ValueError, match="must be a local folder"):
        RunConfig(dataset="synthetic", data_dir=f"s3://{BUCKET}/data")
