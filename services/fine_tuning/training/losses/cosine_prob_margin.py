"""`CosineProbMarginRankingLoss`: the seed's pairwise loss with its sigmoid sharpened for cosine scales."""

from __future__ import annotations

from services.fine_tuning.training.losses.prob_margin import ProbMarginRankingLoss


class CosineProbMarginRankingLoss(ProbMarginRankingLoss):
    """`ProbMarginRankingLoss` with the sigmoid sharpened for cosine scales: sigmoid(sharpness * gap).

    The reference meant to do this and never did (its sharpening method was never called), so its two
    losses were the same nearly linear function and the margin barely mattered. Here it runs.

    Args:
        base_margin: default margin (> 0; default 0.05, cosine units).
        sharpness: slope of the sigmoid (> 0; default 20, so a gap of 0.05 moves the loss by about 25%).

    Example::

        settings = FineTuningSettings(loss_func=CosineProbMarginRankingLoss(base_margin=0.05))
    """

    def __init__(self, base_margin: float = 0.05, sharpness: float = 20.0) -> None:
        super().__init__(base_margin)
        if sharpness <= 0:
            raise ValueError(f"sharpness must be > 0, not {sharpness}")
        self.sharpness = sharpness

    def _sharpness(self) -> float:
        return self.sharpness
