"""Ranking losses over clicks, one per file, each a `ClickLoss` (its `batch_loss` turns a batch into
its inputs): `ClickContrastiveLoss` is the default (InfoNCE over in-batch candidates plus each click's
hard negatives, weighted); the seed's `ProbMarginRankingLoss` and `CosineProbMarginRankingLoss` stay
available for plugins that name them. A plugin's own loss subclasses `ClickLoss`."""

from services.fine_tuning.training.losses.base import ClickLoss
from services.fine_tuning.training.losses.click_contrastive import ClickContrastiveLoss
from services.fine_tuning.training.losses.cosine_prob_margin import CosineProbMarginRankingLoss
from services.fine_tuning.training.losses.prob_margin import ProbMarginRankingLoss

__all__ = ["ClickContrastiveLoss", "ClickLoss", "CosineProbMarginRankingLoss", "ProbMarginRankingLoss"]
