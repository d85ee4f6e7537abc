"""One fine-tuning task, start to end, in a worker thread: the plugin's initial model (logged on its first
task), the prepared dataset (the plugin's own `prepare_data` in `plugin_call` with `LoadDataset`), the
plugin's current best version from the registry as the start model (and its parameters tried first),
the plugin's hyperparameter search, and the candidate handed to `RegistryService.SubmitCandidate` with
its held-out scores and the current best's on the same sessions."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
import requests
from sqlalchemy.exc import OperationalError

from services.api.embedding_studio.v1 import registry_pb2, registry_pb2_grpc, trainer_pb2
from services.client.calls import TRANSIENT, dependency_failed
from services.common.errors import FailedPrecondition, NotFound, Unavailable
from services.common.logging import get_logger
from services.common.mlflow_models import registered_model_name
from services.fine_tuning.context import plugin_call
from services.fine_tuning.data import DatasetStore, LoadDataset
from services.fine_tuning.data.errors import ArtifactStoreError, DatasetNotFound
from services.fine_tuning.discovery import PluginCatalog, discover_plugins
from services.fine_tuning.training.builder import FineTuningBuilder, TrialProgress, load_run_model
from services.fine_tuning.training.evaluation import HeldOutScores
from services.fine_tuning.training.loop import TrainingCanceled
from services.fine_tuning.training.models import training_device

log = get_logger("trainer.runner")

# The best version can change under a submission (another task promoted one); score against the new
# best and submit again, this many times at most.
MAX_SUBMISSIONS = 5


@dataclass(frozen=True)
class Outcome:
    model_version: str
    promoted: bool
    best_model_url: str
    reason: str
    experiment_id: str = ""  # the online experiment the version entered as the challenger


def is_transient(error: BaseException) -> bool:
    """A dependency (MLflow, the registry, the artifact store, NATS) is down: worth trying again later."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, Unavailable | ArtifactStoreError | requests.ConnectionError | requests.Timeout
                      | OperationalError | ConnectionError):
            return True
        if isinstance(current, grpc.RpcError) and current.code() in TRANSIENT:
            return True
        current = current.__cause__ or current.__context__
    return False


def pb_scores(scores: HeldOutScores) -> registry_pb2.HeldOutScores:
    return registry_pb2.HeldOutScores(ndcg_at_10=scores.ndcg_at_10, mrr_at_10=scores.mrr_at_10,
                                      recall_at=scores.recall_at, queries=scores.queries)


def best_model_url(plugin: str, version: str) -> str:
    """Where the version lives in the MLflow Model Registry (`es model download` fetches it by version)."""
    return f"models:/{registered_model_name(plugin)}/{version}"


