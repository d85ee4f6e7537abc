"""Parsers turn a raw `SessionWithEvents` into a typed `ClickstreamSession`: a query item, the results
in shown order with their clicks and event weights, and the irrelevant flag.

Unlike the reference, a user's "irrelevant" mark is never overwritten by clicks (a session is
irrelevant when it was marked so or has no click), and event types carry weights."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

from services.fine_tuning.data.clickstream import SessionEvent, SessionWithEvents


class QueryItem(ABC):
    """What a user searched with, as the model's query side sees it."""

    @classmethod
    @abstractmethod
    def from_session(cls, session: SessionWithEvents) -> QueryItem: ...

    @abstractmethod
    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe form, stored with a dataset; `from_dict` rebuilds the item from it."""

    @classmethod
    @abstractmethod
    def from_dict(cls, data: Mapping[str, Any]) -> QueryItem: ...

    @abstractmethod
    def group_key(self) -> str:
        """Sessions with one group key are "the same query": the splitter never puts them on both sides."""


@dataclass(frozen=True)
class TextQueryItem(QueryItem):
    """A text query: the session's `search_query`."""

    text: str

    @classmethod
    def from_session(cls, session: SessionWithEvents) -> TextQueryItem:
        return cls(session.search_query)

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TextQueryItem:
        return cls(str(data["text"]))

    def group_key(self) -> str:
        # "Running  Shoes" and "running shoes" are one query for leakage purposes.
        return " ".join(self.text.casefold().split())


@dataclass(frozen=True)
class SearchResult:
    """One shown result of a parsed session.

    `position` is the 1-based place it was shown at, `rank` the engine's score, `event_weight` the
    highest weight of the events on it (0.0 without events) and `is_click` whether any of them weighs
    more than zero. `item_info` is the result's meta (for S3 items, the bucket and file).
    """

    item_id: str
    position: int
    rank: float
    is_click: bool = False
    event_weight: float = 0.0
    item_info: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class EventType(ABC):
    """How much an event says about the result it is on: its weight (0 = not a click)."""

    @abstractmethod
    def weight(self, event: SessionEvent) -> float: ...


class DummyEventType(EventType):
    """Every event weighs `importance` (default 1.0), whatever its type, as in the seed."""

    def __init__(self, importance: float = 1.0) -> None:
        if not math.isfinite(importance) or importance < 0:
            raise ValueError(f"importance must be a finite number >= 0, got {importance!r}")
        self.importance = float(importance)

    def weight(self, event: SessionEvent) -> float:
        return self.importance


class WeightedEventType(EventType):
    """Weights by `event_type`, e.g. `{"click": 1.0, "add_to_cart": 2.0, "purchase": 3.0}`; a type not
    in the table weighs `default` (0.0: ignored)."""

    def __init__(self, weights: Mapping[str, float], default: float = 0.0) -> None:
        for name, value in {**weights, "default": default}.items():
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"weight of {name!r} must be a finite number >= 0, got {value!r}")
        self.weights = dict(weights)
        self.default = float(default)

    def weight(self, event: SessionEvent) -> float:
        return self.weights.get(event.event_type, self.default)


@dataclass(frozen=True)
class ClickstreamSession:
    """A parsed session: `results` in shown order; irrelevant when marked so or without a click."""

    session_id: str
    query: QueryItem
    results: list[SearchResult]
    is_irrelevant: bool
    created_at: int

    @property
    def clicked(self) -> list[SearchResult]:
        return [r for r in self.results if r.is_click]

    @property
    def not_clicked(self) -> list[SearchResult]:
        return [r for r in self.results if not r.is_click]


class ClickstreamParser:
    """Parses raw sessions with a plugin's query item type, search result type and event type.

    `event_type` is an `EventType` instance, or a class that can be built without arguments (the seed
    passes `DummyEventType`, i.e. every event weighs 1.0).
    """

    def __init__(self, query_item_type: type[QueryItem], search_result_type: type[SearchResult],
                 event_type: EventType | type[EventType]) -> None:
        if not (isinstance(query_item_type, type) and issubclass(query_item_type, QueryItem)):
            raise ValueError(f"query_item_type must be a QueryItem subclass such as TextQueryItem, "
                             f"got {query_item_type!r}")
        if not (isinstance(search_result_type, type) and issubclass(search_result_type, SearchResult)):
            raise ValueError(f"search_result_type must be SearchResult or a subclass, got {search_result_type!r}")
        if isinstance(event_type, type) and issubclass(event_type, EventType):
            event_type = event_type()
        if not isinstance(event_type, EventType):
            raise ValueError(f"event_type must be an EventType (e.g. DummyEventType(1.0)) or such a class, "
                             f"got {event_type!r}")
        self.query_item_type = query_item_type
        self.search_result_type = search_result_type
        self.event_type = event_type

    def parse(self, session: SessionWithEvents) -> ClickstreamSession:
        shown = {r.object_id: r for r in session.search_results}
        weights: dict[str, float] = {}
        for event in session.events:
            if event.object_id not in shown:
                raise ValueError(f"session {session.session_id!r}: event {event.event_id!r} is on object "
                                 f"{event.object_id!r}, which the session did not show")
            weights[event.object_id] = max(weights.get(event.object_id, 0.0), self.event_type.weight(event))
        results = [
            self.search_result_type(
                item_id=r.object_id, position=position, rank=r.rank, is_click=weights.get(r.object_id, 0.0) > 0,
                event_weight=weights.get(r.object_id, 0.0), item_info=self.item_info(session, r.object_id, r.meta),
            )
            for position, r in enumerate(session.search_results, start=1)
        ]
        return ClickstreamSession(
            session_id=session.session_id,
            query=self.query_item_type.from_session(session),
            results=results,
            # The user's mark wins: clicks never make a marked session relevant again.
            is_irrelevant=session.is_irrelevant or not any(r.is_click for r in results),
            created_at=session.created_at,
        )

    def item_info(self, session: SessionWithEvents, object_id: str, meta: dict[str, Any]) -> dict[str, Any]:
        """What a loader needs to find the item; here the result's meta as it came."""
        return dict(meta)


class AWSS3ClickstreamParser(ClickstreamParser):
    """Reads each result's meta as an S3 file reference: `{"bucket": ..., "file": ...}` (the seed's
    locator, which `AWSS3DataLoader` downloads)."""

    REQUIRED: ClassVar[tuple[str, ...]] = ("bucket", "file")

    def item_info(self, session: SessionWithEvents, object_id: str, meta: dict[str, Any]) -> dict[str, Any]:
        missing = [k for k in self.REQUIRED if not isinstance(meta.get(k), str) or not meta[k]]
        if missing:
            raise ValueError(f"session {session.session_id!r}: result {object_id!r} has no S3 locator in its meta "
                             f"(missing {', '.join(missing)}; expected {{\"bucket\": ..., \"file\": ...}})")
        return dict(meta)
