"""What the training code needs of the data it is handed, as Protocols: any ranking dataset, session and
retriever with these attributes trains (the shipped ones are `services.fine_tuning.data`'s
`RankingData`, `ClickstreamSession` and the retrievers), so the training code never reads `Any`."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Protocol


class ShownResult(Protocol):
    """One result a session showed."""

    item_id: str
    position: int  # 1 for the first result shown
    is_click: bool
    event_weight: float  # the click's weight (1 for a plain click); 0 when not clicked


class TrainingSession(Protocol):
    """One search session: its query (the retriever turns it into the model's input) and results."""

    query: Any
    results: Sequence[ShownResult]
    is_irrelevant: bool


class ItemInputs(Protocol):
    """Item id -> the model's item input (text, an image, ...), for every item the sessions show."""

    def __getitem__(self, item_id: str) -> Any: ...

    def __iter__(self) -> Iterator[str]: ...

    def __len__(self) -> int: ...


class RankingDataset(Protocol):
    """The train and test sessions of a batch and the items they show (`prepare_data`'s result)."""

    train: Sequence[TrainingSession]
    test: Sequence[TrainingSession]
    items: ItemInputs


class QueryRetriever(Protocol):
    """Turns a session's query into the model's query input."""

    def __call__(self, query: Any) -> Any: ...
