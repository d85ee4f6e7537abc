"""Model wrappers: what the trainer needs of an embedding model — a query tower, an items tower, "fix
the first N layers" that really freezes them, parameter groups with the two learning rates, and saving
in sentence-transformers' own format (safetensors, never pickled).

Text-to-text models are one shared model for queries and items (`same_query_and_items`): only the
items learning rate and weight decay apply. For BERT-family encoders (MiniLM, BERT, E5, ...) the items
tower can run from cached hidden states after the frozen layers, so each item pays for the frozen
layers once per dataset instead of once per step; that path is verified against the full forward
before it is used.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 - the torch convention
from sentence_transformers import SentenceTransformer
from torch import nn

from services.fine_tuning.training.settings import FineTuningParams


def embedding_dimension(model: SentenceTransformer) -> int:
    # sentence-transformers 6 renamed get_sentence_embedding_dimension; older releases only have that.
    method = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    return int(method())


def _features(model: SentenceTransformer, texts: Sequence[str]) -> dict[str, torch.Tensor]:
    prepare = getattr(model, "preprocess", None) or model.tokenize
    return prepare(list(texts))


class TextToTextModel(nn.Module):
    """One SentenceTransformer for queries and items.

    Args:
        model: a SentenceTransformer whose first module is a transformer encoder with mean (or CLS)
            pooling; e.g. `SentenceTransformer(get_model_path())` for all-MiniLM-L6-v2.
        max_seq_length: tokens per text; None keeps the model's own setting.
    """

    same_query_and_items = True

    def __init__(self, model: SentenceTransformer, max_seq_length: int | None = None) -> None:
        super().__init__()
        self.model = model
        if max_seq_length is not None:
            self.model.max_seq_length = max_seq_length
        self.num_fixed_layers = 0

    # --- structure ----------------------------------------------------------------------------------

    @property
    def encoder(self) -> nn.Module:
        return self.model[0].auto_model

    def layers(self) -> nn.ModuleList:
        encoder = self.encoder
        if not (hasattr(encoder, "embeddings") and hasattr(encoder, "encoder") and hasattr(encoder.encoder, "layer")):
            raise TypeError(f"{type(encoder).__name__} is not a BERT-family encoder: cannot fix layers by index")
        return encoder.encoder.layer

    def fix_layers(self, num_fixed_layers: int) -> None:
        """Freezes the embeddings and the first `num_fixed_layers` layers (requires_grad off); the rest train."""
        layers = self.layers()
        if not 0 <= num_fixed_layers < len(layers):
            raise ValueError(f"num_fixed_layers must lie in [0, {len(layers) - 1}] for this {len(layers)}-layer model "
                             f"(freezing every layer trains nothing), not {num_fixed_layers}")
        for parameter in self.model.parameters():
            parameter.requires_grad_(True)
        for parameter in self.encoder.embeddings.parameters():
            parameter.requires_grad_(False)
        for layer in layers[:num_fixed_layers]:
            for parameter in layer.parameters():
                parameter.requires_grad_(False)
        self.num_fixed_layers = num_fixed_layers

    def parameter_groups(self, params: FineTuningParams) -> list[dict[str, Any]]:
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        return [{"params": trainable, "lr": params.items_lr, "weight_decay": params.items_weight_decay}]

    # --- forward ------------------------------------------------------------------------------------

    def _pool(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, L, 1)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)  # (B, D)
        return F.normalize(pooled, dim=-1)

    def _attention(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> Any:
        from transformers.masking_utils import create_bidirectional_mask

        return create_bidirectional_mask(config=self.encoder.config, inputs_embeds=hidden,
                                         attention_mask=attention_mask)

    def prefix(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Hidden states after the fixed layers (B, L, D) and the attention mask (B, L); no gradient."""
        features = _features(self.model, texts)
        with torch.no_grad():
            hidden = self.encoder.embeddings(input_ids=features["input_ids"],
                                             token_type_ids=features.get("token_type_ids"))
            mask = self._attention(hidden, features["attention_mask"])
            for layer in self.layers()[: self.num_fixed_layers]:
                hidden = layer(hidden, mask)
        return hidden, features["attention_mask"]

    def suffix(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Runs the trainable layers on prefix hidden states; returns normalised embeddings (B, D)."""
        mask = self._attention(hidden, attention_mask)
        for layer in self.layers()[self.num_fixed_layers:]:
            hidden = layer(hidden, mask)
        return self._pool(hidden, attention_mask)

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """Normalised embeddings (B, D), differentiable through the trainable layers."""
        hidden, attention_mask = self.prefix(texts)
        return self.suffix(hidden, attention_mask)

    encode_queries = encode_texts
    encode_items = encode_texts

    def matches_sentence_transformers(self, texts: Sequence[str], tolerance: float = 1e-4) -> bool:
        """True when the layer-split forward gives the model's own embeddings (pooling, normalisation)."""
        with torch.no_grad():
            ours = self.encode_texts(texts)
            theirs = self.model.encode(list(texts), convert_to_tensor=True, normalize_embeddings=True)
        return ours.shape == theirs.shape and bool((ours - theirs).abs().max() <= tolerance)

    # --- persistence --------------------------------------------------------------------------------

    def save(self, folder: Path) -> Path:
        """A sentence-transformers folder (safetensors); loads with `SentenceTransformer(folder)`."""
        self.model.save(str(folder), safe_serialization=True)
        return folder

    def config(self) -> dict[str, Any]:
        return {"model": type(self).__name__, "max_seq_length": self.model.max_seq_length,
                "layers": len(self.layers()), "embedding_dim": embedding_dimension(self.model)}


class ItemPrefixCache:
    """Hidden states after the fixed layers for every item of a dataset, kept in bfloat16 (B, L, D) with
    their attention masks, so each step runs only the trainable layers on the items it needs."""

    def __init__(self, model: TextToTextModel, item_ids: Sequence[str], texts: Sequence[str],
                 batch_size: int = 64) -> None:
        self.num_fixed_layers = model.num_fixed_layers
        self.row = {item_id: i for i, item_id in enumerate(item_ids)}
        length = model.model.max_seq_length
        dim = embedding_dimension(model.model)
        self.hidden = torch.zeros(len(texts), length, dim, dtype=torch.bfloat16)
        self.mask = torch.zeros(len(texts), length, dtype=torch.long)
        for start in range(0, len(texts), batch_size):
            hidden, mask = model.prefix(texts[start:start + batch_size])
            self.hidden[start:start + len(hidden), : hidden.shape[1]] = hidden.to(torch.bfloat16)
            self.mask[start:start + len(hidden), : mask.shape[1]] = mask

    def encode(self, model: TextToTextModel, item_ids: Sequence[str]) -> torch.Tensor:
        if model.num_fixed_layers != self.num_fixed_layers:
            raise ValueError("the cache was built for another number of fixed layers")
        rows = torch.tensor([self.row[i] for i in item_ids])
        mask = self.mask[rows]
        length = int(mask.sum(1).max())  # trim the padding every row shares
        return model.suffix(self.hidden[rows, :length].float(), mask[:, :length])
