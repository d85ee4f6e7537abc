"""`es demo` and `es up`.

`es demo` shows the whole product on one machine: it starts NATS, MLflow and the four services
(services/launcher.py), replays EVALUATION.md's simulated users of a data set (default: the BBC News
corpus) through the ingest API, creates a fine-tuning task with the default plugin (which releases the
batch), follows it, downloads the best model through `RegistryService.DownloadModel`, and scores the base
and the downloaded model on the held-out queries. With `--online-sessions N` the registry promotes online
(ES_PROMOTION=online): the task's held-out winner becomes the challenger, and N more simulated users (on
train queries) are shown the two models interleaved, through GetServingPlan and the ingest API, until
the registry's online experiment decides. `es up` starts the same stack and waits."""

from __future__ import annotations

import json
import os
import shlex
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Annotated

import grpc
import typer
from rich.console import Console

from services.api.embedding_studio.v1 import registry_pb2, registry_pb2_grpc, trainer_pb2, trainer_pb2_grpc
from services.client.channels import open_channel
from services.client.clickstream import ClickstreamClient
from services.client.registry import RegistryClient
from services.common.cli_support import JsonOption, emit, load_settings, rpc_failed, service_failed
from services.common.errors import ServiceError
from services.common.settings import Settings
from services.evaluation.cli import (
    ItemsOption,
    QueriesOption,
    SeedOption,
    eval_dataset,
    held_out_rankings,
    load_encoder,
    send_sessions,
)
from services.evaluation.datasets import EvalDataset
from services.evaluation.metrics import paired_bootstrap_ci
from services.evaluation.report import Report, write_report
from services.launcher import LocalStack
from services.trainer.cli import follow

DEFAULT_PLUGIN = "Default Fine Tuning Method"
TEST_RATIO = 0.2
TOP_K = 20
# Online sessions sent between two looks at the experiment.
ONLINE_CHUNK = 100
# How long the demo waits, after its last online session, for the registry's referee to decide.
DECISION_WAIT_S = 60.0
DECISIONS = {registry_pb2.EXPERIMENT_STATE_CHALLENGER_WON: "challenger_won",
             registry_pb2.EXPERIMENT_STATE_CHAMPION_KEPT: "champion_kept"}


def _say(console: Console, message: str) -> None:
    console.print(f"[bold]es demo[/bold] {message}")


def _fresh_state(state_dir: Path | None) -> Path:
    if state_dir is None:
        return Path(tempfile.mkdtemp(prefix="es-demo-"))
    state_dir.mkdir(parents=True, exist_ok=True)
    return state_dir.resolve()


