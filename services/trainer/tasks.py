"""Fine-tuning task records in a NATS KV bucket, visible to every trainer replica.

Each task is one key (`task.<task_id>`) holding the `Task` the API shows plus what the replicas need to
share: the replica working on it and when it last said so (its lease), and which of the task's state
changes have been announced on NATS. Every write is a compare-and-set on the key's revision, so
replicas and API calls never overwrite each other's changes. An idempotency key maps to its task
through `idem.<sha256>`, written before the task itself, so a crash in between is repaired by the
retry rather than leaving a second task."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from google.protobuf import json_format
from nats.errors import Error as NatsError
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from services.api.embedding_studio.v1 import trainer_pb2 as pb
from services.common.errors import NotFound, Unavailable
from services.common.nats import NatsConnection, open_bucket

BUCKET = "es_trainer_tasks"
# The metadata key that set a task's number of trials before CreateTaskRequest.max_trials: records
# stored then still train that many; CreateTask now refuses it and names max_trials.
LEGACY_MAX_EVALS_KEY = "initial_max_evals"
MAX_TRIALS = 1000
# The stages as records stored them before TaskProgress.stage was the TaskStage enum.
LEGACY_STAGES = {name.removeprefix("TASK_STAGE_").lower(): name for name, number in pb.TaskStage.items() if number}
TERMINAL = (pb.TASK_STATUS_DONE, pb.TASK_STATUS_CANCELED, pb.TASK_STATUS_ERROR)
_TASK_PREFIX = "task."
_IDEMPOTENCY_PREFIX = "idem."
# A compare-and-set that keeps losing means something is badly wrong; say so instead of spinning.
_MAX_CAS_ATTEMPTS = 50


def now_s() -> int:
    return int(time.time())


@dataclass
class TaskRecord:
    """A task and the replicas' shared bookkeeping of it."""

    task: pb.Task
    # When the worker (task.worker) last renewed its claim, UTC Unix seconds (float).
    heartbeat: float = 0.0
    # The attempt whose es.dataprep.requested went out, and the state changes (counted) announced.
    announced_attempt: int = 0
    changes: int = 1
    announced_changes: int = 0
    # Re-queues (task.requeued) whose es.dataprep.dataset.ready went out.
    announced_requeues: int = 0
    revision: int = field(default=0, compare=False)

    def to_bytes(self) -> bytes:
        return json.dumps({
            "task": json_format.MessageToDict(self.task, preserving_proto_field_name=True),
            "heartbeat": self.heartbeat, "announced_attempt": self.announced_attempt,
            "changes": self.changes, "announced_changes": self.announced_changes,
            "announced_requeues": self.announced_requeues,
        }, sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, data: bytes, revision: int) -> TaskRecord:
        raw = json.loads(data)
        progress = raw["task"].get("progress", {})
        if progress.get("stage") in LEGACY_STAGES:  # a record stored when the stage was a free string
            progress["stage"] = LEGACY_STAGES[progress["stage"]]
        task = json_format.ParseDict(raw["task"], pb.Task())
        return cls(task, raw["heartbeat"], raw["announced_attempt"], raw["changes"], raw["announced_changes"],
                   raw.get("announced_requeues", 0), revision)

    @property
    def needs_dataprep_request(self) -> bool:
        return self.task.status == pb.TASK_STATUS_PENDING and self.announced_attempt < self.task.attempt

    @property
    def needs_update_announcement(self) -> bool:
        return self.announced_changes < self.changes

    @property
    def needs_requeue_announcement(self) -> bool:
        return self.task.status == pb.TASK_STATUS_PROCESSING and self.announced_requeues < self.task.requeued

    def orphaned(self, now: float, lease_s: float) -> bool:
        """Claimed, and its claim not renewed for two leases: its replica is gone, and so, by then, is
        any redelivery of its message, which another replica would have claimed after one lease."""
        return (self.task.status == pb.TASK_STATUS_PROCESSING and self.task.worker != ""
                and now - self.heartbeat > 2 * lease_s)

    def set_status(self, status: pb.TaskStatus, stage: pb.TaskStage) -> None:
        """A state change: announced on es.trainer.task.updated."""
        self.task.status = status
        self.task.progress.stage = stage
        self.task.updated_at = now_s()
        self.changes += 1


def idempotency_index(idempotency_key: str) -> str:
    return _IDEMPOTENCY_PREFIX + hashlib.sha256(idempotency_key.encode()).hexdigest()


