"""The parser's rules (irrelevant, weights, positions) and the leak-free, seeded split."""

from __future__ import annotations

import random

import pytest

from services.api.embedding_studio.v1 import clickstream_pb2 as pb
from services.fine_tuning.data import (
    AWSS3ClickstreamParser,
    ClickstreamParser,
    ClickstreamSessionsSplitter,
    DummyEventType,
    NoUsableSessions,
    SearchResult,
    SessionWithEvents,
    TextQueryItem,
    TextQueryRetriever,
    WeightedEventType,
    sample_negatives,
)
from tests.dataprep.helpers import clickstream, raw_session

WEIGHTS = WeightedEventType({"click": 1.0, "add_to_cart": 2.0, "purchase": 3.0})


def parse(session: SessionWithEvents, event_type=DummyEventType):
    return ClickstreamParser(TextQueryItem, SearchResult, event_type).parse(session)


def test_results_keep_their_shown_order_with_1_based_positions_and_engine_scores() -> None:
    session = parse(raw_session("s", "shoes", ["a", "b", "c"], clicks={"b": "click"}))
    assert [(r.item_id, r.position, r.rank) for r in session.results] == [("a", 1, 1.0), ("b", 2, 0.9), ("c", 3, 0.8)]
    assert [r.is_click for r in session.results] == [False, True, False]
    assert session.query == TextQueryItem("shoes") and TextQueryRetriever()(session.query) == "shoes"


def test_a_session_without_clicks_is_irrelevant() -> None:
    assert parse(raw_session("s", "q", ["a", "b"])).is_irrelevant


def test_a_users_irrelevant_mark_wins_over_clicks() -> None:
    session = parse(raw_session("s", "q", ["a", "b"], clicks={"a": "click"}, irrelevant=True))
    assert session.is_irrelevant
    assert session.results[0].is_click  # the click is still recorded


def test_a_clicked_unmarked_session_is_relevant() -> None:
    assert not parse(raw_session("s", "q", ["a", "b"], clicks={"a": "click"})).is_irrelevant


def test_event_weight_is_the_highest_weight_of_the_events_on_a_result() -> None:
    raw = raw_session("s", "q", ["a", "b", "c"], clicks={"a": "click", "b": "purchase"})
    raw.events.append(raw.events[0].__class__(event_id="x", object_id="a", event_type="add_to_cart"))
    session = parse(raw, WEIGHTS)
    assert [r.event_weight for r in session.results] == [2.0, 3.0, 0.0]


def test_dummy_event_type_gives_every_event_its_one_importance() -> None:
    session = parse(raw_session("s", "q", ["a", "b"], clicks={"a": "purchase", "b": "view"}), DummyEventType(0.5))
    assert [r.event_weight for r in session.results] == [0.5, 0.5]


def test_events_of_a_type_weighing_zero_are_not_clicks() -> None:
    session = parse(raw_session("s", "q", ["a", "b"], clicks={"a": "view"}), WEIGHTS)
    assert not session.results[0].is_click and session.is_irrelevant


def test_an_event_on_an_unshown_object_is_refused_with_its_ids() -> None:
    with pytest.raises(ValueError, match="event 's-e0' is on object 'zzz'"):
        parse(raw_session("s", "q", ["a"], clicks={"zzz": "click"}))


def test_from_proto_mirrors_the_ingest_session_and_defaults_event_type_to_click() -> None:
    proto = pb.Session(session_id="s", search_query="q", user_id="u", created_at=5, is_irrelevant=True,
                       search_results=[pb.SearchResult(object_id="a", rank=0.7)],
                       events=[pb.Event(event_id="e", object_id="a", created_at=6)])
    proto.search_results[0].meta.update({"bucket": "b", "file": "a.png"})
    raw = SessionWithEvents.from_proto(proto)
    assert (raw.session_id, raw.search_query, raw.user_id) == ("s", "q", "u")
    assert (raw.created_at, raw.is_irrelevant) == (5, True)
    assert raw.search_results[0].meta == {"bucket": "b", "file": "a.png"} and raw.search_results[0].rank == 0.7
    assert raw.events[0].event_type == "click" and raw.events[0].created_at == 6