def demo(
    items: ItemsOption = None,
    queries: QueriesOption = None,
    sessions: Annotated[int, typer.Option(min=1, help="Search sessions to simulate.")] = 2000,
    trials: Annotated[int | None, typer.Option(min=1, help="Hyperparameter trials (default: the plugin's).")] = None,
    seed: SeedOption = 0,
    state_dir: Annotated[Path | None, typer.Option(help="Where the stack keeps its state, logs and the downloaded "
                                                        "model (default: a fresh temporary folder).")] = None,
    plugin: Annotated[str, typer.Option(help="The plugin to fine-tune.")] = DEFAULT_PLUGIN,
    keep_running: Annotated[bool, typer.Option(help="Leave the stack (and the MLflow UI) up after the report, "
                                                    "until Ctrl-C.")] = False,
    online_sessions: Annotated[int, typer.Option(min=0, help=(
        "Promote online: after training, at most this many simulated searches (train queries) see the "
        "champion and the challenger interleaved until the online experiment decides (try 2000; 0: offline "
        "promotion)."))] = 0,
    as_json: JsonOption = False,
) -> None:
    """Simulated users search a corpus through the real API; the default plugin's model is fine-tuned on
    their clicks; see held-out search quality before and after, and where the best model is."""
    began = time.monotonic()
    console = Console(stderr=True)
    dataset = eval_dataset(items, queries)
    state = _fresh_state(state_dir)
    items_path, _ = dataset.write(state / "data")
    extra_env = {"ES_ITEMS_URI": str(items_path)}
    if online_sessions:
        extra_env |= {"ES_PROMOTION": "online", "ES_EXPERIMENT_POLL_S": os.environ.get("ES_EXPERIMENT_POLL_S", "1")}
    stack = LocalStack(state, extra_env)
    _say(console, f"state, logs and the downloaded model go to {state}")
    try:
        os.environ.update(stack.start(on_status=lambda m: _say(console, m)))
        settings = load_settings()
        from services.evaluation.simulation import split_queries

        train, test = split_queries(dataset.queries, TEST_RATIO, seed)
        base = load_encoder(None)
        _say(console, f"simulating {sessions} search sessions on {len(dataset.items)} items ...")
        summary, _, base_vectors = send_sessions(settings, dataset, base, sessions, seed, TEST_RATIO, TOP_K,
                                                 release=False)
        _say(console, f"ingest stored {summary.sessions_accepted} sessions with {summary.events_accepted} clicks")
        with open_channel(settings.trainer_addr, settings) as channel:
            stub = trainer_pb2_grpc.TrainerServiceStub(channel)
            try:
                task = stub.CreateTask(trainer_pb2.CreateTaskRequest(
                    fine_tuning_method=plugin, max_trials=trials or 0,
                    idempotency_key=f"demo-{seed}-{sessions}-{trials}"), timeout=120).task
                _say(console, f"task {task.task_id} fine-tunes {plugin!r} on {task.batch_id}")
                task = follow(stub, task.task_id, console)
            except grpc.RpcError as error:
                raise rpc_failed(error, settings.trainer_addr, "ES_TRAINER_ADDR") from error
        if task.status != trainer_pb2.TASK_STATUS_DONE:
            typer.echo(f"error: the task ended {trainer_pb2.TaskStatus.Name(task.status)}: {task.error}; "
                       f"logs in {state / 'logs'}", err=True)
            raise typer.Exit(1)
        from services.registry.cli import fetch_model

        # Offline promotion: the best model. Online: the task's held-out winner, the experiment's challenger.
        header, model_folder = fetch_model(settings, plugin, task.model_version if task.experiment_id else "",
                                           state / "model")
        online = (_run_online(settings, console, plugin, dataset, train, online_sessions, seed, state)
                  if online_sessions else {})
        with open_channel(settings.registry_addr, settings) as channel:
            best = registry_pb2_grpc.RegistryServiceStub(channel).GetBestModel(
                registry_pb2.GetBestModelRequest(fine_tuning_method=plugin), timeout=60).model
        _say(console, f"scoring the base and the downloaded model on {len(test)} held-out queries ...")
        before, rankings_before = held_out_rankings(base, dataset, test, base_vectors)
        after, rankings_after = held_out_rankings(load_encoder(model_folder), dataset, test)
        curves, links = training_runs(settings.mlflow_tracking_uri, plugin, task.batch_id, task.task_id)
        page, _ = write_report(state, Report(
            f"es demo: {plugin} fine-tuned on {task.batch_id} ({sessions} simulated sessions, seed {seed})", test,
            {i.id: i.text for i in dataset.items}, before, after, rankings_before, rankings_after,
            paired_bootstrap_ci(before["ndcg@10"], after["ndcg@10"], seed=seed), curves=curves,
            notes=[f"best model: version {best.version} ({best.reason})", *links]))
        chain = {"sessions_stored": summary.sessions_accepted + summary.sessions_duplicate,
                 "batch_id": task.batch_id, "task_id": task.task_id, "task_model_version": task.model_version,
                 "downloaded_version": header.version, "downloaded_sha256": header.sha256, "state_dir": str(state),
                 "report": str(page), "mlflow_runs": links, **online}
        _report(before, after, seed, best, header.version, model_folder, plugin, time.monotonic() - began, as_json,
                chain)
        if keep_running:
            _say(console, f"the stack stays up (MLflow UI: {settings.mlflow_tracking_uri}); Ctrl-C stops it")
            _wait_for_ctrl_c()
    except (RuntimeError, TimeoutError) as error:  # a server would not start, or died
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from error
    finally:
        _say(console, "stopping the services ...")
        stack.stop()


def _ranked_ids(folder: Path, dataset: EvalDataset, queries: list) -> list[list[str]]:
    """Each query's top TOP_K item ids by the model in `folder`, over the whole corpus."""
    from services.evaluation.retrieval import encode, top_k

    encoder = load_encoder(folder)
    indices, _ = top_k(encode(encoder, [q.text for q in queries]),
                       encode(encoder, [i.text for i in dataset.items], show_progress_bar=True), TOP_K)
    return [[dataset.items[i].id for i in row] for row in indices]


