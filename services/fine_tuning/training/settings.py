"""Fine-tuning settings (fixed for a plugin) and parameters (searched per iteration), with the seed's
names, and the search spaces of the model families we ship."""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from typing import Any

from services.fine_tuning.training.catalog import CatalogPairs
from services.fine_tuning.training.click_model import CLICK_WEIGHTINGS
from services.fine_tuning.training.losses import ClickContrastiveLoss, ClickLoss

# The learning-rate schedules after warm-up (`FineTuningSettings.schedule`).
SCHEDULES = ("step", "linear")


@dataclass
class FineTuningSettings:
    """What a plugin fixes for every run of its search.

    Args:
        loss_func: the loss, a `losses.ClickLoss` (default `ClickContrastiveLoss()`); the seed's margin
            losses also work, and so does a plugin's own subclass.
        step_size: epochs between learning-rate decays of `gamma` (the "step" schedule after warm-up).
        gamma: learning-rate decay factor per `step_size` epochs (0 < gamma <= 1; "step" schedule).
        schedule: the learning rate after warm-up: "step" (default, the seed's StepLR of `step_size`
            and `gamma`) or "linear" (down to zero at the last step, as sentence-transformers and
            transformers train by default).
        test_each_n_sessions: evaluate on the held-out sessions every this many training sessions; a
            value <= 1 is a fraction of an epoch (0.5 = twice per epoch). Early stopping and the kept
            checkpoint follow these evaluations.
        num_epochs: maximum epochs per run.
        batch_size: sessions per optimisation step (real batches: one forward and backward per step).
        max_seq_length: tokens per text (queries and items); None keeps the model's own.
        early_stopping_patience: evaluations without improvement of the main metric before a run stops.
        hard_negatives: at most this many results skipped above a click (shown above it and not
            clicked, nearest first: `examples.skip_above`) are its hard negatives, extra candidates
            of the batch (>= 0; 0 = in-batch negatives only).
        below_negatives: at most this many results right below a click (not clicked, before the next
            click: `examples.skip_next`) are its hard negatives too (>= 0; default 0). A top click has
            no result above it; this gives it some.
        examination_eta: exponent of the users' examination model, P(examined at position k) = (1/k)^eta.
            The batch's click model (`click_model.py`) is fitted with it: the held-out metrics read
            clicks through it (inverse propensity plus the noise rate), and so do training weights.
        max_click_weight: cap of a click's inverse-propensity weight (keeps variance bounded).
        click_weighting: how clicks become weighted training pairs. One pair per click, weighted by its
            position: "relevance" (default) by the click model's probability that a click there was on a
            relevant result, so the noise clicks deep results collect weigh (almost) nothing;
            "inverse_propensity" by (position)^eta, capped; "none" the same everywhere. Or "posterior":
            one pair per query and clicked item, weighted by the click model's probability that the item
            is relevant given every time the batch showed it for the query, clicked or skipped
            (`PositionClickModel.relevance_posterior`), so a query users repeat counts once, not once
            per session (bench/README.md: fewer pairs, 1.6x faster, steadier with more sessions in a
            harness, a smaller gain than "relevance" through the product on two seeds). The event's
            own weight multiplies each.
        warmup_ratio: fraction of the steps over which the learning rate warms up linearly.
        dropout: whether the model's dropout layers are active while it trains. Off by default: the
            model then trains in eval mode (dropout off; a normalisation layer's running statistics, if
            it has any, stay as they are). On the quality benchmark dropout added 0.2-0.3 points to the
            gain (+2.8% vs +2.6%, +2.2% vs +1.9% on two seeds, well inside each run's CI) and cost a
            fifth of the speed and 1.3 GiB of peak memory (its masks, and the attention matrices that
            attention keeps when it drops): 3.8 instead of 2.5 GiB.
        max_items_per_forward: at most this many items are encoded with a graph at once (>= 1); a step
            with more candidates encodes them in chunks with cached gradients (`grad_cache.py`): the
            same gradient, the activation memory of one chunk, one more forward pass over the items of
            such a step. None (default) encodes every step's items in one pass.
        recompute_layers: this many of the trainable layers (from the first) keep only their inputs while
            training and recompute their activations in the backward pass (`TextToTextModel.
            recompute_activations`): the same training, dropout masks included, with less memory and one
            more forward pass of those layers (>= 0; default 0; text-to-text models).
        catalog: self-supervised pairs from the dataset's own items mixed into every run
            (`catalog.CatalogPairs`: a span of an item's text against the item), or None (default) for
            clicks only.
        seed: seeds torch, numpy, Python and the search, so a run is repeatable.
    """

    loss_func: ClickLoss = field(default_factory=ClickContrastiveLoss)
    step_size: int = 1
    gamma: float = 1.0
    schedule: str = "step"
    test_each_n_sessions: float = 1.0
    num_epochs: int = 3
    batch_size: int = 64
    max_seq_length: int | None = 128
    early_stopping_patience: int = 2
    hard_negatives: int = 2
    below_negatives: int = 0
    examination_eta: float = 1.0
    max_click_weight: float = 10.0
    click_weighting: str = "relevance"
    warmup_ratio: float = 0.1
    dropout: bool = False
    max_items_per_forward: int | None = None
    recompute_layers: int = 0
    catalog: CatalogPairs | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        checks = {
            "step_size": self.step_size >= 1,
            "gamma": 0 < self.gamma <= 1,
            "test_each_n_sessions": self.test_each_n_sessions > 0,
            "num_epochs": self.num_epochs >= 1,
            "batch_size": self.batch_size >= 1,
            "max_seq_length": self.max_seq_length is None or self.max_seq_length >= 8,
            "early_stopping_patience": self.early_stopping_patience >= 1,
            "hard_negatives": self.hard_negatives >= 0,
            "below_negatives": self.below_negatives >= 0,
            "examination_eta": self.examination_eta >= 0,
            "max_click_weight": self.max_click_weight >= 1,
            "warmup_ratio": 0 <= self.warmup_ratio < 1,
            "dropout": isinstance(self.dropout, bool),
            "max_items_per_forward": self.max_items_per_forward is None or self.max_items_per_forward >= 1,
            "recompute_layers": self.recompute_layers >= 0,
            "schedule": self.schedule in SCHEDULES,
            "catalog": self.catalog is None or isinstance(self.catalog, CatalogPairs),
            "loss_func": isinstance(self.loss_func, ClickLoss),
        }
        bad = [name for name, ok in checks.items() if not ok]
        if self.click_weighting not in CLICK_WEIGHTINGS:
            raise ValueError(f"FineTuningSettings: click_weighting must be one of {', '.join(CLICK_WEIGHTINGS)}, "
                             f"not {self.click_weighting!r}")
        if bad:
            raise ValueError(f"FineTuningSettings: invalid {', '.join(f'{n}={getattr(self, n)!r}' for n in bad)}")

    def config(self) -> dict[str, Any]:
        """What goes to MLflow as parameters."""
        values = {k: v for k, v in asdict(self).items() if k not in ("loss_func", "catalog")}
        loss = self.loss_func
        loss_config = loss.config()
        catalog = {f"catalog.{k}": v for k, v in self.catalog.config().items()} if self.catalog else {}
        return {**values, **{f"loss.{k}": v for k, v in loss_config.items()}, "catalog": self.catalog is not None,
                **catalog}


