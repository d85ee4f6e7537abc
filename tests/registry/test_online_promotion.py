"""Promotion through an online experiment (ES_PROMOTION=online), with real servers: MLflow, NATS, ingest
and the registry. A held-out winner becomes the challenger; search sessions interleave the two models
through the registry's Interleave RPC and go to ingest with their teams and clicks; the registry's
referee reads ingest's counts and decides at the horizon."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from services.api.embedding_studio.v1 import clickstream_pb2 as cpb
from services.api.embedding_studio.v1 import clickstream_pb2_grpc, registry_pb2_grpc
from services.api.embedding_studio.v1 import registry_pb2 as pb
from services.common.settings import Limits
from tests.conftest import make_settings
from tests.ingest.helpers import wait_until_ingest_knows
from tests.registry.helpers import (
    best_of,
    candidate,
    log_initial,
    log_trial,
    new_plugin,
    promotions,
    register_initial,
)
from tests.servers import REPO_ROOT, InProcessService

MIN_SESSIONS = 40
CHAMPION_IDS = [f"old-{i}" for i in range(10)]
CHALLENGER_IDS = [f"new-{i}" for i in range(10)]


class OnlineStack:
    def __init__(self, registry: InProcessService, ingest: InProcessService, registry_channel: grpc.Channel,
                 ingest_channel: grpc.Channel, nats_url: str) -> None:
        self.registry = registry_pb2_grpc.RegistryServiceStub(registry_channel)
        self.ingest = clickstream_pb2_grpc.ClickstreamServiceStub(ingest_channel)
        self.registry_address, self.ingest_address, self.nats_url = registry.address, ingest.address, nats_url

    def challenger_of(self, mlflow_client, plugin: str, model_dir: Path) -> pb.SubmitCandidateResponse:
        """Logs the plugin's initial model and a trial that wins the held-out gate, and submits it."""
        log_initial(mlflow_client, plugin, model_dir)
        register_initial(self.registry, plugin)
        run_id = log_trial(mlflow_client, plugin, "batch-1", "task-1", model_dir)
        return self.registry.SubmitCandidate(candidate(plugin, run_id, 0.60, "1", 0.50))

    def search(self, plugin: str, session_id: str, clicks: Callable[[list[cpb.SearchResult]], list[int]]) -> bool:
        """What a search backend does for one search: the plan, both rankings merged, the session with its
        teams, and the user's clicks. False once no experiment runs (the backend serves the champion)."""
        plan = self.registry.GetServingPlan(pb.GetServingPlanRequest(fine_tuning_method=plugin))
        if not plan.experiment_id:
            return False
        merged = self.registry.Interleave(pb.InterleaveRequest(
            experiment_id=plan.experiment_id, session_id=session_id, champion_object_ids=CHAMPION_IDS,
            challenger_object_ids=CHALLENGER_IDS, k=10)).results
        results = [cpb.SearchResult(object_id=r.object_id, rank=1.0 - i / 10, team=r.team)
                   for i, r in enumerate(merged)]
        events = [cpb.Event(event_id=f"click-{k}", object_id=results[k].object_id) for k in clicks(results)]
        self.ingest.RegisterSession(cpb.RegisterSessionRequest(
            session_id=session_id, search_query="q", search_results=results, events=events,
            experiment_id=plan.experiment_id))
        return True

    def searches(self, plugin: str, clicks: Callable[[list[cpb.SearchResult]], list[int]],
                 limit: int = 400) -> int:
        """Searches until the experiment is decided (the serving plan drops the challenger); returns how many."""
        for i in range(limit):
            if not self.search(plugin, f"{plugin}/session-{i}", clicks if i % 10 else lambda results: []):
                return i
        return limit

    def wait_decided(self, experiment_id: str, timeout: float = 30.0) -> pb.Experiment:
        deadline = time.monotonic() + timeout
        while True:
            experiment = self.registry.GetExperiment(pb.GetExperimentRequest(experiment_id=experiment_id)).experiment
            if experiment.state != pb.EXPERIMENT_STATE_RUNNING or time.monotonic() > deadline:
                return experiment
            time.sleep(0.2)


