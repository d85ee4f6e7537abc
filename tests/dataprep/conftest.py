"""Servers for the dataprep tests: a fresh NATS per test (the durable consumer and the stream start
empty), ingest on SQLite, moto's S3 server, and the dataprep service itself, in-process."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from services.api.embedding_studio.v1 import dataprep_pb2_grpc
from services.common.settings import Limits, Settings
from tests.servers import InProcessService, NatsServer

PLUGINS = Path(__file__).parent / "plugins"


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path / "nats").start()
    yield server
    server.stop()


@pytest.fixture
def clickstream_db_url(tmp_path: Path) -> str:
    # The store's two back-ends are ingest's tests' business; dataprep only reads through its API.
    return f"sqlite:///{tmp_path / 'clickstream.db'}"


def write_items(path: Path, items: dict[str, str]) -> Path:
    path.write_text("".join(json.dumps({"id": item_id, "text": text}) + "\n" for item_id, text in items.items()))
    return path


@pytest.fixture
def items_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An items.jsonl with item-0 … item-9, named by ES_ITEMS_URI (what the test plugins read)."""
    path = write_items(tmp_path / "items.jsonl", {f"item-{i}": f"text of item {i}" for i in range(10)})
    monkeypatch.setenv("ES_ITEMS_URI", str(path))
    return path


@pytest.fixture
def dataprep_settings(tmp_path: Path, nats_server: NatsServer, ingest_server: InProcessService) -> Settings:
    return Settings(state_dir=tmp_path / "state", nats_url=nats_server.url, ingest_addr=ingest_server.address,
                    plugins_path=PLUGINS, artifacts_uri=str(tmp_path / "artifacts"))


@pytest.fixture
def dataprep_server(dataprep_settings: Settings, items_file: Path) -> Iterator[InProcessService]:
    from services.dataprep.main import start

    with InProcessService(lambda port: start(dataprep_settings, Limits(), "127.0.0.1", port)) as service:
        yield service


@pytest.fixture
def dataprep(dataprep_server: InProcessService) -> Iterator[dataprep_pb2_grpc.DataPrepServiceStub]:
    with grpc.insecure_channel(dataprep_server.address) as channel:
        yield dataprep_pb2_grpc.DataPrepServiceStub(channel)