@dataclass(frozen=True)
class FineTuningParams:
    """One point of the search space (one MLflow run)."""

    num_fixed_layers: int
    query_lr: float
    items_lr: float
    query_weight_decay: float
    items_weight_decay: float
    margin: float
    not_irrelevant_only: bool = True
    negative_downsampling: float = 0.5
    examples_order: tuple[int, ...] = (11,)

    def __post_init__(self) -> None:
        if self.num_fixed_layers < 0:
            raise ValueError(f"num_fixed_layers must be >= 0, not {self.num_fixed_layers}")
        for name in ("query_lr", "items_lr"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, not {getattr(self, name)}")
        if not 0 < self.negative_downsampling <= 1:
            raise ValueError(f"negative_downsampling must lie in (0, 1], not {self.negative_downsampling}")

    def config(self) -> dict[str, Any]:
        values = asdict(self)
        values["examples_order"] = list(self.examples_order)
        return values


# The seed's space, for CLIP ViT-B/32 (12-layer towers): freezing 5 to 8 layers leaves 4 to 7 trainable.
CLIP_INITIAL_PARAMS: dict[str, list[Any]] = {
    "num_fixed_layers": [5, 6, 7, 8],
    "query_lr": [1e-4, 5e-5, 1e-5, 5e-6, 1e-6, 5e-7],
    "items_lr": [1e-4, 5e-5, 1e-5, 5e-6, 1e-6, 5e-7],
    "query_weight_decay": [0.0, 1e-6, 1e-5, 1e-4],
    "items_weight_decay": [0.0, 1e-6, 1e-5, 1e-4],
    "margin": [0.01, 0.025, 0.05],
    "not_irrelevant_only": [True],
    "negative_downsampling": [0.5],
    "examples_order": [[11]],
}

# The seed's name for it. A seed-style plugin updates it in place (`self.initial_params = INITIAL_PARAMS;
# self.initial_params.update(...)`), so it is a copy of its own, which the shipped plugins never read.
INITIAL_PARAMS: dict[str, list[Any]] = copy.deepcopy(CLIP_INITIAL_PARAMS)

# MiniLM-L6 has 6 layers, and all of them train (bench/README.md, "Training quality": freezing some, for
# speed, learned less). The first values are the recipe a one-trial search trains (a fresh search starts
# from them): AdamW at 2e-5 with weight decay 0.01, as sentence-transformers trains; a longer search
# also tries 4e-5. The margin is unused by the contrastive loss; every skip-above negative is kept.
MINILM_INITIAL_PARAMS: dict[str, list[Any]] = {
    "num_fixed_layers": [0],
    "query_lr": [2e-5],  # unused by text-to-text models (one shared model: items_lr applies)
    "items_lr": [2e-5, 4e-5],
    "query_weight_decay": [0.01],
    "items_weight_decay": [0.01],
    "margin": [0.05],
    "not_irrelevant_only": [True],
    "negative_downsampling": [1.0],
    "examples_order": [[11]],
}