@pytest.fixture(scope="module")
def online(tmp_path_factory: pytest.TempPathFactory, mlflow_server, nats_server) -> Iterator[OnlineStack]:
    """One stack for the module: each test works on a plugin of its own."""
    from services.ingest.main import start as start_ingest
    from services.registry.main import start as start_registry

    tmp_path = tmp_path_factory.mktemp("online")
    ingest_settings = make_settings(tmp_path / "ingest", nats_url=nats_server.url)
    with InProcessService(lambda port: start_ingest(ingest_settings, Limits(), "127.0.0.1", port)) as ingest:
        registry_settings = make_settings(
            tmp_path / "registry", mlflow_tracking_uri=mlflow_server.url, nats_url=nats_server.url,
            ingest_addr=ingest.address, promotion="online", experiment_min_sessions=MIN_SESSIONS,
            experiment_max_sessions=400, experiment_poll_s=0.2)
        with (InProcessService(lambda port: start_registry(registry_settings, Limits(), "127.0.0.1", port)) as registry,
              grpc.insecure_channel(registry.address) as registry_channel,
              grpc.insecure_channel(ingest.address) as ingest_channel):
            yield OnlineStack(registry, ingest, registry_channel, ingest_channel, nats_server.url)


def es_cli(*args: str, registry: str, as_json: bool = True) -> dict | str:
    """Runs the CLI in a child process against `registry`: its JSON object, or its stdout."""
    done = subprocess.run([sys.executable, "-m", "services.cli", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "ES_REGISTRY_ADDR": registry, "PYTHONPATH": str(REPO_ROOT)})
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout) if as_json else done.stdout


def clicks_on(team: int, share: float) -> Callable[[list[cpb.SearchResult]], list[int]]:
    """Clicks the top result of `team` in `share` of the searches (cycling deterministically), else the
    top result of the other team."""
    count = {"n": 0}

    def choose(results: list[cpb.SearchResult]) -> list[int]:
        count["n"] += 1
        wanted = team if (count["n"] * share) % 1 < share else ({cpb.TEAM_CHAMPION, cpb.TEAM_CHALLENGER} - {team}).pop()
        return [next(i for i, r in enumerate(results) if r.team == wanted)]

    return choose


def test_a_held_out_winner_is_promoted_only_after_it_wins_online(online: OnlineStack, mlflow_client,
                                                                  tiny_model_dir) -> None:
    plugin = new_plugin()
    submitted = online.challenger_of(mlflow_client, plugin, tiny_model_dir)
    assert not submitted.promoted and submitted.experiment_id
    assert best_of(online.registry, plugin).version == "1"
    plan = online.registry.GetServingPlan(pb.GetServingPlanRequest(fine_tuning_method=plugin))
    assert (plan.champion.version, plan.challenger.version, plan.experiment_id) == ("1", "2", submitted.experiment_id)
    assert plan.challenger.sha256 and "challenger of online experiment" in plan.challenger.reason
    wait_until_ingest_knows(online.ingest, submitted.experiment_id)

    # Every tenth search gets no click (a tie); of the others, 80% click the challenger's top result.
    assert online.searches(plugin, clicks_on(cpb.TEAM_CHALLENGER, share=0.8)) >= MIN_SESSIONS
    decided = online.wait_decided(submitted.experiment_id)
    assert decided.state == pb.EXPERIMENT_STATE_CHALLENGER_WON, decided.reason
    assert decided.wins > decided.losses and decided.wins + decided.losses >= MIN_SESSIONS
    assert decided.ties >= 1 and decided.p_value < 0.05 and decided.decided_at >= decided.started_at
    assert decided.preference == pytest.approx((decided.wins - decided.losses) / decided.sessions)

    best = best_of(online.registry, plugin)
    assert best.version == "2" and "won online experiment" in best.reason and "p = " in best.reason
    [promoted] = promotions(online.nats_url, plugin, count=1)
    assert promoted.model.version == "2" and promoted.experiment.experiment_id == submitted.experiment_id
    plan = online.registry.GetServingPlan(pb.GetServingPlanRequest(fine_tuning_method=plugin))
    assert plan.champion.version == "2" and not plan.HasField("challenger") and plan.experiment_id == ""

    # Sessions that arrive after the decision are stored and not counted.
    online.ingest.RegisterSession(cpb.RegisterSessionRequest(
        session_id=f"{plugin}/late", search_query="q", experiment_id=submitted.experiment_id,
        search_results=[cpb.SearchResult(object_id="old-0", team=cpb.TEAM_CHAMPION)],
        events=[cpb.Event(event_id="c", object_id="old-0")]))
    time.sleep(1)
    after = online.registry.GetExperiment(pb.GetExperimentRequest(experiment_id=submitted.experiment_id)).experiment
    assert (after.sessions, after.wins, after.losses) == (decided.sessions, decided.wins, decided.losses)
    # A retry of the submission is the same answer.
    retry = online.registry.SubmitCandidate(candidate(plugin, best.run_id, 0.60, "1", 0.50))
    assert retry.promoted and retry.version.version == "2"


