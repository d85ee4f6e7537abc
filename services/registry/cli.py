"""`es model best|list|plan|download`, `es iteration list|get` and `es experiment list|get`: ask the
registry which model version of a plugin is best (and, while an online experiment runs, which two to
serve), list versions, iterations and experiments, and download a version's files, checked against the
sha256 recorded when the model was saved."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import grpc
import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TaskID, TextColumn, TransferSpeedColumn

from services.api.embedding_studio.v1 import registry_pb2 as pb
from services.api.embedding_studio.v1 import registry_pb2_grpc
from services.client.channels import open_channel
from services.client.registry import RegistryClient
from services.common.cli_support import JsonOption, as_dict, emit, load_settings, rpc_failed, service_failed
from services.common.errors import ServiceError
from services.common.mlflow_models import ui_url
from services.common.settings import Settings

app = typer.Typer(help="Model versions (the registry service).", no_args_is_help=True)


def _scores_line(scores: pb.HeldOutScores) -> str:
    recall = ", ".join(f"recall@{k} {v:.4f}" for k, v in sorted(scores.recall_at.items()))
    return (f"nDCG@10 {scores.ndcg_at_10:.4f}, MRR@10 {scores.mrr_at_10:.4f}"
            f"{', ' + recall if recall else ''} on {scores.queries} held-out queries")


def _call(rpc: str, request: object) -> object:
    """Calls the RegistryService method `rpc`; a failure exits with its status."""
    settings = load_settings()
    with open_channel(settings.registry_addr, settings) as channel:
        try:
            return getattr(registry_pb2_grpc.RegistryServiceStub(channel), rpc)(request, timeout=60)
        except grpc.RpcError as error:
            raise rpc_failed(error, settings.registry_addr, "ES_REGISTRY_ADDR") from error


def _every(rpc: str, request: object, field: str) -> list:
    """Every item of a paged list RPC, page after page."""
    items: list = []
    while True:
        page = _call(rpc, request)
        items.extend(getattr(page, field))
        if not page.next_page_token:
            return items
        request.page_token = page.next_page_token  # type: ignore[attr-defined]


@app.command("list")
def list_versions(
    plugin: Annotated[str, typer.Argument(help="The plugin's name (its meta.name).")],
    as_json: JsonOption = False,
) -> None:
    """List a plugin's model versions, oldest first, with their held-out scores; the best is marked."""
    versions = _every("ListModelVersions", pb.ListModelVersionsRequest(fine_tuning_method=plugin), "versions")
    lines = [f"{'*' if v.is_best else ' '} version {v.version}: "
             + ("initial model" if v.is_initial else f"batch {v.batch_id}, {_scores_line(v.scores)}")
             for v in versions]
    emit({"versions": [as_dict(v) for v in versions]}, as_json, lines or [f"{plugin} has no model versions"])


iteration_app = typer.Typer(help="Iterations: the fine-tunings of a plugin, one per batch, with their runs "
                                 "(the registry service).", no_args_is_help=True)


def _iteration_lines(iteration: pb.Iteration) -> list[str]:
    lines = [f"{iteration.iteration_id}: {iteration.name} ({len(iteration.runs)} runs)"]
    for run in iteration.runs:
        metrics = ", ".join(f"{k} {v:.4f}" for k, v in sorted(run.metrics.items()) if k.startswith("test_"))
        params = ", ".join(f"{k}={v}" for k, v in sorted(run.params.items()))
        status = pb.RunStatus.Name(run.status).removeprefix("RUN_STATUS_")
        lines.append(f"  run {run.run_id} {status}: {params}" + (f"; {metrics}" if metrics else ""))
    return lines


@iteration_app.command("list")
def list_iterations(
    plugin: Annotated[str, typer.Argument(help="The plugin's name (its meta.name).")],
    as_json: JsonOption = False,
) -> None:
    """List a plugin's iterations with their runs."""
    iterations = _every("ListIterations", pb.ListIterationsRequest(fine_tuning_method=plugin), "iterations")
    lines = [line for iteration in iterations for line in _iteration_lines(iteration)]
    emit({"iterations": [as_dict(i) for i in iterations]}, as_json, lines or [f"{plugin} has no iterations"])


@iteration_app.command("get")
def get_iteration(iteration_id: Annotated[str, typer.Argument(help="The iteration's id.")],
                  as_json: JsonOption = False) -> None:
    """Show one iteration with its runs, their parameters and held-out metrics."""
    iteration = _call("GetIteration", pb.GetIterationRequest(iteration_id=iteration_id)).iteration
    emit(as_dict(iteration), as_json, _iteration_lines(iteration))


experiment_app = typer.Typer(help="Online experiments: a challenger interleaved with the champion for real "
                                  "users (the registry service).", no_args_is_help=True)


def experiment_line(experiment: pb.Experiment) -> str:
    state = pb.ExperimentState.Name(experiment.state).removeprefix("EXPERIMENT_STATE_").lower()
    return (f"{experiment.experiment_id}: version {experiment.challenger_version} against "
            f"{experiment.champion_version}, {state}; {experiment.reason}")


