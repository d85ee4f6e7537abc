"""`es up` brings NATS, MLflow and the four services up on one machine, prints where they are, and stops
them all on SIGTERM; `es health` answers for each; also with server-only and with mutual TLS; and a
stack killed outright (SIGKILL, no chance to stop anything) still leaves nothing running."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.servers import REPO_ROOT, VENV_BIN, listening


def _tls_env(mode: str, pki: Path) -> dict[str, str]:
    if mode == "plaintext":
        return {}
    # Server-only TLS: no ES_TLS_CA, so clients verify the services against the default roots (here the
    # test CA, through gRPC's own variable); mutual TLS: ES_TLS_CA too, and every service presents its
    # certificate (serverAuth and clientAuth) when it calls another.
    env = {"ES_TLS_CERT": str(pki / "service.pem"), "ES_TLS_KEY": str(pki / "service.key"),
           "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH": str(pki / "ca.pem")}
    return {**env, "ES_TLS_CA": str(pki / "ca.pem")} if mode == "mutual-tls" else env


# Plaintext es up runs the README's whole flow in tests/demo/test_readme.py (stopped by Ctrl-C): here it
# runs under TLS, stopped by SIGTERM, and killed outright.
@pytest.mark.parametrize(("mode", "stop_signal"), [("server-tls", signal.SIGTERM), ("mutual-tls", signal.SIGKILL)],
                         ids=["server-tls-sigterm", "mutual-tls-sigkill"])
def test_es_up_serves_every_service_until_stopped_and_leaves_nothing_running(
        tmp_path: Path, certificates: Path, mode: str, stop_signal: signal.Signals) -> None:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("ES_")}, **_tls_env(mode, certificates)}
    up = subprocess.Popen([str(VENV_BIN / "es"), "up", "--state-dir", str(tmp_path)], cwd=REPO_ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        exports: dict[str, str] = {}
        deadline = time.monotonic() + 240
        while "ES_TRAINER_ADDR" not in exports:
            assert time.monotonic() < deadline and up.poll() is None, up.stderr.read() if up.poll() else "timeout"
            line = up.stdout.readline()
            if line.startswith("export "):
                name, value = line.removeprefix("export ").strip().split("=", 1)
                exports[name] = value
        assert exports["ES_NATS_URL"].startswith("nats://127.0.0.1:")
        assert exports["ES_MLFLOW_TRACKING_URI"].startswith("http://127.0.0.1:")
        for service in ("INGEST", "DATAPREP", "TRAINER", "REGISTRY"):
            checked = subprocess.run([str(VENV_BIN / "es"), "health", exports[f"ES_{service}_ADDR"]], env=env,
                                     capture_output=True, text=True, timeout=60)
            assert checked.returncode == 0 and "SERVING" in checked.stdout, checked.stderr
        if mode != "plaintext":  # a plaintext client gets nowhere
            with grpc.insecure_channel(exports["ES_INGEST_ADDR"]) as channel, pytest.raises(grpc.RpcError):
                health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    finally:
        up.send_signal(stop_signal)
        returned = up.wait(120)
    assert returned == (0 if stop_signal == signal.SIGTERM else -signal.SIGKILL)
    # Killed outright, the stack cannot stop its children: each learns it from the kernel (SIGTERM when
    # its parent dies) and stops as it would have been stopped.
    ports = [int(port) for port in re.findall(r"127\.0\.0\.1:(\d+)", " ".join(exports.values()))]
    assert len(ports) == 6  # NATS, MLflow and the four services
    deadline = time.monotonic() + 60
    while any(listening(port) for port in ports):
        assert time.monotonic() < deadline, f"still listening 60 s after the stack stopped: {ports}"
        time.sleep(0.5)
    for service in ("ingest", "dataprep", "registry", "trainer"):
        deadline = time.monotonic() + 30
        while '"stopped"' not in (tmp_path / "logs" / f"{service}.log").read_text().splitlines()[-1]:
            assert time.monotonic() < deadline, f"{service} did not log that it stopped"
            time.sleep(0.5)
    refused = subprocess.run([str(VENV_BIN / "es"), "health", exports["ES_INGEST_ADDR"], "--timeout", "1"],
                             env=env, capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0 and "UNAVAILABLE" in refused.stderr


def test_the_stacks_free_ports_are_distinct_and_avoid_the_ports_already_taken() -> None:
    # Probes closed one at a time may be handed the same port twice; the stack's services then collide.
    from services.launcher import free_ports

    taken = frozenset(free_ports(5))
    ports = free_ports(60, exclude=taken)
    assert len(set(ports)) == 60 and not taken & set(ports)
