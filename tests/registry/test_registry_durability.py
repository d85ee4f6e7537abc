"""The registry through outages: MLflow down is UNAVAILABLE naming it and heals by itself; a promotion
made while NATS is down is announced exactly once when NATS is back, also after a restart of the
registry (`es serve registry` as a real process); two replicas racing two winners against one best
promote exactly one."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

from services.api.embedding_studio.v1 import registry_pb2 as pb
from services.api.embedding_studio.v1 import registry_pb2_grpc
from services.common.settings import Limits
from tests.conftest import make_settings
from tests.registry.helpers import candidate, log_initial, log_trial, new_plugin, promotions, register_initial
from tests.servers import InProcessService, NatsServer, ServiceProcess


def test_mlflow_down_is_unavailable_naming_it_and_the_registry_recovers_when_it_is_back(
        registry, mlflow_client, mlflow_server, tiny_model_dir) -> None:
    plugin = new_plugin()
    log_initial(mlflow_client, plugin, tiny_model_dir)
    register_initial(registry, plugin)
    run_id = log_trial(mlflow_client, plugin, "batch-1", "task-1", tiny_model_dir)
    assert registry.GetBestModel(pb.GetBestModelRequest(fine_tuning_method=plugin)).model.version == "1"

    mlflow_server.stop()
    try:
        for call in (lambda: registry.GetBestModel(pb.GetBestModelRequest(fine_tuning_method=plugin)),
                     lambda: registry.SubmitCandidate(candidate(plugin, run_id, 0.6, "1", 0.5))):
            with pytest.raises(grpc.RpcError) as raised:
                call()
            assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "MLflow" in raised.value.details() and mlflow_server.url in raised.value.details()
    finally:
        mlflow_server.start()

    # Nothing changed while it was down, and the same server answers again without a restart.
    assert registry.GetBestModel(pb.GetBestModelRequest(fine_tuning_method=plugin)).model.version == "1"
    assert registry.SubmitCandidate(candidate(plugin, run_id, 0.6, "1", 0.5)).promoted


def test_promotions_made_while_nats_is_down_are_announced_once_when_it_is_back_also_after_a_restart(
        tmp_path: Path, mlflow_server, mlflow_client, tiny_model_dir) -> None:
    from services.registry.main import start

    nats = NatsServer(tmp_path / "nats").start()
    settings = make_settings(tmp_path, mlflow_tracking_uri=mlflow_server.url, nats_url=nats.url)
    plugin = new_plugin()
    log_initial(mlflow_client, plugin, tiny_model_dir)
    runs = [log_trial(mlflow_client, plugin, "batch-1", f"task-{n}", tiny_model_dir) for n in range(2)]
    try:
        with InProcessService(lambda port: start(settings, Limits(), "127.0.0.1", port)) as service, \
                grpc.insecure_channel(service.address) as channel:
            registry = registry_pb2_grpc.RegistryServiceStub(channel)
            register_initial(registry, plugin)
            nats.stop()
            assert registry.SubmitCandidate(candidate(plugin, runs[0], 0.6, "1", 0.5)).promoted
            nats.start()
            assert [event.model.version for event in promotions(nats.url, plugin, count=1)] == ["2"]

            nats.stop()
            assert registry.SubmitCandidate(candidate(plugin, runs[1], 0.7, "2", 0.6)).promoted
        nats.start()
        env = {"ES_STATE_DIR": str(tmp_path / "state"), "ES_MLFLOW_TRACKING_URI": mlflow_server.url,
               "ES_NATS_URL": nats.url}
        restarted = ServiceProcess("registry", env, tmp_path / "registry.log").start()
        try:
            events = promotions(nats.url, plugin, count=2)
            assert [(event.model.version, event.previous_version) for event in events] == [("2", ""), ("3", "2")]
        finally:
            assert restarted.terminate() == 0, restarted.log()
    finally:
        nats.stop()


@pytest.mark.parametrize("first_deadline_s", [60, 1], ids=["both-wait", "first-gives-up-mid-decision"])
def test_two_registry_replicas_racing_two_winners_against_one_best_promote_exactly_one(
        tmp_path: Path, mlflow_server, mlflow_client, tiny_model_dir, first_deadline_s: int) -> None:
    # With a 1 s deadline the first caller gives up while its replica is between its check and its move:
    # the move still happens (a thread cannot be stopped), so the lock must outlast the cancelled call.
    nats = NatsServer(tmp_path / "nats").start()
    plugin = new_plugin()
    log_initial(mlflow_client, plugin, tiny_model_dir)
    runs = [log_trial(mlflow_client, plugin, "batch-1", f"task-{n}", tiny_model_dir) for n in range(2)]
    # Each replica holds a promoting submission 3 s between its check of the best and its move of the
    # alias: without a lock both replicas share, both would check "version 1 is best" and both move.
    env = {"ES_MLFLOW_TRACKING_URI": mlflow_server.url, "ES_NATS_URL": nats.url, "ES_TEST_HOLD_BEFORE_MOVE_S": "3",
           "ES_STATE_DIR": str(tmp_path / "state")}
    replicas = [ServiceProcess("registry", env, tmp_path / f"registry-{n}.log").start() for n in range(2)]
    try:
        def submit(n: int) -> pb.SubmitCandidateResponse | grpc.RpcError:
            time.sleep(n * 0.5)  # the second arrives while the first is held
            with grpc.insecure_channel(replicas[n].address) as channel:
                try:
                    return registry_pb2_grpc.RegistryServiceStub(channel).SubmitCandidate(
                        candidate(plugin, runs[n], 0.6 + n / 10, "1", 0.5), timeout=60 if n else first_deadline_s)
                except grpc.RpcError as error:
                    return error

        with grpc.insecure_channel(replicas[0].address) as channel:
            register_initial(registry_pb2_grpc.RegistryServiceStub(channel), plugin)
        with ThreadPoolExecutor(2) as pool:
            first, second = pool.map(submit, range(2))
        with grpc.insecure_channel(replicas[0].address) as channel:
            best = registry_pb2_grpc.RegistryServiceStub(channel).GetBestModel(
                pb.GetBestModelRequest(fine_tuning_method=plugin), timeout=30).model
    finally:
        for replica in replicas:
            replica.terminate()
        nats.stop()
    if first_deadline_s == 1:
        assert isinstance(first, grpc.RpcError) and first.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    else:
        assert isinstance(first, pb.SubmitCandidateResponse) and first.promoted
        assert best.version == first.version.version
    assert isinstance(second, grpc.RpcError) and second.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "no longer the best" in second.details()
    assert best.run_id == runs[0]
