"""The text-to-text model wrapper: its layer-split forward is the model's own, freezing freezes, the
item cache gives the same embeddings, and a saved model loads with plain sentence-transformers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from sentence_transformers import SentenceTransformer

from services.fine_tuning.training.models import ItemPrefixCache, TextToTextModel
from services.fine_tuning.training.settings import FineTuningParams

TEXTS = ["Ad sales boost Time Warner profit", "Quarterly profits at US media giant TimeWarner jumped 76%",
         "a much shorter text", "Dollar gains on Greenspan speech as the Fed chief signals more rate rises ahead"]


def params(fixed: int) -> FineTuningParams:
    return FineTuningParams(num_fixed_layers=fixed, query_lr=1e-3, items_lr=1e-3, query_weight_decay=0.0,
                            items_weight_decay=0.0, margin=0.05)


def test_the_layer_split_forward_gives_the_models_own_embeddings(minilm: TextToTextModel) -> None:
    for fixed in (0, 3, 5):
        minilm.fix_layers(fixed)
        assert minilm.matches_sentence_transformers(TEXTS, tolerance=1e-5)


def test_fixing_layers_freezes_them_and_only_them(minilm: TextToTextModel) -> None:
    minilm.fix_layers(4)
    before = {name: p.detach().clone() for name, p in minilm.model.named_parameters()}
    optimizer = torch.optim.AdamW(minilm.parameter_groups(params(4)))
    for _ in range(2):
        loss = -(minilm.encode_queries(TEXTS[:2]) * minilm.encode_items(TEXTS[2:])).sum()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    changed = {name for name, p in minilm.model.named_parameters() if not torch.equal(p, before[name])}
    frozen_prefixes = ("embeddings.", *(f"encoder.layer.{i}." for i in range(4)))
    for name in before:
        short = name.split("auto_model.", 1)[-1]
        if short.startswith(frozen_prefixes):
            assert name not in changed, f"{name} is frozen but changed"
    assert any(".encoder.layer.5." in name for name in changed)
    assert any(".encoder.layer.4." in name for name in changed)


def test_freezing_every_layer_is_refused(minilm: TextToTextModel) -> None:
    with pytest.raises(ValueError, match="freezing every layer trains nothing"):
        minilm.fix_layers(6)


def test_the_item_cache_gives_the_full_forwards_embeddings(minilm: TextToTextModel) -> None:
    minilm.fix_layers(4)
    cache = ItemPrefixCache(minilm, ["a", "b", "c", "d"], TEXTS, batch_size=3)
    with torch.no_grad():
        cached = cache.encode(minilm, ["c", "a", "d"])
        full = minilm.encode_items([TEXTS[2], TEXTS[0], TEXTS[3]])
    assert torch.allclose(cached, full, atol=2e-2)  # bfloat16 storage of the hidden states
    minilm.fix_layers(3)
    with pytest.raises(ValueError, match="another number of fixed layers"):
        cache.encode(minilm, ["a"])


def test_a_saved_model_loads_with_sentence_transformers_and_embeds_the_same(minilm: TextToTextModel,
                                                                            tmp_path: Path) -> None:
    minilm.fix_layers(4)
    with torch.no_grad():
        for parameter in minilm.model.parameters():
            if parameter.requires_grad:
                parameter.add_(0.01)  # a "trained" model, not the packaged one
        ours = minilm.encode_items(TEXTS)
    folder = minilm.save(tmp_path / "model")
    assert (folder / "model.safetensors").exists() and not list(folder.rglob("*.bin"))
    loaded = SentenceTransformer(str(folder), device="cpu")
    assert loaded.max_seq_length == 64
    theirs = loaded.encode(TEXTS, convert_to_tensor=True, normalize_embeddings=True)
    assert torch.allclose(ours, theirs, atol=1e-5)
