"""Model wrappers: what the trainer needs of an embedding model — a query tower, an items tower, "fix
the first N layers" that really freezes them, parameter groups with the two learning rates, and saving
in sentence-transformers' own format (safetensors, never pickled).

Text-to-text models are one shared model for queries and items (`same_query_and_items`): only the
items learning rate and weight decay apply. For BERT-family encoders (MiniLM, BERT, E5, ...) the items
tower can run from cached hidden states after the frozen layers, so each item pays for the frozen
layers once per dataset instead of once per step; that path is verified against the full forward
before it is used.

Text-to-image models (CLIP) are two towers, a text query tower and an image items tower, each with its
own learning rate, saved as one folder per tower; `load_model` tells the two layouts apart.
"""

from __future__ import annotations

import copy
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 - the torch convention
from PIL import Image
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.modules import Router
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers import CLIPModel

from services.fine_tuning.training.settings import FineTuningParams


def embedding_dimension(model: SentenceTransformer) -> int:
    # sentence-transformers 6 renamed get_sentence_embedding_dimension; older releases only have that.
    method = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    return int(method())


def _features(model: SentenceTransformer, texts: Sequence[str]) -> dict[str, torch.Tensor]:
    """Tokenised texts on the model's device."""
    prepare = getattr(model, "preprocess", None) or model.tokenize
    device = model.device
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in prepare(list(texts)).items()}


