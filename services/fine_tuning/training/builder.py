"""`FineTuningBuilder` (the seed's name): one fine-tuning iteration of a plugin on one batch — a seeded
TPE search (Optuna) over the plugin's parameter space, one MLflow run per parameter set, each run's best
checkpoint saved. A failed trial is recorded as failed (never as a neutral score); a search interrupted
anywhere continues from the runs MLflow already holds: finished runs are not trained again, a run that
was stopped (canceled, or left RUNNING by a dead trainer, which is then marked KILLED) is trained again
with its parameters, and every later draw is the one a search without the interruption would have
made (each draw's sampler is seeded by its place in the search, not by how many processes ran it). A
parameter set is trained at most once per iteration. Later iterations of a plugin try the best
parameter sets of its earlier iterations first."""

from __future__ import annotations

import copy
import hashlib
import json
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

from services.common.logging import get_logger
from services.common.mlflow_models import download_model_archive, extract_model_archive
from services.fine_tuning.training.click_model import PositionClickModel, position_weight
from services.fine_tuning.training.evaluation import HeldOutQueries, HeldOutScores
from services.fine_tuning.training.examples import ClickExample, make_click_examples, make_judged_examples
from services.fine_tuning.training.experiments import TAG_BEST_IS_START, ExperimentsManager, TrialRecord
from services.fine_tuning.training.loop import Progress, RunResult, TrainingCanceled, train_run
from services.fine_tuning.training.models import EmbeddingModel, ItemPrefixCache, TextToTextModel, load_model
from services.fine_tuning.training.protocols import QueryRetriever, RankingDataset
from services.fine_tuning.training.settings import FineTuningParams, FineTuningSettings

log = get_logger("fine_tuning")
optuna.logging.set_verbosity(optuna.logging.WARNING)

# A search that keeps failing stops after this many attempts per wanted trial.
MAX_ATTEMPTS_PER_TRIAL = 2
# Draws one trial may take to find a parameter set the search has not finished yet.
MAX_DRAWS_PER_TRIAL = 32


