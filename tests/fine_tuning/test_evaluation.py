"""The held-out metrics the search and the promotion gate choose on: clicks are read through a
position-based click model with a noise floor, so a model that moves a relevant item the logging ranker
buried up to the top is credited for it, and the noise clicks the logging ranker's own top results
collect do not tie the metric to that ranker."""

from __future__ import annotations

import math

import pytest
import torch

from services.fine_tuning.data import SearchResult, TextQueryItem, TextQueryRetriever
from services.fine_tuning.data.parser import ClickstreamSession
from services.fine_tuning.training import HeldOutQueries

ITEMS = ["a", "b", "c", "d", "e", "f"]


def session(session_id: str, query: str, shown: list[str], clicked: set[str], irrelevant: bool = False
            ) -> ClickstreamSession:
    results = [SearchResult(item_id, position, rank=0.0, is_click=item_id in clicked,
                            event_weight=1.0 if item_id in clicked else 0.0)
               for position, item_id in enumerate(shown, start=1)]
    return ClickstreamSession(session_id, TextQueryItem(query), results, irrelevant or not clicked, 0)


def ranker(orders: dict[str, list[str]]):
    """Encoders whose similarities rank each query's items in the given order (items are one-hot)."""
    def encode_queries(queries: list[str]) -> torch.Tensor:
        rows = []
        for query in queries:
            row = torch.zeros(len(ITEMS))
            for place, item_id in enumerate(orders[query]):
                row[ITEMS.index(item_id)] = len(ITEMS) - place
            rows.append(row / row.norm())
        return torch.stack(rows)

    def encode_items(item_ids: list[str]) -> torch.Tensor:
        return torch.eye(len(ITEMS))[[ITEMS.index(i) for i in item_ids]]

    return encode_queries, encode_items


SESSIONS = [
    session("s1", "q1", ["a", "b", "c", "d", "e"], {"e"}),  # the logging ranker buried q1's item at 5
    session("s2", "q2", ["a", "b", "c"], {"a"}),
]
LOGGING = {"q1": ["a", "b", "c", "d", "e", "f"], "q2": ["a", "b", "c", "d", "e", "f"]}
BETTER = {"q1": ["e", "a", "b", "c", "d", "f"], "q2": ["b", "a", "c", "d", "e", "f"]}


def dcg(rank: int) -> float:
    return 1 / math.log2(1 + rank) if rank <= 10 else 0.0


def expected(relevance_and_ranks: list[tuple[float, int]], ideal: float) -> float:
    return sum(r * dcg(k) for r, k in relevance_and_ranks) / ideal


def test_shown_results_are_judged_by_position_debiased_noise_corrected_clicks() -> None:
    held_out = HeldOutQueries(SESSIONS, ITEMS, TextQueryRetriever(), examination_eta=1.0, click_noise=0.1)
    skipped = -0.1 / 0.9  # shown, not clicked
    # s1's click at position 5 estimates a relevance of (5 - 0.1) / 0.9; s2's at position 1, 1.0.
    logging = [(skipped, 1), (skipped, 2), (skipped, 3), (skipped, 4), (4.9 / 0.9, 5),
               (1.0, 1), (skipped, 2), (skipped, 3)]
    better = [(skipped, 2), (skipped, 3), (skipped, 4), (skipped, 5), (4.9 / 0.9, 1),
              (1.0, 2), (skipped, 1), (skipped, 3)]
    ideal = 4.9 / 0.9 * dcg(1) + 1.0 * dcg(1)  # each query's clicked item first
    assert held_out.score(*ranker(LOGGING)).ndcg_at_10 == pytest.approx(expected(logging, ideal))
    assert held_out.score(*ranker(BETTER)).ndcg_at_10 == pytest.approx(expected(better, ideal))
    assert held_out.score(*ranker(BETTER)).ndcg_at_10 > held_out.score(*ranker(LOGGING)).ndcg_at_10
    assert held_out.score(*ranker(BETTER)).queries == 2


def test_without_noise_or_position_bias_each_click_is_one_judgment() -> None:
    held_out = HeldOutQueries(SESSIONS, ITEMS, TextQueryRetriever(), examination_eta=0.0, click_noise=0.0)
    scores = held_out.score(*ranker(LOGGING))
    assert scores.ndcg_at_10 == pytest.approx((dcg(5) + dcg(1)) / 2)
    assert scores.mrr_at_10 == pytest.approx((1 / 5 + 1) / 2)
    assert scores.recall_at == {10: 1.0, 100: 1.0}


