"""Team-draft interleaving (Radlinski, Kurup and Joachims, CIKM 2008): one list merged from two
rankings of the same search, each result labelled with the model that contributed it, so that the
clicks on it say which model's results users preferred.

    from services.client.interleaving import team_draft

    merged = team_draft(plan.experiment_id, session_id, champion_ids, challenger_ids, k=10)
    results = [SearchResult(object_id=r.object_id, team=r.team) for r in merged]

The merge is deterministic from the experiment and session ids (a retry shows the same list); the
registry's `Interleave` RPC runs this same function for backends not written in Python, and ingest
credits a session to the team whose results got more clicks (`session_winner`)."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from services.api.embedding_studio.v1.clickstream_pb2 import TEAM_CHALLENGER, TEAM_CHAMPION, TEAM_UNSPECIFIED, Team


@dataclass(frozen=True)
class Interleaved:
    object_id: str
    team: Team  # TEAM_CHAMPION or TEAM_CHALLENGER


def _duplicate(ranking: Sequence[str]) -> str | None:
    seen: set[str] = set()
    for object_id in ranking:
        if object_id in seen:
            return object_id
        seen.add(object_id)
    return None


def team_draft(experiment_id: str, session_id: str, champion: Sequence[str], challenger: Sequence[str],
               k: int) -> list[Interleaved]:
    """Merges two rankings (best first, ids unique in each) into at most `k` results.

    Each round, the team with fewer picks so far picks next (a fair coin, seeded by the experiment and
    session ids, decides when both have as many), taking its highest-ranked result not yet in the list;
    a team whose ranking is used up leaves the rest to the other. No id appears twice.

    Raises:
        ValueError: `k` below 1, or an id twice in one ranking.
    """
    if k < 1:
        raise ValueError(f"k is {k}; the merged list needs at least 1 result")
    for name, ranking in (("champion", champion), ("challenger", challenger)):
        if (repeated := _duplicate(ranking)) is not None:
            raise ValueError(f"the {name} ranking holds {repeated!r} twice; object ids must be unique")
    seed = hashlib.sha256(f"{experiment_id}\x00{session_id}".encode()).digest()
    coin = random.Random(int.from_bytes(seed[:8], "big"))
    rankings = {TEAM_CHAMPION: list(champion), TEAM_CHALLENGER: list(challenger)}
    cursors = {TEAM_CHAMPION: 0, TEAM_CHALLENGER: 0}
    picks = {TEAM_CHAMPION: 0, TEAM_CHALLENGER: 0}
    shown: set[str] = set()
    merged: list[Interleaved] = []

    def next_of(team: Team) -> str | None:
        ranking = rankings[team]
        while cursors[team] < len(ranking) and ranking[cursors[team]] in shown:
            cursors[team] += 1
        return ranking[cursors[team]] if cursors[team] < len(ranking) else None

    while len(merged) < k:
        available = {team: found for team in (TEAM_CHAMPION, TEAM_CHALLENGER) if (found := next_of(team)) is not None}
        if not available:
            break
        if len(available) == 1:
            [team] = available
        elif picks[TEAM_CHAMPION] != picks[TEAM_CHALLENGER]:
            team = min(available, key=lambda t: picks[t])
        else:
            team = TEAM_CHAMPION if coin.random() < 0.5 else TEAM_CHALLENGER
        object_id = available[team]
        shown.add(object_id)
        picks[team] += 1
        merged.append(Interleaved(object_id, team))
    return merged


def session_winner(teams: Sequence[Team], clicked: Iterable[int]) -> Team:
    """Team-draft credit of one session: the team whose results (by position, 0 first) got more clicks;
    TEAM_UNSPECIFIED for a tie or no click. The same rule ingest counts an experiment's sessions by."""
    clicks = {TEAM_CHAMPION: 0, TEAM_CHALLENGER: 0}
    for position in set(clicked):
        clicks[teams[position]] += 1
    if clicks[TEAM_CHAMPION] == clicks[TEAM_CHALLENGER]:
        return TEAM_UNSPECIFIED
    return TEAM_CHAMPION if clicks[TEAM_CHAMPION] > clicks[TEAM_CHALLENGER] else TEAM_CHALLENGER
