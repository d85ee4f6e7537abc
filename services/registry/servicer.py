"""`embedding_studio.v1.RegistryService`: checks requests, runs them against MLflow in worker threads,
turns MLflow being down into UNAVAILABLE, and wakes the announcer after a promotion."""

from __future__ import annotations

import asyncio
import math
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import grpc
import requests
from mlflow.exceptions import MlflowException
from sqlalchemy.exc import OperationalError

from services.api.embedding_studio.v1 import registry_pb2 as pb
from services.api.embedding_studio.v1 import registry_pb2_grpc
from services.client.interleaving import team_draft
from services.common.checks import check_id, check_run_id, check_token, parse_batch_id, parse_number
from services.common.errors import InvalidArgument, NotFound, Unavailable
from services.common.lease_lock import LeaseLock, LockUnavailable
from services.common.logging import get_logger
from services.common.paging import page_request
from services.common.settings import Limits
from services.registry.experiments import require_experiment_id
from services.registry.store import ModelStore, is_missing

T = TypeVar("T")

CHUNK_BYTES = 1024 * 1024

log = get_logger("registry")


def _version_number(field: str, value: str) -> None:
    parse_number(field, value, "a model version number")


# What each id field of the registry's requests must look like, beyond being there and short enough.
_FORMATS = {
    "task_id": check_token,
    "batch_id": parse_batch_id,
    "run_id": check_run_id,
    "version": _version_number,
    "compared_version": _version_number,
    "iteration_id": lambda field, value: parse_number(field, value, "an MLflow experiment id"),
    "experiment_id": require_experiment_id,
}


async def _to_its_end(work: Awaitable[T]) -> T:
    """Awaits `work`; if the caller is cancelled meanwhile (the RPC's deadline passed), waits for `work`
    to end before the cancel goes on: the thread behind it cannot be stopped and may still move an alias."""
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait([task])
        raise


async def under_champion_lock(lock: LeaseLock, plugin: str, work: Callable[[], Awaitable[T]]) -> T:
    """Runs `work` under the lock every registry replica takes before it checks a plugin's best version
    and moves its aliases, so that of two decisions against one best exactly one happens; the lock is
    held until `work` has ended, even when its RPC is cancelled first. While NATS is down the lock cannot
    be had, and this replica serializes only its own."""
    try:
        async with lock.held(f"champion:{plugin}"):
            return await _to_its_end(work())
    except LockUnavailable as error:
        log.warning("without_shared_lock", plugin=plugin, error=error.message)
        return await work()


def _check_scores(field: str, scores: pb.HeldOutScores, present: bool) -> None:
    if not present:
        raise InvalidArgument(field, "is required: the held-out scores decide the promotion")
    for name, value in (("ndcg_at_10", scores.ndcg_at_10), ("mrr_at_10", scores.mrr_at_10),
                        *((f"recall_at[{k}]", v) for k, v in scores.recall_at.items())):
        if not (math.isfinite(value) and 0.0 <= value <= 1.0):
            raise InvalidArgument(f"{field}.{name}", f"is {value}; a ranking metric lies in [0, 1]")
    for k in scores.recall_at:
        if k < 1:
            raise InvalidArgument(f"{field}.recall_at", f"has k = {k}; k must be at least 1")
    if scores.queries < 1:
        raise InvalidArgument(f"{field}.queries", "must be at least 1: scores on no held-out queries decide nothing")


