"""The users' click model, fitted on a batch: the position-based model of the examination literature
(Joachims et al., WSDM 2017) with a noise floor,

    P(click at position k) = (1/k)^eta * (noise + (1 - noise) * P(relevant at k)),

so k^eta * CTR(k) = noise + (1 - noise) * P(relevant at k) falls with k towards `noise` where the ranker
stops showing relevant results. Its non-increasing (isotonic, impression-weighted) fit over the batch's
not-irrelevant sessions gives both what the held-out metrics need (the noise rate: its deepest value)
and what training weights need (how likely a click at k was on a relevant result, and how likely an
item is relevant to a query given every time it was shown for it).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.isotonic import IsotonicRegression

# How training weighs clicks (`FineTuningSettings.click_weighting`): each query and clicked item once, by
# the probability that the item is relevant given every time the batch showed it for that query; or each
# click on its own, by the probability that a click at its position was on a relevant result, by its
# inverse propensity, or not at all.
CLICK_WEIGHTINGS = ("posterior", "relevance", "inverse_propensity", "none")
# A noise rate above this would say clicks carry almost no signal; it is capped so estimates stay finite.
MAX_CLICK_NOISE = 0.9
# Probabilities the posterior treats as certain are kept this far from 0 and 1, so that one observation
# the model calls impossible (a skip of an always-examined relevant result) cannot outweigh all others.
_LEAST_PROBABILITY = 1e-3


def inverse_propensity(position: int, examination_eta: float, cap: float) -> float:
    """1 / P(examined at `position`) = position^eta, capped (the cap bounds the variance)."""
    return min(float(position) ** examination_eta, cap)


@dataclass(frozen=True)
class PositionClickModel:
    """A fitted click model.

    Args:
        examination_eta: the examination model's exponent, P(examined at k) = (1/k)^eta (>= 0).
        examined_click_rates: the fitted k^eta * CTR(k), non-increasing, for positions 1, 2, ...
        noise: the click rate of an examined result that is not relevant, in [0, MAX_CLICK_NOISE].
    """

    examination_eta: float
    examined_click_rates: tuple[float, ...]
    noise: float

    @classmethod
    def fit(cls, sessions: Sequence[Any], examination_eta: float) -> PositionClickModel:
        """Fits the model on parsed sessions (irrelevant ones are left out: their results were not
        judged). With no session to fit on, no click is noise."""
        impressions: dict[int, int] = {}
        clicks: dict[int, int] = {}
        for session in sessions:
            if session.is_irrelevant:
                continue
            for result in session.results:
                impressions[result.position] = impressions.get(result.position, 0) + 1
                clicks[result.position] = clicks.get(result.position, 0) + int(result.is_click)
        if not impressions:
            return cls(examination_eta, (), 0.0)
        depth = max(impressions)
        positions = np.array(sorted(impressions), dtype=float)
        shown = np.array([impressions[int(k)] for k in positions], dtype=float)
        rates = np.array([clicks[int(k)] for k in positions]) / shown * positions**examination_eta
        fit = IsotonicRegression(increasing=False).fit(positions, rates, sample_weight=shown)
        fitted = np.clip(fit.predict(np.arange(1, depth + 1, dtype=float)), 0.0, None)
        return cls(examination_eta, tuple(float(r) for r in fitted), float(min(fitted[-1], MAX_CLICK_NOISE)))

    def relevance_given_click(self, position: int) -> float:
        """P(relevant | clicked at `position`) = P(relevant at k) / (k^eta * CTR(k)) under the model: near
        1 where clicks are mostly on relevant results, 0 at the depth where they are as frequent as noise.
        Beyond the fitted depth, the deepest rate applies. A model that cannot tell noise from relevance
        says 1 everywhere: one that saw no click, or a flat fit (clicks as frequent at every depth)."""
        rates = self.examined_click_rates
        rate = rates[min(position, len(rates)) - 1] if rates else 0.0
        if rate <= 0 or rates[0] <= self.noise:
            return 1.0
        return max(0.0, rate - self.noise) / ((1 - self.noise) * rate)

    def relevance_posterior(self, impressions: Sequence[tuple[int, bool]]) -> float:
        """P(relevant | every time an item was shown for a query): `impressions` are (position, clicked)
        pairs. The prior is the share of relevant results at the highest position it was shown at,
        (k^eta * CTR(k) - noise) / (1 - noise); each click multiplies the odds by
        P(click | relevant) / P(click | not relevant) = 1 / noise, each skip by
        (1 - (1/k)^eta) / (1 - (1/k)^eta * noise). So a result clicked in one session and skipped at the
        top in three others is probably noise, and one clicked twice deep down probably is not. A model
        that cannot tell noise from relevance says 1 for a clicked item, as `relevance_given_click`."""
        if not impressions:
            raise ValueError("relevance_posterior needs at least one impression")
        rates = self.examined_click_rates
        clicked = any(click for _, click in impressions)
        if not rates or rates[0] <= self.noise:
            return 1.0 if clicked else 0.0
        noise = max(self.noise, _LEAST_PROBABILITY)
        top = min(position for position, _ in impressions)
        prior = (rates[min(top, len(rates)) - 1] - self.noise) / (1 - self.noise)
        prior = min(max(prior, _LEAST_PROBABILITY), 1 - _LEAST_PROBABILITY)
        log_odds = math.log(prior / (1 - prior))
        for position, click in impressions:
            examined = float(position) ** -self.examination_eta
            if click:
                log_odds -= math.log(noise)
            else:
                log_odds += math.log(max(1 - examined, _LEAST_PROBABILITY) / (1 - examined * noise))
        return 1 / (1 + math.exp(-log_odds)) if log_odds > -700 else 0.0


def position_weight(click_weighting: str, click_model: PositionClickModel, cap: float) -> Callable[[int], float]:
    """The training weight of a click at a position, as `click_weighting` (one of CLICK_WEIGHTINGS) says."""
    if click_weighting == "relevance":
        return click_model.relevance_given_click
    if click_weighting == "inverse_propensity":
        return lambda position: inverse_propensity(position, click_model.examination_eta, cap)
    if click_weighting == "none":
        return lambda _position: 1.0
    if click_weighting == "posterior":
        raise ValueError('click_weighting "posterior" weighs a query\'s clicked items, not a click by its '
                         "position: use make_judged_examples")
    raise ValueError(f"click_weighting must be one of {', '.join(CLICK_WEIGHTINGS)}, not {click_weighting!r}")
