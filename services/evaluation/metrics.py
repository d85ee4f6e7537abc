"""Ranking metrics as trec_eval computes them (nDCG with linear gain, MRR, recall), per query, and a
paired bootstrap confidence interval of a mean difference.

Hand-written on purpose: ranx JIT-compiles with numba on first use, which costs about a minute on a
2-core machine — longer than a whole held-out evaluation here — and ir-measures needs trec_eval's
compiled extension at run time. These are a few lines of numpy, and `tests/evaluation/test_metrics.py`
checks them against trec_eval itself (ir-measures' pytrec_eval)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


def ndcg_at(ranked: Sequence[str], relevant: Mapping[str, int], k: int = 10) -> float:
    gains = np.array([relevant.get(item, 0) for item in ranked[:k]], dtype=float)
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = float((gains * discounts[: len(gains)]).sum())
    ideal = np.sort(np.array(list(relevant.values()), dtype=float))[::-1][:k]
    idcg = float((ideal * discounts[: len(ideal)]).sum())
    return dcg / idcg if idcg > 0 else 0.0


def mrr_at(ranked: Sequence[str], relevant: Mapping[str, int], k: int = 10) -> float:
    for position, item in enumerate(ranked[:k], start=1):
        if relevant.get(item, 0) > 0:
            return 1.0 / position
    return 0.0


def recall_at(ranked: Sequence[str], relevant: Mapping[str, int], k: int = 100) -> float:
    wanted = {item for item, grade in relevant.items() if grade > 0}
    if not wanted:
        return 0.0
    return len(wanted.intersection(ranked[:k])) / len(wanted)


def score_rankings(rankings: Sequence[Sequence[str]], judgments: Sequence[Mapping[str, int]],
                   recall_ks: Sequence[int] = (100,)) -> dict[str, np.ndarray]:
    """Per-query arrays: "ndcg@10", "mrr@10" and "recall@k" for each k."""
    if len(rankings) != len(judgments):
        raise ValueError(f"{len(rankings)} rankings for {len(judgments)} judged queries")
    scores = {
        "ndcg@10": np.array([ndcg_at(r, j, 10) for r, j in zip(rankings, judgments, strict=True)]),
        "mrr@10": np.array([mrr_at(r, j, 10) for r, j in zip(rankings, judgments, strict=True)]),
    }
    for k in recall_ks:
        scores[f"recall@{k}"] = np.array([recall_at(r, j, k) for r, j in zip(rankings, judgments, strict=True)])
    return scores


def paired_bootstrap_ci(before: np.ndarray, after: np.ndarray, resamples: int = 10_000, seed: int = 0,
                        level: float = 0.95) -> tuple[float, float]:
    """CI of mean(after - before) over queries, resampling queries with replacement."""
    if before.shape != after.shape or before.ndim != 1 or len(before) == 0:
        raise ValueError("before and after must be equally long, non-empty per-query score arrays")
    differences = after - before
    rng = np.random.default_rng(seed)
    means = differences[rng.integers(0, len(differences), size=(resamples, len(differences)))].mean(axis=1)
    low, high = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(low), float(high)
