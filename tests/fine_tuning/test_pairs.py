"""What becomes a training pair: a click against the results the user skipped above it (never a
clicked result, never one below the click, at most the configured number) and, when asked, the ones
right below it up to the next click, and the catalog's own pairs,
made from item text alone (never from a query), in any language or layout."""

from __future__ import annotations

import random

import pytest

from services.fine_tuning.training.catalog import CatalogPairs
from services.fine_tuning.training.examples import make_click_examples, skip_above, skip_next
from tests.fine_tuning.test_evaluation import session

SHOWN = [f"i{k}" for k in range(1, 9)]


def test_skip_above_takes_unclicked_results_above_the_click_nearest_first_and_at_most_the_limit() -> None:
    clicked = session("s", "q", SHOWN, {"i3", "i6"})
    assert skip_above(clicked, 6, limit=3) == ["i5", "i4", "i2"]  # i3 was clicked; nothing below 6
    assert skip_above(clicked, 6, limit=10) == ["i5", "i4", "i2", "i1"]
    assert skip_above(clicked, 3, limit=3) == ["i2", "i1"]
    assert skip_above(clicked, 1, limit=3) == []  # a top click skipped nothing
    assert skip_above(clicked, 6, limit=0) == []


def test_skip_next_takes_unclicked_results_right_below_the_click_up_to_the_next_click() -> None:
    clicked = session("s", "q", SHOWN, {"i3", "i6"})
    assert skip_next(clicked, 3, limit=1) == ["i4"]
    assert skip_next(clicked, 3, limit=5) == ["i4", "i5"]  # never past the next click (i6)
    assert skip_next(clicked, 6, limit=5) == ["i7", "i8"]
    assert skip_next(clicked, 6, limit=0) == []
    assert skip_next(session("s", "q", SHOWN, {"i8"}), 8, limit=3) == []  # nothing shown below the last


def test_below_negatives_add_the_next_unclicked_results_after_the_skipped_ones_above() -> None:
    sessions = [session("s1", "q1", SHOWN, {"i1", "i5"})]
    examples = make_click_examples(sessions, lambda q: q.text, 3, lambda _position: 1.0, 1.0, seed=0,
                                   below_negatives=2)
    by_item = {e.positive: e for e in examples}
    assert set(by_item["i1"].hard_negatives) == {"i2", "i3"}  # a top click gets negatives from below
    assert set(by_item["i5"].hard_negatives) == {"i4", "i3", "i2", "i6", "i7"}


def test_each_click_is_a_pair_whose_hard_negatives_are_its_own_skip_above_results() -> None:
    sessions = [session("s1", "q1", SHOWN, {"i1", "i5"}), session("s2", "q2", SHOWN, set())]
    examples = make_click_examples(sessions, lambda q: q.text, 3, lambda _position: 1.0, 1.0, seed=0)
    by_item = {e.positive: e for e in examples}
    assert sorted(by_item) == ["i1", "i5"]  # the session without a click gives no pair
    assert by_item["i1"].hard_negatives == ()
    assert set(by_item["i5"].hard_negatives) == {"i4", "i3", "i2"}
    assert by_item["i5"].related == {"i1", "i5"}
    # negative_downsampling keeps a share of them, never more than there are.
    halved = make_click_examples(sessions, lambda q: q.text, 3, lambda _position: 1.0, 0.5, seed=0)
    five = next(e for e in halved if e.positive == "i5")
    assert len(five.hard_negatives) == 2 and set(five.hard_negatives) <= {"i4", "i3", "i2"}


ITEMS = {
    "a": "The committee approved the new budget after a long debate about schools and roads in the city",
    "b": "Compact stainless steel kettle with a one litre capacity, auto shut-off and a blue indicator light",
    "c": "東京は日本の首都であり、世界有数の大都市である。多くの人々が住んでいる。",  # no spaces
    "d": "too short",
    "e": b"\x89PNG not text",  # an image item gives no pair
}


def test_catalog_pairs_are_spans_of_each_items_own_text_against_that_item() -> None:
    pairs = CatalogPairs(share=10.0, weight=0.25, min_tokens=3, max_tokens=6)
    examples = pairs.examples(ITEMS, [], click_pairs=100, seed=0)
    assert sorted(e.positive for e in examples) == ["a", "b", "c"]  # d is too short, e is not text
    for example in examples:
        text = ITEMS[example.positive]
        assert example.query in text and example.query != text
        assert example.related == {example.positive} and example.hard_negatives == ()
        assert example.weight == 0.25
    spaced = {e.positive: e.query for e in examples if e.positive in "ab"}
    assert all(3 <= len(query.split()) <= 6 for query in spaced.values())
    characters = next(e.query for e in examples if e.positive == "c")
    assert 3 <= len(characters) <= 6  # a text without spaces is cut in characters


def test_catalog_spans_are_as_long_as_the_training_queries_unless_told_otherwise() -> None:
    queries = ["kettle", "steel kettle"]  # one or two words, as the batch's users type them
    examples = CatalogPairs(share=10.0).examples(ITEMS, queries, click_pairs=100, seed=0)
    spaced = [e.query for e in examples if e.positive in "ab"]
    assert len(spaced) == 2 and all(1 <= len(query.split()) <= 2 for query in spaced)


def test_catalog_pairs_are_bounded_by_their_share_of_the_click_pairs_and_repeatable() -> None:
    pairs = CatalogPairs(share=0.5, min_tokens=3, max_tokens=3)
    assert len(pairs.examples(ITEMS, [], click_pairs=2, seed=0)) == 1
    assert pairs.examples(ITEMS, [], click_pairs=4, seed=3) == pairs.examples(ITEMS, [], click_pairs=4, seed=3)
    assert pairs.span("one two three four five six", 3, random.Random(0)) is not None
    assert pairs.span("one two three four five", 3, random.Random(0)) is None  # the span would be most of it


def test_invalid_catalog_settings_are_refused_naming_each_bad_value() -> None:
    with pytest.raises(ValueError, match=r"invalid share=0, weight=2\.0, max_tokens=1"):
        CatalogPairs(share=0, weight=2.0, min_tokens=2, max_tokens=1)
    with pytest.raises(ValueError, match=r"invalid max_tokens=None"):
        CatalogPairs(min_tokens=2)
