"""The operator's `es batch` commands against a running ingest service."""

from __future__ import annotations

import json
import os
import subprocess

from services.api.embedding_studio.v1 import clickstream_pb2 as pb
from tests.ingest.helpers import session_request
from tests.servers import VENV_BIN


def es(*args: str, address: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ES_INGEST_ADDR": address}
    return subprocess.run([str(VENV_BIN / "es"), *args], env=env, capture_output=True, text=True, timeout=60)


def test_batch_release_prints_the_released_batch_and_json_alone_on_stdout(ingest, ingest_server) -> None:
    ingest.RegisterSession(session_request("s1"))
    result = es("batch", "release", "--release-id", "nightly-1", "--json", address=ingest_server.address)
    assert result.returncode == 0, result.stderr
    assert "released batch-1 with 1 sessions" in result.stderr  # --json: stdout is the JSON object alone
    [line] = result.stdout.strip().splitlines()
    last = json.loads(line)
    assert last["released_batch"]["release_id"] == "nightly-1"
    assert last["next_batch"]["batch_id"] == "batch-2"

    again = es("batch", "release", "--release-id", "nightly-1", address=ingest_server.address)
    assert "already released" in again.stdout
    assert ingest.GetBatch(pb.GetBatchRequest()).batch.batch_id == "batch-2"


def test_batch_release_of_an_empty_batch_fails_with_the_reason(ingest_server) -> None:
    result = es("batch", "release", address=ingest_server.address)
    assert result.returncode == 1
    assert "FAILED_PRECONDITION" in result.stderr and "no sessions" in result.stderr


def test_batch_get_shows_the_collecting_batch(ingest, ingest_server) -> None:
    ingest.RegisterSession(session_request("s1"))
    result = es("batch", "get", address=ingest_server.address)
    assert result.stdout.strip() == "batch-1: collecting, 1 sessions"
