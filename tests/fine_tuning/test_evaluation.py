"""The held-out metrics the search and the promotion gate choose on: every click is a judgment weighted
by the inverse propensity of the position it was shown at, so a model that moves a relevant item the
logging ranker buried up to the top is credited for it, and a query's other clicked items never count
against one of its clicks."""

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
    return ClickstreamSession(session_id, TextQueryItem(query), results, irrelevant, 0)


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
    return 1 / math.log2(1 + rank)


def test_each_click_weighs_the_inverse_propensity_of_its_position() -> None:
    held_out = HeldOutQueries(SESSIONS, ITEMS, TextQueryRetriever(), examination_eta=1.0)
    logging = held_out.score(*ranker(LOGGING))
    better = held_out.score(*ranker(BETTER))
    # The click at position 5 weighs 5, the one at position 1 weighs 1.
    assert logging.ndcg_at_10 == pytest.approx((5 * dcg(5) + 1 * dcg(1)) / 6)
    assert better.ndcg_at_10 == pytest.approx((5 * dcg(1) + 1 * dcg(2)) / 6)
    assert logging.mrr_at_10 == pytest.approx((5 / 5 + 1) / 6)
    assert better.recall_at[10] == 1.0
    assert better.queries == 2


def test_eta_zero_weighs_every_click_the_same() -> None:
    held_out = HeldOutQueries(SESSIONS, ITEMS, TextQueryRetriever(), examination_eta=0.0)
    assert held_out.score(*ranker(LOGGING)).ndcg_at_10 == pytest.approx((dcg(5) + dcg(1)) / 2)


def test_weights_are_capped() -> None:
    held_out = HeldOutQueries(SESSIONS, ITEMS, TextQueryRetriever(), examination_eta=1.0, max_click_weight=2.0)
    assert held_out.score(*ranker(LOGGING)).ndcg_at_10 == pytest.approx((2 * dcg(5) + 1 * dcg(1)) / 3)


def test_a_querys_other_clicked_items_do_not_push_a_click_down() -> None:
    sessions = [session("s1", "q1", ["a", "b", "c"], {"a", "b"}), session("s2", "Q1 ", ["c", "d"], {"d"})]
    held_out = HeldOutQueries(sessions, ITEMS, TextQueryRetriever(), examination_eta=0.0)
    scores = held_out.score(*ranker({"q1": ["a", "b", "d", "c", "e", "f"]}))
    # "q1" and "Q1 " are one query; a, b and d are its clicked items and each ranks first among the rest.
    assert scores.queries == 1
    assert scores.ndcg_at_10 == pytest.approx(1.0)


def test_irrelevant_sessions_are_not_judged_but_feed_the_distance_shift() -> None:
    sessions = [*SESSIONS, session("s3", "q3", ["a", "b"], set(), irrelevant=True)]
    held_out = HeldOutQueries(sessions, ITEMS, TextQueryRetriever())
    scores = held_out.score(*ranker({**LOGGING, "q3": ["a", "b", "c", "d", "e", "f"]}))
    assert len(held_out) == 2
    assert scores.irrelevant_similarity > 0


def test_nothing_to_judge_and_bad_settings_are_refused() -> None:
    only_irrelevant = HeldOutQueries([session("s", "q", ["a"], set(), irrelevant=True)], ITEMS, TextQueryRetriever())
    with pytest.raises(ValueError, match="no held-out session has a click"):
        only_irrelevant.score(*ranker({"q": ITEMS}))
    with pytest.raises(ValueError, match="examination_eta must be >= 0"):
        HeldOutQueries(SESSIONS, ITEMS, TextQueryRetriever(), examination_eta=-1.0)
    with pytest.raises(ValueError, match="max_click_weight >= 1"):
        HeldOutQueries(SESSIONS, ITEMS, TextQueryRetriever(), max_click_weight=0.5)
