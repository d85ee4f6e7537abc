"""`es task create|get|list|watch|cancel|restart`: fine-tuning tasks (the trainer service)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from typing import Annotated

import grpc
import typer
from google.protobuf import json_format, struct_pb2
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from services.api.embedding_studio.v1 import trainer_pb2 as pb
from services.api.embedding_studio.v1 import trainer_pb2_grpc
from services.client.channels import open_channel
from services.common.cli_support import JsonOption, as_dict, emit, load_settings, rpc_failed
from services.common.mlflow_models import ui_url

app = typer.Typer(help="Fine-tuning tasks (the trainer service).", no_args_is_help=True)

def status_name(status: int) -> str:
    return pb.TaskStatus.Name(status).removeprefix("TASK_STATUS_").lower()


def stage_name(stage: int) -> str:
    """The stage's short name ("training" for TASK_STAGE_TRAINING); "-" when unknown."""
    return pb.TaskStage.Name(stage).removeprefix("TASK_STAGE_").lower() if stage else "-"


def task_lines(task: pb.Task, tracking_uri: str = "") -> list[str]:
    """What `es task get|watch|create` print of a task; with an MLflow server's `tracking_uri`, the link to
    its model version in the MLflow UI once it has one."""
    lines = [f"task {task.task_id}: {status_name(task.status)} ({stage_name(task.progress.stage)}), "
             f"plugin {task.fine_tuning_method!r}, batch {task.batch_id}, attempt {task.attempt}"
             + (f", {task.max_trials} trials" if task.max_trials else "")]
    if task.error:
        lines.append(f"error: {task.error}")
    if task.model_version:
        if task.promoted:
            verdict = "promoted to best"
        elif task.experiment_id:
            verdict = (f"won the held-out gate; now the challenger of online experiment {task.experiment_id} "
                       f"(es experiment get {task.experiment_id})")
        else:
            verdict = "not promoted: it did not beat the best"
        lines.append(f"model version {task.model_version} ({verdict})")
    if task.best_model_url:
        lines.append(f"best model: {task.best_model_url} "
                     f"(es model download {json.dumps(task.fine_tuning_method)})")
    link = ui_url(tracking_uri, model=task.fine_tuning_method, version=task.model_version)
    if link:
        lines.append(f"MLflow: {link}")
    return lines


def _stub(channel: grpc.Channel) -> trainer_pb2_grpc.TrainerServiceStub:
    return trainer_pb2_grpc.TrainerServiceStub(channel)


def _call_task(rpc: str, request: object) -> pb.Task:
    """Calls the TrainerService method `rpc` that answers with a task; a failure exits with its status."""
    settings = load_settings()
    with open_channel(settings.trainer_addr, settings) as channel:
        try:
            return getattr(_stub(channel), rpc)(request, timeout=30).task
        except grpc.RpcError as error:
            raise rpc_failed(error, settings.trainer_addr, "ES_TRAINER_ADDR") from error


def _show(task: pb.Task, as_json: bool) -> None:
    emit(as_dict(task), as_json, task_lines(task, load_settings().mlflow_tracking_uri))


@app.command("create")
def create(
    plugin: Annotated[str, typer.Argument(help="The plugin's name (its meta.name).")],
    batch_id: Annotated[str, typer.Option(help="Batch to train on; default: release the collecting one.")] = "",
    idempotency_key: Annotated[str | None, typer.Option(help="A retry with the same key returns the same task. "
                                                             "Default: a fresh one.")] = None,
    metadata: Annotated[str, typer.Option(help="JSON object stored with the task.")] = "{}",
    trials: Annotated[int | None, typer.Option(min=1, max=1000, help="Hyperparameter trials for this task "
                                                                     "(default: the plugin's own).")] = None,
    watch_it: Annotated[bool, typer.Option("--watch", help="Then follow it until it ends, as `es task watch` "
                                                           "does (exit 1 unless it ends done).")] = False,
    as_json: JsonOption = False,
) -> None:
    """Queue a fine-tuning task."""
    settings = load_settings()
    try:
        meta = json_format.ParseDict(json.loads(metadata), struct_pb2.Struct())
    except (ValueError, json_format.ParseError) as error:
        typer.echo(f"error: --metadata must be a JSON object: {error}", err=True)
        raise typer.Exit(2) from error
    request = pb.CreateTaskRequest(fine_tuning_method=plugin, batch_id=batch_id, metadata=meta, max_trials=trials or 0,
                                   idempotency_key=idempotency_key or f"cli-{uuid.uuid4()}")
    with open_channel(settings.trainer_addr, settings) as channel:
        try:
            response = _stub(channel).CreateTask(request, timeout=60)
        except grpc.RpcError as error:
            raise rpc_failed(error, settings.trainer_addr, "ES_TRAINER_ADDR") from error
    note = " (already created under this idempotency key)" if response.duplicate else ""
    if watch_it:
        typer.echo(f"task {response.task.task_id} created{note}", err=True)
        watch(response.task.task_id, as_json)
        return
    emit(as_dict(response), as_json, [*task_lines(response.task), f"created{note}; follow it with: "
                                      f"es task watch {response.task.task_id}"])


