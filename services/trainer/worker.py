"""The handler of `es.dataprep.dataset.ready` / `.failed` (durable consumer "trainer", shared by every
replica): claims the task, runs it in a worker thread, and records the outcome.

A claim is a lease: the replica working on a task renews it every second (with the latest progress)
and watches the record for a cancel. If the replica dies, JetStream redelivers the message to another
one, which takes the task over once the lease has lapsed; the plugin's search then resumes from the
runs MLflow holds. A copy of the message that reaches a replica while the owner is alive is deferred,
not dropped, so the task is never left without a message that can finish it."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from google.protobuf.message import DecodeError
from nats.aio.msg import Msg

from services.api.embedding_studio.v1 import events_pb2
from services.api.embedding_studio.v1 import trainer_pb2 as pb
from services.common.consumer import LeaveUnsettled, RetryLater
from services.common.errors import NotFound
from services.common.logging import get_logger
from services.common.nats import DATASET_READY
from services.fine_tuning.training.builder import TrialProgress
from services.fine_tuning.training.loop import TrainingCanceled
from services.trainer.runner import Outcome, TaskRunner, is_transient
from services.trainer.tasks import LEGACY_MAX_EVALS_KEY, TERMINAL, TaskRecord, TaskStore, now_s

log = get_logger("trainer.worker")

DURABLE = "trainer"
SUBJECTS = "es.dataprep.dataset.*"
CLAIM_LOST = "claim lost"
# How long a replica waits for its training thread to stop when the service shuts down.
STOP_GRACE_S = 60.0


@dataclass
class _Latest:
    """The training thread's latest progress, read by the heartbeat."""

    stage: pb.TaskStage = pb.TASK_STAGE_LOADING
    trial: TrialProgress | None = None


def _apply_progress(task: pb.Task, latest: _Latest) -> None:
    progress = task.progress
    progress.stage = latest.stage
    if latest.trial is None:
        return
    progress.trial, progress.trials_total = latest.trial.trial, latest.trial.trials
    step = latest.trial.progress
    if step is not None:
        progress.epoch, progress.epochs_total = step.epoch, step.epochs
        progress.step, progress.steps_total = step.step, step.steps
        progress.metrics_step = step.metrics_step
        progress.metrics.clear()
        progress.metrics.update({k: float(v) for k, v in step.metrics.items()})


def max_evals(task: pb.Task) -> int | None:
    """The trials the task asked for (`max_trials`, checked by CreateTask), or None for the plugin's own. A
    record stored before that field sets them in its metadata (`initial_max_evals`), and still gets them."""
    if task.max_trials:
        return task.max_trials
    legacy = task.metadata.fields.get(LEGACY_MAX_EVALS_KEY)
    return int(legacy.number_value) if legacy is not None and legacy.WhichOneof("kind") == "number_value" else None


