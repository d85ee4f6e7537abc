"""Training pairs from clicks: each click of a not-irrelevant session is one example — the session's
query, the clicked item, a few shown-but-not-clicked items as hard negatives (sampled without
replacement), and a weight: the click's event weight times what the plugin's click weighting says of
the *position* it happened at (`FineTuningSettings.click_weighting`). A click weighted 0 is no example."""

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


def make_click_examples(sessions: Sequence[Any], retriever: Callable[[Any], Any], hard_negatives: int,
                        position_weight: Callable[[int], float], negative_downsampling: float, seed: int
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
            weight = result.event_weight * position_weight(result.position)
            if weight > 0:
                examples.append(ClickExample(query, result.item_id, negatives, related, weight))
    return examples