def test_scores_lie_in_zero_to_one_and_the_clicked_items_first_score_highest() -> None:
    held_out = HeldOutQueries(SESSIONS, ITEMS, TextQueryRetriever(), click_noise=0.1)
    # Clicked first, then the never-shown item, then the skipped ones (which still cost a little).
    clicked_first = held_out.score(*ranker({"q1": ["e", "f", "a", "b", "c", "d"],
                                            "q2": ["a", "f", "b", "c", "d", "e"]})).ndcg_at_10
    logging, better = (held_out.score(*ranker(r)).ndcg_at_10 for r in (LOGGING, BETTER))
    assert 0 < logging < better < clicked_first <= 1
    # With much noise and no position bias, a skipped result costs as much as a click gains.
    noisy = HeldOutQueries(SESSIONS, ITEMS, TextQueryRetriever(), examination_eta=0.0, click_noise=0.5)
    worst = {"q1": ["a", "b", "c", "d", "f", "e"], "q2": ["b", "c", "d", "e", "f", "a"]}
    assert noisy.score(*ranker(worst)).ndcg_at_10 == 0.0  # below zero is reported as zero


def test_the_inverse_propensity_is_capped() -> None:
    held_out = HeldOutQueries(SESSIONS, ITEMS, TextQueryRetriever(), examination_eta=1.0, max_click_weight=2.0,
                              click_noise=0.0)
    assert held_out.score(*ranker(LOGGING)).ndcg_at_10 == pytest.approx((2 * dcg(5) + 1 * dcg(1)) / 3)


def test_irrelevant_sessions_are_not_judged_but_feed_the_distance_shift() -> None:
    sessions = [*SESSIONS, session("s3", "q3", ["a", "b"], {"a"}, irrelevant=True)]
    held_out = HeldOutQueries(sessions, ITEMS, TextQueryRetriever(), click_noise=0.1)
    scores = held_out.score(*ranker({**LOGGING, "q3": ["a", "b", "c", "d", "e", "f"]}))
    assert len(held_out) == 2
    assert scores.irrelevant_similarity > 0


def test_what_cannot_be_judged_and_bad_settings_are_refused() -> None:
    only_irrelevant = HeldOutQueries([session("s", "q", ["a"], set())], ITEMS, TextQueryRetriever())
    with pytest.raises(ValueError, match="no held-out session has a click"):
        only_irrelevant.score(*ranker({"q": ITEMS}))
    with pytest.raises(ValueError, match="examination_eta must be >= 0"):
        HeldOutQueries(SESSIONS, ITEMS, TextQueryRetriever(), examination_eta=-1.0)
    with pytest.raises(ValueError, match="max_click_weight >= 1"):
        HeldOutQueries(SESSIONS, ITEMS, TextQueryRetriever(), max_click_weight=0.5)
    with pytest.raises(ValueError, match=r"click_noise must lie in \[0, 0.9\]"):
        HeldOutQueries(SESSIONS, ITEMS, TextQueryRetriever(), click_noise=0.95)


def test_per_query_gains_sum_to_the_score_and_one_ranking_serves_every_cap() -> None:
    ranks_by_cap = {}
    for cap in (1.0, 10.0):
        held_out = HeldOutQueries(SESSIONS, ITEMS, TextQueryRetriever(), examination_eta=1.0, max_click_weight=cap,
                                  click_noise=0.1)
        ranks_by_cap[cap] = ranks = held_out.ranks(*ranker(BETTER))
        assert ranks.shape == (2, len(ITEMS)) and ranks[0][ITEMS.index("e")] == 1  # q1 ranks e first
        gains, ideals = held_out.query_gains(ranks)
        assert len(gains) == len(ideals) == 2
        assert gains.sum() / ideals.sum() == pytest.approx(held_out.score(*ranker(BETTER)).ndcg_at_10)
        # q1's click at position 5 is worth min(5, cap) before the noise correction: the ideal says so.
        assert ideals[0] == pytest.approx((min(5.0, cap) - 0.1) / 0.9 * dcg(1))
    assert (ranks_by_cap[1.0] == ranks_by_cap[10.0]).all()
