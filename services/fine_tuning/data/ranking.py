"""`RankingData`, what `prepare_data` returns: the train and test sessions and the items they show, and
its open on-disk form (an Arrow table of sessions; the items' table is `ItemStorage.to_arrow`)."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from services.fine_tuning.data.parser import ClickstreamSession, QueryItem, SearchResult
from services.fine_tuning.data.storage import ItemStorage

SPLITS = ("train", "test")

_RESULT = pa.struct([
    ("item_id", pa.string()),
    ("position", pa.int32()),
    ("rank", pa.float64()),
    ("is_click", pa.bool_()),
    ("event_weight", pa.float64()),
    ("item_info", pa.string()),  # JSON: meta is free-form
])
SESSIONS_SCHEMA = pa.schema([
    ("split", pa.string()),
    ("session_id", pa.string()),
    ("query", pa.string()),  # JSON of QueryItem.to_dict()
    ("is_irrelevant", pa.bool_()),
    ("created_at", pa.int64()),
    ("results", pa.list_(_RESULT)),
])


@dataclass
class RankingData:
    """`train` and `test` sessions (no query on both sides) and `items`: id -> the model's item input for
    every item any of them shows. The query's model input is `retriever(session.query)`."""

    train: list[ClickstreamSession]
    test: list[ClickstreamSession]
    items: ItemStorage

    def sessions_table(self) -> pa.Table:
        rows = [
            {"split": split, "session_id": s.session_id, "query": json.dumps(s.query.to_dict()),
             "is_irrelevant": s.is_irrelevant, "created_at": s.created_at,
             "results": [{"item_id": r.item_id, "position": r.position, "rank": r.rank, "is_click": r.is_click,
                          "event_weight": r.event_weight, "item_info": json.dumps(r.item_info)} for r in s.results]}
            for split, sessions in (("train", self.train), ("test", self.test))
            for s in sessions
        ]
        return pa.Table.from_pylist(rows, schema=SESSIONS_SCHEMA)

    @classmethod
    def from_tables(cls, sessions: pa.Table, items: ItemStorage, query_item_type: type[QueryItem],
                    search_result_type: type[SearchResult]) -> RankingData:
        """Rebuilds the sessions with the plugin's own query item and search result types."""
        splits: dict[str, list[ClickstreamSession]] = {name: [] for name in SPLITS}
        # Read column by column (flat Python lists are far cheaper than one dict per nested row), and
        # decode each distinct item meta once: it repeats in every session that shows the item.
        nested = sessions.column("results").combine_chunks()
        offsets = nested.offsets.to_pylist()
        flat = nested.flatten()
        fields = {name: flat.field(name).to_pylist() for name in
                  ("item_id", "position", "rank", "is_click", "event_weight", "item_info")}
        decoded: dict[str, dict[str, Any]] = {}
        for text in set(fields["item_info"]):
            decoded[text] = json.loads(text)
        results = [search_result_type(item_id=i, position=p, rank=r, is_click=c, event_weight=w,
                                      item_info=dict(decoded[m]))
                   for i, p, r, c, w, m in zip(*fields.values(), strict=True)]
        columns = [sessions.column(name).to_pylist()
                   for name in ("split", "session_id", "query", "is_irrelevant", "created_at")]
        for n, (split, session_id, query, is_irrelevant, created_at) in enumerate(zip(*columns, strict=True)):
            splits[split].append(ClickstreamSession(
                session_id=session_id, query=query_item_type.from_dict(json.loads(query)),
                results=results[offsets[n]:offsets[n + 1]], is_irrelevant=is_irrelevant, created_at=created_at))
        return cls(train=splits["train"], test=splits["test"], items=items)


def sample_negatives(session: ClickstreamSession, count: int, rng: random.Random) -> list[SearchResult]:
    """Up to `count` distinct shown-but-not-clicked results of `session`, drawn without replacement
    (the reference drew with replacement, so a negative could count twice)."""
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    candidates = session.not_clicked
    return rng.sample(candidates, min(count, len(candidates)))