def test_a_challenger_users_like_less_is_kept_out_and_never_served_again(online: OnlineStack, mlflow_client,
                                                                           tiny_model_dir) -> None:
    plugin = new_plugin()
    submitted = online.challenger_of(mlflow_client, plugin, tiny_model_dir)
    wait_until_ingest_knows(online.ingest, submitted.experiment_id)
    assert online.searches(plugin, clicks_on(cpb.TEAM_CHAMPION, share=0.8)) >= MIN_SESSIONS
    decided = online.wait_decided(submitted.experiment_id)
    assert decided.state == pb.EXPERIMENT_STATE_CHAMPION_KEPT, decided.reason
    assert decided.losses > decided.wins
    assert best_of(online.registry, plugin).version == "1"
    plan = online.registry.GetServingPlan(pb.GetServingPlanRequest(fine_tuning_method=plugin))
    assert plan.champion.version == "1" and not plan.HasField("challenger")
    versions = online.registry.ListModelVersions(pb.ListModelVersionsRequest(fine_tuning_method=plugin)).versions
    assert "not promoted: online experiment" in versions[1].reason
    assert promotions(online.nats_url, plugin, count=0, timeout=0) == []
    listed = online.registry.ListExperiments(pb.ListExperimentsRequest(fine_tuning_method=plugin)).experiments
    assert [(e.experiment_id, e.state) for e in listed] == [(submitted.experiment_id,
                                                             pb.EXPERIMENT_STATE_CHAMPION_KEPT)]


