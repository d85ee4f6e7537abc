"""The data sets and the click simulator of EVALUATION.md."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from services.evaluation.datasets import EvalDataset, Item, Query, bbc_news, load_dataset
from services.evaluation.simulation import click_probability, register_request, simulate_sessions, split_queries


def test_bbc_news_has_2127_distinct_articles_with_the_headline_as_query() -> None:
    dataset = bbc_news()
    assert len(dataset.items) == len(dataset.queries) == 2127
    first = dataset.queries[0]
    item = next(i for i in dataset.items if i.id in first.relevant)
    assert first.relevant == {item.id: 2}
    assert first.text not in item.text.splitlines()[0]  # the headline is the query, not part of the item


def test_a_data_set_round_trips_through_its_files(tmp_path: Path) -> None:
    dataset = EvalDataset([Item("a", "alpha"), Item("b", "beta")], [Query("q", "first letter", {"a": 2})])
    assert load_dataset(*dataset.write(tmp_path)) == dataset


@pytest.mark.parametrize(("items", "queries", "message"), [
    ([{"id": "a"}], [], r"items.jsonl:1: \"text\""),
    ([{"id": "a", "text": "x"}, {"id": "a", "text": "y"}], [], r"items.jsonl:2: item id 'a' repeats"),
    ([{"id": "a", "text": "x"}], [{"id": "q", "text": "t", "relevant": {"z": 1}}], r"queries.jsonl:1: .*'z'"),
    ([{"id": "a", "text": "x"}], [{"id": "q", "text": "t", "relevant": {"a": 0}}], r"queries.jsonl:1: grade"),
])
def test_a_bad_data_set_names_the_file_and_line(tmp_path: Path, items, queries, message) -> None:
    (tmp_path / "items.jsonl").write_text("".join(json.dumps(i) + "\n" for i in items))
    (tmp_path / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    with pytest.raises(ValueError, match=message):
        load_dataset(tmp_path / "items.jsonl", tmp_path / "queries.jsonl")


def test_click_probability_follows_the_position_based_model() -> None:
    assert click_probability(1, 2, 2) == pytest.approx(1.0)
    assert click_probability(4, 0, 2) == pytest.approx(0.1 / 4)
    assert click_probability(2, 1, 2) == pytest.approx(0.5 * (0.1 + 0.9 * 1 / 3))


def test_the_split_is_seeded_and_disjoint_and_sessions_are_repeatable() -> None:
    queries = [Query(f"q{i}", f"text {i}", {"a": 1}) for i in range(50)]
    train, test = split_queries(queries, 0.2, seed=3)
    assert (train, test) == split_queries(queries, 0.2, seed=3)
    assert len(test) == 10 and not {q.id for q in train} & {q.id for q in test}
    dataset = EvalDataset([Item("a", "x"), Item("b", "y"), Item("c", "z")], queries)
    ranked = np.tile(np.array([1, 0, 2]), (len(train), 1))
    scores = np.tile(np.array([0.9, 0.8, 0.1]), (len(train), 1))
    one = simulate_sessions(dataset, train, ranked, scores, 100, seed=5)
    assert one == simulate_sessions(dataset, train, ranked, scores, 100, seed=5)
    assert all(s.query in train for s in one)
    request = register_request(one[0], created_at=1_700_000_000)
    assert [r.object_id for r in request.search_results] == ["b", "a", "c"]
    assert [e.object_id for e in request.events] == [one[0].results[p - 1].item_id for p in one[0].clicked_positions]
