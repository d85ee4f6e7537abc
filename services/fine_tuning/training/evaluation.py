"""Held-out ranking metrics on a batch's own test sessions (EVALUATION.md, "Choosing"): sessions are
grouped by query, the items clicked in them are the relevant ones, and each query ranks every item of
the dataset. The trainer's search and the registry's promotion gate choose on these numbers.

Clicks come from the ranker that was in production when they were logged, and users mostly click near
the top, so plain "every clicked item is relevant" judgments favour that ranker: a relevant item it put
at position 5 is rarely clicked (and so rarely judged), while the noise clicks it collected on its own
top results are. A model that fixes the first kind of query and reorders the second scores worse than
the logging ranker although it is better (measured: bench/README.md). So each click is a judgment
weighted by the inverse propensity of the position it was shown at, (position)^eta under the
examination model P(examined at k) = (1/k)^eta, capped (Joachims et al., WSDM 2017), and the metrics
are self-normalised weighted means over clicks: nDCG@10 of a click is 1/log2(1 + r) for its rank r
among the dataset's items with the query's other clicked items left out (with one relevant item a
query, exactly that query's nDCG@10), MRR@10 is 1/r, recall@k is [r <= k]. With eta = 0 every click
weighs the same."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from services.fine_tuning.training.examples import click_weight

RECALL_KS = (10, 100)


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
    """The judged clicks of the test sessions, built once per dataset.

    Args:
        test_sessions: the splitter's test side (parsed sessions).
        item_ids: every item of the dataset; each query ranks all of them.
        retriever: the plugin's query retriever (query item -> model input).
        examination_eta: the examination model's exponent (>= 0); 0 weighs every click the same.
        max_click_weight: the cap of a click's weight (>= 1), which bounds the variance.
    """

    def __init__(self, test_sessions: Sequence[Any], item_ids: Sequence[str], retriever: Callable[[Any], Any],
                 examination_eta: float = 1.0, max_click_weight: float = 10.0) -> None:
        if examination_eta < 0 or max_click_weight < 1:
            raise ValueError(f"examination_eta must be >= 0 and max_click_weight >= 1, not {examination_eta} "
                             f"and {max_click_weight}")
        self.item_ids = list(item_ids)
        row = {item_id: i for i, item_id in enumerate(self.item_ids)}
        group_row: dict[str, int] = {}
        group_query: list[Any] = []
        # Per session: (query row, clicked rows, other shown rows) for DistanceShift.
        self._sessions: list[tuple[int, list[int], list[int]]] = []
        clicks: list[tuple[int, int, float]] = []  # (query row, item row, weight)
        for session in test_sessions:
            key = session.query.group_key()
            if key not in group_row:
                group_row[key] = len(group_query)
                group_query.append(retriever(session.query))
            query_row = group_row[key]
            shown = [r for r in session.results if r.item_id in row]
            clicked = [] if session.is_irrelevant else [r for r in shown if r.is_click]
            self._sessions.append((query_row, [row[r.item_id] for r in clicked],
                                   [row[r.item_id] for r in shown if not r.is_click]))
            clicks.extend((query_row, row[r.item_id], click_weight(r.position, 1.0, examination_eta, max_click_weight))
                          for r in clicked)
        self._queries = group_query
        self._clicks = clicks
        self._clicked_by_query: dict[int, set[int]] = {}
        for query_row, item_row, _ in clicks:
            self._clicked_by_query.setdefault(query_row, set()).add(item_row)

    def __len__(self) -> int:
        """The number of judged queries (queries with at least one click)."""
        return len(self._clicked_by_query)

    def score(self, encode_queries: Callable[[Sequence[Any]], torch.Tensor],
              encode_items: Callable[[Sequence[str]], torch.Tensor], batch_size: int = 128) -> HeldOutScores:
        """`encode_items` takes item ids; both return L2-normalised embeddings."""
        if not self._clicks:
            raise ValueError("no held-out session has a click: nothing to score on")
        with torch.inference_mode():
            items = torch.cat([encode_items(self.item_ids[s:s + batch_size])
                               for s in range(0, len(self.item_ids), batch_size)]).float().cpu().numpy()
            queries = torch.cat([encode_queries(self._queries[s:s + batch_size])
                                 for s in range(0, len(self._queries), batch_size)]).float().cpu().numpy()
        similarities = queries @ items.T  # (queries, items)
        ranks = np.array([self._rank(similarities[q], item, q) for q, item, _ in self._clicks])
        weights = np.array([w for _, _, w in self._clicks])

        def mean(values: np.ndarray) -> float:
            return float((weights * values).sum() / weights.sum())

        margins, irrelevant_similarities = [], []
        for query_row, clicked_rows, other_rows in self._sessions:
            if clicked_rows and other_rows:
                row = similarities[query_row]
                margins.append(row[clicked_rows].mean() - row[other_rows].mean())
            elif not clicked_rows and other_rows:
                irrelevant_similarities.append(similarities[query_row][other_rows].mean())
        return HeldOutScores(
            ndcg_at_10=mean(np.where(ranks <= 10, 1.0 / np.log2(1 + ranks), 0.0)),
            mrr_at_10=mean(np.where(ranks <= 10, 1.0 / ranks, 0.0)),
            recall_at={k: mean((ranks <= k).astype(float)) for k in RECALL_KS},
            queries=len(self),
            clicked_margin=float(np.mean(margins)) if margins else 0.0,
            irrelevant_similarity=float(np.mean(irrelevant_similarities)) if irrelevant_similarities else 0.0,
        )

    def _rank(self, similarities: np.ndarray, item: int, query: int) -> int:
        """1 + the items ranked above `item` (ties go to the lower row, as a stable sort), leaving out the
        query's other clicked items."""
        score = similarities[item]
        above = (similarities > score) | ((similarities == score) & (np.arange(len(similarities)) < item))
        others = [r for r in self._clicked_by_query[query] if r != item]
        return 1 + int(above.sum()) - int(above[others].sum())
