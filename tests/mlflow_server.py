"""A real `mlflow server` for the tests: SQLite backend and a local artifact folder (served through the
server, so clients upload and download over HTTP), on a free loopback port.

`MlflowServer` keeps its port and its stores across stop() and start(), so a test can take MLflow
down and bring it back. The session-scoped `mlflow_server` fixture is imported by the conftest of each
test folder that needs it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers import VENV_BIN, free_port


class MlflowServer:
    def __init__(self, root: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.root = root
        self.url = f"http://127.0.0.1:{self.port}"
        self.artifacts_dir = root / "artifacts"
        self.log_path = root / "mlflow.log"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 90.0) -> MlflowServer:
        self.artifacts_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(
                [str(VENV_BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(self.port),
                 "--workers", "1", "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}",
                 "--artifacts-destination", str(self.artifacts_dir)],
                stdout=log, stderr=log, cwd=self.root, start_new_session=True,
                # The job runner (a pool of huey consumers) serves features the tests do not use.
                env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
            )
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                raise RuntimeError(f"mlflow server exited with {self._process.returncode}: {self.log_path}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=1) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.2)
        raise TimeoutError(f"mlflow server on {self.url} did not answer within {timeout}s: {self.log_path}")

    def stop(self) -> None:
        """Stops the server and every process it started (its own process group)."""
        if self._process is not None:
            os.killpg(self._process.pid, signal.SIGTERM)
            try:
                self._process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self._process.pid, signal.SIGKILL)
                self._process.wait(10)
            # uvicorn's worker may outlive its parent for a moment; nothing of this server may stay.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._process.pid, signal.SIGKILL)
            self._process = None


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """One MLflow server for the session's tests that only need MLflow to be there."""
    server = MlflowServer(tmp_path_factory.mktemp("mlflow")).start()
    yield server
    server.stop()
