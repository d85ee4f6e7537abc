"""Makes datasets: finds the plugin, streams the released batch from ingest, runs the plugin's
`get_fine_tuning_builder` inside `plugin_call` with `PublishDataset` (so its `prepare_data` publishes the dataset),
records failures with their reason, and announces the outcome on NATS.

A dataset is made once per (plugin name, plugin version, batch): a ready one is returned as it is, and
concurrent requests for one key in this replica share one piece of work."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import grpc
from botocore.exceptions import BotoCoreError, ClientError

from services.api.embedding_studio.v1 import clickstream_pb2, clickstream_pb2_grpc, events_pb2
from services.api.embedding_studio.v1 import dataprep_pb2 as pb
from services.client.calls import dependency_failed
from services.common.checks import parse_batch_id
from services.common.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable
from services.common.logging import get_logger
from services.common.nats import DATASET_FAILED, DATASET_READY, NatsConnection
from services.fine_tuning.context import plugin_call
from services.fine_tuning.data import (
    ArtifactStoreError,
    DatasetError,
    DatasetKey,
    DatasetManifest,
    DatasetStore,
    PublishDataset,
    SessionWithEvents,
)
from services.fine_tuning.discovery import PluginEntry, discover_plugins

log = get_logger("dataprep")
T = TypeVar("T")


def dataset_message(key: DatasetKey, status: pb.DatasetStatus.ValueType, uri: str = "",
                    manifest: DatasetManifest | None = None, error: str = "") -> pb.Dataset:
    dataset = pb.Dataset(dataset_id=key.dataset_id, fine_tuning_method=key.plugin_name,
                         plugin_version=key.plugin_version, batch_id=key.batch_id, status=status, uri=uri, error=error)
    if manifest is not None:
        dataset.train_sessions = manifest.train_sessions
        dataset.test_sessions = manifest.test_sessions
        dataset.items = manifest.items
        dataset.created_at = manifest.created_at
    return dataset


def required(field: str, value: str) -> str:
    if not value.strip():
        raise InvalidArgument(field, "must not be empty")
    return value


def batch_id_field(value: str) -> str:
    parse_batch_id("batch_id", required("batch_id", value))
    return value


class DatasetMaker:
    def __init__(self, plugins_path: Path, store: DatasetStore, ingest: clickstream_pb2_grpc.ClickstreamServiceStub,
                 ingest_addr: str, nats: NatsConnection) -> None:
        self._plugins_path = plugins_path
        self._store = store
        self._ingest = ingest
        self._ingest_addr = ingest_addr
        self._nats = nats
        self._in_flight: dict[DatasetKey, asyncio.Task[pb.Dataset]] = {}

    async def plugin(self, name: str) -> PluginEntry:
        """The plugin named `name`, discovered afresh (plugins may be added while the service runs)."""
        catalog = await asyncio.to_thread(discover_plugins, self._plugins_path)
        return catalog.get(name)

    async def make(self, fine_tuning_method: str, batch_id: str) -> pb.Dataset:
        """The dataset of the plugin's current version for a released batch: READY (made now or before)
        or FAILED with the reason. Raises NotFound (plugin, batch), FailedPrecondition (batch not
        released, clashing plugins), Unavailable (ingest or the artifact store is down)."""
        batch_id_field(batch_id)
        entry = await self.plugin(required("fine_tuning_method", fine_tuning_method))
        key = DatasetKey.of(entry.meta, batch_id)
        task = self._in_flight.get(key)
        if task is None:
            task = asyncio.create_task(self._make(entry, key), name=f"dataset-{key.dataset_id}")
            self._in_flight[key] = task
            task.add_done_callback(lambda _: self._in_flight.pop(key, None))
        # Shielded: one caller giving up (a cancelled RPC) must not stop work others wait for.
        return await asyncio.shield(task)

    async def _make(self, entry: PluginEntry, key: DatasetKey) -> pb.Dataset:
        manifest = await self._store_call(self._store.manifest, key)
        if manifest is not None:
            return dataset_message(key, pb.DATASET_STATUS_READY, self._store.dataset_uri(key), manifest)
        started = time.monotonic()
        try:
            sessions = await self._batch_sessions(key.batch_id)
        except DatasetError as error:
            return await self._failed(key, str(error))
        try:
            manifest = await asyncio.to_thread(self._run_plugin, entry, key, sessions)
        except DatasetError as error:
            reason = str(error)
        except ArtifactStoreError as error:
            raise Unavailable(str(error)) from error
        except Exception as error:  # noqa: BLE001 - a broken plugin fails its dataset, not the service
            reason = f"plugin {key.plugin_name!r} ({entry.path}) failed: {type(error).__name__}: {error}"
        else:
            await self._store_call(self._store.clear_failure, key)
            log.info("dataset_ready", dataset_id=key.dataset_id, sessions=len(sessions), items=manifest.items,
                     seconds=round(time.monotonic() - started, 3))
            return dataset_message(key, pb.DATASET_STATUS_READY, self._store.dataset_uri(key), manifest)
        return await self._failed(key, reason)

    async def _failed(self, key: DatasetKey, reason: str) -> pb.Dataset:
        await self._store_call(self._store.record_failure, key, reason)
        log.warning("dataset_failed", dataset_id=key.dataset_id, error=reason)
        return dataset_message(key, pb.DATASET_STATUS_FAILED, error=reason)

    def _run_plugin(self, entry: PluginEntry, key: DatasetKey, sessions: Sequence[SessionWithEvents]
                    ) -> DatasetManifest:
        plugin = entry.cls()
        prepared = PublishDataset(self._store)
        with plugin_call(entry.meta, batch_id=key.batch_id, dataset=prepared):
            try:
                plugin.get_fine_tuning_builder(sessions)
            except Exception as error:
                if prepared.manifest is None:
                    raise
                # The dataset is published; what the builder does after prepare_data is the trainer's
                # business (it builds it again, and reports its own errors).
                log.warning("plugin_failed_after_prepare_data", dataset_id=key.dataset_id,
                            error=f"{type(error).__name__}: {error}")
        if prepared.manifest is None:
            raise DatasetError(f"plugin {key.plugin_name!r} ({entry.path}) never called prepare_data in "
                               f"get_fine_tuning_builder, so it made no dataset")
        return prepared.manifest

    async def _store_call(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            return await asyncio.to_thread(fn, *args)
        except (OSError, BotoCoreError, ClientError) as error:
            raise Unavailable(f"artifact store {self._store.uri} failed: {error}") from error

    async def _batch_sessions(self, batch_id: str) -> list[SessionWithEvents]:
        try:
            batch = (await self._ingest.GetBatch(clickstream_pb2.GetBatchRequest(batch_id=batch_id))).batch
            if batch.status != clickstream_pb2.BATCH_STATUS_RELEASED:
                raise FailedPrecondition(f"batch {batch_id!r} is still collecting sessions; release it first "
                                         f"(es batch release)")
            call = self._ingest.StreamBatchSessions(clickstream_pb2.StreamBatchSessionsRequest(batch_id=batch_id))
            sessions = []
            async for response in call:
                if response is None:  # grpc.aio's answer to a message it could not parse
                    after = f"after session {sessions[-1].session_id!r}" if sessions else "first"
                    raise DatasetError(f"ingest sent a session of batch {batch_id!r} ({after}) that does not "
                                       "parse; the batch cannot be prepared")
                sessions.append(SessionWithEvents.from_proto(response.session))
            return sessions
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                raise NotFound(f"ingest has no batch {batch_id!r}: {error.details()}") from error
            failure = dependency_failed(error, f"ingest at {self._ingest_addr} (ES_INGEST_ADDR), reading batch "
                                               f"{batch_id!r},")
            if isinstance(failure, Unavailable):
                raise failure from error
            # Anything else will not change by asking again: the dataset fails with the reason.
            raise DatasetError(failure.message) from error

    async def get(self, fine_tuning_method: str, batch_id: str, plugin_version: str) -> pb.Dataset:
        required("fine_tuning_method", fine_tuning_method)
        batch_id_field(batch_id)
        if not plugin_version:
            plugin_version = (await self.plugin(fine_tuning_method)).meta.version
        key = DatasetKey(fine_tuning_method, plugin_version, batch_id)
        manifest = await self._store_call(self._store.manifest, key)
        if manifest is not None:
            return dataset_message(key, pb.DATASET_STATUS_READY, self._store.dataset_uri(key), manifest)
        if key in self._in_flight:
            return dataset_message(key, pb.DATASET_STATUS_PENDING)
        failure = await self._store_call(self._store.failure, key)
        if failure is not None:
            return dataset_message(key, pb.DATASET_STATUS_FAILED, error=failure["error"])
        raise NotFound(f"no dataset of plugin {fine_tuning_method!r} {plugin_version} for batch {batch_id!r}; "
                       f"PrepareDataset makes it")

    async def announce(self, dataset: pb.Dataset, task_id: str, attempt: int = 0) -> None:
        """Publishes es.dataprep.dataset.ready or .failed; the Nats-Msg-Id names the dataset, the outcome,
        the task and its attempt, so a retried announcement is dropped while another task's (or a restarted
        task's) is not."""
        ready = dataset.status == pb.DATASET_STATUS_READY
        subject = DATASET_READY if ready else DATASET_FAILED
        event = (events_pb2.DatasetReady if ready else events_pb2.DatasetFailed)(task_id=task_id, dataset=dataset,
                                                                                  attempt=attempt)
        name = dataset.dataset_id or f"{dataset.fine_tuning_method}/{dataset.batch_id}"
        msg_id = f"dataset:{name}:{'ready' if ready else 'failed'}:task:{task_id}:{attempt}"
        fresh = await self._nats.publish(subject, event.SerializeToString(), msg_id)
        log.info("dataset_announced", subject=subject, msg_id=msg_id, duplicate=not fresh)
