"""The data pipeline of a plugin, in-process: parse, split, check the queries, load the shown items,
produce the item storage. `prepare_data` (in `seam`) runs it, or returns a stored result instead."""

from __future__ import annotations

from collections.abc import Sequence

from services.fine_tuning.data.clickstream import SessionWithEvents
from services.fine_tuning.data.errors import DatasetError, MissingItems, NoUsableSessions
from services.fine_tuning.data.loader import DataLoader
from services.fine_tuning.data.parser import ClickstreamParser, SearchResult
from services.fine_tuning.data.ranking import RankingData
from services.fine_tuning.data.retriever import QueryRetriever
from services.fine_tuning.data.splitter import ClickstreamSessionsSplitter
from services.fine_tuning.data.storage import ItemStorageProducer


def run_pipeline(clickstream: Sequence[SessionWithEvents], parser: ClickstreamParser,
                 splitter: ClickstreamSessionsSplitter, retriever: QueryRetriever, loader: DataLoader,
                 storage_producer: ItemStorageProducer) -> RankingData:
    if not clickstream:
        raise NoUsableSessions("the batch has no sessions")
    try:
        sessions = [parser.parse(s) for s in clickstream]
    except ValueError as error:
        raise DatasetError(f"cannot parse the clickstream: {error}") from error
    if not any(not s.is_irrelevant for s in sessions):
        raise NoUsableSessions(f"no usable sessions: all {len(sessions)} sessions are irrelevant "
                               f"(marked so or without a click), so there is nothing to learn from")
    train, test = splitter.split(sessions)
    for session in sessions:
        try:
            retriever(session.query)
        except ValueError as error:
            raise DatasetError(f"session {session.session_id!r}: the query retriever cannot use its query: "
                               f"{error}") from error
    shown: dict[str, SearchResult] = {}
    for session in sessions:
        for result in session.results:
            shown.setdefault(result.item_id, result)
    items = storage_producer(loader.load(list(shown.values())))
    # A custom loader may return less than asked without raising; a dataset never silently lacks items.
    missing = [item_id for item_id in shown if item_id not in items]
    if missing:
        raise MissingItems(missing, f"the loader's output ({type(loader).__name__})")
    return RankingData(train=train, test=test, items=items)
