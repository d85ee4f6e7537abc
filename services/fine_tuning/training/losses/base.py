"""What every click loss is: a module that turns a batch of click examples, scored by the model, into
one loss value (`ClickLoss.batch_loss`). The training loop calls only that, so a plugin's own loss plugs
in by subclassing `ClickLoss`, without editing the loop."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn


class ClickLoss(nn.Module):
    """A loss the training loop can run.

    `batch_loss(batch, queries, candidates, column, margin)` gets the step's examples
    (`examples.ClickExample`: query, clicked item, hard negatives, related items, weight), their query
    embeddings (B, D) and the embeddings of every candidate item of the step (C, D), both
    L2-normalised, `column` mapping an item id to its row in `candidates`, and the run's `margin`
    parameter (for the losses that use one). It returns a scalar tensor to minimise.
    """

    def batch_loss(self, batch: Sequence[Any], queries: torch.Tensor, candidates: torch.Tensor,
                   column: dict[str, int], margin: float) -> torch.Tensor:
        raise NotImplementedError

    def config(self) -> dict[str, object]:
        """What goes to MLflow as the run's loss parameters."""
        return {"loss": type(self).__name__}


def click_weights(batch: Sequence[Any], like: torch.Tensor) -> torch.Tensor:
    """Each example's weight, as a tensor on `like`'s device and dtype."""
    return torch.tensor([e.weight for e in batch], dtype=like.dtype, device=like.device)
