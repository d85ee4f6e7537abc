"""The click model fitted on a batch: its noise rate feeds the held-out metrics, and the probability
that a click at a position was on a relevant result weighs training clicks, so the noise clicks deep
results collect do not teach the model."""

from __future__ import annotations

import pytest

from services.fine_tuning.training import FineTuningSettings
from services.fine_tuning.training.click_model import PositionClickModel, position_weight
from services.fine_tuning.training.examples import make_click_examples, make_judged_examples
from tests.fine_tuning.test_evaluation import session

NOISE, SESSIONS, DEPTH = 0.1, 2000, 20
ITEMS = [f"i{k}" for k in range(1, DEPTH + 1)]


def noisy_sessions(relevant_share_at_2: float = 0.0) -> list:
    """Every session clicks its first result (relevant); deeper results are clicked at noise / position
    (eta = 1), and position 2 also holds a relevant result in `relevant_share_at_2` of the sessions."""
    clicks_at = {k: round(SESSIONS * NOISE / k) for k in range(2, DEPTH + 1)}
    clicks_at[2] += round(SESSIONS * relevant_share_at_2 * (1 - NOISE) / 2)
    return [session(f"s{n}", f"q{n}", ITEMS, {"i1", *(f"i{k}" for k, count in clicks_at.items() if n < count)})
            for n in range(SESSIONS)]


def test_the_click_noise_is_estimated_from_deep_click_rates() -> None:
    assert PositionClickModel.fit(noisy_sessions(), examination_eta=1.0).noise == pytest.approx(NOISE, abs=0.01)
    assert PositionClickModel.fit([], examination_eta=1.0).noise == 0.0


def test_a_top_click_is_likely_relevant_and_a_click_at_noise_depth_is_not() -> None:
    model = PositionClickModel.fit(noisy_sessions(relevant_share_at_2=0.5), examination_eta=1.0)
    # At 2, half the results are relevant: 2 * CTR = noise + (1 - noise) * 0.5 = 0.55, of which the
    # relevant results' clicks make 0.5.
    assert model.relevance_given_click(2) == pytest.approx(0.5 / 0.55, abs=0.02)
    assert model.relevance_given_click(1) == pytest.approx(1.0, abs=0.01)
    assert model.relevance_given_click(DEPTH) == 0.0
    assert model.relevance_given_click(DEPTH + 5) == 0.0  # beyond the fitted depth: the deepest rate


def test_a_click_model_that_cannot_tell_noise_from_relevance_weighs_every_click_the_same() -> None:
    unfitted = PositionClickModel.fit([], examination_eta=1.0)
    flat = PositionClickModel.fit([session(f"s{n}", "q", ITEMS[:2], {ITEMS[n % 2]}) for n in range(4)],
                                  examination_eta=0.0)
    for model in (unfitted, flat):
        assert [model.relevance_given_click(k) for k in (1, 2, 30)] == [1.0, 1.0, 1.0]


def test_training_examples_follow_the_click_weighting_and_noise_clicks_are_left_out() -> None:
    sessions = noisy_sessions()
    model = PositionClickModel.fit(sessions, examination_eta=1.0)
    positions = {"i1": 1, **{f"i{k}": k for k in range(2, DEPTH + 1)}}

    def weights(click_weighting: str) -> dict[int, float]:
        examples = make_click_examples(sessions[:300], lambda q: q.text, 0,
                                       position_weight(click_weighting, model, cap=10.0), 1.0, seed=0)
        return {positions[e.positive]: e.weight for e in examples}

    assert weights("none") == {k: 1.0 for k in weights("none")} and max(weights("none")) > 10
    propensity = weights("inverse_propensity")
    assert propensity[1] == 1.0 and propensity[5] == 5.0 and propensity[15] == 10.0  # capped
    relevance = weights("relevance")  # every deeper click here is noise
    assert relevance[1] == pytest.approx(1.0, abs=0.01) and max(relevance[k] for k in relevance if k > 1) < 0.05
    assert DEPTH in weights("none") and DEPTH not in relevance  # weighted 0 at the noise floor: no example
    with pytest.raises(ValueError, match="must be one of posterior, relevance, inverse_propensity, none"):
        position_weight("ips", model, cap=10.0)
    with pytest.raises(ValueError, match='"posterior" weighs a query\'s clicked items'):
        position_weight("posterior", model, cap=10.0)
    with pytest.raises(ValueError, match="must be one of posterior, relevance, inverse_propensity, none, not 'x'"):
        FineTuningSettings(click_weighting="x")


def test_the_posterior_believes_repeated_clicks_and_doubts_a_click_that_other_sessions_skipped() -> None:
    model = PositionClickModel.fit(noisy_sessions(relevant_share_at_2=0.5), examination_eta=1.0)
    posterior = model.relevance_posterior
    # One click: the same as the probability that a click at its position was on a relevant result.
    assert posterior([(2, True)]) == pytest.approx(model.relevance_given_click(2), abs=1e-6)
    assert posterior([(1, True)]) == pytest.approx(1.0, abs=0.01)
    # Skipped at 2 in three more sessions (examined half the time): less likely relevant; clicked twice: more.
    assert posterior([(2, True), (2, False), (2, False), (2, False)]) < 0.7 < posterior([(2, True)])
    assert posterior([(2, True), (2, True)]) > 0.98
    # A click at the noise depth is noise, unless sessions keep clicking it.
    assert posterior([(DEPTH, True)]) < 0.05
    assert posterior([(DEPTH, True)] * 3) > 0.5
    # A skip at the always-examined top is strong evidence, but not infinitely so.
    assert 0 < posterior([(1, True), (1, False)]) < posterior([(1, True)])
    assert posterior([(1, False)]) < posterior([(1, True), (1, False)])
    assert PositionClickModel.fit([], examination_eta=1.0).relevance_posterior([(3, True)]) == 1.0
    with pytest.raises(ValueError, match="at least one impression"):
        posterior([])


def test_judged_examples_give_each_query_and_clicked_item_one_example_weighted_by_every_showing() -> None:
    model = PositionClickModel.fit(noisy_sessions(relevant_share_at_2=0.5), examination_eta=1.0)
    shown = ITEMS[:4]
    sessions = [
        *(session(f"a{n}", "qa", shown, {"i1"}) for n in range(3)),  # one easy pair, clicked three times
        session("b0", "qb", shown, {"i2"}),  # clicked at 2 once ...
        session("b1", "qb", shown, set()),  # ... skipped at 2 in a session without clicks
        session("b2", "qb", shown, {"i2"}, irrelevant=True),  # ... and in one its user marked irrelevant
        session("c0", "qc", shown, {"i1", "i3"}),
    ]
    examples = make_judged_examples(sessions, lambda q: q.text, 2, model, 1.0, seed=0)
    pairs = {(e.query, e.positive): e for e in examples}
    assert sorted(pairs) == [("qa", "i1"), ("qb", "i2"), ("qc", "i1"), ("qc", "i3")]
    assert pairs[("qa", "i1")].weight == pytest.approx(1.0, abs=0.01)
    assert pairs[("qb", "i2")].weight == pytest.approx(model.relevance_posterior([(2, True), (2, False), (2, False)]))
    assert pairs[("qb", "i2")].weight < model.relevance_given_click(2)
    qc = pairs[("qc", "i3")]
    assert qc.related == {"i1", "i3"} and not set(qc.hard_negatives) & qc.related
    assert qc.hard_negatives == ("i2",)  # the one result skipped above a click; i4 lies below both
