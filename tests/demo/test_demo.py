"""`es demo`, scaled down (a 150-item slice of the BBC corpus, a few hundred sessions, one trial), run
as a user runs it: it starts NATS, MLflow and the four services itself, and the whole chain is checked
from what it leaves behind — sessions stored, the batch released, the dataset made, the task done, a
model version registered whose archive matches the checksum the download was verified against, and the
quality report printed."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from pathlib import Path

import pytest
from mlflow import MlflowClient

from services.common.mlflow_models import TAG_SHA256
from services.evaluation.datasets import EvalDataset, bbc_news
from tests.servers import REPO_ROOT, VENV_BIN


@pytest.mark.timeout(900)  # as long as the demo itself may take (below): it trains MiniLM, minutes on a busy CPU
def test_the_demo_runs_every_service_and_reports_quality_before_and_after(tmp_path: Path) -> None:
    """With ES_AUTH_TOKEN set, so that every call between the services (unary and streaming) must carry it
    (without a token the same chain runs in every other end-to-end test: es up, the trainer stacks)."""
    token = "demo-s3cret"
    corpus = bbc_news()
    step = len(corpus.items) // 150
    items, queries = EvalDataset(corpus.items[::step][:150], corpus.queries[::step][:150]).write(tmp_path / "data")
    state = tmp_path / "state"
    done = subprocess.run(
        [str(VENV_BIN / "es"), "demo", "--items", str(items), "--queries", str(queries), "--sessions", "300",
         "--trials", "1", "--state-dir", str(state), "--json"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=900, env={**os.environ, "ES_AUTH_TOKEN": token})
    assert done.returncode == 0, done.stderr[-5000:]
    [line] = done.stdout.strip().splitlines()  # --json: stdout is the JSON object alone
    report = json.loads(line)
    assert "nDCG@10" in done.stderr and "MRR@10" in done.stderr and "recall@100" in done.stderr
    for key in ("ndcg10_before", "ndcg10_after", "mrr10_before", "mrr10_after", "recall100_before",
                "recall100_after"):
        assert 0.0 <= report[key] <= 1.0
    assert report["ndcg10_gain_ci_low"] <= report["ndcg10_gain_ci_high"]

    assert report["sessions_stored"] == 300
    with sqlite3.connect(state / "clickstream.db") as db:
        assert db.execute("SELECT COUNT(*) FROM sessions").fetchone()[0] == 300
        batch_number = int(report["batch_id"].removeprefix("batch-"))
        assert db.execute("SELECT status, session_count FROM batches WHERE number = ?",
                          (batch_number,)).fetchone() == ("released", 300)
    assert (state / "artifacts").is_dir() and any((state / "artifacts").rglob("manifest.json"))
    assert report["task_model_version"]  # the task ended done with the version the registry recorded

    client = MlflowClient(tracking_uri=f"sqlite:///{state / 'mlflow.db'}")
    downloaded = client.get_model_version("Default Fine Tuning Method", report["downloaded_version"])
    run = client.get_run(downloaded.run_id)
    assert run.data.tags[TAG_SHA256] == report["downloaded_sha256"]
    assert (Path(report["model_path"]) / "modules.json").is_file()
    # The report: the table, held-out nDCG@10 over the training steps of the trial, and links to its MLflow run.
    page = Path(report["report"])
    assert page == state / "report.html" and (state / "report.md").is_file()
    assert '<polyline class="trial"' in page.read_text() and "nDCG@10" in page.read_text()
    assert report["mlflow_runs"] and all("/#/experiments/" in link for link in report["mlflow_runs"])
    # Every service it started was stopped in order (its log ends with "stopped").
    for service in ("ingest", "dataprep", "registry", "trainer"):
        assert '"stopped"' in (state / "logs" / f"{service}.log").read_text().splitlines()[-1]
