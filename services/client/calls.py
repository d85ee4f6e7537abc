"""How a client call fails: the RPC error of a finished call becomes one of the domain errors the
services raise (`services.common.errors`), so callers catch `NotFound` or `InvalidArgument` instead of
reading status codes, and a call that nothing answered is retried with back-off before it becomes
`Unavailable`. Every call the clients retry is idempotent by the contract's ids (a session id, an event
id, a release id), so a retry after a lost answer stores nothing twice."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Self, TypeVar

import grpc

from services.common.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ServiceError,
    Unauthenticated,
    Unavailable,
    field_violation,
)
from services.common.settings import Limits, Settings

T = TypeVar("T")

# The codes that say nothing answered (or not in time): asking again may succeed.
TRANSIENT = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


_BY_CODE: dict[grpc.StatusCode, type[ServiceError]] = {
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: Unavailable,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
}


def translate(error: grpc.RpcError, address: str) -> ServiceError:
    """The domain error for a failed call to `address`: `InvalidArgument` with the field the server
    named, `NotFound`, `AlreadyExists`, `FailedPrecondition`, `Unavailable` (also for a deadline
    exceeded), `Unauthenticated`, `PermissionDenied`, else a `ServiceError` carrying the status code."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    details = (error.details() if hasattr(error, "details") else None) or str(error)
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        violation = field_violation(error)
        if violation is not None:
            return InvalidArgument(violation.field, violation.description)
        return InvalidArgument("request", details)
    kind = _BY_CODE.get(code)
    if kind is not None:
        return kind(f"{details} ({code.name} from {address})")
    failure = ServiceError(f"{details} ({code.name} from {address})")
    failure.code = code
    return failure


def dependency_failed(error: grpc.RpcError, peer: str) -> ServiceError:
    """What a service raises when its own call to another service (`peer`, e.g. "ingest at host:port
    (ES_INGEST_ADDR)") failed: `Unavailable` when nothing answered, so the caller may try again later;
    else an internal `ServiceError` naming the peer's status and reason (the peer's status code is not
    the caller's: an INVALID_ARGUMENT from ingest is the service's fault, not its caller's)."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    details = (error.details() if hasattr(error, "details") else None) or str(error)
    if code in TRANSIENT:
        return Unavailable(f"{peer} did not answer: {code.name}: {details}")
    return ServiceError(f"{peer} answered {code.name}: {details}")


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a call that nothing answered is asked again: `attempts` in all,
    waiting `initial_backoff_s` after the first failure and `multiplier` times longer after each next
    one, at most `max_backoff_s`, each wait jittered by up to a quarter (so clients that failed together
    do not retry together). `attempts=1` never retries."""

    attempts: int = 5
    initial_backoff_s: float = 0.5
    max_backoff_s: float = 10.0
    multiplier: float = 2.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"RetryPolicy.attempts must be >= 1, not {self.attempts}")
        if self.initial_backoff_s < 0 or self.max_backoff_s < self.initial_backoff_s or self.multiplier < 1:
            raise ValueError("RetryPolicy: need 0 <= initial_backoff_s <= max_backoff_s and multiplier >= 1")

    def backoffs(self) -> list[float]:
        """The waits between the attempts, before jitter."""
        return [min(self.max_backoff_s, self.initial_backoff_s * self.multiplier ** n)
                for n in range(self.attempts - 1)]


def call(invoke: Callable[[], T], address: str, retry: RetryPolicy,
         sleep: Callable[[float], None] = time.sleep) -> T:
    """`invoke()`, asked again after the policy's back-off while it fails with UNAVAILABLE or
    DEADLINE_EXCEEDED; any other failure, or the last transient one, is raised translated."""
    waits = retry.backoffs()
    for attempt in range(retry.attempts):
        try:
            return invoke()
        except grpc.RpcError as error:
            if error.code() not in TRANSIENT or attempt == len(waits):
                raise translate(error, address) from error
            sleep(waits[attempt] * (1 + random.uniform(-0.25, 0.25)))
    raise AssertionError("unreachable: the last attempt returns or raises")


class ServiceClient:
    """What the clients share: a channel to `address` configured like the services (TLS and the bearer
    token from `settings`, default read from the environment), a stub of `stub_class` on it, a timeout
    per call and a retry policy; a context manager that closes the channel."""

    def __init__(self, address: str, stub_class: type, *, settings: Settings | None, timeout_s: float,
                 retry: RetryPolicy | None, limits: Limits | None) -> None:
        from services.client.channels import open_channel

        self._settings = settings or Settings()
        self.address = address
        self._channel = open_channel(address, self._settings, limits)
        self._stub = stub_class(self._channel)
        self._timeout_s = timeout_s
        self._retry = retry or RetryPolicy()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def _call(self, rpc: str, request: Any, timeout_s: float | None = None) -> Any:
        method = getattr(self._stub, rpc)
        return call(lambda: method(request, timeout=timeout_s or self._timeout_s), self.address, self._retry)
