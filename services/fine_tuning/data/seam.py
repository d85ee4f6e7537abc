"""The seam of DESIGN.md: `prepare_data` runs the plugin's pipeline where the data is prepared and
returns the stored dataset where the model is trained, so a plugin written as in the seed runs
unchanged on both sides.

- Outside any context, `prepare_data(...)` runs the pipeline in-process and returns the `RankingData`.
- Inside `preparing_dataset(store, plugin_meta, batch_id)` (dataprep), it runs the pipeline and
  publishes the dataset to the store.
- Inside `loading_dataset(store, plugin_meta, batch_id)` (the trainer), it ignores its clickstream
  and returns the stored dataset, rebuilt with the plugin's own query item and search result types.

The context is a `ContextVar`: enter it in the thread (or asyncio task) that calls the plugin.

A dataset is stored under (plugin name, plugin version, batch) in open formats: `sessions.parquet`
(`ranking.SESSIONS_SCHEMA`), `items.parquet` (item_id, item) and `manifest.json`; it becomes visible
only when complete (see `DatasetStore`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass

from botocore.exceptions import BotoCoreError, ClientError

from services.fine_tuning.data.clickstream import SessionWithEvents
from services.fine_tuning.data.dataset_format import DatasetKey, DatasetManifest, read_dataset, write_dataset
from services.fine_tuning.data.errors import ArtifactStoreError, DatasetError
from services.fine_tuning.data.loader import DataLoader
from services.fine_tuning.data.parser import ClickstreamParser
from services.fine_tuning.data.pipeline import run_pipeline
from services.fine_tuning.data.ranking import RankingData
from services.fine_tuning.data.retriever import QueryRetriever
from services.fine_tuning.data.splitter import ClickstreamSessionsSplitter
from services.fine_tuning.data.storage import ItemStorageProducer
from services.fine_tuning.data.stores import DatasetStore
from services.fine_tuning.plugin import PluginMeta


@dataclass
class PreparedDataset:
    """What `preparing_dataset` yields; `manifest` is set once the plugin's `prepare_data` published it."""

    store: DatasetStore
    key: DatasetKey
    manifest: DatasetManifest | None = None


@dataclass
class LoadedDataset:
    """What `loading_dataset` yields; `ranking_data` is set by (and cached for) `prepare_data`."""

    store: DatasetStore
    key: DatasetKey
    ranking_data: RankingData | None = None


_context: ContextVar[PreparedDataset | LoadedDataset | None] = ContextVar("es_dataset_context", default=None)


@contextlib.contextmanager
def preparing_dataset(store: DatasetStore, plugin_meta: PluginMeta, batch_id: str) -> Iterator[PreparedDataset]:
    """Inside it, `prepare_data` runs the pipeline and publishes the dataset of (plugin, batch)."""
    state = PreparedDataset(store, DatasetKey.of(plugin_meta, batch_id))
    token = _context.set(state)
    try:
        yield state
    finally:
        _context.reset(token)


@contextlib.contextmanager
def loading_dataset(store: DatasetStore, plugin_meta: PluginMeta, batch_id: str) -> Iterator[LoadedDataset]:
    """Inside it, `prepare_data` returns the stored dataset of (plugin, batch) and ignores its clickstream."""
    state = LoadedDataset(store, DatasetKey.of(plugin_meta, batch_id))
    token = _context.set(state)
    try:
        yield state
    finally:
        _context.reset(token)


def prepare_data(clickstream: Sequence[SessionWithEvents], parser: ClickstreamParser,
                 splitter: ClickstreamSessionsSplitter, retriever: QueryRetriever, loader: DataLoader,
                 storage_producer: ItemStorageProducer) -> RankingData:
    """The seed's `prepare_data`: parse, split (leak-free, seeded), load the shown items, produce the
    item storage; or, inside `loading_dataset`, the stored result (see the module docstring)."""
    state = _context.get()
    if isinstance(state, LoadedDataset):
        if state.ranking_data is None:
            state.ranking_data = read_dataset(state.store, state.key, parser, storage_producer)
        return state.ranking_data
    data = run_pipeline(clickstream, parser, splitter, retriever, loader, storage_producer)
    if isinstance(state, PreparedDataset):
        if state.manifest is not None:
            raise DatasetError("prepare_data was called twice inside one preparing_dataset; a plugin makes one "
                               "dataset per batch")
        try:
            state.manifest = write_dataset(state.store, state.key, data)
        except (OSError, BotoCoreError, ClientError) as error:
            raise ArtifactStoreError(f"cannot publish dataset {state.key.dataset_id} to {state.store.uri}: "
                                     f"{error}") from error
    return data