def params_key(params: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class TrialProgress:
    trial: int
    trials: int
    progress: Progress | None = None


@dataclass
class IterationResult:
    """The iteration's best run, with its held-out scores and the start model's, scored the same way."""

    best_run_id: str
    best_params: dict[str, Any]
    best_scores: HeldOutScores
    start_scores: HeldOutScores
    model: EmbeddingModel
    trials: list[TrialRecord] = field(default_factory=list)
    runs: list[RunResult] = field(default_factory=list)
    # No trial's checkpoint beat the start model: `model` is the start model and the best run saved none.
    best_is_start: bool = False


@dataclass
class _BestInMemory:
    """The best run of this process so far, with its model (the only one kept in memory)."""

    run_id: str
    model: EmbeddingModel
    scores: HeldOutScores
    start_scores: HeldOutScores


@dataclass
class _Search:
    """A search in progress: the study, the runs finished so far (earlier processes' too) and this
    process's results."""

    study: optuna.Study
    distributions: dict[str, optuna.distributions.CategoricalDistribution]
    finished: list[TrialRecord]
    # Trials that failed since the last one finished: they move the next draw on.
    failures: int = 0
    results: list[RunResult] = field(default_factory=list)
    best: _BestInMemory | None = None
    attempts: int = 0
    exhausted: bool = False  # every parameter set of the space has finished

    def sampler(self, seed: int, draw: int) -> optuna.samplers.TPESampler:
        """The sampler of one draw, seeded by where the draw stands in the search, so that a resumed
        search draws what an uninterrupted one would have."""
        place = f"{seed}:{len(self.finished)}:{self.failures}:{draw}".encode()
        return optuna.samplers.TPESampler(seed=int(hashlib.sha256(place).hexdigest()[:8], 16))


@dataclass
class _TrialContext:
    """What every trial of one search shares."""

    start_model: EmbeddingModel
    click_model: PositionClickModel
    held_out: HeldOutQueries
    train_with_clicks: int
    use_cache: bool
    on_progress: Callable[[TrialProgress], None]
    should_stop: Callable[[], bool]
    caches: dict[int, ItemPrefixCache] = field(default_factory=dict)


def _encode(value: Any) -> Any:
    # Optuna's categorical choices must be scalars; list-valued choices (examples_order) go as JSON.
    return json.dumps(value) if isinstance(value, list | tuple) else value


def _decode(name: str, value: Any) -> Any:
    return tuple(json.loads(value)) if name == "examples_order" and isinstance(value, str) else value


def _typed(params: dict[str, Any], distributions: dict[str, optuna.distributions.CategoricalDistribution]
           ) -> dict[str, Any]:
    """A parameter set as the search's choices spell it (MLflow hands parameters back as strings)."""
    typed = {}
    for name, value in params.items():
        if name not in distributions:
            continue
        example = distributions[name].choices[0]
        if isinstance(value, str) and not isinstance(example, str):
            value = value == "True" if isinstance(example, bool) else type(example)(value)
        typed[name] = _encode(value)
    return typed


def _in_space(point: dict[str, Any], distributions: dict[str, optuna.distributions.CategoricalDistribution]
              ) -> bool:
    """Whether a (typed) parameter set is a point of the search space: every parameter, each a choice."""
    return point.keys() == distributions.keys() and all(v in distributions[k].choices for k, v in point.items())


def load_run_model(manager: ExperimentsManager, run_id: str, max_seq_length: int | None) -> EmbeddingModel:
    """The model a run saved (its archive checked against the recorded sha256), in the wrapper its
    layout calls for (`models.load_model`)."""
    with tempfile.TemporaryDirectory(prefix="es-run-model-") as folder:
        tar_path, _ = download_model_archive(manager.client, run_id, Path(folder))
        path = extract_model_archive(tar_path, Path(folder) / "model")
        return load_model(path, max_seq_length)


class FineTuningBuilder:
    """Holds what a plugin's `get_fine_tuning_builder` gathers (the seed's arguments, by name) and runs
    the iteration when the trainer calls `run(start_model)`.

    `data_loader`, `clickstream_parser`, `clickstream_sessions_splitter`, `dataset_fields_normalizer`,
    `item_storage_producer` and `accumulators` are accepted because the seed's plugins pass them, and
    unused: the dataset is made before (`ranking_data`, by `prepare_data` with the same parts) and the
    accumulators are the `experiments_manager`'s."""

    def __init__(
        self,
        data_loader: Any,
        query_retriever: QueryRetriever,
        clickstream_parser: Any,
        clickstream_sessions_splitter: Any,
        dataset_fields_normalizer: Any,
        item_storage_producer: Any,
        accumulators: Sequence[Any],
        experiments_manager: ExperimentsManager,
        fine_tuning_settings: FineTuningSettings,
        initial_params: dict[str, list[Any]],
        ranking_data: RankingDataset,
        initial_max_evals: int = 8,
    ) -> None:
        if initial_max_evals < 1:
            raise ValueError(f"initial_max_evals must be >= 1, not {initial_max_evals}")
        missing = set(FineTuningParams.__dataclass_fields__) - set(initial_params)
        required = {"num_fixed_layers", "query_lr", "items_lr", "query_weight_decay", "items_weight_decay", "margin"}
        if missing & required:
            raise ValueError(f"initial_params lacks {', '.join(sorted(missing & required))}")
        empty = [name for name, choices in initial_params.items() if not choices]
        if empty:
            raise ValueError(f"initial_params offers no value for {', '.join(empty)}")
        self.query_retriever = query_retriever
        self.experiments_manager = experiments_manager
        self.fine_tuning_settings = fine_tuning_settings
        self.initial_params = initial_params
        self.ranking_data = ranking_data
        self.initial_max_evals = initial_max_evals

    def _distributions(self) -> dict[str, optuna.distributions.CategoricalDistribution]:
        return {name: optuna.distributions.CategoricalDistribution([_encode(c) for c in choices])
                for name, choices in self.initial_params.items()}

    def run(self, start_model: EmbeddingModel, on_progress: Callable[[TrialProgress], None] = lambda _: None,
            should_stop: Callable[[], bool] = lambda: False, previous_best: Sequence[dict[str, Any]] = ()
            ) -> IterationResult:
        """Runs (or resumes) the search from `start_model`; returns the best run by the main metric.

        `previous_best`: parameter sets of earlier iterations, tried first instead of TPE's first picks.
        """
        click_model = self._click_model()
        held_out = self._held_out(click_model)
        if not len(held_out):
            raise ValueError("the batch's held-out sessions have no clicks: nothing to choose a model on")
        data = self.ranking_data
        first_items = [data.items[i] for i in list(data.items)[:2]]
        context = _TrialContext(
            start_model, click_model, held_out, sum(1 for s in data.train if not s.is_irrelevant),
            use_cache=(isinstance(start_model, TextToTextModel)
                       and start_model.matches_sentence_transformers(first_items)),
            on_progress=on_progress, should_stop=should_stop)
        search = self._resume_search(previous_best)
        while (len(search.finished) < self.initial_max_evals and not search.exhausted
               and search.attempts < MAX_ATTEMPTS_PER_TRIAL * self.initial_max_evals):
            search.attempts += 1
            self._run_trial(search, context)
        if not search.finished:
            raise RuntimeError(f"every trial of the search failed ({search.attempts} attempts); see the FAILED "
                               "runs' es.error tags in MLflow")
        return self._chosen(search, start_model)

    def _resume_search(self, previous_best: Sequence[dict[str, Any]]) -> _Search:
        """A TPE study that knows every run MLflow holds for this iteration, in the order they ran:
        finished runs with their values; failed runs as failed (they count towards the next draw);
        stopped runs (killed, or still RUNNING because their trainer died: marked KILLED now) as failed
        and queued to train again unless the same parameters finished; then the earlier iterations' best
        parameter sets, queued. A fresh search with none of these starts from the first value of every
        choice (the plugin's default point), so that a one-trial search trains what the plugin lists
        first."""
        manager = self.experiments_manager
        distributions = self._distributions()
        study = optuna.create_study(direction="maximize")
        records = manager.trials()
        search = _Search(study, distributions, [])
        for record in records:
            params = _typed(record.params, distributions)
            if not _in_space(params, distributions):
                continue
            if record.status == "FINISHED" and record.value is not None:
                study.add_trial(optuna.trial.create_trial(params=params, distributions=distributions,
                                                          value=record.value))
                search.finished.append(record)
                search.failures = 0
                continue
            study.add_trial(optuna.trial.create_trial(params=params, distributions=distributions,
                                                      state=optuna.trial.TrialState.FAIL))
            if record.status == "FAILED":
                search.failures += 1
                continue
            if record.status == "RUNNING":  # its trainer died mid-run
                manager.finish_run(record.run_id, "KILLED")
            if not any(f.params_key == record.params_key for f in records if f.status == "FINISHED"):
                study.enqueue_trial(params, skip_if_exists=False)
        # The earlier iterations' best points, except any that is not in this space (the plugin changed it).
        earlier = [p for p in (_typed(q, distributions) for q in previous_best) if _in_space(p, distributions)]
        for point in earlier:
            study.enqueue_trial(point)
        if not records and not earlier:  # a fresh search tries the plugin's first choices first
            study.enqueue_trial({name: d.choices[0] for name, d in distributions.items()})
        return search

    def _draw(self, search: _Search) -> tuple[optuna.trial.Trial, FineTuningParams, str] | None:
        """The next parameter set the search has not finished (a queued one first), or None when the
        draws find none (the space is used up). A finished set drawn again is not trained twice: it is
        told failed, so that it weighs on nothing, and the next draw is made."""
        study = search.study
        for draw in range(MAX_DRAWS_PER_TRIAL):
            study.sampler = search.sampler(self.fine_tuning_settings.seed, draw)
            trial = study.ask(search.distributions)
            params = FineTuningParams(**{k: _decode(k, v) for k, v in trial.params.items()})
            key = params_key(params.config())
            if not any(r.params_key == key for r in search.finished):
                return trial, params, key
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        return None

    def _run_trial(self, search: _Search, context: _TrialContext) -> None:
        """Asks the study for a parameter set and trains one run of it, recorded in MLflow as finished
        (with its model and best metrics), failed (with the reason; the search goes on) or killed (a
        cancel, raised on)."""
        manager, settings = self.experiments_manager, self.fine_tuning_settings
        drawn = self._draw(search)
        if drawn is None:
            log.info("search_exhausted", finished=len(search.finished))
            search.exhausted = True
            return
        trial, params, key = drawn
        number = len(search.finished) + 1  # finished holds the runs of earlier processes and of this one
        run_id = manager.start_run(params.config(), key, settings.config(), trial=number)
        context.on_progress(TrialProgress(number, self.initial_max_evals))
        try:
            model = copy.deepcopy(context.start_model)
            model.fix_layers(params.num_fixed_layers)
            result = train_run(
                model, self._examples(context.click_model, params), context.train_with_clicks, context.held_out,
                settings, params, item_inputs=lambda ids: [self.ranking_data.items[i] for i in ids],
                cache=self._cache(context, model, params.num_fixed_layers),
                on_progress=lambda p: context.on_progress(TrialProgress(number, self.initial_max_evals, p)),
                log_metrics=lambda m, s: manager.log_metrics(run_id, m, s),
                should_stop=context.should_stop,
            )
            best_metrics = {**result.best.as_metrics(), **result.best.distance_shift(result.initial)}
            value = best_metrics.get(manager.main_metric)
            if value is None:
                raise ValueError(f"main_metric '{manager.main_metric}' is not a logged metric; logged: "
                                 f"{', '.join(sorted(best_metrics))}")
            best_is_start = result.best_step == 0
            if not best_is_start:  # a copy of the start model is no new model: nothing to save
                manager.save_model(run_id, model, params.config(), result.initial, result.best)
            manager.log_metrics(run_id, {f"best_{k}": v for k, v in best_metrics.items()}, result.steps)
            manager.finish_run(run_id, "FINISHED", tags={TAG_BEST_IS_START: "true"} if best_is_start else None)
        except TrainingCanceled:
            manager.finish_run(run_id, "KILLED")
            search.study.tell(trial, state=optuna.trial.TrialState.FAIL)
            raise
        except Exception as error:  # noqa: BLE001 - a failed trial is recorded as failed; the search goes on
            log.warning("trial_failed", run_id=run_id, error=str(error) or type(error).__name__)
            manager.finish_run(run_id, "FAILED", tags={"es.error": (str(error) or type(error).__name__)[:5000]})
            search.study.tell(trial, state=optuna.trial.TrialState.FAIL)
            search.failures += 1
            return
        search.study.tell(trial, value)
        search.results.append(result)
        search.finished.append(TrialRecord(run_id, key, params.config(), "FINISHED", value, best_is_start))
        search.failures = 0
        log.info("trial_finished", run_id=run_id, value=value, params=params.config())
        if value >= max(r.value for r in search.finished if r.value is not None):
            search.best = _BestInMemory(run_id, model, result.best, result.initial)  # only the best stays in memory

    def _cache(self, context: _TrialContext, model: EmbeddingModel, num_fixed_layers: int) -> ItemPrefixCache | None:
        """The items' hidden states after the frozen layers, made once per number of frozen layers; none
        when the model cannot use one or no layer is frozen (it would only skip the embeddings and their
        dropout)."""
        if not context.use_cache or num_fixed_layers == 0:
            return None
        if num_fixed_layers not in context.caches:
            items = self.ranking_data.items
            context.caches[num_fixed_layers] = ItemPrefixCache(model, list(items), [items[i] for i in items])
        return context.caches[num_fixed_layers]

    def _chosen(self, search: _Search, start_model: EmbeddingModel) -> IterationResult:
        """The best finished run, with its scores and the start model's on the held-out sessions."""
        best_record = max(search.finished, key=lambda r: r.value if r.value is not None else float("-inf"))
        if best_record.best_is_start:  # no trial beat the start model: it stays what the iteration has
            scores = (search.best.start_scores if search.best is not None and search.best.run_id == best_record.run_id
                      else self.score(start_model))
            return IterationResult(best_record.run_id, best_record.params, scores, scores, start_model,
                                   search.finished, search.results, best_is_start=True)
        if search.best is not None and search.best.run_id == best_record.run_id:
            # The start model's scores from the best run's own loop: scored the same way (same item cache).
            best_model, best_scores, start_scores = search.best.model, search.best.scores, search.best.start_scores
        else:  # the best run finished before this process took the task over: score both afresh
            best_model = load_run_model(self.experiments_manager, best_record.run_id, start_model.max_seq_length)
            best_model.to(next(start_model.parameters()).device)
            best_scores, start_scores = self.score(best_model), self.score(start_model)
        return IterationResult(best_record.run_id, best_record.params, best_scores, start_scores, best_model,
                               search.finished, search.results)

    def _examples(self, click_model: PositionClickModel, params: FineTuningParams) -> list[ClickExample]:
        """The run's training pairs: the clicks of the batch's training side, as the settings weigh
        them, and the catalog pairs of the dataset's items if the settings mix them in."""
        settings, data = self.fine_tuning_settings, self.ranking_data
        if settings.click_weighting == "posterior":
            examples = make_judged_examples(data.train, self.query_retriever, settings.hard_negatives,
                                            click_model, params.negative_downsampling, settings.seed,
                                            settings.below_negatives)
        else:
            examples = make_click_examples(
                data.train, self.query_retriever, settings.hard_negatives,
                position_weight(settings.click_weighting, click_model, settings.max_click_weight),
                params.negative_downsampling, settings.seed, settings.below_negatives)
        if settings.catalog is not None and examples:
            queries = [self.query_retriever(s.query) for s in data.train]
            examples += settings.catalog.examples(data.items, queries, len(examples), settings.seed)
        return examples

    def score(self, model: EmbeddingModel) -> HeldOutScores:
        """`model`'s ranking metrics on the batch's held-out sessions."""
        data = self.ranking_data
        return self.held_out_queries().score(
            model.encode_queries, lambda ids: model.encode_items([data.items[i] for i in ids]))

    def _click_model(self) -> PositionClickModel:
        # Fitted on the whole batch: more impressions than either side alone.
        data = self.ranking_data
        return PositionClickModel.fit([*data.train, *data.test], self.fine_tuning_settings.examination_eta)

    def _held_out(self, click_model: PositionClickModel, max_click_weight: float | None = None) -> HeldOutQueries:
        settings, data = self.fine_tuning_settings, self.ranking_data
        return HeldOutQueries(data.test, list(data.items), self.query_retriever, settings.examination_eta,
                              max_click_weight or settings.max_click_weight, click_model.noise)

    def held_out_queries(self, max_click_weight: float | None = None) -> HeldOutQueries:
        """The batch's held-out judgments that the search and the promotion gate score on; with
        `max_click_weight`, the same clicks judged under another inverse-propensity cap (bench/quality.py
        --gate-caps compares how well each tells two models apart)."""
        return self._held_out(self._click_model(), max_click_weight)
