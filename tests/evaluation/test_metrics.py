"""The ranking metrics are trec_eval's (checked by hand and against trec_eval itself, through
ir-measures' pytrec_eval), and the bootstrap CI covers the true difference."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from services.evaluation.metrics import mrr_at, ndcg_at, paired_bootstrap_ci, recall_at, score_rankings


def test_metrics_by_hand() -> None:
    ranked = ["a", "b", "c", "d"]
    relevant = {"c": 2, "x": 1}
    dcg = 2 / math.log2(4)
    idcg = 2 / math.log2(2) + 1 / math.log2(3)
    assert ndcg_at(ranked, relevant, 10) == pytest.approx(dcg / idcg)
    assert mrr_at(ranked, relevant, 10) == pytest.approx(1 / 3)
    assert mrr_at(ranked, relevant, 2) == 0.0
    assert recall_at(ranked, relevant, 100) == pytest.approx(0.5)


def test_metrics_agree_with_trec_eval_on_random_rankings() -> None:
    import ir_measures
    from ir_measures import RR, R, nDCG

    rng = random.Random(7)
    items = [f"d{i}" for i in range(60)]
    qrels, run, rankings, judgments = {}, {}, [], []
    for q in range(40):
        relevant = {d: rng.randint(1, 3) for d in rng.sample(items, rng.randint(1, 4))}
        ranked = rng.sample(items, 50)
        qrels[f"q{q}"] = relevant
        run[f"q{q}"] = {d: 100.0 - i for i, d in enumerate(ranked)}
        rankings.append(ranked)
        judgments.append(relevant)
    expected = ir_measures.calc_aggregate([nDCG @ 10, RR @ 10, R @ 100], qrels, run)
    ours = score_rankings(rankings, judgments)
    for metric, measure in (("ndcg@10", nDCG @ 10), ("mrr@10", RR @ 10), ("recall@100", R @ 100)):
        assert float(ours[metric].mean()) == pytest.approx(expected[measure], abs=1e-9)


def test_paired_bootstrap_ci_covers_the_shift_and_is_seeded() -> None:
    rng = np.random.default_rng(0)
    before = rng.uniform(0.4, 0.8, size=400)
    after = before + 0.05 + rng.normal(0, 0.05, size=400)
    low, high = paired_bootstrap_ci(before, after, seed=1)
    assert low < 0.05 < high and low > 0
    assert paired_bootstrap_ci(before, after, seed=1) == (low, high)


def test_mismatched_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="equally long"):
        paired_bootstrap_ci(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="rankings for"):
        score_rankings([["a"]], [])
