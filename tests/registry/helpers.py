"""What the trainer writes to MLflow, done the trainer's way (through services.common.mlflow_models),
builders for requests, and a reader of the promotions announced on NATS."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mlflow import MlflowClient

from services.api.embedding_studio.v1 import events_pb2
from services.api.embedding_studio.v1 import registry_pb2 as pb
from services.common.mlflow_models import (
    FLAVOR_DATA_PATH,
    INITIAL_EXPERIMENT,
    KIND_INITIAL,
    KIND_TRIAL,
    MODEL_ARCHIVE_PATH,
    MODEL_ARTIFACT_DIR,
    TAG_BATCH,
    TAG_KIND,
    TAG_PLUGIN,
    TAG_PLUGIN_VERSION,
    TAG_SHA256,
    TAG_SIZE,
    TAG_TASK,
    iteration_experiment_name,
    log_model_folder,
    write_model_archive,
)
from services.common.nats import MODEL_PROMOTED
from tests.nats_reader import stream_messages


def new_plugin() -> str:
    """A plugin name of its own per test, so tests share one MLflow server without seeing each other."""
    return f"Plugin {uuid.uuid4().hex[:8]}"


def _experiment(client: MlflowClient, name: str) -> str:
    experiment = client.get_experiment_by_name(name)
    return experiment.experiment_id if experiment else client.create_experiment(name)


def log_initial(client: MlflowClient, plugin: str, model_dir: Path, plugin_version: str = "1.0") -> str:
    run = client.create_run(_experiment(client, INITIAL_EXPERIMENT),
                            tags={TAG_KIND: KIND_INITIAL, TAG_PLUGIN: plugin, TAG_PLUGIN_VERSION: plugin_version})
    log_model_folder(client, run.info.run_id, model_dir)
    client.set_terminated(run.info.run_id)
    return run.info.run_id


def register_initial(registry, plugin: str) -> pb.ModelVersion:
    """What the trainer does at the start of each task: the logged initial model becomes version 1 and the best."""
    return registry.RegisterInitialModel(pb.RegisterInitialModelRequest(fine_tuning_method=plugin)).model


def log_trial(client: MlflowClient, plugin: str, batch_id: str, task_id: str, model_dir: Path | None,
              params: dict[str, str] | None = None, metrics: dict[str, float] | None = None) -> str:
    run = client.create_run(_experiment(client, iteration_experiment_name(plugin, batch_id)),
                            tags={TAG_KIND: KIND_TRIAL, TAG_PLUGIN: plugin, TAG_BATCH: batch_id, TAG_TASK: task_id})
    for key, value in (params or {"items_lr": "1e-05", "margin": "0.025"}).items():
        client.log_param(run.info.run_id, key, value)
    for key, value in (metrics or {"ndcg_at_10": 0.5}).items():
        client.log_metric(run.info.run_id, key, value)
    if model_dir is not None:
        log_model_folder(client, run.info.run_id, model_dir)
    client.set_terminated(run.info.run_id)
    return run.info.run_id


def best_of(registry, plugin: str) -> pb.ModelVersion:
    return registry.GetBestModel(pb.GetBestModelRequest(fine_tuning_method=plugin)).model


def scores(ndcg: float, queries: int = 40) -> pb.HeldOutScores:
    return pb.HeldOutScores(ndcg_at_10=ndcg, mrr_at_10=ndcg, recall_at={100: min(1.0, ndcg + 0.2)}, queries=queries)


def candidate(plugin: str, run_id: str, ndcg: float, compared_version: str, compared_ndcg: float,
              batch_id: str = "batch-1", task_id: str = "task-1") -> pb.SubmitCandidateRequest:
    return pb.SubmitCandidateRequest(
        fine_tuning_method=plugin, task_id=task_id, batch_id=batch_id, run_id=run_id,
        candidate_scores=scores(ndcg), compared_version=compared_version, compared_scores=scores(compared_ndcg))


def stored_archive(artifacts_dir: Path, run_id: str) -> Path:
    """The file holding the model's weights as the MLflow server stored it (to tamper with it): the
    flavor's model.safetensors, or the tar of the "archive" layout."""
    ends = (MODEL_ARCHIVE_PATH, f"{FLAVOR_DATA_PATH}/model.safetensors")
    found = [path for path in artifacts_dir.rglob("*") if run_id in path.parts and path.as_posix().endswith(ends)]
    assert len(found) == 1, found
    return found[0]


def stored_model(artifacts_dir: Path, run_id: str) -> Path:
    """The stored `model/` artifact folder of a run."""
    [found] = [path for path in artifacts_dir.rglob(MODEL_ARTIFACT_DIR) if run_id in path.parts and path.is_dir()]
    return found


def log_legacy_archive(client: MlflowClient, run_id: str, model_dir: Path, tmp_path: Path) -> None:
    """What the trainer logged before models were MLflow Models (up to 768f0c5): `model/model.tar` and
    its sha256 and size as tags, no layout tag."""
    tar_path = tmp_path / "model.tar"
    archive = write_model_archive(model_dir, tar_path)
    client.log_artifact(run_id, str(tar_path), "model")
    client.set_tag(run_id, TAG_SHA256, archive.sha256)
    client.set_tag(run_id, TAG_SIZE, str(archive.size_bytes))


def promotions(nats_url: str, plugin: str, count: int, timeout: float = 20.0) -> list[events_pb2.ModelPromoted]:
    """The ModelPromoted events of one plugin on the stream, once at least `count` are there (read once
    more after a pause, so that a late duplicate would show)."""
    deadline = time.monotonic() + timeout
    while True:
        mine = _promotions_now(nats_url, plugin)
        if len(mine) >= count or time.monotonic() > deadline:
            time.sleep(1.0)
            return _promotions_now(nats_url, plugin)


def _promotions_now(nats_url: str, plugin: str) -> list[events_pb2.ModelPromoted]:
    events = [events_pb2.ModelPromoted.FromString(payload)
              for payload in stream_messages(nats_url, MODEL_PROMOTED, settle_s=0.3)]
    return [event for event in events if event.model.fine_tuning_method == plugin]


@contextmanager
def mlflow_tracking(url: str) -> Iterator[None]:
    """MLflow's fluent API (`mlflow.*.load_model("models:/...")`) pointed at `url` for a while."""
    import mlflow

    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(url)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)
