"""`es`, the one command-line interface of Embedding Studio: serve the services and operate them.

Progress and logs go to stderr; results go to stdout, and `--json` makes stdout one JSON object alone.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.metadata
import sys
import uuid
from enum import StrEnum
from typing import Annotated

import grpc
import typer

from services import demo
from services.api.embedding_studio.v1 import clickstream_pb2 as pb
from services.api.embedding_studio.v1 import clickstream_pb2_grpc
from services.client.channels import open_channel
from services.common.cli_support import JsonOption, as_dict, emit, load_settings, rpc_failed
from services.common.server import run_service
from services.common.settings import Limits
from services.evaluation import cli as evaluation_cli
from services.registry import cli as registry_cli
from services.trainer import cli as trainer_cli

app = typer.Typer(help="Embedding Studio: turn search clickstream into better embedding models.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
batch_app = typer.Typer(help="Clickstream batches (the ingest service).", no_args_is_help=True)
app.add_typer(batch_app, name="batch")
app.add_typer(registry_cli.app, name="model")
app.add_typer(registry_cli.iteration_app, name="iteration")
app.add_typer(registry_cli.experiment_app, name="experiment")
app.add_typer(trainer_cli.app, name="task")


def _print_version(wanted: bool) -> None:
    if wanted:
        typer.echo(f"es (embedding-studio) {importlib.metadata.version('embedding-studio')}")
        raise typer.Exit()


@app.callback()
def _options(version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                                   help="Print the installed version and exit.")] = False) -> None:
    """Embedding Studio: turn search clickstream into better embedding models."""


app.command()(evaluation_cli.emulate)
app.command()(evaluation_cli.evaluate)
app.command()(demo.demo)
app.command()(demo.up)


class ServiceName(StrEnum):
    ingest = "ingest"
    dataprep = "dataprep"
    trainer = "trainer"
    registry = "registry"


@app.command()
def serve(
    service: Annotated[ServiceName, typer.Argument(help="Which service to run.")],
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int | None, typer.Option(help="Port to listen on (0 picks a free one).")] = None,
) -> None:
    """Run one service until SIGTERM or Ctrl-C."""
    settings = load_settings(service=True)
    limits = Limits()
    # Each service's `main` module exposes `start(settings, limits, host, port)` and `DEFAULT_PORT`.
    service_main = importlib.import_module(f"services.{service.value}.main")
    chosen = service_main.DEFAULT_PORT if port is None else port
    try:
        asyncio.run(run_service(lambda: service_main.start(settings, limits, host, chosen)))
    except OSError as error:
        typer.echo(f"error: cannot serve {service.value} on {host}:{chosen}: {error}", err=True)
        raise typer.Exit(1) from error


@app.command()
def health(
    address: Annotated[str, typer.Argument(help="host:port of an Embedding Studio service.")],
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the answer.")] = 5.0,
) -> None:
    """Exit 0 when the service at ADDRESS answers grpc.health.v1 SERVING (for container health checks)."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    settings = load_settings()
    with open_channel(address, settings) as channel:
        try:
            status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=timeout).status
        except grpc.RpcError as error:
            raise rpc_failed(error, address) from error
    name = health_pb2.HealthCheckResponse.ServingStatus.Name(status)
    typer.echo(f"{address}: {name}")
    if status != health_pb2.HealthCheckResponse.SERVING:
        raise typer.Exit(1)


@batch_app.command("release")
def batch_release(
    release_id: Annotated[str | None, typer.Option(help="Idempotency key; a retry with it releases nothing new. "
                                                        "Default: a fresh one.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Release the collecting batch for training and open the next one."""
    settings = load_settings()
    key = release_id or f"cli-{uuid.uuid4()}"
    with open_channel(settings.ingest_addr, settings) as channel:
        try:
            response = clickstream_pb2_grpc.ClickstreamServiceStub(channel).ReleaseBatch(
                pb.ReleaseBatchRequest(release_id=key), timeout=30)
        except grpc.RpcError as error:
            raise rpc_failed(error, settings.ingest_addr, "ES_INGEST_ADDR") from error
    released = response.released_batch
    note = " (already released by this release id)" if response.duplicate else ""
    emit(as_dict(response), as_json, [
        f"released {released.batch_id} with {released.session_count} sessions{note}",
        f"release id: {released.release_id}",
        f"now collecting: {response.next_batch.batch_id}",
    ])


@batch_app.command("get")
def batch_get(
    batch_id: Annotated[str, typer.Argument(help="Batch id; omit for the collecting batch.")] = "",
    as_json: JsonOption = False,
) -> None:
    """Show a batch."""
    settings = load_settings()
    with open_channel(settings.ingest_addr, settings) as channel:
        try:
            batch = clickstream_pb2_grpc.ClickstreamServiceStub(channel).GetBatch(
                pb.GetBatchRequest(batch_id=batch_id), timeout=30).batch
        except grpc.RpcError as error:
            raise rpc_failed(error, settings.ingest_addr, "ES_INGEST_ADDR") from error
    emit(as_dict(batch), as_json, [
        f"{batch.batch_id}: {pb.BatchStatus.Name(batch.status).removeprefix('BATCH_STATUS_').lower()}, "
        f"{batch.session_count} sessions"
    ])


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
