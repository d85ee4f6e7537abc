"""One training run: real batches (one forward and one backward per step, no second pass for metrics),
a warm-up then step-decay or linear-decay learning-rate schedule that is stepped, held-out evaluation every
`test_each_n_sessions`, early stopping on the main metric, and the best checkpoint (not the last) kept."""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from services.fine_tuning.training.evaluation import HeldOutQueries, HeldOutScores
from services.fine_tuning.training.examples import ClickExample
from services.fine_tuning.training.grad_cache import CachedItemEncoding
from services.fine_tuning.training.models import EmbeddingModel, ItemPrefixCache
from services.fine_tuning.training.settings import FineTuningParams, FineTuningSettings

# Steps between the training loss's points in MLflow (besides every held-out evaluation).
LOSS_EVERY_STEPS = 10


class TrainingCanceled(Exception):
    """Raised inside a run when its task was canceled."""


@dataclass
class Progress:
    epoch: int
    epochs: int
    step: int
    steps: int
    metrics: dict[str, float]
    metrics_step: int  # the step `metrics` were measured at: 0 for the start model


@dataclass
class RunResult:
    best: HeldOutScores
    best_step: int
    initial: HeldOutScores
    train_sessions_per_s: float
    steps: int
    stopped_early: bool
    history: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    train_examples_per_s: float = 0.0  # training pairs (click and catalog) per second of training steps
    candidates_per_step: float = 0.0  # mean items encoded per step (clicked items and hard negatives)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _schedule(settings: FineTuningSettings, steps_per_epoch: int, total_steps: int) -> Callable[[int], float]:
    warmup = max(1, int(total_steps * settings.warmup_ratio))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if settings.schedule == "linear":
            return max(0.0, (total_steps - step) / max(1, total_steps - warmup))
        return settings.gamma ** ((step // steps_per_epoch) // settings.step_size)

    return factor


def _batches(order: list[ClickExample], settings: FineTuningSettings, rng: random.Random
             ) -> Iterator[tuple[int, list[ClickExample]]]:
    """(epoch, batch) for every step of the run, the examples shuffled anew each epoch."""
    for epoch in range(settings.num_epochs):
        rng.shuffle(order)
        for start in range(0, len(order), settings.batch_size):
            yield epoch, order[start:start + settings.batch_size]


def _evaluation_interval(settings: FineTuningSettings, steps_per_epoch: int) -> int:
    """Steps between held-out evaluations: `test_each_n_sessions` is a fraction of an epoch when <= 1."""
    every = settings.test_each_n_sessions
    return max(1, round(steps_per_epoch * every) if every <= 1 else round(every / settings.batch_size))


def _trainable_state(model: EmbeddingModel) -> dict[str, torch.Tensor]:
    """A copy of what training can change (frozen layers and buffers stay as they are)."""
    return {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


@dataclass
class _BestCheckpoint:
    """The best held-out scores so far, the step they were reached at and a copy of the trainable
    parameters then, plus how many evaluations since have not beaten them."""

    scores: HeldOutScores
    step: int
    state: dict[str, torch.Tensor]
    evaluations_without_gain: int = 0

    def offer(self, scores: HeldOutScores, step: int, model: EmbeddingModel) -> None:
        if scores.ndcg_at_10 > self.scores.ndcg_at_10:
            self.scores, self.step, self.state, self.evaluations_without_gain = (
                scores, step, _trainable_state(model), 0)
        else:
            self.evaluations_without_gain += 1


def _configure(model: EmbeddingModel, settings: FineTuningSettings, params: FineTuningParams) -> None:
    """Freezes the run's fixed layers and sets which trainable layers recompute their activations."""
    model.fix_layers(params.num_fixed_layers)
    if settings.recompute_layers:
        if not hasattr(model, "recompute_activations"):
            raise ValueError(f"recompute_layers={settings.recompute_layers}: {type(model).__name__} cannot recompute "
                             f"activations (TextToTextModel can)")
        model.recompute_activations(settings.recompute_layers)


def _step(model: EmbeddingModel, batch: Sequence[ClickExample], encode_items: Callable[[Sequence[str]], torch.Tensor],
          settings: FineTuningSettings, params: FineTuningParams, optimizer: torch.optim.Optimizer,
          scheduler: torch.optim.lr_scheduler.LRScheduler) -> tuple[float, int]:
    """One optimisation step on `batch`; returns its loss and how many items it encoded. A step with more
    items than `settings.max_items_per_forward` encodes them in chunks with cached gradients (the same
    gradient, the memory of one chunk)."""
    device = next(model.parameters()).device
    candidates_ids = list(dict.fromkeys([e.positive for e in batch] + [n for e in batch for n in e.hard_negatives]))
    column = {item_id: i for i, item_id in enumerate(candidates_ids)}
    chunk = settings.max_items_per_forward
    cached = None
    # bf16 autocast on a GPU (full precision on the CPU, where bf16 matmuls are slow).
    autocast = torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    with autocast:
        queries = model.encode_queries([e.query for e in batch])  # (B, D)
        if chunk is not None and len(candidates_ids) > chunk:
            cached = CachedItemEncoding(encode_items, candidates_ids, chunk, device)
            candidates = cached.embeddings  # (C, D), a leaf: its gradient goes through the encoder below
        else:
            candidates = encode_items(candidates_ids)  # (C, D)
    loss = settings.loss_func.batch_loss(batch, queries.float(), candidates.float(), column, params.margin)
    loss.backward()
    if cached is not None:
        with autocast:
            cached.backward()
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item(), len(candidates_ids)  # .item() waits for the step to finish on a GPU: true timings


def train_run(
    model: EmbeddingModel,
    examples: Sequence[ClickExample],
    train_sessions_with_clicks: int,
    held_out: HeldOutQueries,
    settings: FineTuningSettings,
    params: FineTuningParams,
    item_inputs: Callable[[Sequence[str]], Sequence[Any]],
    cache: ItemPrefixCache | None = None,
    on_progress: Callable[[Progress], None] = lambda _: None,
    log_metrics: Callable[[dict[str, float], int], None] = lambda _m, _s: None,
    should_stop: Callable[[], bool] = lambda: False,
) -> RunResult:
    """Trains `model` in place and leaves it at its best checkpoint by held-out nDCG@10."""
    if not examples:
        raise ValueError("no training example: the batch's training sessions have no clicks")
    seed_everything(settings.seed)
    _configure(model, settings, params)

    def encode_items(item_ids: Sequence[str]) -> torch.Tensor:
        if cache is not None:
            return cache.encode(model, item_ids)
        return model.encode_items(item_inputs(item_ids))

    def encode_held_out_items(item_ids: Sequence[str]) -> torch.Tensor:
        # A held-out evaluation embeds every item of the dataset (a minute on a CPU for a few thousand):
        # a cancel is heard between its batches, not only between training steps.
        if should_stop():
            raise TrainingCanceled
        return encode_items(item_ids)

    def evaluate() -> HeldOutScores:
        model.eval()
        scores = held_out.score(model.encode_queries, encode_held_out_items)
        model.train(settings.dropout)
        return scores

    optimizer = torch.optim.AdamW(model.parameter_groups(params))
    steps_per_epoch = math.ceil(len(examples) / settings.batch_size)
    total_steps = steps_per_epoch * settings.num_epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(settings, steps_per_epoch, total_steps))
    eval_every_steps = _evaluation_interval(settings, steps_per_epoch)

    initial = evaluate()
    best = _BestCheckpoint(initial, 0, _trainable_state(model))
    history: list[tuple[int, dict[str, float]]] = [(0, initial.as_metrics())]
    log_metrics(initial.as_metrics(), 0)
    rng = random.Random(settings.seed)
    order = list(examples)
    step, train_seconds, running_loss, candidates_seen = 0, 0.0, [], 0
    model.train(settings.dropout)  # eval mode when dropout is off (FineTuningSettings.dropout)
    for epoch, batch in _batches(order, settings, rng):
        if should_stop():
            raise TrainingCanceled
        began = time.perf_counter()
        loss, encoded = _step(model, batch, encode_items, settings, params, optimizer, scheduler)
        train_seconds += time.perf_counter() - began
        running_loss.append(loss)
        candidates_seen += encoded
        step += 1
        if step % eval_every_steps and step != total_steps:
            # Every step shows in the task's progress, with the latest held-out metrics; the loss goes to
            # MLflow every LOSS_EVERY_STEPS steps too, so that its curve is a curve between evaluations.
            if step % LOSS_EVERY_STEPS == 0:
                log_metrics({"train_loss": float(np.mean(running_loss[-LOSS_EVERY_STEPS:])),
                             "learning_rate": scheduler.get_last_lr()[0]}, step)
            on_progress(Progress(epoch + 1, settings.num_epochs, step, total_steps, history[-1][1], history[-1][0]))
            continue
        scores = evaluate()
        metrics = {**scores.as_metrics(), **scores.distance_shift(initial),
                   "train_loss": float(np.mean(running_loss)), "learning_rate": scheduler.get_last_lr()[0]}
        running_loss = []
        history.append((step, metrics))
        log_metrics(metrics, step)
        on_progress(Progress(epoch + 1, settings.num_epochs, step, total_steps, metrics, step))
        best.offer(scores, step, model)
        if best.evaluations_without_gain >= settings.early_stopping_patience:
            break
    stopped_early = best.evaluations_without_gain >= settings.early_stopping_patience
    model.load_state_dict(best.state, strict=False)
    model.eval()
    epochs_trained = step / steps_per_epoch
    sessions_per_s = train_sessions_with_clicks * epochs_trained / train_seconds if train_seconds else 0.0
    examples_per_s = len(examples) * epochs_trained / train_seconds if train_seconds else 0.0
    return RunResult(best.scores, best.step, initial, sessions_per_s, step, stopped_early, history, examples_per_s,
                     candidates_seen / step if step else 0.0)
