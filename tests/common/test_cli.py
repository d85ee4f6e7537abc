"""What every `es` command shares: `--version`, and a failed call that says what to do about it."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess

from tests.servers import VENV_BIN


def es(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(VENV_BIN / "es"), *args], env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=60)


def test_version_prints_the_installed_version() -> None:
    done = es("--version")
    assert done.returncode == 0
    assert done.stdout.strip() == f"es (embedding-studio) {importlib.metadata.version('embedding-studio')}"


def test_a_service_that_does_not_answer_is_named_with_its_address_and_variable() -> None:
    done = es("batch", "get", ES_INGEST_ADDR="127.0.0.1:1")
    assert done.returncode == 1
    assert "UNAVAILABLE from 127.0.0.1:1" in done.stderr and "set ES_INGEST_ADDR" in done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""
