"""`ExperimentsManager` (the seed's name): every run of a plugin in MLflow, in the seed's layout —
experiment "iteration / initial" holds each plugin's initial model, "iteration / <plugin> / <batch>"
one fine-tuning iteration with a run per parameter set. Metrics are buffered and sent with one
`log_batch` per evaluation, not one call per value. Models are saved as MLflow Models of the
`sentence_transformers` flavor (safetensors; a two-tower model as a tar), each with its own model card,
and the sha256 of their archive recorded with the run (services/common/mlflow_models.py)."""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from services.common.mlflow_models import (
    INITIAL_EXPERIMENT,
    KIND_INITIAL,
    KIND_TRIAL,
    TAG_BATCH,
    TAG_KIND,
    TAG_PLUGIN,
    TAG_PLUGIN_VERSION,
    TAG_TASK,
    find_initial_run,
    iteration_experiment_name,
    log_model_folder,
)
from services.common.settings import Settings
from services.fine_tuning.context import PluginCall, current_plugin_call
from services.fine_tuning.training.accumulators import MetricsAccumulator
from services.fine_tuning.training.evaluation import HeldOutScores

TAG_MODEL_CLASS = "es.model_class"
TAG_PARAMS_KEY = "es.params_key"  # identifies a parameter set across retries of a trial
# "true" on a finished run whose best checkpoint was the start model (no training step beat it on the
# held-out sessions): it saved no model, and the iteration records no new version for it.
TAG_BEST_IS_START = "es.best_is_start"

def _artifact_root(tracking_uri: str) -> str | None:
    """Where a local store keeps artifacts (MLflow's default is ./mlruns in the working directory)."""
    if tracking_uri.startswith(("sqlite:", "file:")) or "://" not in tracking_uri:
        return (Settings().state_dir / "mlflow-artifacts").as_uri()
    return None  # a tracking server decides


@dataclass(frozen=True)
class TrialRecord:
    run_id: str
    params_key: str
    params: dict[str, Any]
    status: str  # MLflow run status: FINISHED, FAILED, KILLED, RUNNING
    value: float | None  # the main metric at the run's best checkpoint, for finished runs
    best_is_start: bool = False  # its best checkpoint was the start model: it saved no model of its own


