"""The operator's `es model best|download` commands against a running registry.

The commands run in a child process, as an operator runs them (the CLI configures logging for its
whole process, which must not touch the registry running in the test's process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
from sentence_transformers import SentenceTransformer

from services.api.embedding_studio.v1 import registry_pb2 as pb
from services.api.embedding_studio.v1 import registry_pb2_grpc
from tests.registry.helpers import candidate, log_initial, log_trial, new_plugin, register_initial, stored_archive
from tests.servers import REPO_ROOT, VENV_BIN

# `es model …`: the registry's Typer app run directly (services/cli.py mounts the same app as `es model`).
_ES_MODEL = "from services.registry.cli import app; app(prog_name='es model')"


def es_model(*args: str, address: str, cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", _ES_MODEL, *args],
                          env={**os.environ, "ES_REGISTRY_ADDR": address, "PYTHONPATH": str(REPO_ROOT)},
                          capture_output=True, text=True, timeout=120, cwd=cwd)


def test_model_best_says_which_version_is_best_why_and_prints_json_last(
        registry, registry_server, mlflow_client, tiny_model_dir) -> None:
    plugin = new_plugin()
    log_initial(mlflow_client, plugin, tiny_model_dir)
    register_initial(registry, plugin)
    result = es_model("best", plugin, address=registry_server.address)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == f"{plugin}: version 1 (initial model)"

    run_id = log_trial(mlflow_client, plugin, "batch-4", "task-2", tiny_model_dir)
    registry.SubmitCandidate(candidate(plugin, run_id, 0.61, "1", 0.52, "batch-4", "task-2"))
    result = es_model("best", plugin, "--json", address=registry_server.address)
    assert result.returncode == 0, result.stderr
    assert f"{plugin}: version 2" in result.stderr
    assert "beat: version 1 with nDCG@10 0.5200" in result.stderr and f"run {run_id}" in result.stderr
    last = json.loads(result.stdout.strip().splitlines()[-1])
    assert (last["version"], last["is_best"], last["batch_id"]) == ("2", True, "batch-4")


def test_model_best_of_an_unknown_plugin_fails_with_not_found(registry_server) -> None:
    result = es_model("best", "No Such Plugin", address=registry_server.address)
    assert result.returncode == 1
    assert "NOT_FOUND" in result.stderr and "No Such Plugin" in result.stderr


def test_model_download_extracts_a_verified_model_that_loads(
        registry, registry_server, mlflow_client, tiny_model_dir, tmp_path: Path) -> None:
    plugin = new_plugin()
    log_initial(mlflow_client, plugin, tiny_model_dir)
    register_initial(registry, plugin)
    out = tmp_path / "models" / "downloaded"
    result = es_model("download", plugin, "--version", "1", "--out", str(out), "--json",
                      address=registry_server.address)
    assert result.returncode == 0, result.stderr
    last = json.loads(result.stdout.strip().splitlines()[-1])
    assert (last["version"], last["path"]) == ("1", str(out)) and "verified" in result.stderr
    sentences = ["red running shoes"]
    np.testing.assert_allclose(SentenceTransformer(str(out), device="cpu").encode(sentences),
                               SentenceTransformer(str(tiny_model_dir), device="cpu").encode(sentences), atol=1e-6)
    assert list(out.parent.iterdir()) == [out]  # no temporary archive left behind


def test_model_download_of_a_tampered_archive_exits_non_zero_and_extracts_nothing(
        registry, registry_server, mlflow_client, mlflow_server, tiny_model_dir, tmp_path: Path) -> None:
    plugin = new_plugin()
    run_id = log_initial(mlflow_client, plugin, tiny_model_dir)
    register_initial(registry, plugin)
    stored = stored_archive(mlflow_server.artifacts_dir, run_id)
    tampered = bytearray(stored.read_bytes())
    tampered[len(tampered) // 2] ^= 0xFF  # a byte inside the weights
    stored.write_bytes(bytes(tampered))
    out = tmp_path / "models" / "downloaded"
    result = es_model("download", plugin, "--out", str(out), address=registry_server.address)
    assert result.returncode == 1
    assert "does not match the registry's record" in result.stderr and "nothing was extracted" in result.stderr
    assert list(out.parent.iterdir()) == []


class _RegistryNamingAPath(registry_pb2_grpc.RegistryServiceServicer):
    """A registry that answers every download with a version that is a path out of the folder."""

    def DownloadModel(self, request, context):
        yield pb.DownloadModelResponse(archive=pb.ModelArchive(version="1/../../escaped", size_bytes=1, sha256="0"))
        yield pb.DownloadModelResponse(chunk=b"x")


def test_model_download_refuses_a_version_that_is_not_a_number_and_writes_nothing(tmp_path: Path) -> None:
    server = grpc.server(ThreadPoolExecutor(max_workers=2))
    registry_pb2_grpc.add_RegistryServiceServicer_to_server(_RegistryNamingAPath(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        cwd = tmp_path / "a" / "b"
        cwd.mkdir(parents=True)
        result = es_model("download", "Some Plugin", address=f"127.0.0.1:{port}", cwd=cwd)
    finally:
        server.stop(None)
    assert result.returncode == 1
    assert "'1/../../escaped'" in result.stderr and "not a version number" in result.stderr
    assert [p.relative_to(tmp_path) for p in tmp_path.rglob("*")] == [Path("a"), Path("a/b")]


def test_model_list_and_iteration_list_get_show_versions_and_runs(
        registry, registry_server, mlflow_client, tiny_model_dir) -> None:
    plugin = new_plugin()
    log_initial(mlflow_client, plugin, tiny_model_dir)
    register_initial(registry, plugin)
    run_id = log_trial(mlflow_client, plugin, "batch-9", "task-9", tiny_model_dir,
                       params={"items_lr": "2e-05"}, metrics={"test_ndcg_at_10": 0.61, "train_loss": 1.5})
    registry.SubmitCandidate(candidate(plugin, run_id, 0.61, "1", 0.52, "batch-9", "task-9"))

    listed = es_model("list", plugin, address=registry_server.address)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines() == [
        "  version 1: initial model",
        "* version 2: batch batch-9, nDCG@10 0.6100, MRR@10 0.6100, recall@100 0.8100 on 40 held-out queries"]
    as_json = json.loads(es_model("list", plugin, "--json", address=registry_server.address).stdout)
    assert [(v["version"], v["is_best"]) for v in as_json["versions"]] == [("1", False), ("2", True)]

    env = {**os.environ, "ES_REGISTRY_ADDR": registry_server.address}
    iterations = subprocess.run([str(VENV_BIN / "es"), "iteration", "list", plugin, "--json"], env=env,
                                capture_output=True, text=True, timeout=120)
    assert iterations.returncode == 0, iterations.stderr
    [iteration] = json.loads(iterations.stdout)["iterations"]
    assert iteration["batch_id"] == "batch-9" and [r["run_id"] for r in iteration["runs"]] == [run_id]
    shown = subprocess.run([str(VENV_BIN / "es"), "iteration", "get", iteration["iteration_id"]], env=env,
                           capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert f"run {run_id} FINISHED: items_lr=2e-05; test_ndcg_at_10 0.6100" in shown.stdout
    assert "train_loss" not in shown.stdout  # held-out metrics only
