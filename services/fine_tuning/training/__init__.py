"""The training side of the plugin library, with the seed's names."""

from services.fine_tuning.training.accumulators import MetricsAccumulator
from services.fine_tuning.training.builder import FineTuningBuilder, IterationResult, TrialProgress
from services.fine_tuning.training.catalog import CatalogPairs
from services.fine_tuning.training.evaluation import HeldOutQueries, HeldOutScores
from services.fine_tuning.training.experiments import ExperimentsManager
from services.fine_tuning.training.losses import (
    ClickContrastiveLoss,
    CosineProbMarginRankingLoss,
    ProbMarginRankingLoss,
)
from services.fine_tuning.training.models import (
    EmbeddingModel,
    ItemPrefixCache,
    TextToImageCLIPModel,
    TextToTextModel,
    load_model,
)
from services.fine_tuning.training.settings import (
    CLIP_INITIAL_PARAMS,
    INITIAL_PARAMS,
    MINILM_INITIAL_PARAMS,
    FineTuningParams,
    FineTuningSettings,
)

__all__ = [
    "CLIP_INITIAL_PARAMS",
    "INITIAL_PARAMS",
    "MINILM_INITIAL_PARAMS",
    "CatalogPairs",
    "ClickContrastiveLoss",
    "CosineProbMarginRankingLoss",
    "EmbeddingModel",
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
    "TextToImageCLIPModel",
    "TextToTextModel",
    "TrialProgress",
    "load_model",
]
