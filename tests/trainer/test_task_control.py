"""Tasks under control and under failure: a cancel stops a running training within seconds and a restart
reuses the finished runs; two trainer replicas share the queue, one task each; a trainer killed with
SIGKILL in the middle of a trial loses the task to the other replica, which resumes the search from the
runs MLflow recorded and completes it; a paused owner that lost its claim leaves the message to the new
owner; a processing task whose message is gone is re-queued."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator

import grpc
import nats
import pytest

from services.api.embedding_studio.v1 import clickstream_pb2, events_pb2, registry_pb2, trainer_pb2, trainer_pb2_grpc
from services.common.nats import DATASET_READY, STREAM
from services.trainer.worker import DURABLE
from tests.nats_reader import stream_messages
from tests.servers import ServiceProcess
from tests.trainer.conftest import PLUGIN, Stack
from tests.trainer.test_task_lifecycle import iteration_runs, watch_until_done


def updates(stub: trainer_pb2_grpc.TrainerServiceStub, task_id: str) -> Iterator[trainer_pb2.Task]:
    for response in stub.WatchTask(trainer_pb2.WatchTaskRequest(task_id=task_id), timeout=240):
        yield response.task


def wait_for_training(stub: trainer_pb2_grpc.TrainerServiceStub, task_id: str, trial: int) -> trainer_pb2.Task:
    """The task once its `trial`-th trial has taken a step."""
    for task in updates(stub, task_id):
        assert task.status in (trainer_pb2.TASK_STATUS_PENDING, trainer_pb2.TASK_STATUS_PROCESSING), task.error
        if task.progress.trial == trial and task.progress.step > 0:
            return task
    raise AssertionError(f"task {task_id} ended before trial {trial} trained")


def searched(run) -> dict[str, str]:
    """A run's hyperparameters (without the plugin's fixed settings)."""
    return {k: v for k, v in run.data.params.items() if not k.startswith("settings.")}


def claimed_by(trainer: ServiceProcess, task_id: str) -> bool:
    return any('"task_claimed"' in line and task_id in line for line in trainer.log().splitlines())


# Long enough that the second trial is still training when a test cancels or kills it (two trials of 12
# epochs of the tiny model take about 4 s in all).
LONG_TRIAL_EPOCHS = 60


def test_cancel_stops_a_running_training_within_seconds_and_restart_reuses_its_finished_runs(
        stack: Stack, trainer_stub: trainer_pb2_grpc.TrainerServiceStub) -> None:
    stack.knobs(epochs=LONG_TRIAL_EPOCHS, trials=2)
    stack.fill_batch("cancel", seed=1)
    task = stack.create_task("cancel-1")
    wait_for_training(trainer_stub, task.task_id, trial=2)

    canceled_at = time.monotonic()
    canceled = trainer_stub.CancelTask(trainer_pb2.CancelTaskRequest(task_id=task.task_id), timeout=30).task
    assert canceled.status == trainer_pb2.TASK_STATUS_CANCELED
    while [r.info.status for r in iteration_runs(stack, task.batch_id, task.task_id)] != ["FINISHED", "KILLED"]:
        assert time.monotonic() - canceled_at < 10, "the running trial did not stop within 10 s of the cancel"
        time.sleep(0.2)
    finished_before = [r.info.run_id for r in iteration_runs(stack, task.batch_id, task.task_id)][:1]
    again = trainer_stub.CancelTask(trainer_pb2.CancelTaskRequest(task_id=task.task_id), timeout=30).task
    assert again.status == trainer_pb2.TASK_STATUS_CANCELED  # canceling twice is the same cancel

    stack.knobs(epochs=1, trials=2)
    restarted = trainer_stub.RestartTask(trainer_pb2.RestartTaskRequest(task_id=task.task_id), timeout=30).task
    assert restarted.status == trainer_pb2.TASK_STATUS_PENDING and restarted.attempt == 2
    assert canceled.worker and not restarted.worker  # the canceled attempt's replica holds nothing of it
    done = watch_until_done(trainer_stub, task.task_id)[-1]
    assert done.status == trainer_pb2.TASK_STATUS_DONE, done.error
    runs = iteration_runs(stack, task.batch_id, task.task_id)
    assert sorted(r.info.status for r in runs) == ["FINISHED", "FINISHED", "KILLED"]
    assert finished_before[0] in {r.info.run_id for r in runs if r.info.status == "FINISHED"}
    requests = [events_pb2.DataPrepRequested.FromString(m)
                for m in stream_messages(stack.nats_url, "es.dataprep.requested")]
    assert [r.attempt for r in requests if r.task_id == task.task_id] == [1, 2]

    with pytest.raises(grpc.RpcError) as refused:
        trainer_stub.RestartTask(trainer_pb2.RestartTaskRequest(task_id=task.task_id), timeout=30)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "create a new task" in refused.value.details()


def test_a_task_canceled_after_its_last_trial_hands_nothing_to_the_registry(
        stack: Stack, trainer_stub: trainer_pb2_grpc.TrainerServiceStub) -> None:
    # The plugin pauses 20 s between its search and the submission: the cancel lands there.
    stack.knobs(epochs=1, trials=1, pause_after_training_s=20)
    try:
        stack.fill_batch("late-cancel", seed=4)
        task = stack.create_task("late-cancel-1")
        deadline = time.monotonic() + 180
        while [r.info.status for r in iteration_runs(stack, task.batch_id, task.task_id)] != ["FINISHED"]:
            assert time.monotonic() < deadline, "the task's one trial did not finish"
            time.sleep(0.2)
        canceled = trainer_stub.CancelTask(trainer_pb2.CancelTaskRequest(task_id=task.task_id), timeout=30).task
    finally:
        stack.knobs()  # the tasks of later tests do not pause
    assert canceled.status == trainer_pb2.TASK_STATUS_CANCELED
    trainer = next(t for t in stack.trainers if claimed_by(t, task.task_id))
    # It stops at the submission ("task_stopped"), or, when its trial did not beat the start model, it
    # had nothing to submit anyway ("start_model_kept", then "task_done" with nothing written).
    while not any(('"task_stopped"' in line or '"task_done"' in line) and task.task_id in line
                  for line in trainer.log().splitlines()):
        assert time.monotonic() < deadline + 60, "the trainer did not end the canceled task after its pause"
        time.sleep(0.5)
    versions = stack.registry.ListModelVersions(registry_pb2.ListModelVersionsRequest(fine_tuning_method=PLUGIN),
                                                timeout=60).versions
    assert task.task_id not in {v.task_id for v in versions}  # no candidate of a canceled task was recorded
    assert trainer_stub.GetTask(trainer_pb2.GetTaskRequest(task_id=task.task_id), timeout=30).task.status == (
        trainer_pb2.TASK_STATUS_CANCELED)


def released_batch(stack: Stack, prefix: str, seed: int) -> str:
    stack.fill_batch(prefix, seed=seed)
    return stack.ingest.ReleaseBatch(clickstream_pb2.ReleaseBatchRequest(release_id=f"release-{prefix}"),
                                     timeout=30).released_batch.batch_id


def test_two_replicas_take_one_task_each(stack: Stack) -> None:
    stack.knobs(epochs=12, trials=1)
    first, second = stack.start_trainer("replica-a"), stack.start_trainer("replica-b")
    batches = [released_batch(stack, "two-a", seed=2), released_batch(stack, "two-b", seed=3)]
    tasks = [stack.create_task(f"two-{i}", batch_id=batch) for i, batch in enumerate(batches)]
    with grpc.insecure_channel(first.address) as channel:
        stub = trainer_pb2_grpc.TrainerServiceStub(channel)
        for task in tasks:
            done = watch_until_done(stub, task.task_id)[-1]
            assert done.status == trainer_pb2.TASK_STATUS_DONE, done.error
    owners = [[claimed_by(trainer, task.task_id) for trainer in (first, second)] for task in tasks]
    assert sorted(owners) == [[False, True], [True, False]], owners


def test_a_task_of_a_killed_trainer_is_resumed_by_the_other_and_completes(stack: Stack) -> None:
    stack.knobs(epochs=LONG_TRIAL_EPOCHS, trials=2)
    trainers = [stack.start_trainer("kill-a"), stack.start_trainer("kill-b")]
    batch = released_batch(stack, "kill", seed=4)
    task = stack.create_task("kill-1", batch_id=batch)
    with grpc.insecure_channel(trainers[0].address) as channel:
        stub = trainer_pb2_grpc.TrainerServiceStub(channel)
        wait_for_training(stub, task.task_id, trial=2)
    victim = next(t for t in trainers if claimed_by(t, task.task_id))
    survivor = next(t for t in trainers if t is not victim)
    first_run = iteration_runs(stack, batch, task.task_id)[0]
    assert first_run.info.status == "FINISHED"
    victim.kill()

    stack.knobs(epochs=1, trials=2)
    with grpc.insecure_channel(survivor.address) as channel:
        done = watch_until_done(trainer_pb2_grpc.TrainerServiceStub(channel), task.task_id)[-1]
    assert done.status == trainer_pb2.TASK_STATUS_DONE, done.error
    assert claimed_by(survivor, task.task_id)
    runs = iteration_runs(stack, batch, task.task_id)
    # The killed run is recorded as killed and its parameters tried again; the finished one is not retrained.
    assert [r.info.status for r in runs] == ["FINISHED", "KILLED", "FINISHED"]
    assert runs[0].info.run_id == first_run.info.run_id
    assert searched(runs[1]) == searched(runs[2])


def trainer_backlog(url: str) -> tuple[int, int]:
    """Messages the trainers' durable consumer has not received, and received but not settled."""
    async def read() -> tuple[int, int]:
        client = await nats.connect(url)
        try:
            info = await client.jetstream().consumer_info(STREAM, DURABLE)
        finally:
            await client.close()
        return info.num_pending, info.num_ack_pending

    return asyncio.run(read())


