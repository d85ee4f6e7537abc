"""The referee of online experiments: every ES_EXPERIMENT_POLL_S it asks ingest for each running
experiment's counts (ClickstreamService.GetExperimentOutcome: ingest owns the clickstream), applies the
decision rule the experiment started with (`experiments.decide`, carrying its always-valid p-value from
look to look) and records the counts and, once the
rule decides, the decision, under the lock every registry replica takes before it moves a plugin's
aliases; a replica that finds the experiment decided by another leaves it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import grpc

from services.api.embedding_studio.v1 import clickstream_pb2, clickstream_pb2_grpc
from services.api.embedding_studio.v1 import registry_pb2 as pb
from services.common.lease_lock import LeaseLock
from services.common.logging import get_logger
from services.registry.experiments import Rule, decide
from services.registry.servicer import under_champion_lock
from services.registry.store import ModelStore

log = get_logger("registry.referee")


class ExperimentReferee:
    def __init__(self, store: ModelStore, ingest: clickstream_pb2_grpc.ClickstreamServiceStub, ingest_addr: str,
                 lock: LeaseLock, on_promoted: Callable[[], None], poll_s: float = 10.0) -> None:
        self._store = store
        self._ingest = ingest
        self._ingest_addr = ingest_addr
        self._lock = lock
        self._on_promoted = on_promoted
        self._poll_s = poll_s
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="registry-referee")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            try:
                await self.look()
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 - MLflow or NATS away: look again next time
                log.warning("look_failed", error=str(error) or type(error).__name__)
            await asyncio.sleep(self._poll_s)

    async def look(self) -> int:
        """One look at every running experiment; returns how many were decided by it."""
        decided = 0
        for experiment in await asyncio.to_thread(self._store.running_experiments):
            try:
                outcome = (await self._ingest.GetExperimentOutcome(clickstream_pb2.GetExperimentOutcomeRequest(
                    experiment_id=experiment.experiment_id), timeout=30)).outcome
            except grpc.aio.AioRpcError as error:
                # NOT_FOUND: ingest has not heard the start announcement yet.
                log.warning("outcome_unavailable", experiment_id=experiment.experiment_id, ingest=self._ingest_addr,
                            code=error.code().name, error=error.details())
                continue
            rule = Rule(experiment.alpha, experiment.min_sessions, experiment.max_sessions)
            verdict = decide(outcome.wins, outcome.losses, outcome.ties, rule, previous_p=experiment.p_value or 1.0)
            recorded, moved = await under_champion_lock(
                self._lock, experiment.fine_tuning_method,
                lambda e=experiment, o=outcome, v=verdict: asyncio.to_thread(
                    self._store.record_outcome, e.experiment_id, o.sessions, o.wins, o.losses, v))
            if recorded.state != pb.EXPERIMENT_STATE_RUNNING:
                decided += 1
                log.info("experiment_decided", experiment_id=recorded.experiment_id,
                         state=pb.ExperimentState.Name(recorded.state), reason=recorded.reason,
                         sessions=recorded.sessions, wins=recorded.wins, losses=recorded.losses, ties=recorded.ties,
                         p_value=recorded.p_value)
            if moved:
                self._on_promoted()
        return decided
