"""Real servers for the tests: NATS with JetStream, our services in-process or as child processes,
and fresh PostgreSQL databases on the machine's server. Everything binds free loopback ports."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import ClassVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.launcher import free_port, nats_server_binary

REPO_ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
POSTGRES_ADMIN_URL = os.environ.get("ES_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def listening(port: int) -> bool:
    """Whether something accepts connections on 127.0.0.1:`port`."""
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def wait_for_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if listening(port):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def wait_healthy(address: str, timeout: float = 20.0, credentials: grpc.ChannelCredentials | None = None,
                 process: subprocess.Popen[bytes] | None = None) -> None:
    """Until `address` answers SERVING; a `process` that exits meanwhile fails at once, naming its exit code."""
    deadline = time.monotonic() + timeout
    channel = grpc.secure_channel(address, credentials) if credentials else grpc.insecure_channel(address)
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"the server for {address} exited with {process.returncode} before serving")
            try:
                status = stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                if status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.1)
    raise TimeoutError(f"{address} did not become healthy within {timeout}s")


class NatsServer:
    """A nats-server with JetStream; stop() and start() keep its port and its store."""

    def __init__(self, store_dir: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.store_dir = store_dir
        self.url = f"nats://127.0.0.1:{self.port}"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> NatsServer:
        self._process = subprocess.Popen(
            [nats_server_binary(), "-js", "-a", "127.0.0.1", "-p", str(self.port), "-sd", str(self.store_dir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port)
        return self

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(10)
            self._process = None


class ServiceProcess:
    """`es serve <service>` as a child process, so tests can SIGTERM or SIGKILL it. Whatever a test
    leaves running (it failed before stopping its service) is killed by `kill_leftover_services()`."""

    running: ClassVar[set[subprocess.Popen[bytes]]] = set()

    def __init__(self, service: str, env: dict[str, str], log_path: Path, port: int | None = None) -> None:
        self.service = service
        self.port = port or free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.env = {**os.environ, **env}
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, wait: bool = True) -> ServiceProcess:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [str(VENV_BIN / "es"), "serve", self.service, "--port", str(self.port)],
                env=self.env, stdout=log, stderr=log, cwd=REPO_ROOT,
            )
        ServiceProcess.running.add(self.process)
        if wait:
            # A service imports torch, transformers and MLflow before it serves: seconds on a quiet machine, and
            # over 20 s on a loaded 2-core one (tests/trainer/ run twice at once did that).
            wait_healthy(self.address, 90, process=self.process)
        return self

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def terminate(self, timeout: float = 30) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def log(self) -> str:
        return self.log_path.read_text()


def kill_leftover_services() -> None:
    for process in list(ServiceProcess.running):
        if process.poll() is None:
            process.kill()
            process.wait(10)
        ServiceProcess.running.discard(process)


class InProcessService:
    """A service's real grpc.aio server, started by its own `start()` on a private event loop thread; entering
    returns once its health says SERVING (as `es up` waits), unless `wait_serving` is False (a TLS server,
    which a plaintext health check cannot reach)."""

    def __init__(self, start: Callable[[int], Awaitable[Callable[[], Awaitable[None]]]],
                 wait_serving: bool = True) -> None:
        self.port = free_port()
        self._wait_serving = wait_serving
        self.address = f"127.0.0.1:{self.port}"
        self._start = start
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._shutdown: Callable[[], Awaitable[None]] | None = None

    def __enter__(self) -> InProcessService:
        self._thread.start()
        self._shutdown = asyncio.run_coroutine_threadsafe(self._start(self.port), self._loop).result(30)
        if self._wait_serving:
            wait_healthy(self.address, 30)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._shutdown is not None:
            try:
                asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(60)
            except concurrent.futures.TimeoutError:
                # Seen in a few CI runs (registry, dataprep) and not yet explained: the shutdown began and
                # never ended. It is not what these tests check (SIGTERM shutdowns are tested on service
                # processes), so it warns, with where each task of the loop waits, instead of failing them.
                warnings.warn(f"in-process service {self.address} did not stop within 60 s; its tasks: "
                              f"{[t.get_stack(limit=3) for t in asyncio.all_tasks(self._loop)]}", stacklevel=2)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


class PostgresDatabase:
    """A fresh database on the machine's PostgreSQL, dropped afterwards."""

    def __init__(self) -> None:
        import psycopg

        self._psycopg = psycopg
        self.name = f"es_test_{uuid.uuid4().hex[:12]}"
        base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0]
        self.url = f"{base}/{self.name}"

    def __enter__(self) -> str:
        with self._psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.name}"')
        return self.url

    def __exit__(self, *exc: object) -> None:
        with self._psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
