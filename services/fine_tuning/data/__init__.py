"""The data side of the fine-tuning library, with the seed's names: clickstream parsers, the leak-free
splitter, query retrievers, item loaders, the fields normalizer, item storage producers and
`prepare_data`, the seam between dataprep (which runs it) and the trainer (which gets its stored
result)."""

from services.fine_tuning.data.clickstream import SessionEvent, SessionWithEvents, ShownResult
from services.fine_tuning.data.dataset_format import DatasetKey, DatasetManifest
from services.fine_tuning.data.errors import (
    ArtifactStoreError,
    DatasetError,
    DatasetNotFound,
    ItemSourceUnavailable,
    MissingItems,
    NoUsableSessions,
    UnreadableItems,
)
from services.fine_tuning.data.loader import AWSS3DataLoader, DataLoader, ItemsSourceLoader
from services.fine_tuning.data.normalizer import DatasetFieldsNormalizer
from services.fine_tuning.data.parser import (
    AWSS3ClickstreamParser,
    ClickstreamParser,
    ClickstreamSession,
    DummyEventType,
    EventType,
    QueryItem,
    SearchResult,
    TextQueryItem,
    WeightedEventType,
)
from services.fine_tuning.data.ranking import RankingData, sample_negatives
from services.fine_tuning.data.retriever import QueryRetriever, TextQueryRetriever
from services.fine_tuning.data.seam import (
    LoadDataset,
    PublishDataset,
    prepare_data,
)
from services.fine_tuning.data.splitter import ClickstreamSessionsSplitter
from services.fine_tuning.data.storage import CLIPItemStorageProducer, ItemStorage, ItemStorageProducer
from services.fine_tuning.data.stores import DatasetStore

__all__ = [
    "AWSS3ClickstreamParser",
    "AWSS3DataLoader",
    "ArtifactStoreError",
    "CLIPItemStorageProducer",
    "ClickstreamParser",
    "ClickstreamSession",
    "ClickstreamSessionsSplitter",
    "DataLoader",
    "DatasetError",
    "DatasetFieldsNormalizer",
    "DatasetKey",
    "DatasetManifest",
    "DatasetNotFound",
    "DatasetStore",
    "DummyEventType",
    "EventType",
    "ItemSourceUnavailable",
    "ItemStorage",
    "ItemStorageProducer",
    "ItemsSourceLoader",
    "LoadDataset",
    "MissingItems",
    "NoUsableSessions",
    "PublishDataset",
    "QueryItem",
    "QueryRetriever",
    "RankingData",
    "SearchResult",
    "SessionEvent",
    "SessionWithEvents",
    "ShownResult",
    "TextQueryItem",
    "TextQueryRetriever",
    "UnreadableItems",
    "WeightedEventType",
    "prepare_data",
    "sample_negatives",
]