class RegistryServicer(registry_pb2_grpc.RegistryServiceServicer):
    def __init__(self, store: ModelStore, limits: Limits, on_promoted: Callable[[], None], lock: LeaseLock) -> None:
        self._store = store
        self._limits = limits
        self._on_promoted = on_promoted
        self._lock = lock

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        try:
            return await asyncio.to_thread(fn, *args)
        except MlflowException as error:
            if is_missing(error):
                raise NotFound(error.message) from error
            # Anything else MLflow answers with (it is unreachable, its store failed) means it is down for us.
            raise self._unavailable(error.message) from error
        except (requests.RequestException, OperationalError) as error:
            raise self._unavailable(str(error)) from error

    def _unavailable(self, detail: str) -> Unavailable:
        short = detail if len(detail) <= 300 else f"{detail[:300]}…"
        return Unavailable(f"MLflow at {self._store.tracking_uri} (ES_MLFLOW_TRACKING_URI) is unavailable: {short}")

    def _check_id(self, field: str, value: str) -> None:
        check_id(field, value, self._limits.max_id_length)
        _FORMATS.get(field, lambda _f, _v: None)(field, value)

    async def RegisterInitialModel(self, request: pb.RegisterInitialModelRequest, context: grpc.aio.ServicerContext
                                   ) -> pb.RegisterInitialModelResponse:
        self._check_id("fine_tuning_method", request.fine_tuning_method)
        best = await under_champion_lock(self._lock, request.fine_tuning_method,
                                         lambda: self._run(self._store.register_initial, request.fine_tuning_method))
        return pb.RegisterInitialModelResponse(model=best)

    async def GetBestModel(self, request: pb.GetBestModelRequest, context: grpc.aio.ServicerContext
                           ) -> pb.GetBestModelResponse:
        self._check_id("fine_tuning_method", request.fine_tuning_method)
        return pb.GetBestModelResponse(model=await self._run(self._store.best, request.fine_tuning_method))

    async def ListModelVersions(self, request: pb.ListModelVersionsRequest, context: grpc.aio.ServicerContext
                                ) -> pb.ListModelVersionsResponse:
        self._check_id("fine_tuning_method", request.fine_tuning_method)
        paging = page_request(request.page_size, request.page_token, "ListModelVersionsResponse")
        versions, next_token = paging.cut(await self._run(self._store.versions, request.fine_tuning_method))
        return pb.ListModelVersionsResponse(versions=versions, next_page_token=next_token)

    async def ListIterations(self, request: pb.ListIterationsRequest, context: grpc.aio.ServicerContext
                             ) -> pb.ListIterationsResponse:
        self._check_id("fine_tuning_method", request.fine_tuning_method)
        paging = page_request(request.page_size, request.page_token, "ListIterationsResponse")
        iterations, next_token = paging.cut(await self._run(self._store.iterations, request.fine_tuning_method))
        return pb.ListIterationsResponse(iterations=iterations, next_page_token=next_token)

    async def GetIteration(self, request: pb.GetIterationRequest, context: grpc.aio.ServicerContext
                           ) -> pb.GetIterationResponse:
        self._check_id("iteration_id", request.iteration_id)
        return pb.GetIterationResponse(iteration=await self._run(self._store.iteration, request.iteration_id))

    async def DownloadModel(self, request: pb.DownloadModelRequest, context: grpc.aio.ServicerContext
                            ) -> AsyncIterator[pb.DownloadModelResponse]:
        self._check_id("fine_tuning_method", request.fine_tuning_method)
        if request.version:
            self._check_id("version", request.version)
        target = await self._run(self._store.archive_target, request.fine_tuning_method, request.version)
        with tempfile.TemporaryDirectory(prefix="es-registry-") as tmp:
            path = await self._run(self._store.download, target, Path(tmp))
            yield pb.DownloadModelResponse(archive=pb.ModelArchive(
                fine_tuning_method=target.fine_tuning_method, version=target.version,
                sha256=target.archive.sha256, size_bytes=target.archive.size_bytes))
            with open(path, "rb") as handle:
                while chunk := await asyncio.to_thread(handle.read, CHUNK_BYTES):
                    yield pb.DownloadModelResponse(chunk=chunk)

    async def SubmitCandidate(self, request: pb.SubmitCandidateRequest, context: grpc.aio.ServicerContext
                              ) -> pb.SubmitCandidateResponse:
        for field in ("fine_tuning_method", "task_id", "batch_id", "run_id", "compared_version"):
            self._check_id(field, getattr(request, field))
        _check_scores("candidate_scores", request.candidate_scores, request.HasField("candidate_scores"))
        _check_scores("compared_scores", request.compared_scores, request.HasField("compared_scores"))
        if request.candidate_scores.queries != request.compared_scores.queries:
            raise InvalidArgument("compared_scores.queries", (
                f"is {request.compared_scores.queries} but candidate_scores.queries is "
                f"{request.candidate_scores.queries}: both must be scored on the same held-out queries"))
        submitted = await under_champion_lock(self._lock, request.fine_tuning_method,
                                              lambda: self._run(self._store.submit, request))
        if submitted.promoted or submitted.experiment_id:
            self._on_promoted()  # the announcer announces promotions and experiment starts alike
        return pb.SubmitCandidateResponse(version=submitted.version, promoted=submitted.promoted,
                                          reason=submitted.version.reason, experiment_id=submitted.experiment_id)

    async def GetServingPlan(self, request: pb.GetServingPlanRequest, context: grpc.aio.ServicerContext
                             ) -> pb.GetServingPlanResponse:
        self._check_id("fine_tuning_method", request.fine_tuning_method)
        plan = await self._run(self._store.serving_plan, request.fine_tuning_method)
        return pb.GetServingPlanResponse(champion=plan.champion, challenger=plan.challenger,
                                         experiment_id=plan.experiment_id)

    async def Interleave(self, request: pb.InterleaveRequest, context: grpc.aio.ServicerContext
                         ) -> pb.InterleaveResponse:
        # Pure: no store is asked (a search waits on this), so the experiment is checked by its form only;
        # ingest refuses the sessions of an experiment that does not run.
        self._check_id("experiment_id", request.experiment_id)
        self._check_id("session_id", request.session_id)
        limit = self._limits.max_results
        if not 1 <= request.k <= limit:
            raise InvalidArgument("k", f"is {request.k}; it must lie in 1..{limit} (ES_MAX_RESULTS)")
        for field in ("champion_object_ids", "challenger_object_ids"):
            ranking = getattr(request, field)
            if len(ranking) > limit:
                raise InvalidArgument(field, f"holds {len(ranking)} ids; ES_MAX_RESULTS is {limit}")
            seen: dict[str, int] = {}
            for i, object_id in enumerate(ranking):
                check_id(f"{field}[{i}]", object_id, self._limits.max_id_length)
                if object_id in seen:
                    raise InvalidArgument(f"{field}[{i}]", f"{object_id!r} repeats {field}[{seen[object_id]}]")
                seen[object_id] = i
        merged = team_draft(request.experiment_id, request.session_id, request.champion_object_ids,
                            request.challenger_object_ids, request.k)
        return pb.InterleaveResponse(results=[pb.InterleavedResult(object_id=r.object_id, team=r.team)
                                              for r in merged])

    async def GetExperiment(self, request: pb.GetExperimentRequest, context: grpc.aio.ServicerContext
                            ) -> pb.GetExperimentResponse:
        self._check_id("experiment_id", request.experiment_id)
        return pb.GetExperimentResponse(experiment=await self._run(self._store.experiment, request.experiment_id))

    async def ListExperiments(self, request: pb.ListExperimentsRequest, context: grpc.aio.ServicerContext
                              ) -> pb.ListExperimentsResponse:
        self._check_id("fine_tuning_method", request.fine_tuning_method)
        paging = page_request(request.page_size, request.page_token, "ListExperimentsResponse")
        experiments, next_token = paging.cut(await self._run(self._store.experiments, request.fine_tuning_method))
        return pb.ListExperimentsResponse(experiments=experiments, next_page_token=next_token)
