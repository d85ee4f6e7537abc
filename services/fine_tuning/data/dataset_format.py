"""The dataset format: what a stored dataset is made of (`sessions.parquet` with `ranking.SESSIONS_SCHEMA`,
`items.parquet` with item_id and item, and `manifest.json`, a `DatasetManifest`), the key it is stored
under, and its encoding to and from a `RankingData`."""

from __future__ import annotations

import hashlib
import io
import json
import re
import time
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from services.fine_tuning.data.errors import DatasetError, DatasetNotFound
from services.fine_tuning.data.parser import ClickstreamParser
from services.fine_tuning.data.ranking import RankingData
from services.fine_tuning.data.storage import ItemStorage, ItemStorageProducer
from services.fine_tuning.plugin import PluginMeta

if TYPE_CHECKING:
    from services.fine_tuning.data.stores import DatasetStore

FORMAT = "embedding-studio-dataset/1"
SESSIONS_FILE = "sessions.parquet"
ITEMS_FILE = "items.parquet"
MANIFEST_FILE = "manifest.json"


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "x"


@dataclass(frozen=True)
class DatasetKey:
    """What a dataset is keyed by; `dataset_id` is readable and, through its hash, unique per key."""

    plugin_name: str
    plugin_version: str
    batch_id: str

    @classmethod
    def of(cls, plugin_meta: PluginMeta, batch_id: str) -> DatasetKey:
        if not batch_id:
            raise ValueError("batch_id must not be empty")
        return cls(plugin_meta.name, plugin_meta.version, batch_id)

    @property
    def dataset_id(self) -> str:
        digest = hashlib.sha256(json.dumps([self.plugin_name, self.plugin_version, self.batch_id]).encode())
        return (f"{_slug(self.plugin_name)}--{_slug(self.plugin_version)}--{_slug(self.batch_id)}--"
                f"{digest.hexdigest()[:10]}")


@dataclass(frozen=True)
class StoredFile:
    """One file of a dataset: its sha256 (hex) and size in bytes."""

    sha256: str
    bytes: int


@dataclass(frozen=True)
class DatasetManifest:
    """`manifest.json`: what a dataset holds and how to check its files. `location` is where a store put
    the files when they are not beside the manifest (the S3 store's attempt); None otherwise."""

    format: str
    dataset_id: str
    plugin_name: str
    plugin_version: str
    batch_id: str
    created_at: int  # UTC Unix seconds
    item_kind: str
    train_sessions: int
    test_sessions: int
    items: int
    files: dict[str, StoredFile] = field(default_factory=dict)
    location: str | None = None

    def to_json(self) -> bytes:
        values: dict[str, Any] = asdict(self)
        if self.location is None:
            del values["location"]
        return json.dumps(values, indent=1).encode()

    @classmethod
    def from_json(cls, data: bytes) -> DatasetManifest:
        """Reads a manifest (any this format has written: extra keys are ignored); DatasetError if it is
        not one."""
        try:
            values = json.loads(data)
            files = {name: StoredFile(str(f["sha256"]), int(f["bytes"])) for name, f in values["files"].items()}
            return cls(format=str(values["format"]), dataset_id=str(values["dataset_id"]),
                       plugin_name=str(values["plugin_name"]), plugin_version=str(values["plugin_version"]),
                       batch_id=str(values["batch_id"]), created_at=int(values["created_at"]),
                       item_kind=str(values["item_kind"]), train_sessions=int(values["train_sessions"]),
                       test_sessions=int(values["test_sessions"]), items=int(values["items"]), files=files,
                       location=values.get("location"))
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise DatasetError(f"unreadable dataset manifest ({type(error).__name__}: {error})") from error

    def at(self, location: str) -> DatasetManifest:
        return replace(self, location=location)


def _parquet(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()


def write_dataset(store: DatasetStore, key: DatasetKey, data: RankingData) -> DatasetManifest:
    """Publishes `data` under `key`; returns the visible manifest."""
    files = {SESSIONS_FILE: _parquet(data.sessions_table()), ITEMS_FILE: _parquet(data.items.to_arrow())}
    manifest = DatasetManifest(
        format=FORMAT, dataset_id=key.dataset_id, plugin_name=key.plugin_name, plugin_version=key.plugin_version,
        batch_id=key.batch_id, created_at=int(time.time()), item_kind=data.items.kind,
        train_sessions=len(data.train), test_sessions=len(data.test), items=len(data.items),
        files={name: StoredFile(hashlib.sha256(blob).hexdigest(), len(blob)) for name, blob in files.items()})
    return store.publish(key, files, manifest)


def read_dataset(store: DatasetStore, key: DatasetKey, parser: ClickstreamParser,
                 storage_producer: ItemStorageProducer) -> RankingData:
    manifest = store.manifest(key)
    if manifest is None:
        raise DatasetNotFound(f"no dataset of plugin {key.plugin_name!r} {key.plugin_version} for batch "
                              f"{key.batch_id!r} in {store.uri} (dataset id {key.dataset_id})")
    if manifest.format != FORMAT:
        raise DatasetError(f"dataset {key.dataset_id} has format {manifest.format!r}; this code reads {FORMAT}")
    if manifest.item_kind != storage_producer.kind:
        raise DatasetError(f"dataset {key.dataset_id} holds {manifest.item_kind} items, but the plugin's storage "
                           f"producer ({type(storage_producer).__name__}) makes {storage_producer.kind} items")
    sessions = pq.read_table(pa.BufferReader(store.read_verified(key, manifest, SESSIONS_FILE)))
    items = pq.read_table(pa.BufferReader(store.read_verified(key, manifest, ITEMS_FILE)))
    return RankingData.from_tables(sessions, ItemStorage.from_arrow(manifest.item_kind, items),
                                   parser.query_item_type, parser.search_result_type)


