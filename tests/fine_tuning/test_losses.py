"""Each loss against a naive loop that computes the documented formula one pair at a time, and each
loss's batch_loss against the formula on the inputs it should build from a batch."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F  # noqa: N812

from services.fine_tuning.training.examples import ClickExample
from services.fine_tuning.training.losses import (
    ClickContrastiveLoss,
    ClickLoss,
    CosineProbMarginRankingLoss,
    ProbMarginRankingLoss,
)


def unit(rows: int, dim: int = 8, seed: int = 0) -> torch.Tensor:
    return F.normalize(torch.randn(rows, dim, generator=torch.Generator().manual_seed(seed)), dim=-1)


def test_click_contrastive_loss_is_weighted_cross_entropy_over_unexcluded_candidates() -> None:
    queries, candidates = unit(3, seed=1), unit(5, seed=2)
    targets = torch.tensor([0, 1, 2])
    weights = torch.tensor([1.0, 2.0, 0.5])
    excluded = torch.zeros(3, 5, dtype=torch.bool)
    excluded[0, 3] = True
    excluded[2, 0] = True
    expected_sum, weight_sum = 0.0, 0.0
    for i in range(3):
        logits = [20 * float(queries[i] @ candidates[j]) for j in range(5) if not excluded[i, j]]
        target_logit = 20 * float(queries[i] @ candidates[targets[i]])
        loss_i = -target_logit + math.log(sum(math.exp(v) for v in logits))
        expected_sum += float(weights[i]) * loss_i
        weight_sum += float(weights[i])
    got = ClickContrastiveLoss(scale=20.0)(queries, candidates, targets, weights, excluded)
    assert got.item() == pytest.approx(expected_sum / weight_sum, rel=1e-5)


def test_an_excluded_candidate_never_acts_as_a_negative() -> None:
    queries, candidates = unit(2, seed=3), unit(4, seed=4)
    targets, weights = torch.tensor([0, 1]), torch.ones(2)
    excluded = torch.zeros(2, 4, dtype=torch.bool)
    excluded[:, 3] = True
    loss = ClickContrastiveLoss()
    before = loss(queries, candidates, targets, weights, excluded)
    moved = candidates.clone()
    moved[3] = queries[0]  # as similar to query 0 as it gets: would dominate if it counted
    assert loss(queries, moved, targets, weights, excluded).item() == pytest.approx(before.item())


def test_the_symmetric_loss_adds_each_clicked_item_against_the_batch_queries() -> None:
    queries, candidates = unit(3, seed=5), unit(5, seed=6)
    targets = torch.tensor([0, 1, 1])  # rows 1 and 2 clicked the same item
    weights = torch.tensor([1.0, 2.0, 0.5])
    excluded = torch.zeros(3, 5, dtype=torch.bool)
    excluded[0, 1] = True  # item 1 is also relevant to row 0 (another click of its session)
    expected_sum = 0.0
    for i in range(3):
        forward = [20 * float(queries[i] @ candidates[j]) for j in range(5) if not excluded[i, j]]
        forward_loss = -20 * float(queries[i] @ candidates[targets[i]]) + math.log(sum(math.exp(v) for v in forward))
        item = candidates[targets[i]]
        kept = [j for j in range(3) if j == i or (targets[j] != targets[i] and not excluded[j, targets[i]])]
        reverse = [20 * float(queries[j] @ item) for j in kept]
        reverse_loss = -20 * float(queries[i] @ item) + math.log(sum(math.exp(v) for v in reverse))
        expected_sum += float(weights[i]) * (forward_loss + reverse_loss) / 2
    got = ClickContrastiveLoss(symmetric=True)(queries, candidates, targets, weights, excluded)
    assert got.item() == pytest.approx(expected_sum / float(weights.sum()), rel=1e-5)


BATCH = [ClickExample("q0", "a", ("b",), frozenset({"a", "c"}), 1.0),
         ClickExample("q1", "c", (), frozenset({"c"}), 2.0)]
COLUMN = {"a": 0, "c": 1, "b": 2}


def test_the_contrastive_batch_loss_targets_each_click_and_excludes_its_sessions_other_clicks() -> None:
    queries, candidates = unit(2, seed=3), unit(3, seed=4)
    loss = ClickContrastiveLoss()
    excluded = torch.tensor([[False, True, False], [False, False, False]])  # row 0: "c" was clicked too
    expected = loss(queries, candidates, torch.tensor([0, 1]), torch.tensor([1.0, 2.0]), excluded)
    assert loss.batch_loss(BATCH, queries, candidates, COLUMN, margin=0.1).item() == pytest.approx(expected.item())


def test_the_margin_batch_loss_pairs_each_click_with_its_hard_negatives_only() -> None:
    queries, candidates = unit(2, seed=3), unit(3, seed=4)
    loss = ProbMarginRankingLoss()
    pos, neg = queries[0] @ candidates[0], queries[0] @ candidates[2]
    expected = loss(pos[None], neg[None], torch.tensor([1.0]), margin=0.1)
    assert loss.batch_loss(BATCH, queries, candidates, COLUMN, margin=0.1).item() == pytest.approx(expected.item())
    no_negatives = [BATCH[1]]
    assert loss.batch_loss(no_negatives, queries[1:], candidates, COLUMN, margin=0.1).item() == 0.0


def test_a_plugins_own_loss_subclasses_click_loss_with_its_batch_loss_and_is_named_in_its_config() -> None:
    class MeanPositiveDistance(ClickLoss):
        def batch_loss(self, batch, queries, candidates, column, margin):
            positives = candidates[torch.tensor([column[e.positive] for e in batch])]
            return (1 - (queries * positives).sum(-1)).mean()

    queries, candidates = unit(2, seed=3), unit(3, seed=4)
    got = MeanPositiveDistance().batch_loss(BATCH, queries, candidates, COLUMN, margin=0.0)
    assert got.item() == pytest.approx(float(1 - (queries[0] @ candidates[0] + queries[1] @ candidates[1]) / 2))
    assert MeanPositiveDistance().config() == {"loss": "MeanPositiveDistance"}


def test_prob_margin_ranking_loss_is_mean_confidence_times_sigmoid_of_the_gap() -> None:
    pos, neg = torch.tensor([0.9, 0.2, 0.5]), torch.tensor([0.1, 0.4, 0.5])
    confidences = torch.tensor([1.0, 0.5, 2.0])
    expected = sum(float(c) / (1 + math.exp(-(0.3 - (float(p) - float(n)))))
                   for p, n, c in zip(pos, neg, confidences, strict=True)) / 3
    assert ProbMarginRankingLoss()(pos, neg, confidences, margin=0.3).item() == pytest.approx(expected, rel=1e-6)


def test_the_cosine_loss_really_sharpens_so_the_margin_matters() -> None:
    pos, neg, confidences = torch.tensor([0.60]), torch.tensor([0.55]), torch.ones(1)
    plain, cosine = ProbMarginRankingLoss(), CosineProbMarginRankingLoss(sharpness=20.0)
    plain_effect = plain(pos, neg, confidences, margin=0.1) - plain(pos, neg, confidences, margin=0.0)
    cosine_effect = cosine(pos, neg, confidences, margin=0.1) - cosine(pos, neg, confidences, margin=0.0)
    expected = 1 / (1 + math.exp(-20 * (0.1 - 0.05))) - 1 / (1 + math.exp(-20 * (0.0 - 0.05)))
    assert cosine_effect.item() == pytest.approx(expected, rel=1e-5)
    assert cosine_effect.item() > 10 * plain_effect.item()


@pytest.mark.parametrize("build", [lambda: ClickContrastiveLoss(scale=0), lambda: ProbMarginRankingLoss(base_margin=0),
                                   lambda: CosineProbMarginRankingLoss(sharpness=-1)])
def test_invalid_loss_options_are_refused(build) -> None:
    with pytest.raises(ValueError, match="must be > 0"):
        build()
