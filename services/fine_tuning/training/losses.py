"""Ranking losses over (query, clicked item, not-clicked item) scores, one class each.

`ClickContrastiveLoss` is the default: InfoNCE / MultipleNegativesRankingLoss over in-batch candidates
plus each session's hard negatives, with per-pair weights. The seed's `ProbMarginRankingLoss` and
`CosineProbMarginRankingLoss` stay available for plugins that name them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812 - the torch convention
from torch import nn


class ProbMarginRankingLoss(nn.Module):
    """The seed's pairwise loss: mean(confidence * sigmoid(margin - (pos - neg))).

    Args:
        base_margin: the similarity gap a positive should keep over a negative (> 0; default 1.0).

    Inputs: `pos` and `neg` similarities of each pair, shape (pairs,), `confidences` (pairs,) >= 0, and a
    per-call `margin` (the hyperparameter) that overrides `base_margin` when given.
    Near-linear over cosine similarities in [-1, 1]; `CosineProbMarginRankingLoss` sharpens it.
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

    def config(self) -> dict[str, object]:
        return {"loss": type(self).__name__, "base_margin": self.base_margin, "sharpness": self._sharpness()}


class CosineProbMarginRankingLoss(ProbMarginRankingLoss):
    """`ProbMarginRankingLoss` with the sigmoid sharpened for cosine scales: sigmoid(sharpness * gap).

    The reference meant to do this and never did (its sharpening method was never called), so its two
    losses were the same nearly linear function and the margin barely mattered. Here it runs.

    Args:
        base_margin: default margin (> 0; default 0.05, cosine units).
        sharpness: slope of the sigmoid (> 0; default 20, so a gap of 0.05 moves the loss by about 25%).
    """

    def __init__(self, base_margin: float = 0.05, sharpness: float = 20.0) -> None:
        super().__init__(base_margin)
        if sharpness <= 0:
            raise ValueError(f"sharpness must be > 0, not {sharpness}")
        self.sharpness = sharpness

    def _sharpness(self) -> float:
        return self.sharpness


class ClickContrastiveLoss(nn.Module):
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

    Reference: van den Oord et al., "Representation Learning with Contrastive Predictive Coding", 2018;
    Henderson et al., "Efficient Natural Language Response Suggestion for Smart Reply", 2017.
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

    def config(self) -> dict[str, object]:
        return {"loss": type(self).__name__, "scale": self.scale, "symmetric": self.symmetric}
