"""Online experiments' ids and the rule that decides them.

The rule is a sequential test that stays valid however often it is looked at: a mixture sequential
probability ratio test (mSPRT; Robbins 1970, Johari et al., "Always valid inference", 2017) on the sign
of the non-tied sessions. Under "no difference" each non-tied session is a fair coin; the alternative is
a win rate drawn from Beta(`prior`, `prior`). The likelihood ratio after W wins and L losses is
B(W + prior, L + prior) / B(prior, prior) * 2^(W + L) (scipy's `betaln`), and by Ville's inequality the
chance that it ever reaches 1 / alpha under "no difference" is at most alpha. So the registry may poll
as often as it likes: the always-valid p-value is the smallest 1 / ratio seen so far, and the experiment
decides, for the side that won more sessions, once it is below alpha and at least `min_sessions`
sessions were not tied. An experiment whose sessions reach `max_sessions` (ties included) undecided
stops and keeps the champion.
"""

from __future__ import annotations

import hashlib
import math
import re
import uuid
from dataclasses import dataclass

from scipy.special import betaln

from services.api.embedding_studio.v1 import registry_pb2 as pb
from services.common.errors import InvalidArgument

_ID = re.compile(r"exp-([0-9a-f]{10})-([1-9][0-9]*)-[0-9a-f]{8}")


def plugin_key(plugin: str) -> str:
    """The 10 hex digits that name a plugin in its experiments' ids."""
    return hashlib.sha256(plugin.encode()).hexdigest()[:10]


def experiment_id(plugin: str, challenger_version: str) -> str:
    """A new id for an experiment that tries `challenger_version` of `plugin`: the plugin's key and the
    version (so the registry finds it), and 8 random hex digits, so that an MLflow store started afresh
    never reuses an id whose sessions an ingest database still holds."""
    return f"exp-{plugin_key(plugin)}-{challenger_version}-{uuid.uuid4().hex[:8]}"


def parse_experiment_id(value: str) -> tuple[str, str] | None:
    """(plugin key, challenger version) of a well-formed experiment id; None otherwise."""
    match = _ID.fullmatch(value)
    return (match.group(1), match.group(2)) if match else None


def require_experiment_id(field: str, value: str) -> tuple[str, str]:
    """`parse_experiment_id`, or INVALID_ARGUMENT naming `field` when `value` is not an experiment id."""
    parsed = parse_experiment_id(value)
    if parsed is None:
        raise InvalidArgument(field, f"{value!r} is not an experiment id "
                                     "(exp-<10 hex digits>-<version>-<8 hex digits>)")
    return parsed


@dataclass(frozen=True)
class Rule:
    """The decision rule's settings (ES_EXPERIMENT_ALPHA, _MIN_SESSIONS, _MAX_SESSIONS). `prior` sets the
    mixture's Beta(prior, prior): 100 makes the test most sensitive to win rates a few points from 1/2,
    the size a fine-tuned model's advantage has under interleaving."""

    alpha: float = 0.05
    min_sessions: int = 200
    max_sessions: int = 20_000
    prior: float = 100.0

    def __post_init__(self) -> None:
        if not 0.0 < self.alpha < 1.0:
            raise ValueError(f"alpha is {self.alpha}; it must lie in (0, 1)")
        if not 1 <= self.min_sessions <= self.max_sessions:
            raise ValueError(f"min_sessions ({self.min_sessions}) must be at least 1 and at most max_sessions "
                             f"({self.max_sessions})")
        if self.prior <= 0:
            raise ValueError(f"prior is {self.prior}; it must be positive")


@dataclass(frozen=True)
class Verdict:
    state: pb.ExperimentState  # RUNNING while undecided
    p_value: float  # always valid: the smallest 1 / likelihood ratio seen so far, at most 1
    reason: str


def likelihood_ratio(wins: int, losses: int, prior: float) -> float:
    """The mixture likelihood ratio of "win rate ~ Beta(prior, prior)" against "win rate 1/2"."""
    n = wins + losses
    return math.exp(betaln(wins + prior, losses + prior) - betaln(prior, prior) + n * math.log(2.0))


def evidence(wins: int, losses: int, ties: int, p_value: float) -> str:
    sessions = wins + losses + ties
    return (f"{sessions} sessions: {wins} won by the challenger, {losses} by the champion, {ties} tied; "
            f"always-valid p = {p_value:.4g}")


def decide(wins: int, losses: int, ties: int, rule: Rule, previous_p: float = 1.0) -> Verdict:
    """The rule's verdict on the counts now; `previous_p` is the p-value the last look recorded."""
    p_value = min(previous_p, 1.0 / likelihood_ratio(wins, losses, rule.prior), 1.0)
    said = evidence(wins, losses, ties, p_value)
    decisive = wins + losses
    if decisive >= rule.min_sessions and p_value < rule.alpha and wins != losses:
        if wins > losses:
            return Verdict(pb.EXPERIMENT_STATE_CHALLENGER_WON, p_value,
                           f"the challenger won online ({said} < alpha {rule.alpha})")
        return Verdict(pb.EXPERIMENT_STATE_CHAMPION_KEPT, p_value,
                       f"the champion won online ({said} < alpha {rule.alpha})")
    if decisive + ties >= rule.max_sessions:
        return Verdict(pb.EXPERIMENT_STATE_CHAMPION_KEPT, p_value,
                       f"stopped undecided after {rule.max_sessions} sessions ({said}): the champion stays")
    needs = f"at least {rule.min_sessions} non-tied sessions and p < alpha {rule.alpha}"
    return Verdict(pb.EXPERIMENT_STATE_RUNNING, p_value, f"running: {needs} decide ({said})")