class TaskStore:
    def __init__(self, nats: NatsConnection, bucket: str = BUCKET) -> None:
        self._nats = nats
        self._bucket = bucket
        self._kv: KeyValue | None = None

    async def _store(self) -> KeyValue:
        if self._kv is None:
            self._kv = await open_bucket(self._nats.jetstream, self._bucket)  # UNAVAILABLE while NATS is down
        return self._kv

    async def wait_ready(self, retry_s: float = 0.5) -> None:
        """Returns once NATS is connected and the task bucket is open (retrying while it is not)."""
        while True:
            try:
                await self._store()
                return
            except (Unavailable, NatsError, TimeoutError, ConnectionError):
                await asyncio.sleep(retry_s)

    async def _call(self, operation: Callable[[KeyValue], object]) -> object:
        try:
            return await operation(await self._store())
        except (NatsError, TimeoutError, ConnectionError) as error:
            if isinstance(error, KeyNotFoundError | KeyWrongLastSequenceError):
                raise
            raise Unavailable(f"NATS (task bucket {self._bucket}) is unavailable: "
                              f"{str(error) or type(error).__name__}") from error

    async def get(self, task_id: str) -> TaskRecord:
        try:
            entry = await self._call(lambda kv: kv.get(_TASK_PREFIX + task_id))
        except KeyNotFoundError:
            raise NotFound(f"task_id: no task {task_id!r}") from None
        return TaskRecord.from_bytes(entry.value, entry.revision)

    async def task_of_key(self, idempotency_key: str) -> str | None:
        try:
            entry = await self._call(lambda kv: kv.get(idempotency_index(idempotency_key)))
        except KeyNotFoundError:
            return None
        return entry.value.decode()

    async def claim_key(self, idempotency_key: str, task_id: str) -> str:
        """Maps the key to `task_id` unless it maps to a task already; returns the task it maps to."""
        try:
            await self._call(lambda kv: kv.create(idempotency_index(idempotency_key), task_id.encode()))
        except KeyWrongLastSequenceError:
            return await self.task_of_key(idempotency_key) or task_id
        return task_id

    async def create(self, record: TaskRecord) -> TaskRecord | None:
        """Writes a new task; None when a task with its id exists already."""
        try:
            record.revision = await self._call(
                lambda kv: kv.create(_TASK_PREFIX + record.task.task_id, record.to_bytes()))
        except KeyWrongLastSequenceError:
            return None
        return record

    async def mutate(self, task_id: str, change: Callable[[TaskRecord], bool | None]) -> TaskRecord:
        """Applies `change` to the latest record and writes it if the record did not change meanwhile
        (else reads and applies again). `change` may raise to refuse; returning False writes nothing."""
        for _ in range(_MAX_CAS_ATTEMPTS):
            record = await self.get(task_id)
            if change(record) is False:
                return record
            try:
                record.revision = await self._call(
                    lambda kv, r=record: kv.update(_TASK_PREFIX + task_id, r.to_bytes(), last=r.revision))
            except KeyWrongLastSequenceError:
                continue
            return record
        raise Unavailable(f"task {task_id}: {_MAX_CAS_ATTEMPTS} concurrent writers in a row; try again")

    async def all(self) -> list[TaskRecord]:
        """Every task's latest record. The keys come from the server's per-subject state of the bucket's
        stream: nats-py's `keys()` watcher can signal its end before it delivered what it had buffered,
        and a listing then missed tasks."""
        stream, prefix = f"KV_{self._bucket}", f"$KV.{self._bucket}.{_TASK_PREFIX}"
        info = await self._call(lambda _kv: self._nats.jetstream.stream_info(stream, subjects_filter=prefix + ">"))
        records = []
        for subject in sorted(info.state.subjects or {}):
            try:
                records.append(await self.get(subject.removeprefix(prefix)))
            except NotFound:
                continue  # deleted (its last message is the delete marker), or between the listing and the read
        return records

    async def watch(self, task_id: str, poll_s: float = 1.0) -> AsyncIterator[pb.Task]:
        """The task now, then each time it changes, until it ends (TERMINAL) or the caller stops."""
        watcher = await self._call(lambda kv: kv.watch(_TASK_PREFIX + task_id))
        try:
            last_revision, last_task = 0, b""
            while True:
                try:
                    entry = await watcher.updates(timeout=poll_s)
                except (NatsError, TimeoutError):
                    entry = None
                if entry is None or entry.revision <= last_revision or not entry.value:
                    if not self._nats.connected:
                        raise Unavailable("NATS went away while watching the task; watch it again")
                    continue
                last_revision = entry.revision
                task = TaskRecord.from_bytes(entry.value, entry.revision).task
                serialized = task.SerializeToString(deterministic=True)
                if serialized == last_task:  # only a lease renewal: nothing the caller sees changed
                    continue
                last_task = serialized
                yield task
                if task.status in TERMINAL:
                    return
        finally:
            with contextlib.suppress(Exception):  # the watcher is gone with its connection anyway
                await watcher.stop()
