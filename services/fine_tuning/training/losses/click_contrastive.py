"""`ClickContrastiveLoss`, the default: InfoNCE / MultipleNegativesRankingLoss over in-batch candidates
plus each click's hard negatives, with per-pair weights."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 - the torch convention

from services.fine_tuning.training.losses.base import ClickLoss, click_weights


class ClickContrastiveLoss(ClickLoss):
    """InfoNCE (MultipleNegativesRankingLoss) of each query against every candidate item in the batch:
    its own clicked item is the target; the other rows' clicked items and every row's hard negatives
    (shown but not clicked) are negatives. Candidates that are also relevant to a row (another click of
    the same session, or the same item) are masked out of that row, so they never count as negatives.

    Args:
        scale: inverse temperature applied to cosine similarities (> 0; default 20, as
            sentence-transformers' MultipleNegativesRankingLoss).
        symmetric: also score each row's clicked item against every query of the batch (the other
            rows' queries are its negatives, rows sharing its item or relevant to it are masked), and
            average the two directions, as sentence-transformers' MultipleNegativesSymmetricRankingLoss.

    Inputs: `queries` (B, D) and `candidates` (C, D) L2-normalised embeddings, `targets` (B,) the
    candidate column of each row's clicked item, `weights` (B,) >= 0 (click confidences, e.g. inverse
    propensity of the click's position), and `excluded` (B, C) bool, True where a candidate must not act
    as a negative for a row. Returns the weighted mean cross-entropy.

    `batch_loss` builds these from a batch: each example's clicked item is its row's target, and the
    other items clicked in its session (`ClickExample.related`) are excluded from its row.

    Reference: van den Oord et al., "Representation Learning with Contrastive Predictive Coding", 2018;
    Henderson et al., "Efficient Natural Language Response Suggestion for Smart Reply", 2017.

    Example::

        settings = FineTuningSettings(loss_func=ClickContrastiveLoss(scale=20.0), hard_negatives=3)
    """

    def __init__(self, scale: float = 20.0, symmetric: bool = False) -> None:
        super().__init__()
        if scale <= 0:
            raise ValueError(f"scale must be > 0, not {scale}")
        self.scale = scale
        self.symmetric = symmetric

    def forward(self, queries: torch.Tensor, candidates: torch.Tensor, targets: torch.Tensor,
                weights: torch.Tensor, excluded: torch.Tensor) -> torch.Tensor:
        similarities = queries @ candidates.T  # (B, C)
        logits = (self.scale * similarities).masked_fill(excluded, float("-inf"))
        losses = F.cross_entropy(logits, targets, reduction="none")  # (B,)
        if self.symmetric:
            # Row i: its clicked item against every query j; j is masked when it shares the item or the
            # item is relevant to j (another click of j's session).
            rows = torch.arange(len(targets), device=targets.device)
            reverse = self.scale * similarities[:, targets].T  # (B items, B queries)
            same_item = (targets[:, None] == targets[None, :]) & (rows[:, None] != rows[None, :])
            reverse = reverse.masked_fill(same_item | excluded[:, targets].T, float("-inf"))
            losses = (losses + F.cross_entropy(reverse, rows, reduction="none")) / 2
        return (losses * weights).sum() / weights.sum().clamp_min(1e-12)

    def batch_loss(self, batch: Sequence[Any], queries: torch.Tensor, candidates: torch.Tensor,
                   column: dict[str, int], margin: float) -> torch.Tensor:
        targets = torch.tensor([column[e.positive] for e in batch], device=queries.device)
        excluded = torch.zeros(len(batch), len(column), dtype=torch.bool, device=queries.device)
        for row, example in enumerate(batch):
            for item_id in example.related:
                if item_id != example.positive and item_id in column:
                    excluded[row, column[item_id]] = True
        return self(queries, candidates, targets, click_weights(batch, queries), excluded)

    def config(self) -> dict[str, object]:
        return {"loss": type(self).__name__, "scale": self.scale, "symmetric": self.symmetric}
