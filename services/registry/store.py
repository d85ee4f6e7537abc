"""The registry's view of MLflow: each plugin's models are versions of one registered model, the
`champion` alias marks the best, and the promotion gate's decisions are recorded as model version
tags. Every method blocks (MLflow's client); the servicer runs them in worker threads."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from google.protobuf import json_format
from mlflow import MlflowClient
from mlflow.entities import Experiment, Run
from mlflow.entities.model_registry import ModelVersion, RegisteredModel
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, RESOURCE_DOES_NOT_EXIST, ErrorCode

from services.api.embedding_studio.v1 import events_pb2
from services.api.embedding_studio.v1 import registry_pb2 as pb
from services.common.checks import parse_number
from services.common.errors import FailedPrecondition, InvalidArgument, NotFound
from services.common.mlflow_models import (
    BEST_ALIAS,
    FLAVOR_DATA_PATH,
    INITIAL_EXPERIMENT,
    KIND_INITIAL,
    LAYOUT_FLAVOR,
    MODEL_ARCHIVE_PATH,
    TAG_BATCH,
    TAG_KIND,
    TAG_LAYOUT,
    TAG_PLUGIN,
    TAG_PLUGIN_VERSION,
    TAG_TASK,
    ModelArchive,
    ModelArchiveError,
    fetch_model_archive,
    find_initial_run,
    iteration_experiment_name,
    parse_iteration_experiment_name,
    recorded_archive,
    registered_model_name,
)
from services.common.nats import EXPERIMENT_STARTED, MODEL_PROMOTED
from services.registry.experiments import Rule, Verdict, experiment_id, plugin_key, require_experiment_id

T = TypeVar("T")

# Model version tags the registry writes (the run tags of mlflow_models say where a model came from;
# these say what the promotion gate decided about it).
TAG_SCORES = "es.scores"
TAG_COMPARED_VERSION = "es.compared_version"
TAG_COMPARED_SCORES = "es.compared_scores"
TAG_PROMOTED = "es.promoted"
# The version a promoted one replaced as the best; empty when that was the initial model.
TAG_PREVIOUS = "es.previous_version"
TAG_ANNOUNCED = "es.announced"
# The online experiment a version was (or is) the challenger of: the Experiment message as JSON, and
# whether its start was announced on es.registry.experiment.started.
TAG_EXPERIMENT = "es.experiment"
TAG_EXPERIMENT_ANNOUNCED = "es.experiment_announced"
# The alias of the version on trial while an experiment runs.
CHALLENGER_ALIAS = "challenger"
TRUE = "true"
OFFLINE, ONLINE = "offline", "online"

_PAGE = 1000
# For the tests of replicas racing: seconds a promoting submission waits between its check of the best
# version and its move of the alias (0: none). Never set in production.
_HOLD_BEFORE_MOVE_S = float(os.environ.get("ES_TEST_HOLD_BEFORE_MOVE_S", "0"))


def is_missing(error: MlflowException) -> bool:
    """MLflow's "no such run, experiment, model, version or artifact"."""
    return error.error_code == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST)


def _or_none(call: Callable[[], T]) -> T | None:
    try:
        return call()
    except MlflowException as error:
        if is_missing(error):
            return None
        raise


def _pages(search: Callable[[str | None], Any]) -> Iterator[Any]:
    """Every item of an MLflow paged search."""
    token: str | None = None
    while True:
        page = search(token)
        yield from page
        token = page.token
        if not token:
            return


def _number(version: ModelVersion) -> str:
    """A version's number as the API speaks it (MLflow's REST client gives a string, its SQL store an int)."""
    return str(version.version)


def _best(model: RegisteredModel) -> str:
    return str(model.aliases.get(BEST_ALIAS, ""))


def _scores_json(scores: pb.HeldOutScores) -> str:
    return json.dumps(json_format.MessageToDict(scores, preserving_proto_field_name=True), sort_keys=True)


