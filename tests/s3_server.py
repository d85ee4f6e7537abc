"""A real S3-compatible server on loopback for the tests: moto's server (`moto_server`), started as a
child process on a free port. boto3 reaches it through the standard `AWS_*` environment variables.

The session-scoped `s3_server` fixture and the `s3` fixture are imported by the conftest of each test
folder that needs them."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from tests.servers import VENV_BIN, free_port, wait_for_port


class S3Server:
    """`moto_server` on 127.0.0.1; `env` is what boto3 needs to talk to it (endpoint, fake keys, region)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.endpoint,  # also STS, for the role-ARN path
            "AWS_ENDPOINT_URL_S3": self.endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def start(self) -> S3Server:
        self._process = subprocess.Popen([str(VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(self.port)],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port, timeout=30)
        return self

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(10)
            self._process = None

    def client(self) -> Any:
        env = self.env
        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"], region_name=env["AWS_DEFAULT_REGION"])

    def new_bucket(self) -> str:
        name = f"test-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    server = S3Server().start()
    yield server
    server.stop()


@pytest.fixture
def s3(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    """The S3 server, with boto3 pointed at it through the standard AWS variables."""
    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    return s3_server