def test_a_newer_held_out_winner_replaces_the_running_challenger(online: OnlineStack, mlflow_client,
                                                                 tiny_model_dir) -> None:
    plugin = new_plugin()
    first = online.challenger_of(mlflow_client, plugin, tiny_model_dir)
    newer = log_trial(mlflow_client, plugin, "batch-2", "task-2", tiny_model_dir)
    second = online.registry.SubmitCandidate(candidate(plugin, newer, 0.65, "1", 0.50, "batch-2", "task-2"))
    assert not second.promoted and second.experiment_id and second.experiment_id != first.experiment_id
    stopped = online.registry.GetExperiment(pb.GetExperimentRequest(experiment_id=first.experiment_id)).experiment
    assert stopped.state == pb.EXPERIMENT_STATE_STOPPED and "replaced" in stopped.reason
    plan = online.registry.GetServingPlan(pb.GetServingPlanRequest(fine_tuning_method=plugin))
    assert (plan.challenger.version, plan.experiment_id) == ("3", second.experiment_id)
    # A held-out loser changes nothing about the experiment.
    loser = log_trial(mlflow_client, plugin, "batch-3", "task-3", tiny_model_dir)
    assert not online.registry.SubmitCandidate(candidate(plugin, loser, 0.40, "1", 0.50, "batch-3", "task-3")
                                               ).experiment_id
    assert online.registry.GetServingPlan(pb.GetServingPlanRequest(fine_tuning_method=plugin)).experiment_id == \
        second.experiment_id

    # The operator's view of it: es model plan, es experiment list|get.
    plan = es_cli("model", "plan", plugin, "--json", registry=online.registry_address)
    assert (plan["challenger"]["version"], plan["experiment_id"]) == ("3", second.experiment_id)
    listed = es_cli("experiment", "list", plugin, "--json", registry=online.registry_address)["experiments"]
    assert [(e["challenger_version"], e["state"]) for e in listed] == [
        ("2", "EXPERIMENT_STATE_STOPPED"), ("3", "EXPERIMENT_STATE_RUNNING")]
    shown = es_cli("experiment", "get", second.experiment_id, registry=online.registry_address, as_json=False)
    assert shown.startswith(f"{second.experiment_id}: version 3 against 1, running;")


@pytest.mark.parametrize(("change", "field"), [
    ({"k": 0}, "k"),
    ({"k": 1001}, "k"),
    ({"experiment_id": "exp-12"}, "experiment_id"),
    ({"experiment_id": ""}, "experiment_id"),
    ({"session_id": ""}, "session_id"),
    ({"champion_object_ids": ["a", "b", "a"]}, "champion_object_ids[2]"),
    ({"challenger_object_ids": ["x" * 300]}, "challenger_object_ids[0]"),
])
def test_a_bad_interleave_request_is_invalid_argument_naming_the_field(online: OnlineStack, change: dict,
                                                                        field: str) -> None:
    from services.common.errors import field_violation

    request = pb.InterleaveRequest(experiment_id="exp-0123456789-2-0badc0de", session_id="s", champion_object_ids=["a"],
                                   challenger_object_ids=["b"], k=2)
    for key, value in change.items():
        if isinstance(value, list):
            getattr(request, key)[:] = value
        else:
            setattr(request, key, value)
    with pytest.raises(grpc.RpcError) as info:
        online.registry.Interleave(request)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violation(info.value).field == field


def test_unknown_or_malformed_experiments_are_not_found_or_invalid_argument(online: OnlineStack) -> None:
    with pytest.raises(grpc.RpcError) as info:
        online.registry.GetExperiment(pb.GetExperimentRequest(experiment_id="exp-0123456789-2-0badc0de"))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as info:
        online.registry.GetExperiment(pb.GetExperimentRequest(experiment_id="exp-2"))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_the_readmes_backend_loop_shows_an_interleaved_list_and_registers_it_with_its_teams(
        online: OnlineStack, mlflow_client, tiny_model_dir, tmp_path: Path) -> None:
    from tests.registry.test_readme_examples import python_blocks, run_block

    plugin = new_plugin()
    submitted = online.challenger_of(mlflow_client, plugin, tiny_model_dir)
    wait_until_ingest_knows(online.ingest, submitted.experiment_id)
    [loop] = python_blocks("Proving a model online")
    ran = run_block(loop, tmp_path, **{"127.0.0.1:50054": online.registry_address,
                                       "127.0.0.1:50051": online.ingest_address,
                                       "Default Fine Tuning Method": plugin})
    assert ran.returncode == 0, ran.stderr[-3000:]
    stored = online.ingest.GetSession(cpb.GetSessionRequest(session_id="7a2e…")).session
    assert stored.experiment_id == submitted.experiment_id
    assert {r.object_id for r in stored.search_results} <= {"sku-1", "sku-2", "sku-3", "sku-9"}
    assert {r.team for r in stored.search_results} == {cpb.TEAM_CHAMPION, cpb.TEAM_CHALLENGER}
    assert len(stored.events) == 1
