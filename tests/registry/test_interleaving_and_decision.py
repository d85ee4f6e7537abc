"""Team-draft interleaving, team-draft credit, the sign test and the fixed-horizon decision rule, on
their own (no servers)."""

from __future__ import annotations

import random
from math import comb

import pytest

from services.api.embedding_studio.v1 import registry_pb2 as pb
from services.api.embedding_studio.v1.clickstream_pb2 import TEAM_CHALLENGER, TEAM_CHAMPION, TEAM_UNSPECIFIED
from services.client.interleaving import session_winner, team_draft
from services.registry.experiments import Rule, decide, experiment_id, parse_experiment_id, sign_test_p_value

CHAMPION = [f"a{i}" for i in range(20)]
CHALLENGER = [f"b{i}" for i in range(20)]


def test_each_team_contributes_its_best_unused_result_in_turn_with_a_coin_per_round() -> None:
    for session in range(50):
        merged = team_draft("exp-0123456789-2", f"s{session}", CHAMPION, CHALLENGER, k=10)
        assert len(merged) == 10
        for start in range(0, 10, 2):  # every round of two picks holds one result of each team
            assert {r.team for r in merged[start:start + 2]} == {TEAM_CHAMPION, TEAM_CHALLENGER}
        # Each team's results appear in the order of its own ranking, from its top.
        assert [r.object_id for r in merged if r.team == TEAM_CHAMPION] == CHAMPION[:5]
        assert [r.object_id for r in merged if r.team == TEAM_CHALLENGER] == CHALLENGER[:5]
    firsts = {team_draft("exp-0123456789-2", f"s{i}", CHAMPION, CHALLENGER, k=2)[0].team for i in range(50)}
    assert firsts == {TEAM_CHAMPION, TEAM_CHALLENGER}  # the coin, not a fixed order, decides who starts


def test_the_merge_is_deterministic_per_session_and_never_shows_a_result_twice() -> None:
    shared_a = ["x", "y", "a1", "a2", "z"]
    shared_b = ["y", "x", "z", "b1", "b2"]
    first = team_draft("exp-0123456789-2", "session-7", shared_a, shared_b, k=5)
    assert first == team_draft("exp-0123456789-2", "session-7", shared_a, shared_b, k=5)
    ids = [r.object_id for r in first]
    assert len(ids) == len(set(ids)) == 5
    # A result both rankings hold is credited to the team that picked it first.
    everything = team_draft("exp-0123456789-2", "session-7", shared_a, shared_b, k=100)
    assert sorted(r.object_id for r in everything) == sorted(set(shared_a) | set(shared_b))
    # A ranking that runs out leaves the rest of the list to the other.
    short = team_draft("exp-0123456789-2", "s", ["a0"], CHALLENGER, k=4)
    assert [r.team for r in short].count(TEAM_CHAMPION) == 1 and len(short) == 4


def test_bad_merges_are_refused() -> None:
    with pytest.raises(ValueError, match="k is 0"):
        team_draft("e", "s", CHAMPION, CHALLENGER, k=0)
    with pytest.raises(ValueError, match="challenger ranking holds 'b1' twice"):
        team_draft("e", "s", CHAMPION, ["b1", "b1"], k=3)


def test_a_session_is_credited_to_the_team_whose_results_got_more_clicks() -> None:
    teams = [TEAM_CHALLENGER, TEAM_CHAMPION, TEAM_CHAMPION, TEAM_CHALLENGER]
    assert session_winner(teams, [0, 3, 1]) == TEAM_CHALLENGER
    assert session_winner(teams, [1]) == TEAM_CHAMPION
    assert session_winner(teams, [0, 1]) == TEAM_UNSPECIFIED
    assert session_winner(teams, []) == TEAM_UNSPECIFIED
    assert session_winner(teams, [1, 1, 0]) == TEAM_UNSPECIFIED  # a result clicked twice counts once


