"""What every `es` command shares: settings with logging configured, printing results (text lines, and
with `--json` one JSON object alone on stdout), and turning a failed RPC into an exit code."""

from __future__ import annotations

import json
from typing import Annotated, Any

import grpc
import typer
from google.protobuf import json_format
from google.protobuf.message import Message

from services.client.calls import TRANSIENT
from services.common.errors import ServiceError, Unavailable
from services.common.logging import configure_logging, configure_service_logging
from services.common.settings import Settings

JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as one JSON object, alone on stdout.")]


def load_settings(service: bool = False) -> Settings:
    """The settings from the environment (exit 2 naming what is invalid), with logging configured: for a
    service (`service=True`), also what its libraries log and their progress bars off."""
    try:
        settings = Settings()
    except ValueError as error:
        typer.echo(f"error: invalid configuration: {error}", err=True)
        raise typer.Exit(2) from error
    (configure_service_logging if service else configure_logging)(settings.log_level, settings.log_format)
    return settings


def as_dict(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)


def emit(result: dict[str, Any], as_json: bool, lines: list[str]) -> None:
    """The lines for a person on stdout; with --json, stdout carries only the JSON object and the lines go to
    stderr, so `es ... --json | jq` reads one object."""
    for line in lines:
        typer.echo(line, err=as_json)
    if as_json:
        typer.echo(json.dumps(result, sort_keys=True))


def rpc_failed(error: grpc.RpcError, address: str, variable: str | None = None) -> typer.Exit:
    """Prints the failed call's status and reason; when nothing answered, also what to do about it (start the
    service, or set `variable`, the setting that names its address)."""
    typer.echo(f"error: {error.code().name} from {address}: {error.details()}", err=True)
    if error.code() in TRANSIENT and variable:
        typer.echo(f"  is the service running there? `es up` starts the stack (and writes its addresses to "
                   f"<state>/env to `source`); or set {variable} to where it runs", err=True)
    return typer.Exit(1)


def service_failed(error: ServiceError, address: str, variable: str | None = None) -> typer.Exit:
    """`rpc_failed` for a client's domain error (`services.client`): its message, and when nothing
    answered, what to do about it."""
    typer.echo(f"error: {error.message}", err=True)
    if isinstance(error, Unavailable) and variable:
        typer.echo(f"  is the service running at {address}? `es up` starts the stack (and writes its addresses "
                   f"to <state>/env to `source`); or set {variable} to where it runs", err=True)
    return typer.Exit(1)
