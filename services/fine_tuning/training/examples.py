"""Training pairs from clicks: each click of a not-irrelevant session is one example — the session's
query, the clicked item, a few shown-but-not-clicked items as hard negatives (sampled without
replacement), and a weight: the click's event weight times the inverse propensity of the *position* it
happened at, (position)^eta under the examination model P(examined at k) = (1/k)^eta, capped."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ClickExample:
    query: Any  # the model's query input (text for text-to-text)
    positive: str  # item id
    hard_negatives: tuple[str, ...]  # item ids, shown and not clicked
    related: frozenset[str]  # every item clicked in the session: never a negative for this example
    weight: float


def click_weight(position: int, event_weight: float, eta: float, cap: float) -> float:
    return event_weight * min(float(position) ** eta, cap)


def make_click_examples(sessions: Sequence[Any], retriever: Callable[[Any], Any], hard_negatives: int,
                        eta: float, max_weight: float, negative_downsampling: float, seed: int
                        ) -> list[ClickExample]:
    """Hard negatives come from results shown above the session's last click (or just below it), which
    the user most likely examined and skipped; `negative_downsampling` keeps that share of them."""
    rng = random.Random(seed)
    examples = []
    for session in sessions:
        if session.is_irrelevant:
            continue
        clicked = [r for r in session.results if r.is_click]
        if not clicked:
            continue
        last_click = max(r.position for r in clicked)
        related = frozenset(r.item_id for r in clicked)
        skipped = [r.item_id for r in session.results if not r.is_click and r.position <= last_click + 2]
        keep = max(1, round(len(skipped) * negative_downsampling)) if skipped else 0
        pool = rng.sample(skipped, keep)
        query = retriever(session.query)
        for result in clicked:
            negatives = tuple(rng.sample(pool, min(hard_negatives, len(pool))))
            examples.append(ClickExample(query, result.item_id, negatives, related,
                                         click_weight(result.position, result.event_weight, eta, max_weight)))
    return examples
