"""A fine-tuning task through the whole chain: CreateTask releases the collecting batch, dataprep makes
the dataset, a trainer runs the plugin's search with every run in MLflow, submits the best to the
registry, and the task ends done with the version the registry recorded; WatchTask shows each stage."""

from __future__ import annotations

import hashlib
import json
import time

import grpc
from mlflow import MlflowClient

from services.api.embedding_studio.v1 import events_pb2, registry_pb2, trainer_pb2, trainer_pb2_grpc
from services.common.mlflow_models import iteration_experiment_name
from tests.nats_reader import publish, stream_messages
from tests.trainer.conftest import PLUGIN, Stack


def watch_until_done(stub: trainer_pb2_grpc.TrainerServiceStub, task_id: str, timeout: float = 240
                     ) -> list[trainer_pb2.Task]:
    return [r.task for r in stub.WatchTask(trainer_pb2.WatchTaskRequest(task_id=task_id), timeout=timeout)]


def iteration_runs(stack: Stack, batch_id: str, task_id: str) -> list:
    client = MlflowClient(stack.env["ES_MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name(iteration_experiment_name(PLUGIN, batch_id))
    if experiment is None:
        return []
    return client.search_runs([experiment.experiment_id], filter_string=f"tags.`es.task_id` = '{task_id}'",
                              order_by=["attributes.start_time ASC"])


def test_a_task_without_a_batch_releases_one_trains_and_hands_the_best_to_the_registry(
        stack: Stack, trainer_stub: trainer_pb2_grpc.TrainerServiceStub) -> None:
    stack.knobs(epochs=1, trials=2)
    stack.fill_batch("life")
    collecting = stack.collecting_batch()
    task = stack.create_task("lifecycle-1")
    assert task.status == trainer_pb2.TASK_STATUS_PENDING
    assert task.batch_id == collecting.batch_id and task.attempt == 1

    updates = watch_until_done(trainer_stub, task.task_id)
    done = updates[-1]
    assert done.status == trainer_pb2.TASK_STATUS_DONE, done.error
    stages = [u.progress.stage for u in updates]
    assert stages[0] == trainer_pb2.TASK_STAGE_DATAPREP and trainer_pb2.TASK_STAGE_TRAINING in stages
    assert stages[-1] == trainer_pb2.TASK_STAGE_DONE
    assert max(u.progress.trials_total for u in updates) == 2
    # The finished task carries its last progress and held-out metrics, however fast the run was.
    assert done.progress.trial == 2 and done.progress.metrics.get("test_ndcg_at_10") is not None
    assert done.progress.metrics_step == done.progress.step > 0  # measured at the last step, not the start model's
    assert done.model_version and done.worker == ""

    # The registry recorded the task's candidate, with the scores of it and of the start model.
    versions = stack.registry.ListModelVersions(registry_pb2.ListModelVersionsRequest(fine_tuning_method=PLUGIN),
                                                timeout=60).versions
    recorded = next(v for v in versions if v.version == done.model_version)
    assert recorded.task_id == task.task_id and recorded.batch_id == task.batch_id
    assert recorded.scores.queries == recorded.compared_scores.queries > 0
    assert done.promoted == recorded.is_best
    best = stack.registry.GetBestModel(registry_pb2.GetBestModelRequest(fine_tuning_method=PLUGIN), timeout=60).model
    assert done.best_model_url == f"models:/{PLUGIN}/{best.version}"

    # The best version downloads with the checksum recorded when the trainer saved it.
    chunks = list(stack.registry.DownloadModel(registry_pb2.DownloadModelRequest(
        fine_tuning_method=PLUGIN, version=done.model_version), timeout=120))
    body = b"".join(c.chunk for c in chunks[1:])
    assert hashlib.sha256(body).hexdigest() == chunks[0].archive.sha256

    runs = iteration_runs(stack, task.batch_id, task.task_id)
    assert [r.info.status for r in runs] == ["FINISHED", "FINISHED"]
    assert recorded.run_id in {r.info.run_id for r in runs}

    # Announced once each: the dataset request, and every status change of the task.
    requests = [events_pb2.DataPrepRequested.FromString(m) for m in stream_messages(stack.nats_url,
                                                                                  "es.dataprep.requested")]
    assert [(r.task_id, r.attempt) for r in requests if r.task_id == task.task_id] == [(task.task_id, 1)]
    deadline = time.monotonic() + 10
    while True:
        statuses = [events_pb2.TaskUpdated.FromString(m).task.status
                    for m in stream_messages(stack.nats_url, "es.trainer.task.updated")
                    if events_pb2.TaskUpdated.FromString(m).task.task_id == task.task_id]
        if (statuses and statuses[-1] == trainer_pb2.TASK_STATUS_DONE) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert statuses[0] == trainer_pb2.TASK_STATUS_PENDING
    assert statuses[-1] == trainer_pb2.TASK_STATUS_DONE

    # The dataset's announcement again, as a dataprep that crashed between publishing and recording it
    # sends it after the stream's duplicate window (the stream cannot drop it): the task acts once.
    [ready] = [m for m in stream_messages(stack.nats_url, "es.dataprep.dataset.ready")
               if events_pb2.DatasetReady.FromString(m).task_id == task.task_id]
    publish(stack.nats_url, "es.dataprep.dataset.ready", ready, msg_id=f"repeat-past-the-window-{task.task_id}")
    time.sleep(3)
    with grpc.insecure_channel(stack.live_trainer().address) as channel:
        after = trainer_pb2_grpc.TrainerServiceStub(channel).GetTask(
            trainer_pb2.GetTaskRequest(task_id=task.task_id), timeout=30).task
    assert (after.status, after.model_version, after.updated_at) == (done.status, done.model_version, done.updated_at)
    assert len(iteration_runs(stack, task.batch_id, task.task_id)) == 2
    assert len(stack.registry.ListModelVersions(registry_pb2.ListModelVersionsRequest(
        fine_tuning_method=PLUGIN), timeout=60).versions) == len(versions)

    # A retry of the creation is the same task and releases nothing.
    with grpc.insecure_channel(stack.live_trainer().address) as channel:
        retried = trainer_pb2_grpc.TrainerServiceStub(channel).CreateTask(trainer_pb2.CreateTaskRequest(
            fine_tuning_method=PLUGIN, idempotency_key="lifecycle-1"), timeout=60)
    assert retried.duplicate and retried.task.task_id == task.task_id
    assert stack.collecting_batch().batch_id != collecting.batch_id

    # Every line the trainer wrote, its libraries' (MLflow, transformers, warnings) included, is one JSON object.
    lines = stack.live_trainer().log().splitlines()
    assert lines and [line for line in lines if not _is_json_object(line)] == []


def _is_json_object(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def test_a_task_whose_training_never_beats_the_start_model_keeps_it_and_records_no_version(
        stack: Stack, trainer_stub: trainer_pb2_grpc.TrainerServiceStub) -> None:
    stack.knobs(epochs=1, trials=1, items_lr=0.5)  # a learning rate that wrecks the model at its first step
    stack.fill_batch("wreck", sessions=60, seed=11)
    best = stack.registry.GetBestModel(registry_pb2.GetBestModelRequest(fine_tuning_method=PLUGIN), timeout=60).model
    versions = stack.registry.ListModelVersions(registry_pb2.ListModelVersionsRequest(fine_tuning_method=PLUGIN),
                                                timeout=60).versions
    task = stack.create_task("wreck-1")
    done = watch_until_done(trainer_stub, task.task_id)[-1]
    assert done.status == trainer_pb2.TASK_STATUS_DONE, done.error
    assert (done.model_version, done.promoted) == (best.version, False)
    after = stack.registry.ListModelVersions(registry_pb2.ListModelVersionsRequest(fine_tuning_method=PLUGIN),
                                             timeout=60).versions
    assert len(after) == len(versions)  # no version for a copy of the start model
    [run] = iteration_runs(stack, task.batch_id, task.task_id)
    assert run.data.tags["es.best_is_start"] == "true" and "es.model_sha256" not in run.data.tags
