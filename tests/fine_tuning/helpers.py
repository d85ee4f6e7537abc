"""A small simulated batch on a slice of the BBC corpus, made the way the product makes one."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from services.evaluation.datasets import EvalDataset, bbc_news
from services.evaluation.retrieval import encode, top_k
from services.evaluation.simulation import as_clickstream, simulate_sessions, split_queries
from services.fine_tuning.data import (
    ClickstreamParser,
    ClickstreamSessionsSplitter,
    DatasetFieldsNormalizer,
    DummyEventType,
    ItemsSourceLoader,
    ItemStorageProducer,
    RankingData,
    SearchResult,
    TextQueryItem,
    TextQueryRetriever,
    prepare_data,
)
from services.fine_tuning.training.models import TextToTextModel


@dataclass
class SmallBatch:
    dataset: EvalDataset
    ranking_data: RankingData
    retriever: TextQueryRetriever


def small_batch(model: TextToTextModel, folder: Path, items: int = 150, sessions: int = 400, seed: int = 0,
                start: int | None = None) -> SmallBatch:
    """`items` spread over the corpus, or, from `start`, that many consecutive ones (one topic: harder)."""
    corpus = bbc_news()
    if start is None:
        step = len(corpus.items) // items
        subset = EvalDataset(corpus.items[::step][:items], corpus.queries[::step][:items])
    else:
        subset = EvalDataset(corpus.items[start:start + items], corpus.queries[start:start + items])
    items_path, _ = subset.write(folder)
    train_queries, _ = split_queries(subset.queries, 0.2, seed)
    item_vectors = encode(model.model, [i.text for i in subset.items])
    query_vectors = encode(model.model, [q.text for q in train_queries])
    indices, scores = top_k(query_vectors, item_vectors, 20)
    simulated = simulate_sessions(subset, train_queries, indices, scores, sessions, seed=seed)
    retriever = TextQueryRetriever()
    data = prepare_data(
        as_clickstream(simulated), ClickstreamParser(TextQueryItem, SearchResult, DummyEventType),
        ClickstreamSessionsSplitter(test_size_ratio=0.25, random_state=seed), retriever,
        ItemsSourceLoader(str(items_path)), ItemStorageProducer(DatasetFieldsNormalizer("item", "item_id")))
    return SmallBatch(subset, data, retriever)