def _run_online(settings: Settings, console: Console, plugin: str, dataset: EvalDataset, train: list,
                sessions: int, seed: int, state: Path) -> dict:
    """What a search backend does while an experiment runs, for simulated users: the serving plan, both
    models' rankings, the team-draft merge, and the session with its teams and clicks to ingest; a look at
    the experiment after every ONLINE_CHUNK sessions, until it is decided or `sessions` were sent."""
    from services.evaluation.online import interleaved_sessions
    from services.registry.cli import experiment_line, fetch_model

    try:
        with RegistryClient(settings.registry_addr, settings=settings) as registry:
            plan = registry.serving_plan(plugin)
            if not plan.experiment_id:
                _say(console, "no online experiment runs (the candidate did not win the held-out gate)")
                return {"online_sessions": 0, "online_wins": 0, "online_losses": 0, "online_ties": 0,
                        "online_p_value": 1.0, "online_decision": "undecided"}
            rankings = []
            for team, version in (("champion", plan.champion), ("challenger", plan.challenger)):
                _, folder = fetch_model(settings, plugin, version.version, state / "online" / team)
                _say(console, f"ranking the {len(train)} train queries with the {team}, version {version.version} ...")
                rankings.append(_ranked_ids(folder, dataset, train))
            simulated = interleaved_sessions(train, rankings[0], rankings[1], plan.experiment_id, sessions, seed,
                                             dataset.max_grade, TOP_K)
            _say(console, f"experiment {plan.experiment_id}: up to {sessions} interleaved searches ...")
            sent, experiment = 0, registry.experiment(plan.experiment_id)
            with ClickstreamClient(settings.ingest_addr, settings=settings) as clickstream:
                while experiment.state == registry_pb2.EXPERIMENT_STATE_RUNNING and sent < sessions:
                    chunk = [next(simulated) for _ in range(min(ONLINE_CHUNK, sessions - sent))]
                    clickstream.ingest(s.register_request(plan.experiment_id) for s in chunk)
                    sent += len(chunk)
                    experiment = registry.experiment(plan.experiment_id)
            deadline = time.monotonic() + DECISION_WAIT_S
            while experiment.state == registry_pb2.EXPERIMENT_STATE_RUNNING and time.monotonic() < deadline:
                time.sleep(1)
                experiment = registry.experiment(plan.experiment_id)
    except ServiceError as error:
        raise service_failed(error, settings.registry_addr, "ES_REGISTRY_ADDR") from error
    _say(console, experiment_line(experiment))
    return {"online_experiment_id": experiment.experiment_id, "online_sessions": sent,
            "online_wins": experiment.wins, "online_losses": experiment.losses, "online_ties": experiment.ties,
            "online_p_value": experiment.p_value, "online_decision": DECISIONS.get(experiment.state, "undecided")}


def training_runs(tracking_uri: str, plugin: str, batch_id: str, task_id: str
                  ) -> tuple[dict[str, list[tuple[int, float]]], list[str]]:
    """Held-out nDCG@10 by step of every run the task trained (run name -> [(step, value)]) and, when
    MLflow is a server, a link to each run in its UI."""
    from mlflow import MlflowClient

    from services.common.mlflow_models import iteration_experiment_name, ui_url

    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(iteration_experiment_name(plugin, batch_id))
    if experiment is None:
        return {}, []
    runs = client.search_runs([experiment.experiment_id], filter_string=f"tags.`es.task_id` = '{task_id}'",
                              order_by=["attributes.start_time ASC"])
    curves, links = {}, []
    for number, run in enumerate(runs, start=1):
        label = run.info.run_name or f"trial {number}"
        history = client.get_metric_history(run.info.run_id, "test_ndcg_at_10")
        curves[label] = sorted((m.step, m.value) for m in history)
        link = ui_url(tracking_uri, experiment.experiment_id, run.info.run_id)
        if link:
            links.append(f"{label}: {link}")
    return {label: series for label, series in curves.items() if series}, links


def _wait_for_ctrl_c() -> None:
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass


def _report(before: dict, after: dict, seed: int, best: registry_pb2.ModelVersion, version: str, folder: Path,
            plugin: str, seconds: float, as_json: bool, chain: dict) -> None:
    low, high = paired_bootstrap_ci(before["ndcg@10"], after["ndcg@10"], seed=seed)
    rows = [("nDCG@10", "ndcg@10"), ("MRR@10", "mrr@10"), ("recall@100", "recall@100")]
    lines = [f"{'held-out queries':<16} {len(before['ndcg@10']):>8}", f"{'metric':<16} {'base':>8} {'tuned':>8} "
             f"{'gain':>8}"]
    for label, key in rows:
        b, a = float(before[key].mean()), float(after[key].mean())
        lines.append(f"{label:<16} {b:>8.4f} {a:>8.4f} {(a - b) / b if b else 0.0:>+8.1%}")
    lines.append(f"nDCG@10 gain 95% CI: [{low:+.4f}, {high:+.4f}]")
    promoted = not best.is_initial
    if promoted:
        lines.append(f"best model: {plugin!r} version {best.version} ({best.reason})")
    elif chain.get("online_sessions"):
        lines.append(f"version {chain['task_model_version']} won the held-out gate, and online "
                     f"{chain['online_decision'].replace('_', ' ')}: the best stays version {best.version}")
    else:
        lines.append(f"no fine-tuned version beat the base model on the batch's held-out sessions ({best.reason})")
    lines.append(f"downloaded version {version} to {folder} (again: es model download {json.dumps(plugin)} "
                 f"--version {version}, with ES_REGISTRY_ADDR set to a running registry)")
    if "online_decision" in chain:
        lines.append(f"online: {chain['online_sessions']} interleaved searches, {chain['online_wins']} won by the "
                     f"challenger, {chain['online_losses']} by the champion, {chain['online_ties']} tied, "
                     f"p = {chain['online_p_value']:.4g}: {chain['online_decision']}")
    lines.append(f"report: {chain['report']} (and report.md beside it)")
    lines += [f"MLflow run {link}" for link in chain["mlflow_runs"]]
    lines.append(f"took {seconds:.0f} s")
    emit({"ndcg10_before": float(before["ndcg@10"].mean()), "ndcg10_after": float(after["ndcg@10"].mean()),
          "ndcg10_gain_ci_low": low, "ndcg10_gain_ci_high": high,
          "mrr10_before": float(before["mrr@10"].mean()), "mrr10_after": float(after["mrr@10"].mean()),
          "recall100_before": float(before["recall@100"].mean()), "recall100_after": float(after["recall@100"].mean()),
          "best_model_version": best.version if promoted else None, "model_path": str(folder), "seconds": seconds,
          **chain}, as_json, lines)


def _items_uri(items: Path | None, configured: str, state: Path) -> str:
    """Where the services' item loaders read items: --items, else ES_ITEMS_URI, else the demo corpus's items
    written into the state folder."""
    if items is not None:
        if not items.is_file():
            typer.echo(f"error: --items {items}: no such file", err=True)
            raise typer.Exit(2)
        return str(items.resolve())
    if configured:
        return configured
    items_path, _ = eval_dataset(None, None).write(state / "data")
    return str(items_path)


def up(
    state_dir: Annotated[Path | None, typer.Option(help="Where the stack keeps its state and logs "
                                                        "(default: ES_STATE_DIR).")] = None,
    items: Annotated[Path | None, typer.Option(help="items.jsonl the plugins' loaders read by object_id "
                                                    "(ES_ITEMS_URI; default: ES_ITEMS_URI if set, else the "
                                                    "demo's BBC News items, written to <state>/data).")] = None,
) -> None:
    """Run NATS, MLflow and the four services on this machine until Ctrl-C, SIGTERM or SIGHUP. The services take
    ports 50051-50054 when they are free; their addresses are printed as `export` lines and written to
    <state>/env (`source` it in another shell), which is removed when the stack stops."""
    settings = load_settings()
    console = Console(stderr=True)
    state = (state_dir or settings.state_dir).resolve()
    state.mkdir(parents=True, exist_ok=True)
    stack = LocalStack(state, {"ES_ITEMS_URI": _items_uri(items, settings.items_uri, state)}, default_ports=True)
    env_file = state / "env"
    stopped = threading.Event()
    for stop_signal in (signal.SIGTERM, signal.SIGHUP):  # a terminal that closes sends SIGHUP
        signal.signal(stop_signal, lambda *_: stopped.set())
    try:
        env = stack.start(on_status=lambda m: console.print(f"[bold]es up[/bold] {m}"))
        exports = [f"export {name}={shlex.quote(value)}" for name, value in sorted(env.items())
                   if name.endswith(("_ADDR", "_URL", "_URI"))]
        env_file.write_text("".join(f"{line}\n" for line in exports))
        for line in exports:
            typer.echo(line)
        console.print(f"[bold]es up[/bold] running; `source {env_file}` points a shell at it; logs in "
                      f"{state / 'logs'}; Ctrl-C stops everything")
        while not stopped.wait(1.0):
            for child in stack.children:
                child.check_alive()
    except KeyboardInterrupt:
        pass
    except (RuntimeError, TimeoutError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from error
    finally:
        env_file.unlink(missing_ok=True)
        stack.stop()