def test_s3_parser_requires_a_bucket_and_file_locator_in_each_results_meta() -> None:
    parser = AWSS3ClickstreamParser(TextQueryItem, SearchResult, DummyEventType)
    with pytest.raises(ValueError, match=r"result 'a' has no S3 locator .*missing bucket, file"):
        parser.parse(raw_session("s", "q", ["a"]))


def test_bad_parser_and_event_type_options_are_refused_naming_what_is_valid() -> None:
    with pytest.raises(ValueError, match="query_item_type must be a QueryItem subclass"):
        ClickstreamParser(str, SearchResult, DummyEventType)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="event_type must be an EventType"):
        ClickstreamParser(TextQueryItem, SearchResult, 1.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="importance must be a finite number >= 0"):
        DummyEventType(-1)
    with pytest.raises(ValueError, match="weight of 'buy'"):
        WeightedEventType({"buy": float("nan")})


def parsed(sessions=None):
    parser = ClickstreamParser(TextQueryItem, SearchResult, DummyEventType)
    return [parser.parse(s) for s in (sessions or clickstream(sessions=40, queries=10))]


def test_the_split_never_puts_one_query_on_both_sides() -> None:
    sessions = parsed()
    # "Query 3" and "query  3" are the same query.
    sessions.append(parsed([raw_session("x", "Query  3", ["item-1"], clicks={"item-1": "click"})])[0])
    train, test = ClickstreamSessionsSplitter(test_size_ratio=0.3).split(sessions)
    assert {s.query.group_key() for s in train}.isdisjoint({s.query.group_key() for s in test})
    assert len(train) + len(test) == len(sessions) and test


def test_the_split_is_reproducible_for_a_seed_and_changes_with_it() -> None:
    sessions = parsed()

    def ids(seed: int) -> list[str]:
        return [s.session_id for s in ClickstreamSessionsSplitter(random_state=seed).split(sessions)[1]]

    assert ids(1) == ids(1)
    assert any(ids(1) != ids(seed) for seed in range(2, 6))


def test_the_test_side_holds_about_the_asked_share_of_sessions() -> None:
    _, test = ClickstreamSessionsSplitter(test_size_ratio=0.2).split(parsed())
    assert 0.2 <= len(test) / 40 <= 0.3


def test_a_time_ordered_split_sends_the_newest_queries_to_test() -> None:
    # Each query's 4 sessions are contiguous in time, and the queries are listed out of time order.
    sessions = parsed([raw_session(f"s{n}", f"query {n // 4}", ["a", "b"], clicks={"a": "click"}, created_at=n)
                       for n in reversed(range(40))])
    _, test = ClickstreamSessionsSplitter(test_size_ratio=0.2, time_ordered=True).split(sessions)
    assert sorted(s.created_at for s in test) == list(range(32, 40))


def test_a_split_needs_two_distinct_queries() -> None:
    one_query = parsed([raw_session(f"s{i}", "same", ["a"], clicks={"a": "click"}) for i in range(3)])
    with pytest.raises(NoUsableSessions, match="at least 2 distinct queries"):
        ClickstreamSessionsSplitter().split(one_query)


def test_splitter_options_are_checked() -> None:
    with pytest.raises(ValueError, match=r"test_size_ratio must be in \(0, 1\)"):
        ClickstreamSessionsSplitter(test_size_ratio=1.0)
    with pytest.raises(ValueError, match="random_state must be an int"):
        ClickstreamSessionsSplitter(random_state=None)


def test_negatives_are_sampled_without_replacement() -> None:
    session = parsed([raw_session("s", "q", [f"i{k}" for k in range(6)], clicks={"i0": "click"})])[0]
    rng = random.Random(0)
    for _ in range(50):
        negatives = sample_negatives(session, 4, rng)
        assert len({r.item_id for r in negatives}) == 4 and all(not r.is_click for r in negatives)
    assert len(sample_negatives(session, 99, rng)) == 5
