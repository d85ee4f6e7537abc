"""Server start-up shared by every service: a grpc.aio server with health, reflection, bearer-token
auth, optional (mutual) TLS, message-size limits, one home for turning errors into statuses, and a
graceful stop on SIGTERM/SIGINT (health NOT_SERVING first, then in-flight RPCs get a grace period)."""

from __future__ import annotations

import asyncio
import functools
import hmac
import signal
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from services.common.errors import InvalidArgument, ServiceError
from services.common.logging import get_logger
from services.common.settings import Limits, Settings

log = get_logger("server")

# Health and reflection stay open without a token so that probes and tooling work.
_OPEN_METHOD_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


def grpc_options(limits: Limits) -> list[tuple[str, Any]]:
    return [
        ("grpc.max_receive_message_length", limits.max_message_bytes),
        ("grpc.max_send_message_length", limits.max_message_bytes),
    ]


class Undecodable:
    """A request message whose bytes did not parse as its type (garbage, or nested past protobuf's limit).

    The guard refuses a unary request that is one with INVALID_ARGUMENT, after the token check; a
    client-streaming method receives it among its messages and rejects it itself (Ingest lists it in its
    summary and goes on with the next message)."""

    def __init__(self, type_name: str, size: int, error: str) -> None:
        self.size = size
        self.error = InvalidArgument("request", f"is not a valid {type_name} ({size} bytes): {error}")

    def ByteSize(self) -> int:
        return self.size


def _tolerant(deserialize: Callable[[bytes], Any] | None, method: str) -> Callable[[bytes], Any] | None:
    """`deserialize`, answering `Undecodable` instead of raising, so the token is checked before a
    request's bytes are judged and a bad one gets INVALID_ARGUMENT, not UNKNOWN."""
    if deserialize is None:
        return None
    message_type = getattr(deserialize, "__self__", None)
    type_name = message_type.DESCRIPTOR.name if hasattr(message_type, "DESCRIPTOR") else f"request of {method}"

    def parse(data: bytes) -> Any:
        try:
            return deserialize(data)
        except DecodeError as error:
            return Undecodable(type_name, len(data), str(error))

    return parse


class _GuardInterceptor(grpc.aio.ServerInterceptor):
    """Checks the bearer token, refuses undecodable requests, and maps `ServiceError` (and anything
    unexpected) to a gRPC status."""

    def __init__(self, auth_token: str) -> None:
        self._expected = f"Bearer {auth_token}".encode() if auth_token else None

    def _authorized(self, details: grpc.HandlerCallDetails) -> bool:
        if self._expected is None or details.method.startswith(_OPEN_METHOD_PREFIXES):
            return True
        for key, value in details.invocation_metadata or ():
            if key == "authorization":
                given = value.encode() if isinstance(value, str) else value
                return hmac.compare_digest(given, self._expected)
        return False

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if handler is None:
            return None
        denied = None if self._authorized(details) else "missing or wrong bearer token (ES_AUTH_TOKEN)"
        handler = handler._replace(request_deserializer=_tolerant(handler.request_deserializer, details.method))
        if handler.response_streaming:
            kind = "stream_stream" if handler.request_streaming else "unary_stream"
            return handler._replace(**{kind: _guarded_stream(getattr(handler, kind), details.method, denied)})
        kind = "stream_unary" if handler.request_streaming else "unary_unary"
        return handler._replace(**{kind: _guarded_unary(getattr(handler, kind), details.method, denied)})


async def _admit(request: Any, context: grpc.aio.ServicerContext, denied: str | None) -> None:
    """The token first, then the request's bytes."""
    if denied:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, denied)
    if isinstance(request, Undecodable):
        await _abort(context, request.error)


def _guarded_stream(inner: Callable[..., Any], method: str, denied: str | None) -> Callable[..., Any]:
    async def streaming(request, context):
        await _admit(request, context, denied)
        try:
            async for response in inner(request, context):
                yield response
        except ServiceError as error:
            await _abort(context, error)
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception:
            log.exception("rpc_failed", method=method)
            await context.abort(grpc.StatusCode.INTERNAL, f"internal error in {method}")

    return streaming


