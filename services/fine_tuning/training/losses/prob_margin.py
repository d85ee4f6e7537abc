"""`ProbMarginRankingLoss`, the seed's pairwise loss over (clicked, skipped) pairs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from services.fine_tuning.training.losses.base import ClickLoss, click_weights


class ProbMarginRankingLoss(ClickLoss):
    """The seed's pairwise loss: mean(confidence * sigmoid(margin - (pos - neg))).

    Args:
        base_margin: the similarity gap a positive should keep over a negative (> 0; default 1.0).

    Inputs: `pos` and `neg` similarities of each pair, shape (pairs,), `confidences` (pairs,) >= 0, and a
    per-call `margin` (the hyperparameter) that overrides `base_margin` when given.
    Near-linear over cosine similarities in [-1, 1]; `CosineProbMarginRankingLoss` sharpens it.
    `batch_loss` makes one (clicked item, hard negative) pair per hard negative of each example, with
    the example's weight as the confidence; a batch without hard negatives gives a zero loss.

    Example::

        settings = FineTuningSettings(loss_func=ProbMarginRankingLoss(base_margin=1.0), hard_negatives=2)
    """

    def __init__(self, base_margin: float = 1.0) -> None:
        super().__init__()
        if base_margin <= 0:
            raise ValueError(f"base_margin must be > 0, not {base_margin}")
        self.base_margin = base_margin

    def _sharpness(self) -> float:
        return 1.0

    def forward(self, pos: torch.Tensor, neg: torch.Tensor, confidences: torch.Tensor,
                margin: float | None = None) -> torch.Tensor:
        gap = (self.base_margin if margin is None else margin) - (pos - neg)
        return (confidences * torch.sigmoid(self._sharpness() * gap)).mean()

    def batch_loss(self, batch: Sequence[Any], queries: torch.Tensor, candidates: torch.Tensor,
                   column: dict[str, int], margin: float) -> torch.Tensor:
        weights = click_weights(batch, queries)
        rows, pos_cols, neg_cols = [], [], []
        for row, example in enumerate(batch):
            for negative in example.hard_negatives:
                rows.append(row)
                pos_cols.append(column[example.positive])
                neg_cols.append(column[negative])
        if not rows:
            return queries.sum() * 0.0
        device = queries.device
        rows_t = torch.tensor(rows, device=device)
        pos = (queries[rows_t] * candidates[torch.tensor(pos_cols, device=device)]).sum(-1)
        neg = (queries[rows_t] * candidates[torch.tensor(neg_cols, device=device)]).sum(-1)
        return self(pos, neg, weights[rows_t], margin=margin)

    def config(self) -> dict[str, object]:
        return {"loss": type(self).__name__, "base_margin": self.base_margin, "sharpness": self._sharpness()}
