"""RegistryService against a real MLflow server and real NATS: the best model and why, the promotion
gate, versions and iterations, downloads that load, and errors a person can act on."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest
from mlflow import MlflowClient
from sentence_transformers import SentenceTransformer

from services.api.embedding_studio.v1 import registry_pb2 as pb
from services.api.embedding_studio.v1 import registry_pb2_grpc
from services.common.errors import field_violation
from services.common.mlflow_models import INITIAL_EXPERIMENT, extract_model_archive, registered_model_name
from services.common.settings import Limits
from tests.conftest import make_settings
from tests.registry.helpers import (
    best_of,
    candidate,
    log_initial,
    log_trial,
    mlflow_tracking,
    new_plugin,
    promotions,
    register_initial,
    stored_archive,
    stored_model,
)
from tests.servers import InProcessService


def rpc_error(call: Callable[[], object]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as raised:
        call()
    return raised.value


def download(registry, plugin: str, version: str = "") -> tuple[pb.ModelArchive, bytes]:
    responses = list(registry.DownloadModel(pb.DownloadModelRequest(fine_tuning_method=plugin, version=version)))
    assert responses[0].WhichOneof("part") == "archive"
    assert all(response.WhichOneof("part") == "chunk" for response in responses[1:])
    return responses[0].archive, b"".join(response.chunk for response in responses[1:])


def test_a_plugin_without_promotions_answers_with_its_initial_model_once_it_is_registered(
        registry, mlflow_client, tiny_model_dir) -> None:
    plugin = new_plugin()
    run_id = log_initial(mlflow_client, plugin, tiny_model_dir, plugin_version="2.1")
    # Reading writes nothing: before the trainer registers the initial model, there is no best.
    error = rpc_error(lambda: best_of(registry, plugin))
    assert error.code() == grpc.StatusCode.NOT_FOUND and "RegisterInitialModel" in error.details()
    assert mlflow_client.search_registered_models(f"name = '{registered_model_name(plugin)}'") == []

    registered = register_initial(registry, plugin)
    model = best_of(registry, plugin)
    assert registered == model
    assert model.is_initial and model.is_best
    assert (model.run_id, model.version) == (run_id, "1")
    assert "initial model" in model.reason and "plugin version 2.1" in model.reason
    assert "no fine-tuned version has been promoted" in model.reason
    assert len(model.sha256) == 64 and model.size_bytes > 0
    # Registered again (the trainer does at every task), the same version: the initial model is registered once.
    assert register_initial(registry, plugin).version == "1"
    assert len(registry.ListModelVersions(pb.ListModelVersionsRequest(fine_tuning_method=plugin)).versions) == 1


def test_a_better_candidate_is_promoted_and_the_best_model_says_which_version_it_beat(
        registry, mlflow_client, tiny_model_dir, nats_server) -> None:
    plugin = new_plugin()
    log_initial(mlflow_client, plugin, tiny_model_dir)
    register_initial(registry, plugin)
    initial = best_of(registry, plugin)
    run_id = log_trial(mlflow_client, plugin, "batch-7", "task-3", tiny_model_dir, params={"margin": "0.05"})

    response = registry.SubmitCandidate(candidate(plugin, run_id, 0.62, initial.version, 0.55, "batch-7", "task-3"))
    assert response.promoted
    assert (response.version.version, response.version.is_best) == ("2", True)
    assert "beat version 1" in response.reason

    best = best_of(registry, plugin)
    assert (best.version, best.is_initial, best.run_id) == ("2", False, run_id)
    assert (best.batch_id, best.task_id, best.params["margin"]) == ("batch-7", "task-3", "0.05")
    assert best.iteration_id == mlflow_client.get_run(run_id).info.experiment_id
    assert best.scores.ndcg_at_10 == pytest.approx(0.62) and best.scores.queries == 40
    assert best.compared_version == "1" and best.compared_scores.ndcg_at_10 == pytest.approx(0.55)
    assert "0.6200" in best.reason and "0.5500" in best.reason and "batch-7" in best.reason

    # A retry of the same submission gets the same answer and changes nothing.
    again = registry.SubmitCandidate(candidate(plugin, run_id, 0.62, initial.version, 0.55, "batch-7", "task-3"))
    assert again.promoted and again.version.version == "2"

    events = promotions(nats_server.url, plugin, count=1)
    assert [(event.model.version, event.previous_version) for event in events] == [("2", "")]
    assert events[0].model.run_id == run_id

    # The next promotion names the fine-tuned version it replaced.
    next_run = log_trial(mlflow_client, plugin, "batch-8", "task-4", tiny_model_dir)
    assert registry.SubmitCandidate(candidate(plugin, next_run, 0.70, "2", 0.62, "batch-8", "task-4")).promoted
    events = promotions(nats_server.url, plugin, count=2)
    assert [(event.model.version, event.previous_version) for event in events] == [("2", ""), ("3", "2")]


def test_a_worse_or_equal_candidate_is_recorded_but_not_promoted(registry, mlflow_client, tiny_model_dir,
                                                                 nats_server) -> None:
    plugin = new_plugin()
    log_initial(mlflow_client, plugin, tiny_model_dir)
    register_initial(registry, plugin)
    worse = log_trial(mlflow_client, plugin, "batch-1", "task-1", tiny_model_dir)
    response = registry.SubmitCandidate(candidate(plugin, worse, 0.40, "1", 0.45))
    assert not response.promoted
    assert response.version.version == "2" and not response.version.is_best
    assert "not promoted" in response.reason and "0.4000" in response.reason and "0.4500" in response.reason

    tie = log_trial(mlflow_client, plugin, "batch-1", "task-1", tiny_model_dir)
    assert not registry.SubmitCandidate(candidate(plugin, tie, 0.45, "1", 0.45)).promoted

    best = best_of(registry, plugin)
    assert (best.version, best.is_initial) == ("1", True)
    versions = registry.ListModelVersions(pb.ListModelVersionsRequest(fine_tuning_method=plugin)).versions
    assert [(v.version, v.is_best) for v in versions] == [("1", True), ("2", False), ("3", False)]
    assert promotions(nats_server.url, plugin, count=0, timeout=0) == []


def test_scores_recorded_before_queries_was_named_so_still_read(registry, mlflow_client, tiny_model_dir) -> None:
    plugin = new_plugin()
    log_initial(mlflow_client, plugin, tiny_model_dir)
    register_initial(registry, plugin)
    run_id = log_trial(mlflow_client, plugin, "batch-2", "task-2", tiny_model_dir)
    registry.SubmitCandidate(candidate(plugin, run_id, 0.62, "1", 0.55, "batch-2", "task-2"))
    # What the registry wrote up to 768f0c5: HeldOutScores' count was named "sessions".
    mlflow_client.set_model_version_tag(plugin, "2", "es.scores",
                                        '{"mrr_at_10": 0.5, "ndcg_at_10": 0.62, "recall_at": {"100": 0.8}, '
                                        '"sessions": "31"}')
    best = best_of(registry, plugin)
    assert (best.scores.queries, best.scores.ndcg_at_10) == (31, pytest.approx(0.62))


def test_a_candidate_compared_with_a_replaced_best_is_failed_precondition(registry, mlflow_client,
                                                                        tiny_model_dir) -> None:
    plugin = new_plugin()
    log_initial(mlflow_client, plugin, tiny_model_dir)
    register_initial(registry, plugin)
    first = log_trial(mlflow_client, plugin, "batch-1", "task-1", tiny_model_dir)
    late = log_trial(mlflow_client, plugin, "batch-1", "task-2", tiny_model_dir)
    assert registry.SubmitCandidate(candidate(plugin, first, 0.60, "1", 0.50)).promoted

    with pytest.raises(grpc.RpcError) as raised:
        registry.SubmitCandidate(candidate(plugin, late, 0.90, "1", 0.50, task_id="task-2"))
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "version 1" in raised.value.details() and "version 2 is" in raised.value.details()
    assert best_of(registry, plugin).version == "2"
    # Scored again against the new best, it goes through.
    assert registry.SubmitCandidate(candidate(plugin, late, 0.90, "2", 0.60, task_id="task-2")).promoted


def test_of_two_concurrent_winners_against_the_same_best_one_is_promoted_and_the_other_must_score_again(
        registry, mlflow_client, tiny_model_dir) -> None:
    plugin = new_plugin()
    log_initial(mlflow_client, plugin, tiny_model_dir)
    register_initial(registry, plugin)
    runs = [log_trial(mlflow_client, plugin, "batch-1", f"task-{n}", tiny_model_dir) for n in range(2)]
    best_of(registry, plugin)

    def submit(run_id: str) -> grpc.StatusCode:
        try:
            registry.SubmitCandidate(candidate(plugin, run_id, 0.8, "1", 0.5))
        except grpc.RpcError as error:
            return error.code()
        return grpc.StatusCode.OK

    with ThreadPoolExecutor(2) as pool:
        codes = sorted(pool.map(submit, runs), key=lambda code: code.name)
    assert codes == [grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.OK]
    assert best_of(registry, plugin).run_id in runs


def test_model_versions_list_every_version_with_its_decision(registry, mlflow_client, tiny_model_dir) -> None:
    plugin = new_plugin()
    log_initial(mlflow_client, plugin, tiny_model_dir)
    register_initial(registry, plugin)
    better = log_trial(mlflow_client, plugin, "batch-1", "task-1", tiny_model_dir)
    best_after = log_trial(mlflow_client, plugin, "batch-2", "task-2", tiny_model_dir)
    registry.SubmitCandidate(candidate(plugin, better, 0.6, "1", 0.5))
    registry.SubmitCandidate(candidate(plugin, best_after, 0.7, "2", 0.6, batch_id="batch-2", task_id="task-2"))

    versions = registry.ListModelVersions(pb.ListModelVersionsRequest(fine_tuning_method=plugin)).versions
    assert [(v.version, v.is_initial, v.is_best) for v in versions] == [
        ("1", True, False), ("2", False, False), ("3", False, True)]
    assert "version 3 is the best now" in versions[0].reason
    assert "was the best" in versions[1].reason and "version 3 is the best now" in versions[1].reason
    assert versions[2].batch_id == "batch-2" and versions[2].compared_version == "2"
    assert all(v.created_at > 0 and v.sha256 for v in versions)

    # The list pages like ListTasks: page_size, then the token of the next page until there is none.
    first = registry.ListModelVersions(pb.ListModelVersionsRequest(fine_tuning_method=plugin, page_size=2))
    assert [v.version for v in first.versions] == ["1", "2"] and first.next_page_token
    rest = registry.ListModelVersions(pb.ListModelVersionsRequest(fine_tuning_method=plugin, page_size=2,
                                                                  page_token=first.next_page_token))
    assert [v.version for v in rest.versions] == ["3"] and rest.next_page_token == ""
    for field, request in (("page_size", pb.ListModelVersionsRequest(fine_tuning_method=plugin, page_size=1001)),
                           ("page_size", pb.ListIterationsRequest(fine_tuning_method=plugin, page_size=-1)),
                           ("page_token", pb.ListExperimentsRequest(fine_tuning_method=plugin, page_token="x"))):
        rpc = {pb.ListModelVersionsRequest: registry.ListModelVersions, pb.ListIterationsRequest:
               registry.ListIterations, pb.ListExperimentsRequest: registry.ListExperiments}[type(request)]
        error = rpc_error(lambda rpc=rpc, request=request: rpc(request))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and field_violation(error).field == field


def test_iterations_list_each_batch_with_its_runs_params_and_metrics(registry, mlflow_client, tiny_model_dir) -> None:
    plugin = new_plugin()
    log_initial(mlflow_client, plugin, tiny_model_dir)
    register_initial(registry, plugin)
    a = log_trial(mlflow_client, plugin, "batch-1", "task-1", None, params={"margin": "0.01"},
                  metrics={"ndcg_at_10": 0.3})
    b = log_trial(mlflow_client, plugin, "batch-1", "task-1", None, params={"margin": "0.05"},
                  metrics={"ndcg_at_10": 0.4})
    c = log_trial(mlflow_client, plugin, "batch-2", "task-2", None)
    log_trial(mlflow_client, new_plugin(), "batch-1", "task-9", None)  # another plugin's iteration

    iterations = registry.ListIterations(pb.ListIterationsRequest(fine_tuning_method=plugin)).iterations
    assert [(i.name, i.batch_id, i.fine_tuning_method) for i in iterations] == [
        (f"iteration / {plugin} / batch-1", "batch-1", plugin), (f"iteration / {plugin} / batch-2", "batch-2", plugin)]
    assert [run.run_id for run in iterations[0].runs] == [a, b]
    assert [run.run_id for run in iterations[1].runs] == [c]

    iteration = registry.GetIteration(pb.GetIterationRequest(iteration_id=iterations[0].iteration_id)).iteration
    assert iteration == iterations[0]
    run = iteration.runs[1]
    assert (run.status, run.params["margin"], run.metrics["ndcg_at_10"]) == (
        pb.RUN_STATUS_FINISHED, "0.05", pytest.approx(0.4))


def test_download_streams_a_tar_that_loads_and_embeds_like_the_logged_model(
        registry, mlflow_client, tiny_model_dir, tmp_path: Path) -> None:
    plugin = new_plugin()
    log_initial(mlflow_client, plugin, tiny_model_dir)
    register_initial(registry, plugin)
    run_id = log_trial(mlflow_client, plugin, "batch-1", "task-1", tiny_model_dir)
    registry.SubmitCandidate(candidate(plugin, run_id, 0.6, "1", 0.5))

    archive, data = download(registry, plugin)  # no version: the best
    assert (archive.fine_tuning_method, archive.version) == (plugin, "2")
    assert hashlib.sha256(data).hexdigest() == archive.sha256 == best_of(registry, plugin).sha256
    assert len(data) == archive.size_bytes
    (tmp_path / "model.tar").write_bytes(data)
    folder = extract_model_archive(tmp_path / "model.tar", tmp_path / "model")
    assert (folder / "model.safetensors").is_file()

    sentences = ["running shoes", "a phone with a good camera"]
    logged = SentenceTransformer(str(tiny_model_dir), device="cpu").encode(sentences)
    downloaded = SentenceTransformer(str(folder), device="cpu").encode(sentences)
    np.testing.assert_allclose(downloaded, logged, rtol=0, atol=1e-6)


def test_the_champion_loads_with_mlflows_own_sentence_transformers_flavor(
        registry, mlflow_client, mlflow_server, tiny_model_dir) -> None:
    import mlflow.sentence_transformers

    plugin = new_plugin()
    log_initial(mlflow_client, plugin, tiny_model_dir)
    register_initial(registry, plugin)
    run_id = log_trial(mlflow_client, plugin, "batch-1", "task-1", tiny_model_dir)
    registry.SubmitCandidate(candidate(plugin, run_id, 0.6, "1", 0.5))
    assert best_of(registry, plugin).version == "2"
    with mlflow_tracking(mlflow_server.url):
        champion = mlflow.sentence_transformers.load_model(f"models:/{plugin}@champion")
    sentences = ["running shoes"]
    np.testing.assert_allclose(champion.encode(sentences),
                               SentenceTransformer(str(tiny_model_dir), device="cpu").encode(sentences), atol=1e-6)


def test_download_of_a_tampered_archive_does_not_match_its_recorded_sha256(
        registry, mlflow_client, mlflow_server, tiny_model_dir) -> None:
    plugin = new_plugin()
    run_id = log_initial(mlflow_client, plugin, tiny_model_dir)
    register_initial(registry, plugin)
    stored = stored_archive(mlflow_server.artifacts_dir, run_id)
    tampered = bytearray(stored.read_bytes())
    tampered[len(tampered) // 2] ^= 0xFF  # a byte inside the weights (the end of a tar is zero padding)
    stored.write_bytes(bytes(tampered))

    archive, data = download(registry, plugin)
    assert hashlib.sha256(data).hexdigest() != archive.sha256


def test_unknown_plugins_versions_iterations_runs_and_missing_files_are_not_found(
        registry, mlflow_client, mlflow_server, tiny_model_dir) -> None:
    unknown = new_plugin()
    error = rpc_error(lambda: registry.GetBestModel(pb.GetBestModelRequest(fine_tuning_method=unknown)))
    assert error.code() == grpc.StatusCode.NOT_FOUND and unknown in error.details()
    assert "initial model" in error.details()
    error = rpc_error(lambda: register_initial(registry, unknown))
    assert error.code() == grpc.StatusCode.NOT_FOUND and "is not logged" in error.details()
    error = rpc_error(lambda: registry.ListIterations(pb.ListIterationsRequest(fine_tuning_method=unknown)))
    assert error.code() == grpc.StatusCode.NOT_FOUND and unknown in error.details()
    error = rpc_error(lambda: registry.GetIteration(pb.GetIterationRequest(iteration_id="987654")))
    assert error.code() == grpc.StatusCode.NOT_FOUND and "987654" in error.details()

    plugin = new_plugin()
    run_id = log_initial(mlflow_client, plugin, tiny_model_dir)
    register_initial(registry, plugin)
    error = rpc_error(lambda: download(registry, plugin, version="42"))
    assert error.code() == grpc.StatusCode.NOT_FOUND and "version '42'" in error.details()
    error = rpc_error(lambda: registry.SubmitCandidate(candidate(plugin, "f" * 32, 0.6, "1", 0.5)))
    assert error.code() == grpc.StatusCode.NOT_FOUND and "f" * 32 in error.details()
    no_model = log_trial(mlflow_client, plugin, "batch-1", "task-1", None)
    error = rpc_error(lambda: registry.SubmitCandidate(candidate(plugin, no_model, 0.6, "1", 0.5)))
    assert error.code() == grpc.StatusCode.NOT_FOUND and "no model archive" in error.details()

    shutil.rmtree(stored_model(mlflow_server.artifacts_dir, run_id))
    error = rpc_error(lambda: download(registry, plugin))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert "model/model.sentence_transformer is missing" in error.details() and run_id in error.details()


@pytest.mark.parametrize(("change", "field"), [
    (lambda r: r.ClearField("fine_tuning_method"), "fine_tuning_method"),
    (lambda r: r.ClearField("compared_version"), "compared_version"),
    (lambda r: r.ClearField("candidate_scores"), "candidate_scores"),
    (lambda r: setattr(r.candidate_scores, "ndcg_at_10", 1.5), "candidate_scores.ndcg_at_10"),
    (lambda r: setattr(r.compared_scores, "queries", 0), "compared_scores.queries"),
    (lambda r: setattr(r.compared_scores, "queries", 39), "compared_scores.queries"),
    (lambda r: setattr(r, "fine_tuning_method", "a/b"), "fine_tuning_method"),
])
def test_a_bad_submission_is_invalid_argument_naming_the_field(registry, change, field) -> None:
    request = candidate("Some Plugin", "a" * 32, 0.6, "1", 0.5)
    change(request)
    with pytest.raises(grpc.RpcError) as raised:
        registry.SubmitCandidate(request)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violation(raised.value).field == field


@pytest.mark.parametrize(("change", "field"), [
    (lambda r: setattr(r, "run_id", "a" * 31 + "'"), "run_id"),
    (lambda r: setattr(r, "run_id", "A" * 32), "run_id"),
    (lambda r: setattr(r, "batch_id", "batch-01"), "batch_id"),
    (lambda r: setattr(r, "batch_id", "batch-" + "9" * 30), "batch_id"),
    (lambda r: setattr(r, "task_id", "*"), "task_id"),
    (lambda r: setattr(r, "compared_version", "01"), "compared_version"),
    (lambda r: setattr(r, "compared_version", "\u00b2"), "compared_version"),
])
def test_a_malformed_id_in_a_submission_is_invalid_argument_before_mlflow_is_asked(registry, change, field) -> None:
    request = candidate("Some Plugin", "a" * 32, 0.6, "1", 0.5)
    change(request)
    with pytest.raises(grpc.RpcError) as raised:
        registry.SubmitCandidate(request)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violation(raised.value).field == field


@pytest.mark.parametrize("number", ["\u00b2", "9" * 30, "01", "-1", "1 "])
def test_malformed_iteration_ids_and_versions_are_invalid_argument(registry, number: str) -> None:
    error = rpc_error(lambda: registry.GetIteration(pb.GetIterationRequest(iteration_id=number)))
    assert (error.code(), field_violation(error).field) == (grpc.StatusCode.INVALID_ARGUMENT, "iteration_id")
    error = rpc_error(lambda: download(registry, "Some Plugin", version=number))
    assert (error.code(), field_violation(error).field) == (grpc.StatusCode.INVALID_ARGUMENT, "version")


def test_a_run_of_another_plugin_or_the_initial_run_is_refused_as_the_candidate(registry, mlflow_client,
                                                                                tiny_model_dir) -> None:
    plugin, other = new_plugin(), new_plugin()
    initial = log_initial(mlflow_client, plugin, tiny_model_dir)
    register_initial(registry, plugin)
    foreign = log_trial(mlflow_client, other, "batch-1", "task-1", tiny_model_dir)
    error = rpc_error(lambda: registry.SubmitCandidate(candidate(plugin, foreign, 0.9, "1", 0.5)))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violation(error).field == "run_id" and other in error.details()
    error = rpc_error(lambda: registry.SubmitCandidate(candidate(plugin, initial, 0.9, "1", 0.5)))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "initial model" in error.details()


def test_the_default_mlflow_store_is_a_sqlite_file_under_the_state_dir(tmp_path: Path, nats_server,
                                                                        tiny_model_dir) -> None:
    from services.registry.main import start

    settings = make_settings(tmp_path, nats_url=nats_server.url)
    assert settings.mlflow_tracking_uri == f"sqlite:///{tmp_path / 'state' / 'mlflow.db'}"
    settings.state_dir.mkdir(parents=True)
    client = MlflowClient(settings.mlflow_tracking_uri)
    client.create_experiment(INITIAL_EXPERIMENT, artifact_location=(tmp_path / "artifacts").as_uri())
    plugin = new_plugin()
    log_initial(client, plugin, tiny_model_dir)
    with InProcessService(lambda port: start(settings, Limits(), "127.0.0.1", port)) as service, \
            grpc.insecure_channel(service.address) as channel:
        registry = registry_pb2_grpc.RegistryServiceStub(channel)
        assert register_initial(registry, plugin).is_initial
        assert best_of(registry, plugin).is_initial
        archive, data = download(registry, plugin)
        assert hashlib.sha256(data).hexdigest() == archive.sha256
