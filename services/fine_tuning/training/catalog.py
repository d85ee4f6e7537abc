"""The catalog as a second source of signal: self-supervised training pairs made from the dataset's own
items, mixed with the click pairs of a run.

Clicks say little about the queries users rarely get right; the items' text can still teach the model
the catalog's language. A pair's query is a random span of an item's text and its positive is the item
itself, the rest of the batch its negatives, as the click pairs' are: the Inverse Cloze Task (Lee, Chang
and Toutanova, ACL 2019) with the span kept in the item, or a pseudo-query made from the item alone, as
GPL (Wang et al., NAACL 2022) makes them with a generator. Nothing here reads a test query, and nothing
assumes a language or a layout: a span is a run of whitespace-separated tokens, or of characters for a
text written without spaces; an item that is not text (an image) gives no pair.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from services.fine_tuning.training.examples import ClickExample


@dataclass(frozen=True)
class CatalogPairs:
    """How many catalog pairs a run mixes in, how long their queries are, and how much each weighs.

    Args:
        share: catalog pairs per click pair (> 0; default 0.5): a run over 1,000 click pairs adds 500
            catalog pairs, one per item at most, the items drawn at random. It bounds the extra work.
        weight: each catalog pair's weight, where a click pair weighs its click confidence (at most 1
            for the default weighting); in (0, 1], default 0.5.
        min_tokens, max_tokens: a span's length in tokens (whitespace-separated words, or characters
            for a text written without spaces), at most half the text; 1 <= min_tokens <= max_tokens.
            By default (None) a span is as long as a query of the batch's training side drawn at random
            (counted the same way), so the pseudo-queries look like the catalog's real ones: a word or
            two for a dictionary, a sentence for news. A text shorter than twice the span gives no pair.
    """

    share: float = 0.5
    weight: float = 0.5
    min_tokens: int | None = None
    max_tokens: int | None = None

    def __post_init__(self) -> None:
        low, high = self.min_tokens, self.max_tokens
        checks = {"share": self.share > 0, "weight": 0 < self.weight <= 1,
                  "min_tokens": low is None or low >= 1,
                  "max_tokens": (high is None) == (low is None) and (high is None or high >= low)}
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"CatalogPairs: invalid {', '.join(f'{n}={getattr(self, n)!r}' for n in bad)}")

    def config(self) -> dict[str, Any]:
        return asdict(self)

    def span(self, text: str, length: int, rng: random.Random) -> str | None:
        """A random span of `length` tokens of `text`, or None when the text has fewer than twice that."""
        tokens, joiner = _tokens(text)
        if length < 1 or len(tokens) < 2 * length:
            return None
        start = rng.randrange(len(tokens) - length + 1)
        return joiner.join(tokens[start:start + length])

    def examples(self, items: Mapping[str, Any], queries: Sequence[Any], click_pairs: int, seed: int
                 ) -> list[ClickExample]:
        """Up to `share * click_pairs` pairs, each of a different item: (a span of its text, the item).
        `queries`: the training side's query inputs, whose lengths the spans follow (text ones only)."""
        rng = random.Random(seed)
        texts = [(item_id, item) for item_id, item in items.items() if isinstance(item, str)]
        lengths = [len(_tokens(q)[0]) for q in queries if isinstance(q, str)] or [1]
        wanted = min(len(texts), round(self.share * click_pairs))
        examples = []
        for item_id, text in rng.sample(texts, len(texts)):
            if len(examples) >= wanted:
                break
            if self.min_tokens is not None and self.max_tokens is not None:
                length = rng.randint(self.min_tokens, self.max_tokens)
            else:
                length = rng.choice(lengths)
            query = self.span(text, length, rng)
            if query is not None:
                examples.append(ClickExample(query, item_id, (), frozenset({item_id}), self.weight))
        return examples


def _tokens(text: str) -> tuple[list[str], str]:
    """`text` as whitespace-separated words, or as characters when it has no whitespace; and the joiner."""
    words = text.split()
    return (words, " ") if len(words) > 1 else (list(text.strip()), "")
