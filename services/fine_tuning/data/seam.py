"""The seam of DESIGN.md: `prepare_data` runs the plugin's pipeline where the data is prepared and
returns the stored dataset where the model is trained, so a plugin written as in the seed runs
unchanged on both sides.

- Outside any context, `prepare_data(...)` runs the pipeline in-process and returns the `RankingData`.
- Inside `plugin_call(plugin_meta, batch_id=..., dataset=PublishDataset(store))` (dataprep), it runs
  the pipeline and publishes the dataset to the store.
- Inside `plugin_call(plugin_meta, batch_id=..., dataset=LoadDataset(store))` (the trainer), it ignores
  its clickstream and returns the stored dataset, rebuilt with the plugin's own query item and search
  result types.

`plugin_call` (services/fine_tuning/context.py) is also what tells the `ExperimentsManager` its iteration.

A dataset is stored under (plugin name, plugin version, batch) in open formats: `sessions.parquet`
(`ranking.SESSIONS_SCHEMA`), `items.parquet` (item_id, item) and `manifest.json`; it becomes visible
only when complete (see `DatasetStore`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from botocore.exceptions import BotoCoreError, ClientError

from services.fine_tuning.context import current_plugin_call
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


@dataclass
class PublishDataset:
    """`plugin_call`'s dataset mode in dataprep: `prepare_data` runs the pipeline and publishes the dataset
    of the call's (plugin, batch) to `store`; `manifest` is set once it did."""

    store: DatasetStore
    manifest: DatasetManifest | None = None


@dataclass
class LoadDataset:
    """`plugin_call`'s dataset mode in the trainer: `prepare_data` returns the stored dataset of the call's
    (plugin, batch) from `store` and ignores its clickstream; `ranking_data` caches what it read."""

    store: DatasetStore
    ranking_data: RankingData | None = None


def prepare_data(clickstream: Sequence[SessionWithEvents], parser: ClickstreamParser,
                 splitter: ClickstreamSessionsSplitter, retriever: QueryRetriever, loader: DataLoader,
                 storage_producer: ItemStorageProducer) -> RankingData:
    """The seed's `prepare_data`: parse, split (leak-free, seeded), load the shown items, produce the
    item storage; or, in a `plugin_call` with a dataset mode, what that mode says (the module docstring)."""
    call = current_plugin_call()
    mode = call.dataset if call else None
    if isinstance(mode, LoadDataset):
        if mode.ranking_data is None:
            key = DatasetKey.of(call.plugin, call.batch_id)
            try:
                mode.ranking_data = read_dataset(mode.store, key, parser, storage_producer)
            except (OSError, BotoCoreError, ClientError) as error:  # the store failed, not the dataset: retry
                raise ArtifactStoreError(f"cannot read dataset {key.dataset_id} from {mode.store.uri}: "
                                         f"{error}") from error
        return mode.ranking_data
    data = run_pipeline(clickstream, parser, splitter, retriever, loader, storage_producer)
    if isinstance(mode, PublishDataset):
        key = DatasetKey.of(call.plugin, call.batch_id)
        if mode.manifest is not None:
            raise DatasetError("prepare_data was called twice inside one plugin_call that publishes a dataset; a "
                               "plugin makes one dataset per batch")
        try:
            mode.manifest = write_dataset(mode.store, key, data)
        except (OSError, BotoCoreError, ClientError) as error:
            raise ArtifactStoreError(f"cannot publish dataset {key.dataset_id} to {mode.store.uri}: "
                                     f"{error}") from error
    return data