def _guarded_unary(inner: Callable[..., Any], method: str, denied: str | None) -> Callable[..., Any]:
    async def unary(request, context):
        await _admit(request, context, denied)
        try:
            return await inner(request, context)
        except ServiceError as error:
            await _abort(context, error)
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception:
            log.exception("rpc_failed", method=method)
            await context.abort(grpc.StatusCode.INTERNAL, f"internal error in {method}")

    return unary


async def _abort(context: grpc.aio.ServicerContext, error: ServiceError) -> None:
    status = error.to_status()
    await context.abort(status.code, status.details, status.trailing_metadata)


def _read(path: Any) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


@dataclass
class Registration:
    """One servicer to add: grpc's generated `add_XServicer_to_server`, the servicer, its full name."""

    add: Callable[[Any, grpc.aio.Server], None]
    servicer: Any
    service_name: str


class GrpcHost:
    """Owns one service's grpc.aio server and its health state."""

    def __init__(self, settings: Settings, limits: Limits) -> None:
        self._settings = settings
        self._limits = limits
        self.health = health_aio.HealthServicer()
        self.server: grpc.aio.Server | None = None
        self._service_names: list[str] = []
        self.port = 0

    async def start(self, registrations: Iterable[Registration], host: str, port: int, serving: bool = True) -> int:
        """Serves on host:port (returns the port bound); health says SERVING at once, or, with `serving`
        False, NOT_SERVING until `set_serving()` (a service whose dependencies are still coming up)."""
        server = grpc.aio.server(
            interceptors=[_GuardInterceptor(self._settings.auth_token)],
            # No SO_REUSEPORT: a second server on a port in use must fail, not silently share it.
            options=[*grpc_options(self._limits), ("grpc.so_reuseport", 0)],
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        for registration in registrations:
            registration.add(registration.servicer, server)
            self._service_names.append(registration.service_name)
        reflection.enable_server_reflection(
            [*self._service_names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
             reflection.SERVICE_NAME],
            server,
        )
        address = f"{host}:{port}"
        if self._settings.tls_enabled:
            credentials = grpc.ssl_server_credentials(
                [(_read(self._settings.tls_key), _read(self._settings.tls_cert))],
                root_certificates=_read(self._settings.tls_ca) if self._settings.tls_ca else None,
                require_client_auth=self._settings.tls_ca is not None,
            )
            add = functools.partial(server.add_secure_port, address, credentials)
        else:
            add = functools.partial(server.add_insecure_port, address)
        try:
            self.port = add()
        except RuntimeError as error:  # grpc raises it when the port is taken
            raise OSError(f"cannot bind {address} (is another server on that port?)") from error
        if self.port == 0:
            raise OSError(f"cannot bind {address}")
        await server.start()
        self.server = server
        if serving:
            await self.set_serving()
        else:
            for name in ["", *self._service_names]:
                await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        return self.port

    async def set_serving(self) -> None:
        """Health answers SERVING, for the server and each of its services."""
        for name in ["", *self._service_names]:
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)

    async def stop(self) -> None:
        """Health goes NOT_SERVING first, then in-flight RPCs get the grace period to finish."""
        if self.server is None:
            return
        await self.health.enter_graceful_shutdown()
        await self.server.stop(self._settings.shutdown_grace_s)
        self.server = None


async def wait_for_stop_signal() -> None:
    """Returns on the first SIGTERM or SIGINT."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


async def run_service(
    start: Callable[[], Awaitable[Callable[[], Awaitable[None]]]],
) -> None:
    """Runs a service until SIGTERM/SIGINT: `start()` brings it up and returns its ordered shutdown."""
    shutdown = await start()
    try:
        await wait_for_stop_signal()
    finally:
        await shutdown()