def naive_two_sided_p(wins: int, losses: int) -> float:
    """Sum of the probabilities of every outcome no likelier than the one seen (the exact binomial test)."""
    n = wins + losses
    probabilities = [comb(n, k) / 2 ** n for k in range(n + 1)]
    seen = probabilities[wins]
    return min(1.0, sum(p for p in probabilities if p <= seen * (1 + 1e-7)))


@pytest.mark.parametrize(("wins", "losses"), [(60, 40), (61, 39), (50, 50), (0, 9), (130, 70), (1, 0)])
def test_the_sign_test_matches_the_exact_binomial_test_on_known_counts(wins: int, losses: int) -> None:
    assert sign_test_p_value(wins, losses) == pytest.approx(naive_two_sided_p(wins, losses), rel=1e-9)
    assert sign_test_p_value(61, 39) < 0.05 < sign_test_p_value(60, 40)
    assert sign_test_p_value(0, 0) == 1.0


def test_the_rule_decides_only_at_its_horizon_and_stops_undecided_after_max_sessions() -> None:
    rule = Rule(alpha=0.05, min_sessions=100, max_sessions=1000)
    assert decide(40, 5, 0, rule).state == pb.EXPERIMENT_STATE_RUNNING  # lopsided, but before the horizon
    assert decide(61, 39, 500, rule).state == pb.EXPERIMENT_STATE_CHALLENGER_WON
    assert decide(39, 61, 0, rule).state == pb.EXPERIMENT_STATE_CHAMPION_KEPT
    kept = decide(55, 45, 0, rule)
    assert kept.state == pb.EXPERIMENT_STATE_CHAMPION_KEPT and "no significant difference" in kept.reason
    stopped = decide(30, 20, 950, rule)
    assert stopped.state == pb.EXPERIMENT_STATE_CHAMPION_KEPT and "stopped undecided" in stopped.reason
    with pytest.raises(ValueError, match="alpha"):
        Rule(alpha=1.0)
    with pytest.raises(ValueError, match="min_sessions"):
        Rule(min_sessions=10, max_sessions=5)


def a_a_experiment(seed: int, rule: Rule) -> pb.ExperimentState:
    """Both teams rank alike; users click by position (EVALUATION.md's click model with every result
    equally relevant), so neither team is better. The rule is polled every 10 sessions until it decides."""
    rng = random.Random(seed)
    wins = losses = ties = session = 0
    verdict = decide(0, 0, 0, rule)
    while verdict.state == pb.EXPERIMENT_STATE_RUNNING:
        merged = team_draft("exp-0123456789-2", f"r{seed}-s{session}", CHAMPION, CHAMPION, k=10)
        clicked = [k for k in range(10) if rng.random() < (1 / (k + 1)) * 0.3]
        winner = session_winner([r.team for r in merged], clicked)
        wins += winner == TEAM_CHALLENGER
        losses += winner == TEAM_CHAMPION
        ties += winner == TEAM_UNSPECIFIED
        session += 1
        if session % 10 == 0:
            verdict = decide(wins, losses, ties, rule)
    return verdict.state


def test_an_a_a_experiment_polled_often_does_not_promote_beyond_its_error_rate() -> None:
    rule = Rule(alpha=0.05, min_sessions=200, max_sessions=5000)
    assert a_a_experiment(0, rule) != pb.EXPERIMENT_STATE_CHALLENGER_WON
    # A false win needs p < alpha in the challenger's favour: alpha / 2 of the runs, 1 of 40 expected; more
    # than 4 of 40 has a chance below 0.001 under a rule that keeps its level despite the polling.
    promoted = sum(a_a_experiment(seed, rule) == pb.EXPERIMENT_STATE_CHALLENGER_WON for seed in range(40))
    assert promoted <= 4


def test_experiment_ids_name_the_plugin_and_the_challenger_version() -> None:
    made = experiment_id("Default Fine Tuning Method", "7")
    key, version = parse_experiment_id(made)
    assert made == f"exp-{key}-7" and version == "7" and len(key) == 10
    for bad in ("exp-0123456789-07", "exp-012345678-7", "exp-0123456789-7\n", "EXP-0123456789-7", ""):
        assert parse_experiment_id(bad) is None
