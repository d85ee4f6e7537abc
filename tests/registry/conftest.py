"""Fixtures of the registry tests: a real MLflow server, real NATS and the registry's real gRPC server
(the tiny model they log is tests/conftest.py's)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from mlflow import MlflowClient

from services.api.embedding_studio.v1 import registry_pb2_grpc
from services.common.settings import Limits, Settings
from tests.conftest import make_settings
from tests.mlflow_server import MlflowServer
from tests.servers import InProcessService, NatsServer


@pytest.fixture
def mlflow_client(mlflow_server: MlflowServer) -> MlflowClient:
    return MlflowClient(tracking_uri=mlflow_server.url, registry_uri=mlflow_server.url)


@pytest.fixture
def registry_settings(tmp_path: Path, mlflow_server: MlflowServer,
                      nats_server: NatsServer) -> Settings:
    return make_settings(tmp_path, mlflow_tracking_uri=mlflow_server.url, nats_url=nats_server.url)


@pytest.fixture
def registry_server(registry_settings: Settings) -> Iterator[InProcessService]:
    from services.registry.main import start

    with InProcessService(lambda port: start(registry_settings, Limits(), "127.0.0.1", port)) as service:
        yield service


@pytest.fixture
def registry(registry_server: InProcessService) -> Iterator[registry_pb2_grpc.RegistryServiceStub]:
    with grpc.insecure_channel(registry_server.address) as channel:
        yield registry_pb2_grpc.RegistryServiceStub(channel)
