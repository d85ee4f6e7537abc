"""Exact full-corpus retrieval with an embedding model: cosine top-k by one matrix product."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def encode(model: object, texts: Sequence[str], batch_size: int = 64, show_progress_bar: bool = False) -> np.ndarray:
    """L2-normalised float32 embeddings, one row per text, from a SentenceTransformer-like model."""
    with torch.inference_mode():
        vectors = model.encode(list(texts), batch_size=batch_size, convert_to_numpy=True,  # type: ignore[attr-defined]
                               normalize_embeddings=True, show_progress_bar=show_progress_bar)
    return np.asarray(vectors, dtype=np.float32)


def top_k(query_vectors: np.ndarray, item_vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices, scores) of the k most similar items per query, best first."""
    k = min(k, item_vectors.shape[0])
    scores = query_vectors @ item_vectors.T  # (queries, items)
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-part_scores, axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1), np.take_along_axis(part_scores, order, axis=1)
