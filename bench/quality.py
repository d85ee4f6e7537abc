"""Quality benchmark (EVALUATION.md): does fine-tuning from simulated clicks improve search?

Runs the protocol on the BBC News corpus (or any items.jsonl + queries.jsonl) with a plugin's own
training code and settings (default: "Default Fine Tuning Method"): split queries 80/20, rank with the
plugin's initial model, simulate position-biased clicks, build the dataset with the plugin's own
`prepare_data`, run its `FineTuningBuilder` (hyperparameter search, MLflow in a temporary SQLite store),
and score the base and the fine-tuned model on the held-out queries: nDCG@10, MRR@10, recall@100 before
and after, the nDCG@10 gain with its paired bootstrap 95% CI, training sessions/s (sessions with a
click / wall seconds of an epoch), the raw forward+backward rate of the model on the same batch
shapes, and peak RSS. `--json` makes the last line of stdout one JSON object.

    .venv/bin/python bench/quality.py [--sessions 3000] [--trials N] [--seed 0] [--json]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from services.evaluation.datasets import EvalDataset, bbc_news, load_dataset  # noqa: E402
from services.evaluation.metrics import paired_bootstrap_ci, score_rankings  # noqa: E402
from services.evaluation.retrieval import encode, top_k  # noqa: E402
from services.evaluation.simulation import as_clickstream, simulate_sessions, split_queries  # noqa: E402


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def per_query_scores(model, dataset: EvalDataset, queries, item_vectors: np.ndarray) -> dict[str, np.ndarray]:
    query_vectors = encode(model, [q.text for q in queries])
    indices, _ = top_k(query_vectors, item_vectors, 100)
    rankings = [[dataset.items[i].id for i in row] for row in indices]
    return score_rankings(rankings, [q.relevant for q in queries])


def raw_rate(model, texts: list[str], queries: list[str], batch: int, hard_negatives: int, steps: int = 3) -> float:
    """Sessions/s of plain forward+backward of the whole model on the trainer's batch shapes."""
    inner = model.model.eval()  # dropout off, as the trainer trains by default (FineTuningSettings.dropout)
    optimizer = torch.optim.AdamW(inner.parameters(), lr=1e-6)
    items = texts[: batch * (1 + hard_negatives)]
    started = None
    for step in range(steps + 1):  # the first step warms up
        if step == 1:
            started = time.perf_counter()
        q = inner(inner.tokenize(queries[:batch]))["sentence_embedding"]
        d = inner(inner.tokenize(items))["sentence_embedding"]
        (q @ d.T).logsumexp(dim=1).mean().backward()
        optimizer.step()
        optimizer.zero_grad()
    return batch * steps / (time.perf_counter() - started)


def report_progress(progress) -> None:
    step = progress.progress
    detail = f" step {step.step}/{step.steps} held-out nDCG@10 {step.metrics['test_ndcg_at_10']:.4f}" if step else ""
    say(f"trial {progress.trial}/{progress.trials}{detail}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=Path, help="items.jsonl (default: the BBC News corpus)")
    parser.add_argument("--queries", type=Path, help="queries.jsonl (with --items)")
    parser.add_argument("--plugin", default="Default Fine Tuning Method")
    parser.add_argument("--sessions", type=int, default=3000)
    parser.add_argument("--trials", type=int, help="override the plugin's initial_max_evals")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if bool(args.items) != bool(args.queries):
        parser.error("--items and --queries go together")

    state = Path(tempfile.mkdtemp(prefix="es-quality-"))
    dataset = load_dataset(args.items, args.queries) if args.items else bbc_news()
    items_path, _ = dataset.write(state / "data")
    os.environ.update({"ES_STATE_DIR": str(state / "state"), "ES_ITEMS_URI": str(items_path),
                       "ES_MLFLOW_TRACKING_URI": f"sqlite:///{state / 'mlflow.db'}"})

    from services.fine_tuning.discovery import discover_plugins
    from services.fine_tuning.training import iteration_scope
    from services.fine_tuning.training.builder import load_run_model

    plugin = discover_plugins(REPO_ROOT / "plugins").create(args.plugin)
    began = time.perf_counter()
    with iteration_scope(plugin.meta, batch_id="bench", task_id=f"bench-{args.seed}"):
        plugin.upload_initial_model()
        base = load_run_model(plugin.manager, plugin.manager.initial_run_id(), plugin.settings.max_seq_length)
    train_queries, test_queries = split_queries(dataset.queries, 0.2, args.seed)
    say(f"embedding {len(dataset.items)} items with the base model ...")
    base_items = encode(base.model, [i.text for i in dataset.items], show_progress_bar=True)
    indices, scores = top_k(encode(base.model, [q.text for q in train_queries]), base_items, 20)
    simulated = simulate_sessions(dataset, train_queries, indices, scores, args.sessions, seed=args.seed)
    say(f"{len(simulated)} sessions, {sum(not s.is_irrelevant for s in simulated)} with a click")
    builder = plugin.get_fine_tuning_builder(as_clickstream(simulated, created_at=int(time.time())))
    if args.trials:
        builder.initial_max_evals = args.trials
    with iteration_scope(plugin.meta, batch_id="bench", task_id=f"bench-{args.seed}"):
        result = builder.run(base, on_progress=report_progress)
    training_peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # before the raw-rate probe
    say("embedding the items with the fine-tuned model ...")
    tuned_items = encode(result.model.model, [i.text for i in dataset.items], show_progress_bar=True)
    before = per_query_scores(base.model, dataset, test_queries, base_items)
    after = per_query_scores(result.model.model, dataset, test_queries, tuned_items)
    low, high = paired_bootstrap_ci(before["ndcg@10"], after["ndcg@10"], seed=args.seed)
    settings = builder.fine_tuning_settings
    speed = max((r.train_sessions_per_s for r in result.runs), default=0.0)
    raw = raw_rate(copy.deepcopy(base), [i.text for i in dataset.items], [q.text for q in train_queries],
                   settings.batch_size, settings.hard_negatives)
    report = {
        "ndcg10_before": float(before["ndcg@10"].mean()), "ndcg10_after": float(after["ndcg@10"].mean()),
        "ndcg10_gain_ci_low": low, "ndcg10_gain_ci_high": high,
        "mrr10_before": float(before["mrr@10"].mean()), "mrr10_after": float(after["mrr@10"].mean()),
        "recall100_before": float(before["recall@100"].mean()), "recall100_after": float(after["recall@100"].mean()),
        "train_sessions_per_s": speed, "raw_sessions_per_s": raw,
        "peak_rss_mb": training_peak_rss_mb,
        "best_params": result.best_params, "seconds": time.perf_counter() - began,
    }
    gain = report["ndcg10_after"] - report["ndcg10_before"]
    print(f"held-out queries: {len(test_queries)}, sessions: {args.sessions}, trials: {builder.initial_max_evals}")
    for name in ("ndcg10", "mrr10", "recall100"):
        print(f"{name:>10}: {report[f'{name}_before']:.4f} -> {report[f'{name}_after']:.4f}")
    print(f"nDCG@10 gain: {gain:+.4f} ({gain / report['ndcg10_before']:+.1%}), 95% CI [{low:+.4f}, {high:+.4f}]")
    print(f"training: {speed:.1f} sessions/s; raw forward+backward: {raw:.1f} sessions/s "
          f"({speed / raw:.0%} of raw); peak RSS {report['peak_rss_mb']:.0f} MiB; {report['seconds']:.0f} s")
    if args.json:
        print(json.dumps(report, sort_keys=True))


if __name__ == "__main__":
    main()
