"""Held-out ranking metrics on a batch's own test sessions (EVALUATION.md, "Choosing"): sessions are
grouped by query, the items clicked in them are the relevant ones, and each query ranks every item of
the dataset. The trainer's search and the registry's promotion gate choose on these numbers.

Plain "every clicked item is relevant" judgments favour the ranker that was in production when the
clicks were logged, whatever the model under test: users mostly click near the top, so a relevant item
that ranker buried is rarely clicked (and so rarely judged), while its own top results collect the
noise clicks. A model that fixes the first kind of query and reorders the second scored worse than the
start model although it ranked the true labels better (bench/README.md), and the search never kept a
fine-tuned model. So the clicks are read through the position-based click model of the examination
literature (Joachims et al., WSDM 2017) with a noise floor:

    P(click at position k) = (1/k)^eta * (noise + (1 - noise) * relevant)

`eta` comes from the plugin's settings; `noise` (the click rate of an examined result that is not
relevant) is estimated from the batch itself (`click_model.PositionClickModel`). Each shown result of a session
then has an unbiased relevance estimate, (clicked * min(k^eta, cap) - noise) / (1 - noise), summed per
query and item. A metric is the sum over queries of those estimates times the gain of the rank the
model gives the item (nDCG@10: 1/log2(1 + rank) up to rank 10; MRR@10: 1/rank up to 10; recall@k:
[rank <= k]), divided by the same sum for the ideal ranking (the positive estimates in descending
order), so it lies in [0, 1] (a model ranking the skipped results above the clicked ones can fall below
0, reported as 0) and every model of a batch is divided by the same number. Since a shown result that was
not clicked has a negative estimate, recall@k is not monotone in k: recall@100 can read below recall@10
when the extra ranks hold more skipped results than clicked ones.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from services.fine_tuning.training.click_model import MAX_CLICK_NOISE, PositionClickModel, inverse_propensity
from services.fine_tuning.training.protocols import QueryRetriever, TrainingSession

RECALL_KS = (10, 100)
# The gain of a judged item at each 1-based rank, per metric.
GAINS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "ndcg@10": lambda ranks: np.where(ranks <= 10, 1.0 / np.log2(1 + ranks), 0.0),
    "mrr@10": lambda ranks: np.where(ranks <= 10, 1.0 / ranks, 0.0),
    **{f"recall@{k}": (lambda ranks, k=k: (ranks <= k).astype(float)) for k in RECALL_KS},
}


@dataclass(frozen=True)
class HeldOutScores:
    ndcg_at_10: float
    mrr_at_10: float
    recall_at: dict[int, float]
    queries: int
    # What the seed's DistanceShift compares between two models: the mean cosine gap between clicked and
    # not-clicked results of not-irrelevant sessions, and the mean similarity of irrelevant sessions'
    # results to their query.
    clicked_margin: float = 0.0
    irrelevant_similarity: float = 0.0

    def as_metrics(self, prefix: str = "test_") -> dict[str, float]:
        metrics = {f"{prefix}ndcg_at_10": self.ndcg_at_10, f"{prefix}mrr_at_10": self.mrr_at_10}
        metrics.update({f"{prefix}recall_at_{k}": v for k, v in self.recall_at.items()})
        return metrics

    def distance_shift(self, initial: HeldOutScores, prefix: str = "test_") -> dict[str, float]:
        """DistanceShift against the run's starting model: how much the clicked items' similarity rose
        over the others' (not-irrelevant sessions), and how much irrelevant sessions' similarity fell."""
        return {
            f"{prefix}not_irrelevant_dist_shift": self.clicked_margin - initial.clicked_margin,
            f"{prefix}irrelevant_dist_shift": initial.irrelevant_similarity - self.irrelevant_similarity,
        }


class HeldOutQueries:
    """The judged results of the test sessions, built once per dataset.

    Args:
        test_sessions: the splitter's test side (parsed sessions).
        item_ids: every item of the dataset; each query ranks all of them.
        retriever: the plugin's query retriever (query item -> model input).
        examination_eta: the examination model's exponent (>= 0).
        max_click_weight: the cap of a click's inverse propensity (>= 1), which bounds the variance.
        click_noise: the click model's noise rate in [0, MAX_CLICK_NOISE]; None estimates it from
            `test_sessions` (the trainer estimates it from the whole batch).
    """

    def __init__(self, test_sessions: Sequence[TrainingSession], item_ids: Sequence[str], retriever: QueryRetriever,
                 examination_eta: float = 1.0, max_click_weight: float = 10.0, click_noise: float | None = None
                 ) -> None:
        if examination_eta < 0 or max_click_weight < 1:
            raise ValueError(f"examination_eta must be >= 0 and max_click_weight >= 1, not {examination_eta} "
                             f"and {max_click_weight}")
        if click_noise is None:
            click_noise = PositionClickModel.fit(test_sessions, examination_eta).noise
        if not 0 <= click_noise <= MAX_CLICK_NOISE:
            raise ValueError(f"click_noise must lie in [0, {MAX_CLICK_NOISE}], not {click_noise}")
        self.click_noise = click_noise
        self.item_ids = list(item_ids)
        row = {item_id: i for i, item_id in enumerate(self.item_ids)}
        group_row: dict[str, int] = {}
        self._queries: list[Any] = []
        # Per session: (query row, clicked rows, other shown rows) for DistanceShift.
        self._sessions: list[tuple[int, list[int], list[int]]] = []
        relevance: dict[tuple[int, int], float] = {}  # (query row, item row) -> summed relevance estimate
        for session in test_sessions:
            key = session.query.group_key()
            if key not in group_row:
                group_row[key] = len(self._queries)
                self._queries.append(retriever(session.query))
            query_row = group_row[key]
            shown = [r for r in session.results if r.item_id in row]
            clicked = [] if session.is_irrelevant else [r for r in shown if r.is_click]
            self._sessions.append((query_row, [row[r.item_id] for r in clicked],
                                   [row[r.item_id] for r in shown if not r.is_click]))
            for result in shown if clicked else ():
                key_pair = (query_row, row[result.item_id])
                relevance[key_pair] = (relevance.get(key_pair, 0.0)
                                       + self._relevance(result, examination_eta, max_click_weight))
        self._judged_queries = len({query_row for query_row, _ in relevance})
        self._judged_query_rows = np.array([q for q, _ in relevance], dtype=int)
        self._judged_item_rows = np.array([i for _, i in relevance], dtype=int)
        self._relevances = np.array(list(relevance.values()))
        # The ideal ranking's sums: per query, the positive estimates in descending order at ranks 1, 2, ...
        # (positive wherever there is a click: a click's inverse propensity, >= 1, exceeds any noise rate).
        self._query_ideal: dict[str, dict[int, float]] = {name: {} for name in GAINS}
        for query_row in set(self._judged_query_rows.tolist()):
            positive = np.sort(self._relevances[(self._judged_query_rows == query_row) & (self._relevances > 0)])
            ranks = np.arange(1, len(positive) + 1)
            for name, gain in GAINS.items():
                self._query_ideal[name][query_row] = float((positive[::-1] * gain(ranks)).sum())

    def _relevance(self, result: Any, eta: float, cap: float) -> float:
        clicked = float(result.is_click) * inverse_propensity(result.position, eta, cap)
        return (clicked - self.click_noise) / (1 - self.click_noise)

    def __len__(self) -> int:
        """The number of judged queries (queries with a clicked session)."""
        return self._judged_queries

    def _similarities(self, encode_queries: Callable[[Sequence[Any]], torch.Tensor],
                      encode_items: Callable[[Sequence[str]], torch.Tensor], batch_size: int) -> np.ndarray:
        if not self._judged_queries:
            raise ValueError("no held-out session has a click: nothing to score on")
        with torch.inference_mode():
            items = torch.cat([encode_items(self.item_ids[s:s + batch_size])
                               for s in range(0, len(self.item_ids), batch_size)]).float().cpu().numpy()
            queries = torch.cat([encode_queries(self._queries[s:s + batch_size])
                                 for s in range(0, len(self._queries), batch_size)]).float().cpu().numpy()
        return queries @ items.T  # (queries, items)

    @staticmethod
    def _ranks(similarities: np.ndarray) -> np.ndarray:
        # Each item's 1-based rank for each query (ties go to the lower row, as a stable sort).
        order = np.argsort(-similarities, axis=1, kind="stable")
        ranks = np.empty_like(order)
        np.put_along_axis(ranks, order, np.arange(1, order.shape[1] + 1)[None, :], axis=1)
        return ranks

    def ranks(self, encode_queries: Callable[[Sequence[Any]], torch.Tensor],
              encode_items: Callable[[Sequence[str]], torch.Tensor], batch_size: int = 128) -> np.ndarray:
        """Each item's 1-based rank for each held-out query, (queries, items): queries in the order the
        sessions first show them, items in `item_ids` order, so the same for every `HeldOutQueries` of the
        same sessions and items (whatever their cap or noise)."""
        return self._ranks(self._similarities(encode_queries, encode_items, batch_size))

    def query_gains(self, ranks: np.ndarray, metric: str = "ndcg@10") -> tuple[np.ndarray, np.ndarray]:
        """Per judged query (in query order): the metric's sum over its judged items at `ranks`, and the
        same sum for its ideal ranking. The metric `score` reports is max(0, first.sum() / second.sum()),
        so a bootstrap over queries resamples these pairs."""
        gain = GAINS[metric]
        gains = np.bincount(self._judged_query_rows, minlength=len(self._queries),
                            weights=self._relevances * gain(ranks[self._judged_query_rows, self._judged_item_rows]))
        judged = np.unique(self._judged_query_rows)
        return gains[judged], np.array([self._query_ideal[metric][q] for q in judged.tolist()])

    def score(self, encode_queries: Callable[[Sequence[Any]], torch.Tensor],
              encode_items: Callable[[Sequence[str]], torch.Tensor], batch_size: int = 128) -> HeldOutScores:
        """`encode_items` takes item ids; both return L2-normalised embeddings."""
        similarities = self._similarities(encode_queries, encode_items, batch_size)
        ranks = self._ranks(similarities)
        metric = {}
        for name in GAINS:
            gains, ideals = self.query_gains(ranks, name)
            metric[name] = max(0.0, float(gains.sum()) / float(ideals.sum()))

        margins, irrelevant_similarities = [], []
        for query_row, clicked_rows, other_rows in self._sessions:
            if clicked_rows and other_rows:
                margins.append(similarities[query_row][clicked_rows].mean()
                               - similarities[query_row][other_rows].mean())
            elif not clicked_rows and other_rows:
                irrelevant_similarities.append(similarities[query_row][other_rows].mean())
        return HeldOutScores(
            ndcg_at_10=metric["ndcg@10"],
            mrr_at_10=metric["mrr@10"],
            recall_at={k: metric[f"recall@{k}"] for k in RECALL_KS},
            queries=len(self),
            clicked_margin=float(np.mean(margins)) if margins else 0.0,
            irrelevant_similarity=float(np.mean(irrelevant_similarities)) if irrelevant_similarities else 0.0,
        )
