"""Training pairs from clicks, each with the query, the clicked item, the results the user skipped above
the click (`skip_above`) and, optionally, the ones right below it (`skip_next`) as hard negatives, and
a weight, in one of two ways
(`FineTuningSettings.click_weighting`):

- `make_judged_examples` ("posterior"): one example per query and clicked item, weighted by the click
  model's probability that the item is relevant given every time the batch showed it for that query,
  clicked or skipped. A pair clicked in ten sessions teaches once, not ten times (the easy queries users
  search again and again would otherwise outweigh the rest), and a click that other sessions contradict
  weighs little.
- `make_click_examples`: each click of a not-irrelevant session is one example, weighted by its event
  weight times what the weighting says of the *position* it happened at. A click weighted 0 is no
  example."""

from __future__ import annotations

import random
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

from services.fine_tuning.training.click_model import PositionClickModel
from services.fine_tuning.training.protocols import QueryRetriever, TrainingSession


@dataclass(frozen=True)
class ClickExample:
    query: Any  # the model's query input (text for text-to-text)
    positive: str  # item id
    hard_negatives: tuple[str, ...]  # item ids, shown and not clicked
    related: frozenset[str]  # every item clicked in the session: never a negative for this example
    weight: float


def skip_above(session: TrainingSession, position: int, limit: int) -> list[str]:
    """The results shown above `position` that the session did not click, nearest to it first, at most
    `limit`: a user who clicked at `position` examined them on the way down and passed them over, so
    the click says it beats them ("click > skip above", Joachims, KDD 2002). Nothing below the click
    and no clicked result is ever among them."""
    above = sorted((r for r in session.results if r.position < position and not r.is_click),
                   key=lambda r: r.position, reverse=True)
    return [r.item_id for r in above[:limit]]


def skip_next(session: TrainingSession, position: int, limit: int) -> list[str]:
    """The results right below `position` that the session did not click, nearest first, at most
    `limit`, and none past the next click: a user who clicked at `position` most likely saw the next
    result and did not take it ("click > no-click next", Joachims et al., SIGIR 2005). Weaker evidence
    than a skip above (the user may have stopped reading at the click), so it is asked for apart."""
    later_clicks = [r.position for r in session.results if r.is_click and r.position > position]
    stop = min(later_clicks, default=None)
    below = sorted((r for r in session.results
                    if r.position > position and (stop is None or r.position < stop) and not r.is_click),
                   key=lambda r: r.position)
    return [r.item_id for r in below[:limit]]


def _negatives(session: TrainingSession, position: int, above: int, below: int) -> list[str]:
    return skip_above(session, position, above) + (skip_next(session, position, below) if below else [])


def _downsampled(rng: random.Random, negatives: list[str], share: float) -> list[str]:
    """`share` of `negatives` (at least one of a non-empty list), sampled without replacement."""
    return rng.sample(negatives, max(1, round(len(negatives) * share))) if negatives else []


def make_click_examples(sessions: Sequence[TrainingSession], retriever: QueryRetriever, hard_negatives: int,
                        position_weight: Callable[[int], float], negative_downsampling: float, seed: int,
                        below_negatives: int = 0) -> list[ClickExample]:
    """A click's hard negatives are its `skip_above` results (at most `hard_negatives`) and its
    `skip_next` ones (at most `below_negatives`), of which `negative_downsampling` keeps that share."""
    rng = random.Random(seed)
    examples = []
    for session in sessions:
        if session.is_irrelevant:
            continue
        clicked = [r for r in session.results if r.is_click]
        if not clicked:
            continue
        related = frozenset(r.item_id for r in clicked)
        query = retriever(session.query)
        for result in clicked:
            negatives = tuple(_downsampled(
                rng, _negatives(session, result.position, hard_negatives, below_negatives), negative_downsampling))
            weight = result.event_weight * position_weight(result.position)
            if weight > 0:
                examples.append(ClickExample(query, result.item_id, negatives, related, weight))
    return examples


@dataclass
class _Judged:
    query: Any
    impressions: dict[str, list[tuple[int, bool]]]  # item id -> (position, clicked) per showing
    event_weights: dict[str, list[float]]  # clicked item id -> its clicks' event weights
    skipped: list[str]  # every click's skip-above results


def make_judged_examples(sessions: Sequence[TrainingSession], retriever: QueryRetriever, hard_negatives: int,
                         click_model: PositionClickModel, negative_downsampling: float, seed: int,
                         below_negatives: int = 0) -> list[ClickExample]:
    """One example per query and item clicked for it in `sessions`, weighted by
    `click_model.relevance_posterior` over every showing of the item for the query times its clicks' mean
    event weight. Sessions count as one query when the retriever gives equal (hashable) queries. Every
    session's results count as showings; a session marked irrelevant counts its clicks as skips (the
    user's mark wins). Hard negatives come from the `skip_above` (and `skip_next`) results of the
    query's clicks; the items clicked for the query are never its negatives."""
    rng = random.Random(seed)
    judged: dict[Hashable, _Judged] = {}
    for number, session in enumerate(sessions):
        query = retriever(session.query)
        try:
            key: Hashable = ("query", query)
            hash(key)
        except TypeError:  # an unhashable query input: this session stands alone
            key = ("session", number)
        entry = judged.setdefault(key, _Judged(query, {}, {}, []))
        clicks = not session.is_irrelevant
        for result in session.results:
            click = clicks and result.is_click
            entry.impressions.setdefault(result.item_id, []).append((result.position, click))
            if click:
                entry.event_weights.setdefault(result.item_id, []).append(result.event_weight)
                entry.skipped.extend(_negatives(session, result.position, hard_negatives, below_negatives))
    examples = []
    for entry in judged.values():
        if not entry.event_weights:
            continue
        related = frozenset(entry.event_weights)
        pool = _downsampled(rng, list(dict.fromkeys(i for i in entry.skipped if i not in related)),
                            negative_downsampling)
        for item_id, event_weights in entry.event_weights.items():
            weight = (click_model.relevance_posterior(entry.impressions[item_id])
                      * sum(event_weights) / len(event_weights))
            if weight > 0:
                negatives = tuple(rng.sample(pool, min(hard_negatives, len(pool))))
                examples.append(ClickExample(entry.query, item_id, negatives, related, weight))
    return examples
