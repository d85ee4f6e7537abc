"""The text-to-image CLIP wrapper on a tiny CLIP: freezing freezes the first layers of both towers and
nothing else trains but the towers' other layers, the towers keep their own learning rates, queries
are capped at CLIP's positions, and a saved model is one folder per tower that loads back, with our
loader and with plain sentence-transformers."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
from PIL import Image
from sentence_transformers import SentenceTransformer

from services.fine_tuning.training.models import TextToImageCLIPModel, TextToTextModel, load_model
from services.fine_tuning.training.settings import FineTuningParams
from tests.fine_tuning.clip_helpers import LAYERS, QUERY_POSITIONS, picture

QUERIES = ["red", "a green picture", "blue photo"]
PICTURES = [picture("red"), picture("green"), picture("blue")]


def params(fixed: int) -> FineTuningParams:
    return FineTuningParams(num_fixed_layers=fixed, query_lr=1e-2, items_lr=2e-2, query_weight_decay=0.0,
                            items_weight_decay=1e-4, margin=0.05)


def test_fixing_layers_freezes_the_first_layers_of_both_towers_and_only_them(tiny_clip: TextToImageCLIPModel
                                                                              ) -> None:
    tiny_clip.fix_layers(5)
    before = {name: p.detach().clone() for name, p in tiny_clip.named_parameters()}
    optimizer = torch.optim.AdamW(tiny_clip.parameter_groups(params(5)))
    for _ in range(2):
        loss = -(tiny_clip.encode_queries(QUERIES) * tiny_clip.encode_items(PICTURES)).sum()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    changed = {name for name, p in tiny_clip.named_parameters() if not torch.equal(p, before[name])}

    trained = [f"query_model.0.model.text_model.encoder.layers.{i}." for i in range(5, LAYERS)]
    trained += [f"items_model.0.model.vision_model.encoder.layers.{i}." for i in range(5, LAYERS)]
    trained += ["query_model.0.model.text_model.final_layer_norm.", "query_model.0.model.text_projection.",
                "items_model.0.model.vision_model.post_layernorm.", "items_model.0.model.visual_projection."]
    for name in before:
        if not name.startswith(tuple(trained)):  # embeddings, the first 5 layers, the logit scale, the other halves
            assert name not in changed, f"{name} is frozen but changed"
    for prefix in trained:
        assert any(name.startswith(prefix) for name in changed), f"nothing under {prefix} trained"


def test_each_tower_trains_with_its_own_learning_rate_and_weight_decay(tiny_clip: TextToImageCLIPModel) -> None:
    tiny_clip.fix_layers(6)
    query, items = tiny_clip.parameter_groups(params(6))
    assert (query["lr"], query["weight_decay"], items["lr"], items["weight_decay"]) == (1e-2, 0.0, 2e-2, 1e-4)
    text = {id(p) for p in tiny_clip.query_clip.text_model.parameters()}
    text |= {id(p) for p in tiny_clip.query_clip.text_projection.parameters()}
    vision = {id(p) for p in tiny_clip.items_clip.vision_model.parameters()}
    vision |= {id(p) for p in tiny_clip.items_clip.visual_projection.parameters()}
    assert query["params"] and {id(p) for p in query["params"]} <= text
    assert items["params"] and {id(p) for p in items["params"]} <= vision


def test_freezing_every_layer_of_a_tower_is_refused(tiny_clip: TextToImageCLIPModel) -> None:
    with pytest.raises(ValueError, match=r"\[0, 11\].*freezing every layer trains nothing"):
        tiny_clip.fix_layers(LAYERS)


def test_a_model_that_is_not_clip_is_refused_with_the_reason(minilm: TextToTextModel) -> None:
    with pytest.raises(TypeError, match=r"must be a sentence-transformers CLIP model.*BertModel"):
        TextToImageCLIPModel(minilm.model)


def test_queries_are_capped_at_clips_text_positions(tiny_clip_path: Path) -> None:
    model = TextToImageCLIPModel(SentenceTransformer(str(tiny_clip_path), device="cpu"), max_seq_length=128)
    assert model.max_seq_length == QUERY_POSITIONS
    with torch.no_grad():
        assert model.encode_queries(["red " * 200]).shape == (1, 16)


def test_a_saved_model_is_one_folder_per_tower_and_loads_back_with_the_same_embeddings(
        tiny_clip: TextToImageCLIPModel, tmp_path: Path) -> None:
    tiny_clip.fix_layers(5)
    with torch.no_grad():
        for parameter in tiny_clip.parameters():
            if parameter.requires_grad:
                parameter.add_(0.01)  # a "trained" model: the towers now differ from the copies' other halves
        queries, items = tiny_clip.encode_queries(QUERIES), tiny_clip.encode_items(PICTURES)
    folder = tiny_clip.save(tmp_path / "model")

    towers = sorted(p.name for p in folder.iterdir() if p.is_dir())
    assert towers == ["document_0_CLIPModel", "query_0_CLIPModel"]
    assert all((folder / tower / "model.safetensors").is_file() for tower in towers)
    assert (folder / "modules.json").is_file()
    assert not [p for p in folder.rglob("*") if p.suffix in (".bin", ".pt", ".pkl", ".pickle")]

    loaded = load_model(folder)
    assert isinstance(loaded, TextToImageCLIPModel)
    with torch.no_grad():
        assert torch.allclose(loaded.encode_queries(QUERIES), queries, atol=1e-5)
        assert torch.allclose(loaded.encode_items(PICTURES), items, atol=1e-5)
    plain = SentenceTransformer(str(folder), device="cpu", local_files_only=True)
    images = [Image.open(io.BytesIO(data)).convert("RGB") for data in PICTURES]
    assert torch.allclose(plain.encode_query(QUERIES, convert_to_tensor=True, normalize_embeddings=True), queries,
                          atol=1e-5)
    assert torch.allclose(plain.encode_document(images, convert_to_tensor=True, normalize_embeddings=True), items,
                          atol=1e-5)
