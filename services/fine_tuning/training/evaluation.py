"""Held-out ranking metrics on a batch's own test sessions (EVALUATION.md, "Choosing"): sessions are
grouped by query, the items clicked in them are the relevant ones, and each query ranks every item of
the dataset. The trainer's search and the registry's promotion gate choose on these numbers."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from services.evaluation.metrics import score_rankings

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
    """The judged queries of the test sessions, built once per dataset."""

    def __init__(self, test_sessions: Sequence[Any], item_ids: Sequence[str], retriever: Callable[[Any], Any]) -> None:
        self.item_ids = list(item_ids)
        row = {item_id: i for i, item_id in enumerate(self.item_ids)}
        grouped: dict[str, tuple[Any, dict[str, int]]] = {}
        # Per session: (query group, clicked rows, other shown rows) for DistanceShift.
        self._sessions: list[tuple[str, list[int], list[int]]] = []
        irrelevant: dict[str, Any] = {}
        for session in test_sessions:
            clicked_rows = [row[r.item_id] for r in session.results if r.is_click and r.item_id in row]
            other_rows = [row[r.item_id] for r in session.results if not r.is_click and r.item_id in row]
            self._sessions.append((session.query.group_key(), clicked_rows if not session.is_irrelevant else [],
                                   other_rows))
            if session.is_irrelevant:
                irrelevant.setdefault(session.query.group_key(), retriever(session.query))
                continue
            clicked = {r.item_id: 1 for r in session.results if r.is_click}
            if not clicked:
                continue
            key = session.query.group_key()
            _, relevant = grouped.setdefault(key, (retriever(session.query), {}))
            relevant.update(clicked)
        self.queries = [q for q, _ in grouped.values()]
        self.judgments = [j for _, j in grouped.values()]
        # Queries seen only in irrelevant sessions are embedded too, for DistanceShift; not judged.
        self._extra_queries = {k: q for k, q in irrelevant.items() if k not in grouped}
        self._group_row = {k: i for i, k in enumerate([*grouped, *self._extra_queries])}

    def __len__(self) -> int:
        return len(self.queries)

    def score(self, encode_queries: Callable[[Sequence[Any]], torch.Tensor],
              encode_items: Callable[[Sequence[str]], torch.Tensor], batch_size: int = 128) -> HeldOutScores:
        """`encode_items` takes item ids; both return L2-normalised embeddings."""
        if not self.queries:
            raise ValueError("no held-out session has a click: nothing to score on")
        with torch.inference_mode():
            items = torch.cat([encode_items(self.item_ids[s:s + batch_size])
                               for s in range(0, len(self.item_ids), batch_size)]).float().cpu().numpy()
            every_query = self.queries + list(self._extra_queries.values())
            all_queries = torch.cat([encode_queries(every_query[s:s + batch_size])
                                     for s in range(0, len(every_query), batch_size)]).float().cpu().numpy()
        queries = all_queries[: len(self.queries)]
        depth = min(max(RECALL_KS), len(self.item_ids))
        scores = queries @ items.T  # (queries, items)
        margins, irrelevant_similarities = [], []
        for group, clicked_rows, other_rows in self._sessions:
            similarities = items @ all_queries[self._group_row[group]] if other_rows or clicked_rows else None
            if similarities is None:
                continue
            if clicked_rows and other_rows:
                margins.append(similarities[clicked_rows].mean() - similarities[other_rows].mean())
            elif not clicked_rows and other_rows:
                irrelevant_similarities.append(similarities[other_rows].mean())
        top = np.argsort(-scores, axis=1, kind="stable")[:, :depth]
        rankings = [[self.item_ids[i] for i in row] for row in top]
        per_query = score_rankings(rankings, self.judgments, recall_ks=RECALL_KS)
        return HeldOutScores(
            ndcg_at_10=float(per_query["ndcg@10"].mean()),
            mrr_at_10=float(per_query["mrr@10"].mean()),
            recall_at={k: float(per_query[f"recall@{k}"].mean()) for k in RECALL_KS},
            queries=len(self.queries),
            clicked_margin=float(np.mean(margins)) if margins else 0.0,
            irrelevant_similarity=float(np.mean(irrelevant_similarities)) if irrelevant_similarities else 0.0,
        )
