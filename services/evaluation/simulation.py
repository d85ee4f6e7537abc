"""The click simulator of EVALUATION.md: train/test split of queries, a production ranker's top K,
and a position-based click model, P(click at k) = (1/k)^eta * (eps + (1 - eps)(2^g - 1)/(2^g_max - 1))."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from services.api.embedding_studio.v1 import clickstream_pb2 as pb
from services.evaluation.datasets import EvalDataset, Query
from services.fine_tuning.data import SessionWithEvents


@dataclass(frozen=True)
class SimulatedResult:
    item_id: str
    score: float  # the ranker's cosine score, sent as the result's `rank`


@dataclass(frozen=True)
class SimulatedSession:
    session_id: str
    query: Query
    results: list[SimulatedResult]  # position 1 first
    clicked_positions: list[int]  # 1-based

    @property
    def is_irrelevant(self) -> bool:
        return not self.clicked_positions


def split_queries(queries: Sequence[Query], test_ratio: float = 0.2, seed: int = 0) -> tuple[list[Query], list[Query]]:
    if not 0 < test_ratio < 1:
        raise ValueError(f"test_ratio must lie strictly between 0 and 1, not {test_ratio}")
    shuffled = list(queries)
    random.Random(seed).shuffle(shuffled)
    n_test = max(1, round(len(shuffled) * test_ratio))
    return shuffled[n_test:], shuffled[:n_test]


def click_probability(position: int, grade: int, max_grade: int, eta: float = 1.0, epsilon: float = 0.1) -> float:
    relevance = (2**grade - 1) / (2**max_grade - 1)
    return (1.0 / position) ** eta * (epsilon + (1 - epsilon) * relevance)


def simulate_sessions(
    dataset: EvalDataset,
    train_queries: Sequence[Query],
    ranked_indices: np.ndarray,
    ranked_scores: np.ndarray,
    sessions: int,
    seed: int = 0,
    eta: float = 1.0,
    epsilon: float = 0.1,
) -> list[SimulatedSession]:
    """`ranked_indices`/`ranked_scores`: the ranker's top K items for each train query, in that order."""
    if len(ranked_indices) != len(train_queries):
        raise ValueError("one ranking per train query is needed")
    rng = random.Random(seed)
    max_grade = dataset.max_grade
    simulated = []
    for number in range(sessions):
        q = rng.randrange(len(train_queries))
        query = train_queries[q]
        results = [SimulatedResult(dataset.items[i].id, float(s))
                   for i, s in zip(ranked_indices[q], ranked_scores[q], strict=True)]
        clicks = [position for position, result in enumerate(results, start=1)
                  if rng.random() < click_probability(position, query.relevant.get(result.item_id, 0), max_grade,
                                                      eta, epsilon)]
        simulated.append(SimulatedSession(f"sim-{seed}-{number}", query, results, clicks))
    return simulated


def register_request(session: SimulatedSession, created_at: int = 0) -> pb.RegisterSessionRequest:
    """The session as a search backend would send it: results with the ranker's scores, clicks as events."""
    return pb.RegisterSessionRequest(
        session_id=session.session_id,
        search_query=session.query.text,
        search_results=[pb.SearchResult(object_id=r.item_id, rank=r.score) for r in session.results],
        created_at=created_at,
        events=[pb.Event(event_id=f"click-{p}", object_id=session.results[p - 1].item_id, created_at=created_at)
                for p in session.clicked_positions],
    )


def as_clickstream(sessions: Sequence[SimulatedSession], created_at: int = 0) -> list[SessionWithEvents]:
    """The sessions as ingest would hand them to a plugin (for benchmarks and tests that skip ingest)."""
    clickstream = []
    for session in sessions:
        request = register_request(session, created_at)
        clickstream.append(SessionWithEvents.from_proto(pb.Session(
            session_id=request.session_id, search_query=request.search_query,
            search_results=request.search_results, created_at=created_at, events=request.events)))
    return clickstream
