"""Online experiments' ids and the rule that decides them.

The rule is one look at a fixed horizon: the experiment decides once `min_sessions` of its sessions are
not tied, by a two-sided sign test of wins against losses (binomial with p = 1/2, scipy's `binomtest`).
The registry polls the counts as often as it likes; every look before the horizon decides nothing, and
when the horizon is reached depends only on how many sessions were tied, not on who won them, so under
"no difference" the test keeps its error rate at `alpha` however often it is polled. An experiment whose
sessions reach `max_sessions` (ties included) before the horizon stops undecided, keeping the champion.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from scipy.stats import binomtest

from services.api.embedding_studio.v1 import registry_pb2 as pb

_ID = re.compile(r"exp-([0-9a-f]{10})-([1-9][0-9]*)")


def plugin_key(plugin: str) -> str:
    """The 10 hex digits that name a plugin in its experiments' ids."""
    return hashlib.sha256(plugin.encode()).hexdigest()[:10]


def experiment_id(plugin: str, challenger_version: str) -> str:
    """The id of the experiment that tries `challenger_version` of `plugin`: one per version."""
    return f"exp-{plugin_key(plugin)}-{challenger_version}"


def parse_experiment_id(value: str) -> tuple[str, str] | None:
    """(plugin key, challenger version) of a well-formed experiment id; None otherwise."""
    match = _ID.fullmatch(value)
    return (match.group(1), match.group(2)) if match else None


@dataclass(frozen=True)
class Rule:
    """The decision rule's settings (ES_EXPERIMENT_ALPHA, _MIN_SESSIONS, _MAX_SESSIONS)."""

    alpha: float = 0.05
    min_sessions: int = 200
    max_sessions: int = 20_000

    def __post_init__(self) -> None:
        if not 0.0 < self.alpha < 1.0:
            raise ValueError(f"alpha is {self.alpha}; it must lie in (0, 1)")
        if not 1 <= self.min_sessions <= self.max_sessions:
            raise ValueError(f"min_sessions ({self.min_sessions}) must be at least 1 and at most max_sessions "
                             f"({self.max_sessions})")


@dataclass(frozen=True)
class Verdict:
    state: pb.ExperimentState  # RUNNING while undecided
    p_value: float
    reason: str


def sign_test_p_value(wins: int, losses: int) -> float:
    """Two-sided p-value of `wins` against `losses` under "each non-tied session is a fair coin"."""
    return float(binomtest(wins, wins + losses, 0.5).pvalue) if wins + losses else 1.0


def evidence(wins: int, losses: int, ties: int, p_value: float) -> str:
    sessions = wins + losses + ties
    return (f"{sessions} sessions: {wins} won by the challenger, {losses} by the champion, {ties} tied; "
            f"p = {p_value:.4g}")


def decide(wins: int, losses: int, ties: int, rule: Rule) -> Verdict:
    """The rule's verdict on the counts now."""
    p_value = sign_test_p_value(wins, losses)
    said = evidence(wins, losses, ties, p_value)
    decisive = wins + losses
    if decisive >= rule.min_sessions:
        if p_value < rule.alpha and wins > losses:
            return Verdict(pb.EXPERIMENT_STATE_CHALLENGER_WON, p_value,
                           f"the challenger won online ({said} < alpha {rule.alpha})")
        if p_value < rule.alpha:
            return Verdict(pb.EXPERIMENT_STATE_CHAMPION_KEPT, p_value,
                           f"the champion won online ({said} < alpha {rule.alpha})")
        return Verdict(pb.EXPERIMENT_STATE_CHAMPION_KEPT, p_value,
                       f"no significant difference at the horizon of {rule.min_sessions} non-tied sessions "
                       f"({said} >= alpha {rule.alpha}): the champion stays")
    if decisive + ties >= rule.max_sessions:
        return Verdict(pb.EXPERIMENT_STATE_CHAMPION_KEPT, p_value,
                       f"stopped undecided after {rule.max_sessions} sessions with only {decisive} not tied "
                       f"(the horizon is {rule.min_sessions}; {said}): the champion stays")
    return Verdict(pb.EXPERIMENT_STATE_RUNNING, p_value,
                   f"running: {decisive} of {rule.min_sessions} non-tied sessions needed ({said})")