@experiment_app.command("list")
def list_experiments(
    plugin: Annotated[str, typer.Argument(help="The plugin's name (its meta.name).")],
    as_json: JsonOption = False,
) -> None:
    """List a plugin's online experiments, oldest first, with their counts and decisions."""
    experiments = _every("ListExperiments", pb.ListExperimentsRequest(fine_tuning_method=plugin), "experiments")
    emit({"experiments": [as_dict(e) for e in experiments]}, as_json,
         [experiment_line(e) for e in experiments] or [f"{plugin} has no online experiments"])


@experiment_app.command("get")
def get_experiment(experiment_id: Annotated[str, typer.Argument(help="The experiment's id (exp-...).")],
                   as_json: JsonOption = False) -> None:
    """Show one online experiment: sessions, wins, losses, ties, the p-value and the decision."""
    experiment = _call("GetExperiment", pb.GetExperimentRequest(experiment_id=experiment_id)).experiment
    emit(as_dict(experiment), as_json, [experiment_line(experiment)])


@app.command("plan")
def plan(
    plugin: Annotated[str, typer.Argument(help="The plugin's name (its meta.name).")],
    as_json: JsonOption = False,
) -> None:
    """Show what a search backend should serve now: the champion, and the challenger while an online
    experiment runs."""
    answer = _call("GetServingPlan", pb.GetServingPlanRequest(fine_tuning_method=plugin))
    lines = [f"champion: version {answer.champion.version}"]
    if answer.experiment_id:
        lines.append(f"challenger: version {answer.challenger.version}, interleaved under experiment "
                     f"{answer.experiment_id}")
    else:
        lines.append("no online experiment runs: serve the champion alone")
    emit(as_dict(answer), as_json, lines)


@app.command("best")
def best(
    plugin: Annotated[str, typer.Argument(help="The plugin's name (its meta.name).")],
    as_json: JsonOption = False,
) -> None:
    """Show the best model version of a plugin: where it came from and why it is best."""
    model = _call("GetBestModel", pb.GetBestModelRequest(fine_tuning_method=plugin)).model
    lines = [f"{plugin}: version {model.version}{' (initial model)' if model.is_initial else ''}",
             f"why: {model.reason}"]
    if not model.is_initial:
        lines += [f"from: batch {model.batch_id}, iteration {model.iteration_id}, run {model.run_id}, "
                  f"task {model.task_id}",
                  f"scores: {_scores_line(model.scores)}",
                  f"beat: version {model.compared_version} with {_scores_line(model.compared_scores)}"]
    if model.params:
        lines.append("params: " + ", ".join(f"{key}={value}" for key, value in sorted(model.params.items())))
    lines.append(f"archive: {model.size_bytes} bytes, sha256 {model.sha256}")
    tracking_uri = load_settings().mlflow_tracking_uri
    link = ui_url(tracking_uri, model.iteration_id, model.run_id) or ui_url(tracking_uri, model=plugin,
                                                                            version=model.version)
    if link:
        lines.append(f"MLflow: {link}")
    emit({**as_dict(model), "mlflow_url": link or ""}, as_json, lines)


def fetch_model(settings: Settings, plugin: str, version: str, out: Path | None) -> tuple[pb.ModelArchive, Path]:
    """Downloads a version through `RegistryClient.download` (progress on stderr, size and sha256 checked)
    into `out` (default ./<plugin>-v<version>); exits with a message on any failure."""
    progress = Progress(TextColumn(f"{plugin}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                        console=Console(stderr=True))
    bar: list[TaskID] = []

    def advance(archive: pb.ModelArchive, received: int) -> None:
        if not bar:
            bar.append(progress.add_task("download", total=archive.size_bytes))
        progress.update(bar[0], completed=received)

    try:
        with RegistryClient(settings.registry_addr, settings=settings) as registry, progress:
            downloaded = registry.download(plugin, version, out, on_progress=advance)
    except ServiceError as error:
        raise service_failed(error, settings.registry_addr, "ES_REGISTRY_ADDR") from error
    return downloaded.archive, downloaded.path


@app.command("download")
def download(
    plugin: Annotated[str, typer.Argument(help="The plugin's name (its meta.name).")],
    version: Annotated[str, typer.Option(help="Model version; default: the best.")] = "",
    out: Annotated[Path | None, typer.Option(help="Folder to extract the model into (must be empty or new). "
                                                  "Default: ./<plugin>-v<version>.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Download a model version, check its sha256, and extract it into a folder that
    `SentenceTransformer(folder)` loads."""
    header, folder = fetch_model(load_settings(), plugin, version, out)
    result = {"fine_tuning_method": plugin, "version": header.version, "sha256": header.sha256,
              "size_bytes": header.size_bytes, "path": str(folder)}
    emit(result, as_json, [f"downloaded {plugin} version {header.version} ({header.size_bytes} bytes, sha256 "
                            f"{header.sha256}, verified) to {folder}"])