class TrainerWorker:
    def __init__(self, store: TaskStore, runner: TaskRunner, on_change: Callable[[], None], worker_id: str,
                 lease_s: float, heartbeat_s: float = 1.0) -> None:
        self._store = store
        self._runner = runner
        self._on_change = on_change
        self._worker_id = worker_id
        self._lease_s = lease_s
        self._heartbeat_s = heartbeat_s
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="es-train")

    async def __call__(self, message: Msg) -> None:
        ready = message.subject == DATASET_READY
        event = events_pb2.DatasetReady() if ready else events_pb2.DatasetFailed()
        try:
            event.ParseFromString(message.data)
        except DecodeError:
            log.error("event_unreadable", subject=message.subject, bytes=len(message.data))
            return
        task_id, attempt = event.task_id, event.attempt
        bound = log.bind(task_id=task_id, attempt=attempt, delivered=message.metadata.num_delivered)
        try:
            record = await self._store.get(task_id)
        except NotFound:
            bound.warning("unknown_task", subject=message.subject)
            return
        if record.task.status in TERMINAL or record.task.attempt != attempt:
            bound.info("event_ignored", status=pb.TaskStatus.Name(record.task.status), task_attempt=record.task.attempt)
            return
        if not ready:
            await self._fail(task_id, attempt, f"dataset failed: {event.dataset.error or 'no reason given'}")
            return
        if not await self._claim(task_id, attempt):
            return
        bound.info("task_claimed", worker=self._worker_id)
        await self._work(record.task, bound)

    # --- claiming and finishing ----------------------------------------------------------------

    async def _claim(self, task_id: str, attempt: int) -> bool:
        claimed = False

        def claim(record: TaskRecord) -> bool:
            nonlocal claimed
            task = record.task
            if task.status in TERMINAL or task.attempt != attempt:
                return False
            if (task.status == pb.TASK_STATUS_PROCESSING and task.worker not in ("", self._worker_id)
                    and time.time() - record.heartbeat < self._lease_s):
                raise RetryLater(f"task {task_id} is held by {task.worker}", self._lease_s)
            if task.status == pb.TASK_STATUS_PENDING:
                record.set_status(pb.TASK_STATUS_PROCESSING, pb.TASK_STAGE_LOADING)
            task.worker, record.heartbeat = self._worker_id, time.time()
            claimed = True
            return True

        await self._store.mutate(task_id, claim)
        self._on_change()
        return claimed

    async def _finish(self, task_id: str, attempt: int, status: pb.TaskStatus, stage: pb.TaskStage, error: str = "",
                      outcome: Outcome | None = None, latest: _Latest | None = None) -> None:
        def finish(record: TaskRecord) -> bool:
            task = record.task
            if task.status != pb.TASK_STATUS_PROCESSING and task.status != pb.TASK_STATUS_PENDING:
                return False  # canceled meanwhile: the cancel stands
            if task.attempt != attempt or task.worker not in ("", self._worker_id):
                return False
            if latest is not None:
                # The last trial, step and metrics, also when the run ended between two heartbeats.
                _apply_progress(task, latest)
            record.set_status(status, stage)
            task.worker, task.error = "", error
            if outcome is not None:
                task.model_version, task.promoted = outcome.model_version, outcome.promoted
                task.experiment_id = outcome.experiment_id
                task.best_model_url = outcome.best_model_url
            return True

        await self._store.mutate(task_id, finish)
        self._on_change()

    async def _fail(self, task_id: str, attempt: int, error: str) -> None:
        log.warning("task_failed", task_id=task_id, error=error)
        await self._finish(task_id, attempt, pb.TASK_STATUS_ERROR, pb.TASK_STAGE_ERROR, error=error[:4000])

    async def _release(self, task_id: str) -> None:
        """Gives the claim up (a shutdown, or a dependency down), so that the redelivered message's
        replica takes the task over at once instead of waiting for the lease to lapse."""
        def release(record: TaskRecord) -> bool:
            if record.task.worker != self._worker_id:
                return False
            record.task.worker, record.heartbeat = "", 0.0
            return True

        with contextlib.suppress(Exception):
            await self._store.mutate(task_id, release)

    # --- the work --------------------------------------------------------------------------------

    async def _work(self, task: pb.Task, bound) -> None:
        latest = _Latest()
        stop = threading.Event()
        why_stopped: list[str] = []

        def report(stage: pb.TaskStage, trial: TrialProgress | None) -> None:  # called from the training thread
            latest.stage = stage
            if trial is not None:
                latest.trial = trial

        heartbeat = asyncio.create_task(self._heartbeat(task.task_id, latest, stop, why_stopped))
        future = asyncio.get_running_loop().run_in_executor(
            self._executor, functools.partial(self._runner.run, task.task_id, task.fine_tuning_method, task.batch_id,
                                              report, stop.is_set, max_evals(task)))
        try:
            outcome = await asyncio.shield(future)
        except asyncio.CancelledError:
            # The service is stopping: the run is recorded as killed and tried again by whoever takes over.
            stop.set()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(future), STOP_GRACE_S)
            await self._release(task.task_id)
            raise
        except TrainingCanceled:
            reason = why_stopped[0] if why_stopped else "stopped"
            bound.info("task_stopped", reason=reason)
            await self._release(task.task_id)
            if reason == CLAIM_LOST:
                # Another replica owns the task now, and its delivery of this same message is the one
                # that must stay: acking here would remove it, and the owner's death would then leave
                # nothing to finish the task.
                raise LeaveUnsettled(f"task {task.task_id} was taken over") from None
            return
        except Exception as error:
            if is_transient(error):
                bound.warning("task_deferred", error=str(error) or type(error).__name__)
                await self._release(task.task_id)
                raise
            await self._fail(task.task_id, task.attempt, str(error) or type(error).__name__)
            return
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
        await self._finish(task.task_id, task.attempt, pb.TASK_STATUS_DONE, pb.TASK_STAGE_DONE, outcome=outcome,
                           latest=latest)
        bound.info("task_done", model_version=outcome.model_version, promoted=outcome.promoted)

    async def _heartbeat(self, task_id: str, latest: _Latest, stop: threading.Event, why: list[str]) -> None:
        """Renews the claim with the latest progress; stops the run when the task was canceled or taken."""
        def beat(record: TaskRecord) -> bool:
            task = record.task
            if task.status != pb.TASK_STATUS_PROCESSING or task.worker != self._worker_id:
                why.append("canceled" if task.status == pb.TASK_STATUS_CANCELED else CLAIM_LOST)
                stop.set()
                return False
            before = task.progress.SerializeToString(deterministic=True)
            _apply_progress(task, latest)
            if task.progress.SerializeToString(deterministic=True) != before:
                task.updated_at = now_s()
            record.heartbeat = time.time()
            return True

        while not stop.is_set():
            try:
                await self._store.mutate(task_id, beat)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 - NATS blinked: the next beat tries again
                log.warning("heartbeat_failed", task_id=task_id, error=str(error) or type(error).__name__)
            await asyncio.sleep(self._heartbeat_s)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