def _scores(text: str | None) -> pb.HeldOutScores | None:
    """Scores from a version tag; a tag written before HeldOutScores.sessions was named queries says
    "sessions"."""
    if not text:
        return None
    values = json.loads(text)
    if "sessions" in values:
        values["queries"] = values.pop("sessions")
    return json_format.ParseDict(values, pb.HeldOutScores())


def _experiment_json(experiment: pb.Experiment) -> str:
    return json.dumps(json_format.MessageToDict(experiment, preserving_proto_field_name=True), sort_keys=True)


def _experiment(version: ModelVersion) -> pb.Experiment | None:
    text = version.tags.get(TAG_EXPERIMENT)
    return json_format.Parse(text, pb.Experiment()) if text else None


def _no_initial_model(plugin: str) -> NotFound:
    return NotFound(f"plugin {plugin!r} has no models: its initial model is not logged in the MLflow experiment "
                    f"{INITIAL_EXPERIMENT!r} (the trainer logs it on the plugin's first task)")


def _run_status(status: str) -> pb.RunStatus:
    """MLflow's run status name as the RunStatus enum (UNSPECIFIED for a name it does not know)."""
    return dict(pb.RunStatus.items()).get(f"RUN_STATUS_{status}", pb.RUN_STATUS_UNSPECIFIED)


@dataclass(frozen=True)
class ArchiveTarget:
    """What DownloadModel streams: one version's run and its recorded archive."""

    fine_tuning_method: str
    version: str
    run_id: str
    archive: ModelArchive


@dataclass(frozen=True)
class Submitted:
    version: pb.ModelVersion
    promoted: bool
    experiment_id: str = ""  # the online experiment the version became the challenger of


@dataclass(frozen=True)
class ServingPlan:
    champion: pb.ModelVersion
    challenger: pb.ModelVersion | None
    experiment_id: str


@dataclass(frozen=True)
class Announcement:
    """A promotion not yet announced on NATS."""

    model_name: str
    version: str
    subject: str
    payload: bytes
    msg_id: str


