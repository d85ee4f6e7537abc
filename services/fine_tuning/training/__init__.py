"""The training side of the plugin library, with the seed's names."""

from services.fine_tuning.training.accumulators import MetricsAccumulator
from services.fine_tuning.training.builder import FineTuningBuilder, IterationResult, TrialProgress
from services.fine_tuning.training.evaluation import HeldOutQueries, HeldOutScores
from services.fine_tuning.training.experiments import ExperimentsManager, iteration_scope
from services.fine_tuning.training.losses import (
    ClickContrastiveLoss,
    CosineProbMarginRankingLoss,
    ProbMarginRankingLoss,
)
from services.fine_tuning.training.models import ItemPrefixCache, TextToTextModel
from services.fine_tuning.training.settings import (
    INITIAL_PARAMS,
    MINILM_INITIAL_PARAMS,
    FineTuningParams,
    FineTuningSettings,
)

__all__ = [
    "INITIAL_PARAMS",
    "MINILM_INITIAL_PARAMS",
    "ClickContrastiveLoss",
    "CosineProbMarginRankingLoss",
    "ExperimentsManager",
    "FineTuningBuilder",
    "FineTuningParams",
    "FineTuningSettings",
    "HeldOutQueries",
    "HeldOutScores",
    "ItemPrefixCache",
    "IterationResult",
    "MetricsAccumulator",
    "ProbMarginRankingLoss",
    "TextToTextModel",
    "TrialProgress",
    "iteration_scope",
]