class ExperimentsManager:
    """Args:
        tracking_uri: MLflow tracking URI (plugins pass `settings.MLFLOW_TRACKING_URI`).
        main_metric: the metric that picks the best run inside an iteration (higher is better), e.g.
            "test_ndcg_at_10" or the seed's "test_not_irrelevant_dist_shift".
        accumulators: the plugin's `MetricsAccumulator`s; a logged metric with an accumulator of its
            name is logged with the aggregates it asks for.
    """

    def __init__(self, tracking_uri: str, main_metric: str, accumulators: Sequence[MetricsAccumulator] = ()) -> None:
        if not main_metric:
            raise ValueError("main_metric must name a logged metric, e.g. 'test_ndcg_at_10'")
        self.tracking_uri = tracking_uri
        self.main_metric = main_metric
        self.accumulators = {a.name: a for a in accumulators}
        self._client: MlflowClient | None = None
        self._pending: dict[str, list[Metric]] = {}

    @property
    def client(self) -> MlflowClient:
        if self._client is None:  # lazily: plugins are built in dataprep too, which never talks to MLflow
            self._client = MlflowClient(tracking_uri=self.tracking_uri)
        return self._client

    @staticmethod
    def scope() -> PluginCall:
        call = current_plugin_call()
        if call is None:
            raise RuntimeError("ExperimentsManager used outside the platform's plugin_call(...) "
                               "(services.fine_tuning.context)")
        return call

    def _experiment(self, name: str) -> str:
        experiment = self.client.get_experiment_by_name(name)
        if experiment is not None:
            return experiment.experiment_id
        return self.client.create_experiment(name, artifact_location=_artifact_root(self.tracking_uri))

    # --- the initial model --------------------------------------------------------------------------

    def upload_initial_model(self, model: Any) -> str:
        """Saves the plugin's initial model as a run of "iteration / initial"; returns the run id."""
        scope = self.scope()
        run = self.client.create_run(self._experiment(INITIAL_EXPERIMENT), run_name=f"{scope.plugin.name} initial",
                                     tags={TAG_PLUGIN: scope.plugin.name, TAG_PLUGIN_VERSION: scope.plugin.version,
                                           TAG_KIND: KIND_INITIAL,
                                           TAG_MODEL_CLASS: f"{type(model).__module__}.{type(model).__qualname__}"})
        self._save(run.info.run_id, model, self._card(run.info.run_id, model))
        if hasattr(model, "config"):
            self.client.log_batch(run.info.run_id, params=[Param(k, str(v)) for k, v in model.config().items()])
        self.client.set_terminated(run.info.run_id, "FINISHED")
        return run.info.run_id

    def initial_run_id(self) -> str | None:
        run = find_initial_run(self.client, self.scope().plugin.name)
        return run.info.run_id if run else None

    # --- iterations and runs ------------------------------------------------------------------------

    def iteration_experiment(self) -> str:
        scope = self.scope()
        return self._experiment(iteration_experiment_name(scope.plugin.name, scope.batch_id))

    def start_run(self, params: dict[str, Any], params_key: str, settings_config: dict[str, Any],
                  trial: int | None = None) -> str:
        """A run of the iteration for one parameter set, named "trial <trial> / <batch>" in MLflow."""
        scope = self.scope()
        name = f"trial {trial} / {scope.batch_id}" if trial is not None else None
        run = self.client.create_run(self.iteration_experiment(), run_name=name, tags={
            TAG_PLUGIN: scope.plugin.name, TAG_PLUGIN_VERSION: scope.plugin.version, TAG_BATCH: scope.batch_id,
            TAG_TASK: scope.task_id, TAG_KIND: KIND_TRIAL, TAG_PARAMS_KEY: params_key})
        values = {**{f"settings.{k}": v for k, v in settings_config.items()}, **params}
        self.client.log_batch(run.info.run_id, params=[Param(k, json.dumps(v) if isinstance(v, list) else str(v))
                                                       for k, v in values.items()])
        for accumulator in self.accumulators.values():
            accumulator.reset()
        return run.info.run_id

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int) -> None:
        """Buffers metrics (with their accumulators' aggregates) and sends them in one call."""
        now = int(time.time() * 1000)
        pending = self._pending.setdefault(run_id, [])
        for name, value in metrics.items():
            accumulator = self.accumulators.get(name)
            for key, aggregated in (accumulator.accumulate(value) if accumulator else {name: value}).items():
                pending.append(Metric(key, float(aggregated), now, step))
        self.flush(run_id)

    def flush(self, run_id: str) -> None:
        pending = self._pending.pop(run_id, [])
        for start in range(0, len(pending), 1000):  # MLflow's log_batch limit
            self.client.log_batch(run_id, metrics=pending[start:start + 1000])

    def finish_run(self, run_id: str, status: str = "FINISHED", tags: dict[str, str] | None = None) -> None:
        self.flush(run_id)
        if tags:
            self.client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])
        self.client.set_terminated(run_id, status)

    def save_model(self, run_id: str, model: Any, params: dict[str, Any] | None = None,
                   start_scores: HeldOutScores | None = None, scores: HeldOutScores | None = None) -> None:
        """Logs a trial's model with its card (its `params` and held-out `scores` against the start model's)."""
        self._save(run_id, model, self._card(run_id, model, params or {}, start_scores, scores))

    def _card(self, run_id: str, model: Any, params: dict[str, Any] | None = None,
              start_scores: HeldOutScores | None = None, scores: HeldOutScores | None = None) -> str:
        from services.fine_tuning.training.model_card import model_card

        config = model.config() if hasattr(model, "config") else {"class": type(model).__name__}
        return model_card(self.scope(), run_id, config, params, start_scores, scores)

    def _save(self, run_id: str, model: Any, card: str) -> None:
        with tempfile.TemporaryDirectory(prefix="es-save-") as folder:
            model.save(Path(folder) / "model")
            log_model_folder(self.client, run_id, Path(folder) / "model", card=card)

    def trials(self) -> list[TrialRecord]:
        """Every run of this task's iteration so far (a resumed search continues from them)."""
        scope = self.scope()
        runs = self.client.search_runs(
            [self.iteration_experiment()], filter_string=f"tags.`{TAG_TASK}` = '{scope.task_id}'",
            order_by=["attributes.start_time ASC"], max_results=10_000)
        return [TrialRecord(run.info.run_id, run.data.tags.get(TAG_PARAMS_KEY, ""),
                            {k: v for k, v in run.data.params.items() if not k.startswith("settings.")},
                            run.info.status, run.data.metrics.get(f"best_{self.main_metric}"),
                            run.data.tags.get(TAG_BEST_IS_START) == "true")
                for run in runs]