class ModelStore:
    """`promotion`: "offline" (a held-out winner becomes the best) or "online" (it becomes the challenger of
    an online experiment decided by `rule`)."""

    def __init__(self, tracking_uri: str, promotion: str = OFFLINE, rule: Rule | None = None) -> None:
        if promotion not in (OFFLINE, ONLINE):
            raise ValueError(f"promotion is {promotion!r}; it must be {OFFLINE!r} or {ONLINE!r}")
        self.tracking_uri = tracking_uri
        self.promotion = promotion
        self.rule = rule or Rule()
        self._client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        # MLflow has no compare-and-set for aliases: the registry is the only writer of the best alias,
        # and its replicas serialize submissions with a lock they share (the servicer's LeaseLock); this
        # one orders this process's threads.
        self._write_lock = threading.Lock()

    # Lookups -----------------------------------------------------------------------------------

    @staticmethod
    def _model_name(plugin: str) -> str:
        if not plugin:
            raise InvalidArgument("fine_tuning_method", "must name a plugin")
        try:
            return registered_model_name(plugin)
        except ValueError as error:
            raise InvalidArgument("fine_tuning_method", str(error)) from error

    def _registered(self, name: str) -> RegisteredModel | None:
        return _or_none(lambda: self._client.get_registered_model(name))

    def _versions(self, name: str) -> list[ModelVersion]:
        versions = _pages(lambda token: self._client.search_model_versions(
            f"name = '{name}'", max_results=_PAGE, page_token=token))
        return sorted(versions, key=lambda version: int(_number(version)))

    def _version(self, plugin: str, name: str, version: str, field: str = "version") -> ModelVersion:
        parse_number(field, version, "a model version number")
        found = _or_none(lambda: self._client.get_model_version(name, version))
        if found is None:
            raise NotFound(f"plugin {plugin!r} has no model version {version!r}")
        return found

    def _version_of_run(self, name: str, run_id: str) -> ModelVersion | None:
        found = self._client.search_model_versions(f"name = '{name}' AND run_id = '{run_id}'", max_results=1)
        return found[0] if found else None

    def _champion(self, plugin: str) -> tuple[str, RegisteredModel]:
        """The plugin's registered model with its best alias set (read only: `register_initial` sets it)."""
        name = self._model_name(plugin)
        model = self._registered(name)
        if model is None or BEST_ALIAS not in model.aliases:
            if find_initial_run(self._client, plugin) is None:
                raise _no_initial_model(plugin)
            raise NotFound(f"plugin {plugin!r} has no best model yet: its initial model is logged but not registered "
                           f"(RegisterInitialModel registers it; the trainer does at the start of each task)")
        return name, model

    def register_initial(self, plugin: str) -> pb.ModelVersion:
        """Makes the plugin's initial run its version 1 and best when it has no best version yet (once:
        idempotent); returns the best version."""
        name = self._model_name(plugin)
        with self._write_lock:
            model = self._registered(name)
            if model is None or BEST_ALIAS not in model.aliases:
                initial = find_initial_run(self._client, plugin)
                if initial is None:
                    raise _no_initial_model(plugin)
                if model is None:
                    try:
                        self._client.create_registered_model(
                            name, tags={TAG_PLUGIN: plugin},
                            description=f"Models of the fine-tuning plugin {plugin!r}; alias {BEST_ALIAS!r} is the "
                                        f"best.")
                    except MlflowException as error:
                        if error.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
                            raise
                version = self._version_of_run(name, initial.info.run_id) or self._client.create_model_version(
                    name, source=f"runs:/{initial.info.run_id}/model", run_id=initial.info.run_id,
                    tags={TAG_KIND: KIND_INITIAL, TAG_PLUGIN: plugin,
                          TAG_PLUGIN_VERSION: initial.data.tags.get(TAG_PLUGIN_VERSION, "")})
                self._client.set_registered_model_alias(name, BEST_ALIAS, _number(version))
        return self.best(plugin)

    def _run(self, run_id: str) -> Run | None:
        return _or_none(lambda: self._client.get_run(run_id))

    # Views -------------------------------------------------------------------------------------

    def _reason(self, plugin: str, version: ModelVersion, best: str) -> str:
        tags = version.tags
        if tags.get(TAG_KIND) == KIND_INITIAL:
            origin = f"the initial model of {plugin!r} (plugin version {tags.get(TAG_PLUGIN_VERSION) or '?'})"
            if _number(version) == best:
                return f"{origin}: no fine-tuned version has been promoted yet"
            return f"{origin}; version {best} is the best now"
        scores, compared = _scores(tags.get(TAG_SCORES)), _scores(tags.get(TAG_COMPARED_SCORES))
        if scores is None or compared is None:
            return "no promotion decision recorded"
        versus = (f"held-out nDCG@10 {scores.ndcg_at_10:.4f} vs {compared.ndcg_at_10:.4f} of version "
                  f"{tags.get(TAG_COMPARED_VERSION)} on the same {scores.queries} held-out queries of "
                  f"{tags.get(TAG_BATCH)}")
        experiment = _experiment(version)
        if experiment is not None:
            return self._experiment_reason(version, experiment, best, versus)
        if tags.get(TAG_PROMOTED) != TRUE:
            return f"not promoted: it did not beat the best ({versus})"
        if _number(version) == best:
            return f"best: it beat version {tags.get(TAG_COMPARED_VERSION)} ({versus})"
        return (f"was the best after beating version {tags.get(TAG_COMPARED_VERSION)} ({versus}); "
                f"version {best} is the best now")

    @staticmethod
    def _experiment_reason(version: ModelVersion, experiment: pb.Experiment, best: str, versus: str) -> str:
        online = f"online experiment {experiment.experiment_id}: {experiment.reason}"
        offline = f"it had won the held-out gate ({versus})"
        if experiment.state == pb.EXPERIMENT_STATE_RUNNING:
            return f"challenger of {online}; {offline}"
        if experiment.state == pb.EXPERIMENT_STATE_CHALLENGER_WON:
            if _number(version) == best:
                return f"best: it won {online}; {offline}"
            return f"was the best after winning {online}; version {best} is the best now"
        return f"not promoted: {online}; {offline}"

    def _view(self, plugin: str, version: ModelVersion, best: str) -> pb.ModelVersion:
        tags = version.tags
        run = self._run(version.run_id)
        view = pb.ModelVersion(
            fine_tuning_method=plugin, version=_number(version), is_initial=tags.get(TAG_KIND) == KIND_INITIAL,
            batch_id=tags.get(TAG_BATCH, ""), run_id=version.run_id, task_id=tags.get(TAG_TASK, ""),
            is_best=_number(version) == best, reason=self._reason(plugin, version, best),
            compared_version=tags.get(TAG_COMPARED_VERSION, ""), created_at=version.creation_timestamp // 1000)
        if (scores := _scores(tags.get(TAG_SCORES))) is not None:
            view.scores.CopyFrom(scores)
        if (compared := _scores(tags.get(TAG_COMPARED_SCORES))) is not None:
            view.compared_scores.CopyFrom(compared)
        if run is not None:
            view.iteration_id = run.info.experiment_id
            view.params.update(run.data.params)
            if (archive := recorded_archive(run)) is not None:
                view.sha256, view.size_bytes = archive.sha256, archive.size_bytes
        return view

    # RPCs --------------------------------------------------------------------------------------

    def best(self, plugin: str) -> pb.ModelVersion:
        name, model = self._champion(plugin)
        best = _best(model)
        return self._view(plugin, self._version(plugin, name, best), best)

    def versions(self, plugin: str) -> list[pb.ModelVersion]:
        name, model = self._champion(plugin)
        best = _best(model)
        return [self._view(plugin, version, best) for version in self._versions(name)]

    def _iteration(self, experiment: Experiment, plugin: str, batch_id: str) -> pb.Iteration:
        iteration = pb.Iteration(iteration_id=experiment.experiment_id, name=experiment.name,
                                 fine_tuning_method=plugin, batch_id=batch_id)
        runs = _pages(lambda token: self._client.search_runs(
            [experiment.experiment_id], order_by=["attributes.start_time ASC"], max_results=_PAGE, page_token=token))
        for run in runs:
            iteration.runs.add(run_id=run.info.run_id, status=_run_status(run.info.status), params=run.data.params,
                               metrics=run.data.metrics)
        return iteration

    def iterations(self, plugin: str) -> list[pb.Iteration]:
        name = self._model_name(plugin)
        prefix = iteration_experiment_name(plugin, "")
        # LIKE narrows the search; "_" and "%" in a plugin name are wildcards there, so check exactly after.
        experiments = _pages(lambda token: self._client.search_experiments(
            filter_string=f"name LIKE '{prefix}%'", max_results=_PAGE, page_token=token))
        iterations = []
        for experiment in experiments:
            parsed = parse_iteration_experiment_name(experiment.name)
            if parsed is not None and parsed[0] == plugin:
                iterations.append(self._iteration(experiment, *parsed))
        if not iterations and self._registered(name) is None and find_initial_run(self._client, plugin) is None:
            raise NotFound(f"plugin {plugin!r} has no iterations and no models in MLflow")
        return sorted(iterations, key=lambda iteration: int(iteration.iteration_id))

    def iteration(self, iteration_id: str) -> pb.Iteration:
        if not iteration_id:
            raise InvalidArgument("iteration_id", "must name an iteration (its MLflow experiment id)")
        parse_number("iteration_id", iteration_id, "an MLflow experiment id")
        experiment = _or_none(lambda: self._client.get_experiment(iteration_id))
        parsed = parse_iteration_experiment_name(experiment.name) if experiment is not None else None
        if experiment is None or parsed is None:
            raise NotFound(f"no iteration with id {iteration_id!r} (no MLflow experiment named "
                           f"{iteration_experiment_name('<plugin>', '<batch>')!r} has it)")
        return self._iteration(experiment, *parsed)

    def archive_target(self, plugin: str, version: str) -> ArchiveTarget:
        name, model = self._champion(plugin)
        chosen = self._version(plugin, name, version or _best(model))
        run = self._run(chosen.run_id)
        if run is None:
            raise NotFound(f"version {_number(chosen)} of {plugin!r}: its MLflow run {chosen.run_id} is gone")
        archive = recorded_archive(run)
        if archive is None:
            raise NotFound(f"version {_number(chosen)} of {plugin!r}: run {chosen.run_id} has no model archive "
                           f"recorded")
        return ArchiveTarget(plugin, _number(chosen), chosen.run_id, archive)

    def download(self, target: ArchiveTarget, dest_dir: Path) -> Path:
        """The version's archive (as stored, or rebuilt from the flavor's stored folder); the client checks
        it against the recorded sha256, so that a damaged file is caught wherever it was damaged."""
        run = self._run(target.run_id)
        if run is None:
            raise NotFound(f"version {target.version} of {target.fine_tuning_method!r}: its MLflow run "
                           f"{target.run_id} is gone")
        stored = FLAVOR_DATA_PATH if run.data.tags.get(TAG_LAYOUT) == LAYOUT_FLAVOR else MODEL_ARCHIVE_PATH
        try:
            return fetch_model_archive(self._client, run, dest_dir)
        except (MlflowException, ModelArchiveError) as error:
            if isinstance(error, MlflowException) and not is_missing(error):
                raise
            raise NotFound(f"version {target.version} of {target.fine_tuning_method!r}: {stored} is "
                           f"missing from the artifacts of run {target.run_id} ({error})") from error

    def submit(self, request: pb.SubmitCandidateRequest) -> Submitted:
        name = self._model_name(request.fine_tuning_method)
        plugin = request.fine_tuning_method
        run = self._run(request.run_id)
        if run is None:
            raise NotFound(f"run_id: MLflow has no run {request.run_id!r}")
        if run.data.tags.get(TAG_PLUGIN) != plugin:
            raise InvalidArgument("run_id", f"run {request.run_id} belongs to plugin "
                                            f"{run.data.tags.get(TAG_PLUGIN)!r} (tag {TAG_PLUGIN}), not {plugin!r}")
        if run.data.tags.get(TAG_KIND) == KIND_INITIAL:
            raise InvalidArgument("run_id", f"run {request.run_id} holds the initial model of {plugin!r}, "
                                            f"not a fine-tuned candidate")
        if recorded_archive(run) is None:
            raise NotFound(f"run {request.run_id} has no model archive recorded (log it with log_model_folder)")
        with self._write_lock:
            _, model = self._champion(plugin)
            best = _best(model)
            compared = self._version(plugin, name, request.compared_version, field="compared_version")
            existing = self._version_of_run(name, request.run_id)
            if existing is not None and (decided := self._decided(plugin, existing, best)) is not None:
                return decided
            if _number(compared) != best:
                raise FailedPrecondition(
                    f"compared_version: version {_number(compared)} of {plugin!r} is no longer the best; version "
                    f"{best} is: score the candidate against it and submit again")
            tags = {TAG_KIND: run.data.tags.get(TAG_KIND, ""), TAG_PLUGIN: plugin, TAG_BATCH: request.batch_id,
                    TAG_TASK: request.task_id, TAG_SCORES: _scores_json(request.candidate_scores),
                    TAG_COMPARED_VERSION: _number(compared),
                    TAG_COMPARED_SCORES: _scores_json(request.compared_scores)}
            if existing is None:
                candidate = self._client.create_model_version(
                    name, source=f"runs:/{request.run_id}/model", run_id=request.run_id, tags=tags)
            else:
                # A retry after a failure before the decision was recorded: decide again on the new scores.
                for key, value in tags.items():
                    self._client.set_model_version_tag(name, _number(existing), key, value)
                candidate = existing
            promoted = request.candidate_scores.ndcg_at_10 > request.compared_scores.ndcg_at_10
            if promoted and self.promotion == ONLINE:
                started = self._start_experiment(name, plugin, _number(candidate), best)
                return Submitted(self._view(plugin, self._version(plugin, name, _number(candidate)), best),
                                 promoted=False, experiment_id=started.experiment_id)
            if promoted and _HOLD_BEFORE_MOVE_S:
                time.sleep(_HOLD_BEFORE_MOVE_S)
            if promoted:
                self._client.set_registered_model_alias(name, BEST_ALIAS, _number(candidate))
                best = _number(candidate)
                self._record_promotion(name, _number(candidate), _number(compared))
            return Submitted(self._view(plugin, self._version(plugin, name, _number(candidate)), best), promoted)

    def _decided(self, plugin: str, existing: ModelVersion, best: str) -> Submitted | None:
        """The answer a retry of a submission gets when its decision was recorded before: the version
        was promoted, or it started an online experiment."""
        if existing.tags.get(TAG_PROMOTED) == TRUE or _number(existing) == best:
            return Submitted(self._view(plugin, existing, best), promoted=True)
        if (started := _experiment(existing)) is not None:
            return Submitted(self._view(plugin, existing, best), promoted=False, experiment_id=started.experiment_id)
        return None

    def _record_promotion(self, name: str, version: str, compared_version: str) -> None:
        """Tags a version that the best alias now points at as promoted (after the alias moved: the alias
        is the truth, and the announcer repairs a version whose tags a crash cut short)."""
        compared = (_or_none(lambda: self._client.get_model_version(name, compared_version))
                    if compared_version else None)
        replaced_initial = compared is None or compared.tags.get(TAG_KIND) == KIND_INITIAL
        self._client.set_model_version_tag(name, version, TAG_PREVIOUS, "" if replaced_initial else compared_version)
        self._client.set_model_version_tag(name, version, TAG_PROMOTED, TRUE)

    # Online experiments ------------------------------------------------------------------------

    def _start_experiment(self, name: str, plugin: str, challenger: str, champion: str) -> pb.Experiment:
        """Makes `challenger` the version on trial against `champion` (the caller holds the write lock).
        A running experiment of the plugin is stopped: the newer held-out winner replaces its challenger.
        The alias moves first and the experiment tag is written after, so a crash between them leaves a
        version that a retry of the submission decides again."""
        model = self._client.get_registered_model(name)
        running = model.aliases.get(CHALLENGER_ALIAS)
        if running is not None and str(running) != challenger:
            previous = self._client.get_model_version(name, str(running))
            if (replaced := _experiment(previous)) is not None and replaced.state == pb.EXPERIMENT_STATE_RUNNING:
                replaced.state = pb.EXPERIMENT_STATE_STOPPED
                replaced.reason = (f"stopped: version {challenger}, a newer candidate that won the held-out gate, "
                                   f"replaced its challenger")
                replaced.decided_at = int(time.time())
                self._client.set_model_version_tag(name, str(running), TAG_EXPERIMENT, _experiment_json(replaced))
        rule = self.rule
        experiment = pb.Experiment(
            experiment_id=experiment_id(plugin, challenger), fine_tuning_method=plugin, champion_version=champion,
            challenger_version=challenger, state=pb.EXPERIMENT_STATE_RUNNING, alpha=rule.alpha,
            min_sessions=rule.min_sessions, max_sessions=rule.max_sessions, started_at=int(time.time()), p_value=1.0,
            reason=f"running: no session counted yet (at least {rule.min_sessions} non-tied ones and p < alpha "
                   f"{rule.alpha} decide)")
        self._client.set_registered_model_alias(name, CHALLENGER_ALIAS, challenger)
        self._client.set_model_version_tag(name, challenger, TAG_EXPERIMENT, _experiment_json(experiment))
        return experiment

    def _plugin_of_key(self, key: str) -> str | None:
        for model in _pages(lambda token: self._client.search_registered_models(max_results=_PAGE, page_token=token)):
            plugin = model.tags.get(TAG_PLUGIN)
            if plugin is not None and plugin_key(plugin) == key:
                return plugin
        return None

    def _experiment_version(self, experiment_id_: str) -> tuple[str, str, ModelVersion, pb.Experiment]:
        """(plugin, model name, challenger version, experiment) of an experiment id."""
        parsed = require_experiment_id("experiment_id", experiment_id_)
        plugin = self._plugin_of_key(parsed[0])
        if plugin is not None:
            name = self._model_name(plugin)
            found = _or_none(lambda: self._client.get_model_version(name, parsed[1]))
            experiment = _experiment(found) if found is not None else None
            if found is not None and experiment is not None and experiment.experiment_id == experiment_id_:
                return plugin, name, found, experiment
        raise NotFound(f"no online experiment {experiment_id_!r}")

    def experiment(self, experiment_id_: str) -> pb.Experiment:
        return self._experiment_version(experiment_id_)[3]

    def experiments(self, plugin: str) -> list[pb.Experiment]:
        name, _ = self._champion(plugin)
        return [e for version in self._versions(name) if (e := _experiment(version)) is not None]

    def _on_trial(self, name: str, model: RegisteredModel) -> tuple[ModelVersion, pb.Experiment] | None:
        """The version under the challenger alias and its experiment, while that experiment runs."""
        on_trial = model.aliases.get(CHALLENGER_ALIAS)
        if on_trial is None:
            return None
        version = _or_none(lambda: self._client.get_model_version(name, str(on_trial)))
        experiment = _experiment(version) if version is not None else None
        if version is None or experiment is None or experiment.state != pb.EXPERIMENT_STATE_RUNNING:
            return None
        return version, experiment

    def serving_plan(self, plugin: str) -> ServingPlan:
        name, model = self._champion(plugin)
        best = _best(model)
        champion = self._view(plugin, self._version(plugin, name, best), best)
        if (trial := self._on_trial(name, model)) is not None:
            return ServingPlan(champion, self._view(plugin, trial[0], best), trial[1].experiment_id)
        return ServingPlan(champion, None, "")

    def running_experiments(self) -> list[pb.Experiment]:
        running = []
        for found in _pages(lambda token: self._client.search_registered_models(max_results=_PAGE, page_token=token)):
            if found.tags.get(TAG_PLUGIN) is not None and (
                    trial := self._on_trial(found.name, self._client.get_registered_model(found.name))) is not None:
                running.append(trial[1])
        return running

    def record_outcome(self, experiment_id_: str, sessions: int, wins: int, losses: int, verdict: Verdict
                       ) -> tuple[pb.Experiment, bool]:
        """Records an experiment's counts and, once `verdict` decides, its decision: for the challenger,
        the champion alias moves to it (and the challenger alias goes); for the champion, the challenger
        alias goes and the version is never served again. Returns the experiment and whether the
        champion moved. An experiment already decided (by another replica) is returned unchanged."""
        _, name, version, experiment = self._experiment_version(experiment_id_)
        with self._write_lock:
            experiment = _experiment(self._client.get_model_version(name, _number(version))) or experiment
            if experiment.state != pb.EXPERIMENT_STATE_RUNNING:
                return experiment, False
            recorded = _experiment_json(experiment)
            experiment.sessions, experiment.wins, experiment.losses = sessions, wins, losses
            experiment.ties = sessions - wins - losses
            experiment.preference = (wins - losses) / sessions if sessions else 0.0
            experiment.p_value, experiment.reason = verdict.p_value, verdict.reason
            best = _best(self._client.get_registered_model(name))
            moved = False
            if best == experiment.challenger_version:
                # The alias moved and a crash cut the record short: the decision was the challenger's.
                experiment.state = pb.EXPERIMENT_STATE_CHALLENGER_WON
            elif verdict.state != pb.EXPERIMENT_STATE_RUNNING and best != experiment.champion_version:
                experiment.state = pb.EXPERIMENT_STATE_STOPPED
                experiment.reason = (f"stopped: the champion changed to version {best} while it ran; "
                                     f"{verdict.reason}")
            else:
                experiment.state = verdict.state
                if verdict.state == pb.EXPERIMENT_STATE_CHALLENGER_WON:
                    self._client.set_registered_model_alias(name, BEST_ALIAS, experiment.challenger_version)
                    moved = True
            if experiment.state != pb.EXPERIMENT_STATE_RUNNING:
                experiment.decided_at = int(time.time())
                self._client.delete_registered_model_alias(name, CHALLENGER_ALIAS)
            if experiment.state == pb.EXPERIMENT_STATE_CHALLENGER_WON:
                self._record_promotion(name, experiment.challenger_version, experiment.champion_version)
            if _experiment_json(experiment) != recorded:  # most looks change nothing: no write then
                self._client.set_model_version_tag(name, experiment.challenger_version, TAG_EXPERIMENT,
                                                   _experiment_json(experiment))
            return experiment, moved

    # Announcements -----------------------------------------------------------------------------

    def pending_announcements(self) -> list[Announcement]:
        """Every promotion recorded in MLflow and not yet announced, oldest first per plugin. A best
        version whose promotion tag was not written (a crash right after the alias moved) counts too."""
        pending = []
        for model in _pages(lambda token: self._client.search_registered_models(max_results=_PAGE, page_token=token)):
            plugin = model.tags.get(TAG_PLUGIN)
            if plugin is None:
                continue
            best = _best(self._client.get_registered_model(model.name))
            for version in self._versions(model.name):
                tags = version.tags
                if _number(version) == best and tags.get(TAG_KIND) != KIND_INITIAL and tags.get(TAG_PROMOTED) != TRUE:
                    with self._write_lock:
                        self._record_promotion(model.name, _number(version), tags.get(TAG_COMPARED_VERSION, ""))
                    version = self._version(plugin, model.name, _number(version))
                    tags = version.tags
                experiment = _experiment(version)
                if experiment is not None and tags.get(TAG_EXPERIMENT_ANNOUNCED) != TRUE:
                    started = events_pb2.ExperimentStarted(experiment=experiment)
                    started.experiment.state = pb.EXPERIMENT_STATE_RUNNING
                    pending.append(Announcement(model.name, _number(version), EXPERIMENT_STARTED,
                                                started.SerializeToString(),
                                                msg_id=f"experiment {experiment.experiment_id} started"))
                if tags.get(TAG_PROMOTED) != TRUE or tags.get(TAG_ANNOUNCED) == TRUE:
                    continue
                event = events_pb2.ModelPromoted(model=self._view(plugin, version, best),
                                                 previous_version=tags.get(TAG_PREVIOUS, ""))
                if experiment is not None and experiment.state == pb.EXPERIMENT_STATE_CHALLENGER_WON:
                    event.experiment.CopyFrom(experiment)
                pending.append(Announcement(model.name, _number(version), MODEL_PROMOTED, event.SerializeToString(),
                                            msg_id=f"model {plugin} version {_number(version)} promoted"))
        return pending

    def mark_announced(self, announcement: Announcement) -> None:
        tag = TAG_EXPERIMENT_ANNOUNCED if announcement.subject == EXPERIMENT_STARTED else TAG_ANNOUNCED
        self._client.set_model_version_tag(announcement.model_name, announcement.version, tag, TRUE)
