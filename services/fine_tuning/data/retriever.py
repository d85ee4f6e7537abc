"""Query retrievers turn a session's query item into the model's query input."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from services.fine_tuning.data.parser import QueryItem, TextQueryItem


class QueryRetriever(ABC):
    """`retriever(query_item)` is what the model's query tower embeds."""

    @abstractmethod
    def __call__(self, query: QueryItem) -> Any: ...


class TextQueryRetriever(QueryRetriever):
    """The query's text, for text query towers."""

    def __call__(self, query: QueryItem) -> str:
        if not isinstance(query, TextQueryItem):
            raise ValueError(f"TextQueryRetriever needs TextQueryItem queries, got {type(query).__name__}")
        return query.text
