"""TrainerService's answers to bad or impossible requests: each names what was wrong and changes nothing."""

from __future__ import annotations

import time
from collections.abc import Iterator

import grpc
import pytest
from google.protobuf import struct_pb2

from services.api.embedding_studio.v1 import clickstream_pb2, trainer_pb2, trainer_pb2_grpc
from services.common.errors import field_violation
from services.common.settings import Limits, Settings
from tests.servers import InProcessService
from tests.trainer.conftest import PLUGIN, Stack


@pytest.fixture(scope="module")
def trainer_stub(stack: Stack) -> Iterator[trainer_pb2_grpc.TrainerServiceStub]:
    """One trainer, in-process, for the module (these tests need no process to kill)."""
    from services.trainer.main import start

    settings = Settings()  # the stack's ES_ variables
    with InProcessService(lambda port: start(settings, Limits(), "127.0.0.1", port)) as trainer, \
            grpc.insecure_channel(trainer.address) as channel:
        stub = trainer_pb2_grpc.TrainerServiceStub(channel)
        wait_until_connected(stub)
        yield stub


def wait_until_connected(stub: trainer_pb2_grpc.TrainerServiceStub, timeout_s: float = 30.0) -> None:
    """The trainer serves before its NATS connection is up (and answers UNAVAILABLE until then, as it
    should); these tests are about its answers once it is."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            stub.ListTasks(trainer_pb2.ListTasksRequest(page_size=1), timeout=10)
            return
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def task_count(stub: trainer_pb2_grpc.TrainerServiceStub) -> int:
    return len(stub.ListTasks(trainer_pb2.ListTasksRequest(page_size=1000), timeout=30).tasks)


def refused(call, request) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call(request, timeout=60)
    return caught.value


@pytest.mark.parametrize(("request_fields", "field"), [
    ({"fine_tuning_method": PLUGIN}, "idempotency_key"),
    ({"idempotency_key": "k"}, "fine_tuning_method"),
    ({"fine_tuning_method": PLUGIN, "idempotency_key": "k", "batch_id": "b" * 300}, "batch_id"),
    ({"fine_tuning_method": PLUGIN, "idempotency_key": "x" * 300}, "idempotency_key"),
])
def test_create_task_refuses_a_missing_or_oversized_field_naming_it(
        stack: Stack, trainer_stub: trainer_pb2_grpc.TrainerServiceStub, request_fields: dict, field: str) -> None:
    before = task_count(trainer_stub)
    error = refused(trainer_stub.CreateTask, trainer_pb2.CreateTaskRequest(**request_fields))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violation(error).field == field
    assert task_count(trainer_stub) == before


def test_create_task_refuses_unknown_plugins_batches_and_a_collecting_batch(
        stack: Stack, trainer_stub: trainer_pb2_grpc.TrainerServiceStub) -> None:
    before = task_count(trainer_stub)
    error = refused(trainer_stub.CreateTask, trainer_pb2.CreateTaskRequest(
        fine_tuning_method="No Such Method", idempotency_key="unknown-plugin"))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert "No Such Method" in error.details() and PLUGIN in error.details()  # it lists what is there

    error = refused(trainer_stub.CreateTask, trainer_pb2.CreateTaskRequest(
        fine_tuning_method=PLUGIN, batch_id="batch-999", idempotency_key="unknown-batch"))
    assert error.code() == grpc.StatusCode.NOT_FOUND and "batch-999" in error.details()

    stack.fill_batch("api-collecting", sessions=3, seed=5)
    collecting = stack.collecting_batch().batch_id
    error = refused(trainer_stub.CreateTask, trainer_pb2.CreateTaskRequest(
        fine_tuning_method=PLUGIN, batch_id=collecting, idempotency_key="collecting-batch"))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION and "still collecting" in error.details()
    assert stack.collecting_batch().batch_id == collecting  # nothing released
    assert task_count(trainer_stub) == before


def test_create_task_with_nothing_collected_is_failed_precondition(
        stack: Stack, trainer_stub: trainer_pb2_grpc.TrainerServiceStub) -> None:
    if stack.collecting_batch().session_count:
        stack.ingest.ReleaseBatch(clickstream_pb2.ReleaseBatchRequest(release_id="api-empty-first"), timeout=30)
    before = task_count(trainer_stub)
    error = refused(trainer_stub.CreateTask, trainer_pb2.CreateTaskRequest(
        fine_tuning_method=PLUGIN, idempotency_key="nothing-collected"))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "cannot be released" in error.details()
    assert task_count(trainer_stub) == before


def test_one_idempotency_key_names_one_task(stack: Stack, trainer_stub: trainer_pb2_grpc.TrainerServiceStub) -> None:
    stack.knobs(epochs=1, trials=1)
    stack.fill_batch("api-idem", sessions=40, seed=6)
    first = stack.create_task("api-idem", via=trainer_stub)
    collecting = stack.collecting_batch().batch_id
    again = trainer_stub.CreateTask(trainer_pb2.CreateTaskRequest(
        fine_tuning_method=PLUGIN, idempotency_key="api-idem"), timeout=60)
    assert again.duplicate and again.task.task_id == first.task_id
    assert stack.collecting_batch().batch_id == collecting  # the retry released nothing

    error = refused(trainer_stub.CreateTask, trainer_pb2.CreateTaskRequest(
        fine_tuning_method=PLUGIN, batch_id="batch-1", idempotency_key="api-idem"))
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS and first.task_id in error.details()


def test_get_list_cancel_and_restart_refuse_what_cannot_be_done(
        stack: Stack, trainer_stub: trainer_pb2_grpc.TrainerServiceStub) -> None:
    for call, request in ((trainer_stub.GetTask, trainer_pb2.GetTaskRequest(task_id="nope")),
                          (trainer_stub.CancelTask, trainer_pb2.CancelTaskRequest(task_id="nope")),
                          (trainer_stub.RestartTask, trainer_pb2.RestartTaskRequest(task_id="nope"))):
        error = refused(call, request)
        assert error.code() == grpc.StatusCode.NOT_FOUND and "nope" in error.details()
    assert field_violation(refused(trainer_stub.GetTask, trainer_pb2.GetTaskRequest())).field == "task_id"
    assert field_violation(refused(trainer_stub.ListTasks, trainer_pb2.ListTasksRequest(
        page_size=-1))).field == "page_size"
    assert field_violation(refused(trainer_stub.ListTasks, trainer_pb2.ListTasksRequest(
        page_token="abc"))).field == "page_token"

    stack.knobs(epochs=1, trials=1)
    stack.fill_batch("api-control", sessions=40, seed=7)
    task = stack.create_task("api-control", via=trainer_stub)
    error = refused(trainer_stub.RestartTask, trainer_pb2.RestartTaskRequest(task_id=task.task_id))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION and "only a canceled or failed" in error.details()
    canceled = trainer_stub.CancelTask(trainer_pb2.CancelTaskRequest(task_id=task.task_id), timeout=30).task
    assert canceled.status == trainer_pb2.TASK_STATUS_CANCELED
    listed = trainer_stub.ListTasks(trainer_pb2.ListTasksRequest(
        fine_tuning_method=PLUGIN, status=trainer_pb2.TASK_STATUS_CANCELED), timeout=30).tasks
    assert task.task_id in [t.task_id for t in listed]
    assert all(t.status == trainer_pb2.TASK_STATUS_CANCELED for t in listed)

    page = trainer_stub.ListTasks(trainer_pb2.ListTasksRequest(page_size=1), timeout=30)
    assert len(page.tasks) == 1 and page.next_page_token
    rest = trainer_stub.ListTasks(trainer_pb2.ListTasksRequest(page_token=page.next_page_token), timeout=30)
    assert page.tasks[0].task_id not in [t.task_id for t in rest.tasks]


def test_malformed_ids_tokens_and_metadata_are_invalid_argument_naming_the_field(
        stack: Stack, trainer_stub: trainer_pb2_grpc.TrainerServiceStub) -> None:
    for task_id in ("*", ">", "a b", "a.b", "task/1", "t\n"):
        for call, request in ((trainer_stub.GetTask, trainer_pb2.GetTaskRequest(task_id=task_id)),
                              (trainer_stub.CancelTask, trainer_pb2.CancelTaskRequest(task_id=task_id)),
                              (trainer_stub.RestartTask, trainer_pb2.RestartTaskRequest(task_id=task_id))):
            error = refused(call, request)
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, task_id
            assert field_violation(error).field == "task_id"
    for token in ("\u00b2", "-1", "01", "9" * 30):
        error = refused(trainer_stub.ListTasks, trainer_pb2.ListTasksRequest(page_token=token))
        assert (error.code(), field_violation(error).field) == (grpc.StatusCode.INVALID_ARGUMENT, "page_token")
    for batch_id in ("batch-02", "batch-" + "9" * 30, "batch-1 "):
        error = refused(trainer_stub.CreateTask, trainer_pb2.CreateTaskRequest(
            fine_tuning_method=PLUGIN, idempotency_key=f"bad-batch-{batch_id}", batch_id=batch_id))
        assert (error.code(), field_violation(error).field) == (grpc.StatusCode.INVALID_ARGUMENT, "batch_id")
    metadata = struct_pb2.Struct()
    metadata.update({"note": float("nan")})
    error = refused(trainer_stub.CreateTask, trainer_pb2.CreateTaskRequest(
        fine_tuning_method=PLUGIN, idempotency_key="nan-metadata", metadata=metadata))
    assert (error.code(), field_violation(error).field) == (grpc.StatusCode.INVALID_ARGUMENT, "metadata")
    deep: object = "leaf"
    for _ in range(17):
        deep = {"k": deep}
    metadata = struct_pb2.Struct()
    metadata.update(deep)
    error = refused(trainer_stub.CreateTask, trainer_pb2.CreateTaskRequest(
        fine_tuning_method=PLUGIN, idempotency_key="deep-metadata", metadata=metadata))
    assert field_violation(error).field == "metadata" and "ES_MAX_META_DEPTH is 16" in error.details()


@pytest.mark.parametrize("value", [-1, 1001])
def test_max_trials_outside_1_to_1000_is_refused_naming_the_field(
        stack: Stack, trainer_stub: trainer_pb2_grpc.TrainerServiceStub, value: int) -> None:
    error = refused(trainer_stub.CreateTask, trainer_pb2.CreateTaskRequest(
        fine_tuning_method=PLUGIN, idempotency_key=f"bad-trials-{value}", max_trials=value))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violation(error).field == "max_trials" and "1..1000" in error.details()


def test_the_old_metadata_key_for_trials_is_refused_and_names_max_trials(
        stack: Stack, trainer_stub: trainer_pb2_grpc.TrainerServiceStub) -> None:
    metadata = struct_pb2.Struct()
    metadata.update({"initial_max_evals": 2})
    error = refused(trainer_stub.CreateTask, trainer_pb2.CreateTaskRequest(
        fine_tuning_method=PLUGIN, idempotency_key="old-trials-key", metadata=metadata))
    assert field_violation(error).field == "metadata.initial_max_evals" and "max_trials" in error.details()


