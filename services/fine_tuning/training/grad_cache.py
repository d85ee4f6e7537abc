"""A step's items encoded in chunks with cached gradients (GradCache: Gao, Zhang, Han and Callan, "Scaling
Deep Contrastive Learning Batch Size under Memory Limited Setup", RepL4NLP 2021), so the loss sees every
candidate of the step at once while the encoder keeps the activations of one chunk only.

The items are first encoded without a graph; the loss is computed and differentiated against those
embeddings; then each chunk is encoded again with a graph and its slice of the embeddings' gradient is
pushed through it. Each chunk replays the random state (dropout masks) of its first pass, so the
gradient is the one a single pass over the same chunks would give; the price is one more forward pass
over the items of a chunked step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch


def _random_state(device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    return torch.get_rng_state(), torch.cuda.get_rng_state(device) if device.type == "cuda" else None


def _restore(state: tuple[torch.Tensor, torch.Tensor | None], device: torch.device) -> None:
    cpu, cuda = state
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state(cuda, device)


class CachedItemEncoding:
    """The embeddings of `item_ids` (C, D) as a leaf tensor for the loss, encoded `chunk_size` at a time.

    Args:
        encode: item ids -> embeddings (n, D), differentiable through the model's trainable layers.
        item_ids: the step's candidate items, in the order of the embeddings' rows.
        chunk_size: items per forward pass (>= 1).
        device: where the model runs (its random state is replayed per chunk).

    Usage: `cached = CachedItemEncoding(encode, ids, 64, device)`; compute the loss on
    `cached.embeddings`; `loss.backward()`; then `cached.backward()` adds the items' share of the gradient
    to the model's parameters.
    """

    def __init__(self, encode: Callable[[Sequence[str]], torch.Tensor], item_ids: Sequence[str], chunk_size: int,
                 device: torch.device) -> None:
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, not {chunk_size}")
        self._encode, self._device = encode, device
        self._chunks = [list(item_ids[i:i + chunk_size]) for i in range(0, len(item_ids), chunk_size)]
        self._states = []
        parts = []
        with torch.no_grad():
            for chunk in self._chunks:
                self._states.append(_random_state(device))
                parts.append(self._encode(chunk))
        self.embeddings = torch.cat(parts).requires_grad_()  # (C, D)

    def backward(self) -> None:
        """Pushes the gradient the loss left on `embeddings` through the encoder, one chunk at a time."""
        if self.embeddings.grad is None:
            raise RuntimeError("call loss.backward() on a loss of `embeddings` before CachedItemEncoding.backward()")
        after = _random_state(self._device)  # the random stream goes on as if there had been one pass
        gradients = self.embeddings.grad.split([len(chunk) for chunk in self._chunks])
        for chunk, state, gradient in zip(self._chunks, self._states, gradients, strict=True):
            _restore(state, self._device)
            self._encode(chunk).backward(gradient)
        _restore(after, self._device)