def wait_until(condition, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_a_paused_owner_that_lost_its_claim_never_acks_the_work_of_the_replica_that_took_over(stack: Stack) -> None:
    stack.knobs(epochs=LONG_TRIAL_EPOCHS, trials=2)
    trainers = [stack.start_trainer("pause-a"), stack.start_trainer("pause-b")]
    batch = released_batch(stack, "pause", seed=5)
    task = stack.create_task("pause-1", batch_id=batch)
    with grpc.insecure_channel(trainers[0].address) as channel:
        wait_for_training(trainer_pb2_grpc.TrainerServiceStub(channel), task.task_id, trial=1)
    paused = next(t for t in trainers if claimed_by(t, task.task_id))
    taker = next(t for t in trainers if t is not paused)
    paused.process.send_signal(signal.SIGSTOP)  # past the lease: the other replica takes the task over
    try:
        wait_until(lambda: claimed_by(taker, task.task_id))
    finally:
        paused.process.send_signal(signal.SIGCONT)
    wait_until(lambda: '"message_left"' in paused.log())  # it saw the claim lost, and left the message
    assert trainer_backlog(stack.nats_url)[1] >= 1  # still the new owner's to settle (acked, it would be 0)
    stack.knobs(epochs=1, trials=2)
    taker.kill()  # the owner dies: its message must come back, and the task must finish
    with grpc.insecure_channel(paused.address) as channel:
        done = watch_until_done(trainer_pb2_grpc.TrainerServiceStub(channel), task.task_id)[-1]
    assert done.status == trainer_pb2.TASK_STATUS_DONE, done.error


def test_a_processing_task_whose_message_is_gone_is_requeued_and_finished(stack: Stack) -> None:
    stack.knobs(epochs=LONG_TRIAL_EPOCHS, trials=1)
    owner = stack.start_trainer("orphan-a")
    batch = released_batch(stack, "orphan", seed=6)
    task = stack.create_task("orphan-1", batch_id=batch)
    with grpc.insecure_channel(owner.address) as channel:
        wait_for_training(trainer_pb2_grpc.TrainerServiceStub(channel), task.task_id, trial=1)
    owner.kill()

    async def lose_the_message() -> None:  # what a stale ack, or an operator's purge, leaves behind
        client = await nats.connect(stack.nats_url)
        try:
            await client.jetstream().purge_stream(STREAM, subject=DATASET_READY)
        finally:
            await client.close()

    asyncio.run(lose_the_message())
    stack.knobs(epochs=1, trials=1)
    survivor = stack.start_trainer("orphan-b")
    with grpc.insecure_channel(survivor.address) as channel:
        done = watch_until_done(trainer_pb2_grpc.TrainerServiceStub(channel), task.task_id)[-1]
    assert done.status == trainer_pb2.TASK_STATUS_DONE, done.error
    assert done.requeued == 1
    assert '"task_requeued"' in survivor.log() and claimed_by(survivor, task.task_id)