def training_device() -> torch.device:
    """CUDA when there is a GPU, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


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
        self.recomputed_layers = 0

    # --- structure ----------------------------------------------------------------------------------

    @property
    def max_seq_length(self) -> int:
        return self.model.max_seq_length

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

    def recompute_activations(self, layers: int) -> None:
        """The first `layers` trainable layers keep only their inputs while training and recompute the rest
        in the backward pass (activation checkpointing; `torch.utils.checkpoint` replays the random state,
        so dropout draws the same masks and training is unchanged): less memory, one more forward of them."""
        trainable = len(self.layers()) - self.num_fixed_layers
        if not 0 <= layers <= trainable:
            raise ValueError(f"recompute_layers must lie in [0, {trainable}] (the trainable layers), not {layers}")
        self.recomputed_layers = layers

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
        recompute = self.recomputed_layers if torch.is_grad_enabled() else 0
        for i, layer in enumerate(self.layers()[self.num_fixed_layers:]):
            hidden = checkpoint(layer, hidden, mask, use_reentrant=False) if i < recompute else layer(hidden, mask)
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
            self.hidden[start:start + len(hidden), : hidden.shape[1]] = hidden.to(torch.bfloat16).cpu()
            self.mask[start:start + len(hidden), : mask.shape[1]] = mask.cpu()

    def encode(self, model: TextToTextModel, item_ids: Sequence[str]) -> torch.Tensor:
        if model.num_fixed_layers != self.num_fixed_layers:
            raise ValueError("the cache was built for another number of fixed layers")
        rows = torch.tensor([self.row[i] for i in item_ids])
        mask = self.mask[rows]
        length = int(mask.sum(1).max())  # trim the padding every row shares
        device = model.model.device
        return model.suffix(self.hidden[rows, :length].to(device, torch.float32), mask[:, :length].to(device))


def _clip(model: SentenceTransformer, tower: str) -> CLIPModel:
    """The transformers CLIP model inside a sentence-transformers CLIP model (e.g. clip-ViT-B-32)."""
    inner = getattr(model[0], "auto_model", None) if len(model) else None
    if not isinstance(inner, CLIPModel):
        raise TypeError(f"the {tower} tower must be a sentence-transformers CLIP model such as clip-ViT-B-32, not "
                        f"one holding {type(inner).__name__}")
    return inner


def _image(item: bytes | Image.Image) -> Image.Image:
    if isinstance(item, Image.Image):
        return item
    with Image.open(io.BytesIO(item)) as image:
        return image.convert("RGB")


class TextToImageCLIPModel(nn.Module):
    """The seed's text-to-image model: CLIP's text encoder (and projection) is the query tower, its vision
    encoder (and projection) the items tower, each trained with its own learning rate and weight decay.
    Items are images: encoded bytes, as `CLIPItemStorageProducer` keeps them, or PIL images.

    The towers live in two copies of the CLIP model (the query tower is one copy's text half, the items
    tower the other's vision half), so each is saved as a folder of its own (see `save`).

    Args:
        clip_model: a sentence-transformers CLIP model loaded from a local folder, e.g.
            `SentenceTransformer("/models/clip-ViT-B-32")`: the query tower and, copied, the items tower.
        max_seq_length: tokens per query; None keeps the model's own; either is capped at the text
            encoder's positions (77 for CLIP).
        items_model: the items tower when it is not a copy of `clip_model` (a saved model's own).
    """

    same_query_and_items = False

    def __init__(self, clip_model: SentenceTransformer, max_seq_length: int | None = None,
                 items_model: SentenceTransformer | None = None) -> None:
        super().__init__()
        _clip(clip_model, "query")
        self.query_model = clip_model
        self.items_model = items_model if items_model is not None else copy.deepcopy(clip_model)
        _clip(self.items_model, "items")
        positions = self.query_clip.config.text_config.max_position_embeddings
        self.query_model.max_seq_length = min(max_seq_length or self.query_model.max_seq_length or positions,
                                              positions)
        self.num_fixed_layers = 0

    # --- structure ----------------------------------------------------------------------------------

    @property
    def query_clip(self) -> CLIPModel:
        return _clip(self.query_model, "query")

    @property
    def items_clip(self) -> CLIPModel:
        return _clip(self.items_model, "items")

    @property
    def max_seq_length(self) -> int:
        return self.query_model.max_seq_length

    def layers(self) -> tuple[nn.ModuleList, nn.ModuleList]:
        """The query tower's text layers and the items tower's vision layers."""
        return self.query_clip.text_model.encoder.layers, self.items_clip.vision_model.encoder.layers

    def _query_tower(self) -> list[nn.Module]:
        return [self.query_clip.text_model, self.query_clip.text_projection]

    def _items_tower(self) -> list[nn.Module]:
        return [self.items_clip.vision_model, self.items_clip.visual_projection]

    def fix_layers(self, num_fixed_layers: int) -> None:
        """Freezes each tower's embeddings and first `num_fixed_layers` layers (requires_grad off); the rest
        of each tower trains. CLIP's logit scale, the query copy's vision half and the items copy's text
        half never train."""
        text_layers, vision_layers = self.layers()
        depth = min(len(text_layers), len(vision_layers))
        if not 0 <= num_fixed_layers < depth:
            raise ValueError(f"num_fixed_layers must lie in [0, {depth - 1}] for these {len(text_layers)}-layer text "
                             f"and {len(vision_layers)}-layer vision towers (freezing every layer trains nothing), "
                             f"not {num_fixed_layers}")
        self.requires_grad_(False)
        text, vision = self.query_clip.text_model, self.items_clip.vision_model
        for module in (*text_layers[num_fixed_layers:], text.final_layer_norm, self.query_clip.text_projection,
                       *vision_layers[num_fixed_layers:], vision.post_layernorm, self.items_clip.visual_projection):
            module.requires_grad_(True)
        self.num_fixed_layers = num_fixed_layers

    def parameter_groups(self, params: FineTuningParams) -> list[dict[str, Any]]:
        query = [p for module in self._query_tower() for p in module.parameters() if p.requires_grad]
        items = [p for module in self._items_tower() for p in module.parameters() if p.requires_grad]
        return [{"params": query, "lr": params.query_lr, "weight_decay": params.query_weight_decay},
                {"params": items, "lr": params.items_lr, "weight_decay": params.items_weight_decay}]

    # --- forward ------------------------------------------------------------------------------------

    @staticmethod
    def _embed(model: SentenceTransformer, inputs: list[Any]) -> torch.Tensor:
        features = model.preprocess(inputs)  # its modality (text or image) picks CLIP's text or vision half
        features = {k: v.to(model.device) if isinstance(v, torch.Tensor) else v for k, v in features.items()}
        return F.normalize(model(features)["sentence_embedding"], dim=-1)

    def encode_queries(self, texts: Sequence[str]) -> torch.Tensor:
        """Normalised query embeddings (B, D), differentiable through the query tower's trainable layers."""
        return self._embed(self.query_model, list(texts))

    def encode_items(self, images: Sequence[bytes | Image.Image]) -> torch.Tensor:
        """Normalised image embeddings (B, D), differentiable through the items tower's trainable layers."""
        return self._embed(self.items_model, [_image(image) for image in images])

    # --- persistence --------------------------------------------------------------------------------

    def save(self, folder: Path) -> Path:
        """A sentence-transformers folder (safetensors) whose `Router` keeps one folder per tower:
        `SentenceTransformer(folder)` loads it, `encode_query(texts)` runs the query tower and
        `encode_document(images)` the items tower; `load_model(folder)` gives this wrapper back."""
        router = Router.for_query_document(query_modules=list(self.query_model),
                                           document_modules=list(self.items_model))
        SentenceTransformer(modules=[router], device=str(self.query_model.device)).save(str(folder),
                                                                                       safe_serialization=True)
        return folder

    def config(self) -> dict[str, Any]:
        text_layers, vision_layers = self.layers()
        return {"model": type(self).__name__, "max_seq_length": self.max_seq_length,
                "query_layers": len(text_layers), "items_layers": len(vision_layers),
                "embedding_dim": self.query_clip.config.projection_dim}


EmbeddingModel = TextToTextModel | TextToImageCLIPModel


def load_model(folder: Path, max_seq_length: int | None = None) -> EmbeddingModel:
    """The wrapper of a model folder that `save` wrote, from local files only: a `Router` of "query" and
    "document" towers is a `TextToImageCLIPModel`, any other sentence-transformers folder a `TextToTextModel`."""
    model = SentenceTransformer(str(folder), device="cpu", local_files_only=True)
    if not isinstance(model[0], Router):
        return TextToTextModel(model, max_seq_length)
    routes = model[0].sub_modules
    if set(routes) != {"query", "document"}:
        raise ValueError(f"{folder} routes to {', '.join(sorted(routes))}; a two-tower model routes to query and "
                         f"document")
    return TextToImageCLIPModel(SentenceTransformer(modules=list(routes["query"]), device="cpu"), max_seq_length,
                                items_model=SentenceTransformer(modules=list(routes["document"]), device="cpu"))