class TaskRunner:
    def __init__(self, plugins_path: Any, dataset_store: DatasetStore, registry: registry_pb2_grpc.RegistryServiceStub,
                 registry_addr: str) -> None:
        self._plugins_path = plugins_path
        self._catalog: PluginCatalog = discover_plugins(plugins_path)
        self._store = dataset_store
        self._registry = registry
        self._registry_addr = registry_addr
        self._device = training_device()
        log.info("training_device", device=str(self._device))

    def plugin_entry(self, name: str) -> Any:
        """The plugin named `name`, discovered again once if it is not known (it may be new)."""
        try:
            return self._catalog.get(name)
        except NotFound:
            self._catalog = discover_plugins(self._plugins_path)
            return self._catalog.get(name)

    def _call(self, method: Callable[..., Any], request: Any) -> Any:
        try:
            return method(request, timeout=60)
        except grpc.RpcError as error:
            if error.code() == grpc.StatusCode.FAILED_PRECONDITION:  # the best changed: compare again
                raise FailedPrecondition(error.details()) from error
            raise dependency_failed(error, f"the registry at {self._registry_addr} (ES_REGISTRY_ADDR), asked "
                                           f"{type(request).__name__},") from error

    def run(self, task_id: str, plugin_name: str, batch_id: str, report: Callable[[int, TrialProgress | None], None],
            should_stop: Callable[[], bool], max_evals: int | None = None) -> Outcome:
        """`max_evals`: the task's own number of trials (metadata `initial_max_evals`) instead of the plugin's."""
        plugin = self.plugin_entry(plugin_name).cls()
        manager = getattr(plugin, "manager", None)
        if manager is None:
            raise ValueError(f"plugin {plugin_name!r} has no `self.manager` (an ExperimentsManager)")
        # One context for every call into the plugin: the MLflow iteration its manager records into, and
        # `prepare_data` returning the dataset dataprep stored for this batch.
        with plugin_call(plugin.meta, batch_id=batch_id, task_id=task_id, dataset=LoadDataset(self._store)):
            report(trainer_pb2.TASK_STAGE_LOADING, None)
            if manager.initial_run_id() is None:
                plugin.upload_initial_model()
                log.info("initial_model_uploaded", plugin=plugin_name)
            try:
                builder: FineTuningBuilder = plugin.get_fine_tuning_builder([])
            except DatasetNotFound as error:
                raise ValueError(f"the dataset of {plugin_name!r} {plugin.meta.version} for batch {batch_id!r} is "
                                 f"not in {self._store.uri}: {error}") from error
            if max_evals is not None:
                builder.initial_max_evals = max_evals
            # The registry makes the initial model version 1 and the best on the plugin's first task (a
            # no-op after), and answers with the best version, which this iteration starts from.
            best = self._call(self._registry.RegisterInitialModel,
                              registry_pb2.RegisterInitialModelRequest(fine_tuning_method=plugin_name)).model
            max_seq_length = builder.fine_tuning_settings.max_seq_length
            start_model = load_run_model(manager, best.run_id, max_seq_length).to(self._device)
            previous = [] if best.is_initial else [dict(best.params)]
            log.info("iteration_starting", task_id=task_id, plugin=plugin_name, batch_id=batch_id,
                     start_version=best.version, trials=builder.initial_max_evals)
            report(trainer_pb2.TASK_STAGE_TRAINING, None)
            result = builder.run(start_model, on_progress=lambda p: report(trainer_pb2.TASK_STAGE_TRAINING, p),
                                 should_stop=should_stop,
                                 previous_best=previous)

            if result.best_is_start:
                # Nothing to hand in: no trial's checkpoint beat the start model on the held-out sessions.
                reason = (f"no trial beat the start model (version {best.version}) on the batch's held-out sessions "
                          f"(nDCG@10 {result.start_scores.ndcg_at_10:.4f}); no new version was recorded")
                log.info("start_model_kept", task_id=task_id, version=best.version)
                return Outcome(best.version, False, best_model_url(plugin_name, best.version), reason)
            report(trainer_pb2.TASK_STAGE_SUBMITTING, None)
            compared, compared_scores = best, result.start_scores
            candidate_scores = result.best_scores
            for _ in range(MAX_SUBMISSIONS):
                if should_stop():  # canceled after its last trial: a canceled task hands nothing in
                    raise TrainingCanceled
                request = registry_pb2.SubmitCandidateRequest(
                    fine_tuning_method=plugin_name, task_id=task_id, batch_id=batch_id, run_id=result.best_run_id,
                    candidate_scores=pb_scores(candidate_scores), compared_version=compared.version,
                    compared_scores=pb_scores(compared_scores))
                try:
                    submitted = self._call(self._registry.SubmitCandidate, request)
                except FailedPrecondition:
                    # Another task promoted a version meanwhile: compare with that one, on the same sessions,
                    # both scored the same way.
                    report(trainer_pb2.TASK_STAGE_EVALUATING, None)
                    compared = self._call(self._registry.GetBestModel,
                                          registry_pb2.GetBestModelRequest(fine_tuning_method=plugin_name)).model
                    compared_scores = builder.score(load_run_model(manager, compared.run_id, max_seq_length).to(
                        self._device))
                    candidate_scores = builder.score(result.model)
                    continue
                version = submitted.version
                log.info("candidate_submitted", task_id=task_id, version=version.version, promoted=submitted.promoted,
                         reason=submitted.reason)
                best_version = version.version if submitted.promoted or version.is_best else compared.version
                return Outcome(version.version, submitted.promoted, best_model_url(plugin_name, best_version),
                               submitted.reason, submitted.experiment_id)
            raise Unavailable(f"the best version of {plugin_name!r} changed {MAX_SUBMISSIONS} times while this task "
                              "submitted its candidate; it will try again")
