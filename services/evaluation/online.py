"""EVALUATION.md's simulated users in an online experiment: each search draws a train query, shows the
team-draft merge of the champion's and the challenger's top K (`services.client.interleaving`), and
clicks by the position-based click model on the true labels. The demo sends these sessions through the
real APIs; `bench/online.py` counts them directly to measure how many sessions a decision needs."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from services.api.embedding_studio.v1 import clickstream_pb2 as pb
from services.client.interleaving import Interleaved, session_winner, team_draft
from services.evaluation.datasets import Query
from services.evaluation.simulation import click_probability


@dataclass(frozen=True)
class OnlineSession:
    session_id: str
    query: Query
    results: list[Interleaved]  # position 1 first
    clicked: list[int]  # 0-based positions

    @property
    def winner(self) -> pb.Team:
        return session_winner([r.team for r in self.results], self.clicked)

    def register_request(self, experiment_id: str) -> pb.RegisterSessionRequest:
        """The session as a search backend sends it: each result with its team, the clicks as events."""
        return pb.RegisterSessionRequest(
            session_id=self.session_id, search_query=self.query.text, experiment_id=experiment_id,
            search_results=[pb.SearchResult(object_id=r.object_id, rank=float(len(self.results) - i), team=r.team)
                            for i, r in enumerate(self.results)],
            events=[pb.Event(event_id=f"click-{p + 1}", object_id=self.results[p].object_id) for p in self.clicked])


def clicks(results: Sequence[str], query: Query, max_grade: int, rng: random.Random) -> list[int]:
    """0-based positions a simulated user clicks in `results` (EVALUATION.md's click model)."""
    return [p for p, object_id in enumerate(results)
            if rng.random() < click_probability(p + 1, query.relevant.get(object_id, 0), max_grade)]


def interleaved_sessions(train: Sequence[Query], champion: Sequence[Sequence[str]],
                         challenger: Sequence[Sequence[str]], experiment_id: str, count: int, seed: int,
                         max_grade: int, k: int = 20) -> Iterator[OnlineSession]:
    """`count` searches; `champion[q]` and `challenger[q]` are the two models' rankings (item ids, best
    first) of `train[q]`."""
    rng = random.Random(seed)
    for number in range(count):
        q = rng.randrange(len(train))
        session_id = f"online-{seed}-{number}"
        merged = team_draft(experiment_id, session_id, champion[q], challenger[q], k)
        yield OnlineSession(session_id, train[q], merged, clicks([r.object_id for r in merged], train[q], max_grade,
                                                                 rng))
