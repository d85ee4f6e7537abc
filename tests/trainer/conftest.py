"""The whole chain for the trainer's tests, real everywhere: a NATS server of the module's own, the
session's MLflow server, ingest, dataprep and the registry in-process, and trainers as `es serve trainer`
processes (so a test can SIGKILL one). The plugin is tests/trainer/plugins/tiny_plugin.py: a 2-layer
BERT on a 150-item slice of the BBC corpus."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
import pytest

from services.api.embedding_studio.v1 import (
    clickstream_pb2,
    clickstream_pb2_grpc,
    registry_pb2_grpc,
    trainer_pb2,
    trainer_pb2_grpc,
)
from services.common.settings import Limits, Settings
from services.evaluation.datasets import EvalDataset, bbc_news
from services.evaluation.simulation import register_request, simulate_sessions, split_queries
from tests.mlflow_server import MlflowServer
from tests.servers import InProcessService, NatsServer, ServiceProcess

PLUGINS = Path(__file__).parent / "plugins"
PLUGIN = "Tiny Test Method"
LEASE_S = 3


@dataclass
class Stack:
    root: Path
    env: dict[str, str]
    dataset: EvalDataset
    ingest: clickstream_pb2_grpc.ClickstreamServiceStub
    registry: registry_pb2_grpc.RegistryServiceStub
    nats_url: str
    trainers: list[ServiceProcess] = field(default_factory=list)

    def knobs(self, **values: float) -> None:
        """Epochs, trials, the first items_lr and a pause after training (pause_after_training_s) of the tiny
        plugin for the tasks that start from now on."""
        (self.root / "knobs.json").write_text(json.dumps(values))

    def start_trainer(self, name: str) -> ServiceProcess:
        trainer = ServiceProcess("trainer", self.env, self.root / f"{name}.log").start()
        self.trainers.append(trainer)
        return trainer

    def fill_batch(self, prefix: str, sessions: int = 160, seed: int = 0) -> None:
        """Registers simulated sessions in the collecting batch: each shows a train query's relevant item
        somewhere in its top 5 among random others, and clicks follow EVALUATION.md's click model."""
        train, _ = split_queries(self.dataset.queries, 0.2, seed)
        rng = random.Random(seed)
        index = {item.id: i for i, item in enumerate(self.dataset.items)}
        rankings = []
        for query in train:
            relevant = index[next(iter(query.relevant))]
            others = [i for i in rng.sample(range(len(self.dataset.items)), 21) if i != relevant][:19]
            others.insert(rng.randrange(5), relevant)
            rankings.append(others)
        scores = np.tile(np.linspace(0.9, 0.1, 20), (len(train), 1))
        for session in simulate_sessions(self.dataset, train, np.array(rankings), scores, sessions, seed=seed):
            request = register_request(session)
            request.session_id = f"{prefix}-{session.session_id}"
            self.ingest.RegisterSession(request, timeout=30)

    def live_trainer(self) -> ServiceProcess:
        return next(t for t in self.trainers if t.process is not None and t.process.poll() is None)

    def create_task(self, key: str, batch_id: str = "", via: trainer_pb2_grpc.TrainerServiceStub | None = None
                    ) -> trainer_pb2.Task:
        request = trainer_pb2.CreateTaskRequest(fine_tuning_method=PLUGIN, batch_id=batch_id, idempotency_key=key)
        if via is not None:
            return via.CreateTask(request, timeout=60).task
        with grpc.insecure_channel(self.live_trainer().address) as channel:
            return trainer_pb2_grpc.TrainerServiceStub(channel).CreateTask(request, timeout=60).task

    def collecting_batch(self) -> clickstream_pb2.Batch:
        return self.ingest.GetBatch(clickstream_pb2.GetBatchRequest(), timeout=30).batch


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, mlflow_server: MlflowServer,
          tiny_model_dir: Path) -> Iterator[Stack]:
    from services.dataprep.main import start as start_dataprep
    from services.ingest.main import start as start_ingest
    from services.registry.main import start as start_registry

    root = tmp_path_factory.mktemp("trainer-stack")
    corpus = bbc_news()
    step = len(corpus.items) // 150
    dataset = EvalDataset(corpus.items[::step][:150], corpus.queries[::step][:150])
    items_path, _ = dataset.write(root / "data")
    nats = NatsServer(root / "nats").start()
    env = {"ES_NATS_URL": nats.url, "ES_MLFLOW_TRACKING_URI": mlflow_server.url,
           "ES_ARTIFACTS_URI": str(root / "artifacts"), "ES_PLUGINS_PATH": str(PLUGINS),
           "ES_ITEMS_URI": str(items_path), "ES_TEST_MODEL_PATH": str(tiny_model_dir),
           "ES_TEST_KNOBS": str(root / "knobs.json"), "ES_TRAINER_LEASE_S": str(LEASE_S),
           "ES_STATE_DIR": str(root / "state"), "ES_LOG_FORMAT": "json"}
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        settings = Settings(clickstream_db_url=f"sqlite:///{root / 'clickstream.db'}")
        services = [InProcessService(lambda port: start_ingest(settings, Limits(), "127.0.0.1", port))]
        services[0].__enter__()
        settings = Settings(clickstream_db_url=f"sqlite:///{root / 'clickstream.db'}",
                            ingest_addr=services[0].address)
        for start in (start_dataprep, start_registry):
            service = InProcessService(lambda port, start=start: start(settings, Limits(), "127.0.0.1", port))
            service.__enter__()
            services.append(service)
        env.update({"ES_INGEST_ADDR": services[0].address, "ES_DATAPREP_ADDR": services[1].address,
                    "ES_REGISTRY_ADDR": services[2].address})
        for name in ("ES_INGEST_ADDR", "ES_DATAPREP_ADDR", "ES_REGISTRY_ADDR"):
            patch.setenv(name, env[name])
        with grpc.insecure_channel(services[0].address) as ingest, \
                grpc.insecure_channel(services[2].address) as registry:
            yield Stack(root, env, dataset, clickstream_pb2_grpc.ClickstreamServiceStub(ingest),
                        registry_pb2_grpc.RegistryServiceStub(registry), nats.url)
        for service in reversed(services):
            service.__exit__(None, None, None)
    nats.stop()


@pytest.fixture
def trainer_stub(stack: Stack) -> Iterator[trainer_pb2_grpc.TrainerServiceStub]:
    """A stub of a trainer started for the test (the test's end stops it)."""
    trainer = stack.start_trainer(f"trainer-{len(stack.trainers)}")
    with grpc.insecure_channel(trainer.address) as channel:
        yield trainer_pb2_grpc.TrainerServiceStub(channel)
