"""What saves memory changes nothing that is learned: items encoded in chunks with cached gradients give
the gradient of one pass over the same chunks (with dropout on, each chunk replays its own masks) and
leave the random stream where one pass leaves it; a run that chunks its steps, or recomputes its layers'
activations in the backward pass (dropout on), trains the model a run without either trains."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import pytest
import torch

from services.evaluation.datasets import bbc_news
from services.fine_tuning.training import FineTuningSettings, HeldOutQueries, TextToTextModel
from services.fine_tuning.training.examples import make_click_examples
from services.fine_tuning.training.grad_cache import CachedItemEncoding
from services.fine_tuning.training.loop import train_run
from services.fine_tuning.training.settings import FineTuningParams
from tests.fine_tuning.helpers import small_batch

TEXTS = [item.text for item in bbc_news().items[:7]]
QUERIES = [query.text for query in bbc_news().queries[:3]]
IDS = [str(i) for i in range(len(TEXTS))]


def encoder(model: TextToTextModel):
    return lambda ids: model.encode_items([TEXTS[int(i)] for i in ids])


def contrastive(queries: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cross_entropy(20 * queries @ items.T, torch.arange(len(queries)))  # (B, C) logits


def gradients(model: TextToTextModel) -> dict[str, torch.Tensor]:
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def one_pass(model: TextToTextModel, chunks: list[list[str]]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The reference: the same chunks encoded with a graph, one after another, then one backward."""
    torch.manual_seed(7)
    queries = model.encode_queries(QUERIES)
    items = torch.cat([encoder(model)(chunk) for chunk in chunks])
    contrastive(queries, items).backward()
    return gradients(model), torch.rand(4)


def cached(model: TextToTextModel, chunk_size: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    torch.manual_seed(7)
    queries = model.encode_queries(QUERIES)
    encoding = CachedItemEncoding(encoder(model), IDS, chunk_size, torch.device("cpu"))
    contrastive(queries, encoding.embeddings).backward()
    encoding.backward()
    return gradients(model), torch.rand(4)


def assert_close(ours: dict[str, torch.Tensor], theirs: dict[str, torch.Tensor]) -> None:
    assert ours.keys() == theirs.keys() and ours
    for name in ours:
        torch.testing.assert_close(ours[name], theirs[name], atol=2e-6, rtol=1e-4, msg=name)


@pytest.mark.parametrize("dropout", [False, True])
def test_chunked_items_give_the_gradient_of_one_pass_and_leave_the_random_stream_where_it_leaves_it(
        minilm: TextToTextModel, dropout: bool) -> None:
    minilm.fix_layers(0)
    minilm.train(dropout)
    reference, next_draw = one_pass(copy.deepcopy(minilm), [IDS[0:3], IDS[3:6], IDS[6:7]])
    ours, our_next_draw = cached(copy.deepcopy(minilm), chunk_size=3)
    assert_close(ours, reference)
    assert torch.equal(our_next_draw, next_draw)
    if dropout:  # the masks matter: the same chunks without dropout give another gradient
        minilm.eval()
        without, _ = one_pass(copy.deepcopy(minilm), [IDS[0:3], IDS[3:6], IDS[6:7]])
        assert any(not torch.allclose(without[n], reference[n], atol=1e-5) for n in reference)


def test_a_backward_before_the_losss_own_is_refused(minilm: TextToTextModel) -> None:
    encoding = CachedItemEncoding(encoder(minilm), IDS, 4, torch.device("cpu"))
    with pytest.raises(RuntimeError, match=r"call loss\.backward\(\)"):
        encoding.backward()


@pytest.mark.parametrize(("saving", "dropout"), [({"max_items_per_forward": 5}, False),
                                                ({"recompute_layers": 6}, True)])
def test_a_run_that_saves_memory_trains_the_model_a_run_that_does_not_trains(
        minilm: TextToTextModel, tmp_path: Path, saving: dict, dropout: bool) -> None:
    batch = small_batch(minilm, tmp_path / "data", items=40, sessions=60)
    data = batch.ranking_data
    settings = FineTuningSettings(num_epochs=1, batch_size=8, max_seq_length=32, hard_negatives=3, dropout=dropout,
                                  seed=3)
    params = FineTuningParams(num_fixed_layers=0, query_lr=1e-4, items_lr=1e-4, query_weight_decay=0.0,
                              items_weight_decay=0.0, margin=0.05)
    examples = make_click_examples(data.train, batch.retriever, 3, lambda _position: 1.0, 1.0, settings.seed)
    held_out = HeldOutQueries(data.test, list(data.items), batch.retriever, click_noise=0.1)
    texts = [data.items[i] for i in list(data.items)[:8]]
    embeddings: dict[bool, torch.Tensor] = {}
    for saves in (False, True):
        model = copy.deepcopy(minilm)

        def after_the_last_step(progress, saves=saves, model=model) -> None:  # before the best checkpoint is put back
            if progress.step == progress.steps:
                with torch.no_grad():
                    embeddings[saves] = model.eval().encode_items(texts)

        result = train_run(model, examples, len(examples), held_out,
                           dataclasses.replace(settings, **saving) if saves else settings, params,
                           item_inputs=lambda ids: [data.items[i] for i in ids], on_progress=after_the_last_step)
        assert result.candidates_per_step > 5  # every step had more items than a chunk
    # Parameters are compared by what they embed: AdamW scales the rounding noise of a gradient that is
    # zero in exact arithmetic (attention's key bias) into full-size steps, which change no embedding.
    torch.testing.assert_close(embeddings[True], embeddings[False], atol=1e-4, rtol=0)
    with torch.no_grad():
        start = minilm.eval().encode_items(texts)
    assert (embeddings[False] - start).abs().max() > 1e-2  # the runs trained something


def test_recomputing_more_layers_than_train_is_refused(minilm: TextToTextModel) -> None:
    minilm.fix_layers(4)
    with pytest.raises(ValueError, match=r"recompute_layers must lie in \[0, 2\]"):
        minilm.recompute_activations(3)