@app.command("get")
def get(task_id: Annotated[str, typer.Argument()], as_json: JsonOption = False) -> None:
    """Show a task."""
    _show(_call_task("GetTask", pb.GetTaskRequest(task_id=task_id)), as_json)


@app.command("list")
def list_tasks(
    plugin: Annotated[str, typer.Option(help="Only this plugin's tasks.")] = "",
    status: Annotated[str, typer.Option(help="Only tasks in this status: pending, processing, done, canceled, "
                                             "error.")] = "",
    as_json: JsonOption = False,
) -> None:
    """List tasks, newest first."""
    settings = load_settings()
    wanted = 0
    if status:
        try:
            wanted = pb.TaskStatus.Value(f"TASK_STATUS_{status.upper()}")
        except ValueError as error:
            typer.echo(f"error: --status {status!r} is not one of pending, processing, done, canceled, error",
                       err=True)
            raise typer.Exit(2) from error
    tasks: list[pb.Task] = []
    token = ""
    with open_channel(settings.trainer_addr, settings) as channel:
        while True:
            try:
                response = _stub(channel).ListTasks(pb.ListTasksRequest(
                    fine_tuning_method=plugin, status=wanted, page_token=token), timeout=30)
            except grpc.RpcError as error:
                raise rpc_failed(error, settings.trainer_addr, "ES_TRAINER_ADDR") from error
            tasks.extend(response.tasks)
            token = response.next_page_token
            if not token:
                break
    emit({"tasks": [as_dict(t) for t in tasks]}, as_json,
         [task_lines(t)[0] for t in tasks] or ["no tasks"])


def follow(stub: trainer_pb2_grpc.TrainerServiceStub, task_id: str, console: Console) -> pb.Task:
    """Streams the task's progress to stderr until it ends: a bar for the stage the task is in, and one
    per trial (its steps, with the latest held-out nDCG@10)."""
    last: pb.Task | None = None
    with Progress(TextColumn("{task.description:<12}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[detail]}"),
                  console=console) as bars:
        stage_bar = bars.add_task("task", total=None, detail="")
        trial_bars: dict[int, int] = {}
        for update in _updates(stub, task_id):
            last = update
            progress = update.progress
            bars.update(stage_bar, detail=f"{status_name(update.status)}: {stage_name(progress.stage)}")
            if progress.trial and progress.stage == pb.TASK_STAGE_TRAINING:
                if progress.trial not in trial_bars:
                    for bar in trial_bars.values():  # the previous trial is over
                        bars.update(bar, completed=bars.tasks[bar].total or 0)
                    trial_bars[progress.trial] = bars.add_task(f"trial {progress.trial}/{progress.trials_total}",
                                                               total=progress.steps_total or None, detail="")
                ndcg = progress.metrics.get("test_ndcg_at_10")
                scored = "the start model's" if progress.metrics_step == 0 else "held-out"
                bars.update(trial_bars[progress.trial], completed=progress.step, total=progress.steps_total or None,
                            detail=f"epoch {progress.epoch}/{progress.epochs_total}"
                                   + (f", {scored} nDCG@10 {ndcg:.4f}" if ndcg is not None else ""))
        for bar in [stage_bar, *trial_bars.values()]:
            bars.update(bar, total=bars.tasks[bar].total or 1, completed=bars.tasks[bar].total or 1)
    if last is None:
        raise RuntimeError(f"WatchTask of {task_id} ended without sending the task")
    return last


def _updates(stub: trainer_pb2_grpc.TrainerServiceStub, task_id: str) -> Iterable[pb.Task]:
    for response in stub.WatchTask(pb.WatchTaskRequest(task_id=task_id)):
        yield response.task


@app.command("watch")
def watch(task_id: Annotated[str, typer.Argument()], as_json: JsonOption = False) -> None:
    """Follow a task's progress (stage, trial, step, held-out nDCG@10) until it ends."""
    settings = load_settings()
    with open_channel(settings.trainer_addr, settings) as channel:
        try:
            task = follow(_stub(channel), task_id, Console(stderr=True))
        except grpc.RpcError as error:
            raise rpc_failed(error, settings.trainer_addr, "ES_TRAINER_ADDR") from error
    emit(as_dict(task), as_json, task_lines(task, load_settings().mlflow_tracking_uri))
    if task.status != pb.TASK_STATUS_DONE:
        raise typer.Exit(1)


@app.command("cancel")
def cancel(task_id: Annotated[str, typer.Argument()], as_json: JsonOption = False) -> None:
    """Cancel a pending or running task (a running training stops within seconds)."""
    _show(_call_task("CancelTask", pb.CancelTaskRequest(task_id=task_id)), as_json)


@app.command("restart")
def restart(task_id: Annotated[str, typer.Argument()], as_json: JsonOption = False) -> None:
    """Queue a canceled or failed task again; its finished runs are reused."""
    _show(_call_task("RestartTask", pb.RestartTaskRequest(task_id=task_id)), as_json)
