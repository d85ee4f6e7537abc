"""A tiny CLIP built from a config (12-layer towers like ViT-B/32's, 32 wide; no hub, no torchvision),
saved as a sentence-transformers CLIP folder, and a simulated text-to-image clickstream: people search
for a colour and click the picture of that colour."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.modules import CLIPModel as SentenceTransformersCLIP
from tokenizers import pre_tokenizers
from transformers import CLIPConfig, CLIPModel, CLIPProcessor, CLIPTokenizer
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

from services.fine_tuning.data import SessionEvent, SessionWithEvents, ShownResult

COLORS = ["red", "green", "blue", "yellow", "cyan", "magenta", "white", "black", "orange", "purple", "gray", "brown"]
QUERY_TEMPLATES = ["{}", "a {} picture", "{} photo"]
SHOWN = 4
LAYERS = 12
QUERY_POSITIONS = 77  # CLIP's text positions


def save_tiny_clip(folder: Path) -> Path:
    """Writes a randomly initialised CLIP as a sentence-transformers folder, as clip-ViT-B-32 is one."""
    # A byte-level vocabulary without merges: every character is a token, so any text tokenizes.
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for char in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[char] = len(vocab)
        vocab[f"{char}</w>"] = len(vocab)
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[], model_max_length=QUERY_POSITIONS)
    torch.manual_seed(0)
    tower = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": LAYERS, "num_attention_heads": 2}
    config = CLIPConfig(
        text_config={**tower, "vocab_size": len(vocab), "max_position_embeddings": QUERY_POSITIONS,
                     "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 1},
        vision_config={**tower, "image_size": 32, "patch_size": 8},
        projection_dim=16,
    )
    processor = CLIPProcessor(tokenizer=tokenizer, image_processor=CLIPImageProcessorPil(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}))
    CLIPModel(config).save_pretrained(folder / "transformers")
    processor.save_pretrained(folder / "transformers")
    model = SentenceTransformer(modules=[SentenceTransformersCLIP(str(folder / "transformers"))], device="cpu")
    model.save(str(folder / "sentence-transformers"))
    return folder / "sentence-transformers"


def picture(color: str) -> bytes:
    """A PNG of one colour, larger than the model's input so the processor resizes and crops it."""
    buffer = io.BytesIO()
    Image.new("RGB", (40, 40), color).save(buffer, format="PNG")
    return buffer.getvalue()


def object_id(color: str) -> str:
    return f"picture-{color}"


def color_clickstream(meta: Callable[[str], dict[str, Any]] = lambda _: {}) -> list[SessionWithEvents]:
    """A session per (query wording, colour): the colour's picture and three others shown, the colour's
    clicked, at a position that moves from session to session. `meta(color)` is each result's meta."""
    sessions = []
    for n, (template, color) in enumerate((t, c) for t in QUERY_TEMPLATES for c in COLORS):
        others = [COLORS[(COLORS.index(color) + k) % len(COLORS)] for k in range(1, SHOWN)]
        shown = [*others[: n % SHOWN], color, *others[n % SHOWN:]]
        sessions.append(SessionWithEvents(
            session_id=f"session-{n}", search_query=template.format(color),
            search_results=[ShownResult(object_id(c), rank=1.0 - k / 10, meta=meta(c)) for k, c in enumerate(shown)],
            created_at=1_700_000_000 + n,
            events=[SessionEvent(event_id=f"session-{n}-click", object_id=object_id(color))],
        ))
    return sessions
