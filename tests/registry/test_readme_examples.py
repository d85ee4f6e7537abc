"""The README's Python examples run as written against real servers: "Sending clickstream" against an
ingest service, "Asking which model is best" against a registry fronting MLflow, and the imports of
"Writing a plugin". Only the addresses change, to where the test's servers listen (the README names
the default ports), and each block runs in a child process of its own, from a folder of its own."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from services.api.embedding_studio.v1 import clickstream_pb2 as pb
from tests.registry.helpers import log_initial, register_initial
from tests.servers import REPO_ROOT

README = (REPO_ROOT / "README.md").read_text()


@pytest.fixture
def clickstream_db_url(tmp_path: Path) -> str:
    """SQLite only: what the examples show does not depend on the store (both are tested elsewhere)."""
    return f"sqlite:///{tmp_path / 'clickstream.db'}"


def python_blocks(heading: str) -> list[str]:
    start = README.index(f"\n## {heading}\n")
    end = README.find("\n## ", start + 1)
    return re.findall(r"```python\n(.*?)```", README[start:end if end != -1 else None], flags=re.DOTALL)


def run_block(block: str, cwd: Path, **addresses: str) -> subprocess.CompletedProcess[str]:
    for default, address in addresses.items():
        assert default in block, f"the README's block no longer names {default}"
        block = block.replace(default, address)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ES_")}
    env["PYTHONPATH"] = str(REPO_ROOT)
    return subprocess.run([sys.executable, "-c", block], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)


def test_the_readmes_client_examples_send_clickstream_and_fetch_the_best_model(
        ingest_server, ingest, registry_server, registry, mlflow_client, tiny_model_dir, tmp_path: Path) -> None:
    [sending] = python_blocks("Sending clickstream")
    ran = run_block(sending, tmp_path, **{"127.0.0.1:50051": ingest_server.address})
    assert ran.returncode == 0, ran.stderr[-3000:]
    stored = ingest.GetSession(pb.GetSessionRequest(session_id="3f1c…")).session
    assert [r.object_id for r in stored.search_results] == ["sku-1", "sku-7"]
    assert [e.object_id for e in stored.events] == ["sku-7"]

    [asking] = python_blocks("Asking which model is best (registry)")
    log_initial(mlflow_client, "Default Fine Tuning Method", tiny_model_dir)
    register_initial(registry, "Default Fine Tuning Method")
    ran = run_block(asking, tmp_path, **{"127.0.0.1:50054": registry_server.address})
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert (tmp_path / "model" / "modules.json").is_file()


def test_the_readmes_plugin_imports_are_the_librarys() -> None:
    [imports] = python_blocks("Writing a plugin")
    ran = run_block(imports, REPO_ROOT)
    assert ran.returncode == 0, ran.stderr[-3000:]
