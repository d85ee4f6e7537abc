"""Fine-tuning the tiny CLIP on a simulated batch of clicked pictures, through the same builder as the
text model: the run lowers the loss, never moves a frozen weight, is recorded in MLflow (a real SQLite
store) with both towers' learning rates, and the model it saved loads back as the two-tower model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from services.common.mlflow_models import TAG_SHA256
from services.fine_tuning.context import plugin_call
from services.fine_tuning.data import (
    ClickstreamParser,
    ClickstreamSessionsSplitter,
    CLIPItemStorageProducer,
    DummyEventType,
    ItemsSourceLoader,
    SearchResult,
    TextQueryItem,
    TextQueryRetriever,
    prepare_data,
)
from services.fine_tuning.plugin import PluginMeta
from services.fine_tuning.training import (
    ExperimentsManager,
    FineTuningBuilder,
    FineTuningSettings,
    MetricsAccumulator,
    TextToImageCLIPModel,
)
from services.fine_tuning.training.builder import load_run_model
from tests.fine_tuning.clip_helpers import COLORS, color_clickstream, object_id, picture

META = PluginMeta("Tiny CLIP Test Plugin", "1.0")
FIXED = 5
# A rate at which a held-out checkpoint beats the random start model (whose copy would not be saved).
SPACE = {"num_fixed_layers": [FIXED], "query_lr": [1e-4], "items_lr": [1e-4], "query_weight_decay": [0.0],
         "items_weight_decay": [0.0], "margin": [0.05]}


def test_clip_fine_tuning_on_clicked_pictures_runs_end_to_end_and_its_model_loads_back(
        tiny_clip: TextToImageCLIPModel, tmp_path: Path, tracking_uri: str) -> None:
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    for color in COLORS:
        (pictures / object_id(color)).write_bytes(picture(color))
    retriever = TextQueryRetriever()
    data = prepare_data(color_clickstream(), ClickstreamParser(TextQueryItem, SearchResult, DummyEventType),
                        ClickstreamSessionsSplitter(test_size_ratio=0.25), retriever, ItemsSourceLoader(str(pictures)),
                        CLIPItemStorageProducer())
    assert data.items.kind == "image"
    manager = ExperimentsManager(tracking_uri, "test_ndcg_at_10", [MetricsAccumulator("train_loss", True)])
    settings = FineTuningSettings(num_epochs=3, batch_size=8, test_each_n_sessions=0.5, early_stopping_patience=6)
    builder = FineTuningBuilder(
        data_loader=None, query_retriever=retriever, clickstream_parser=None, clickstream_sessions_splitter=None,
        dataset_fields_normalizer=None, item_storage_producer=None, accumulators=manager.accumulators.values(),
        experiments_manager=manager, fine_tuning_settings=settings, initial_params=SPACE, ranking_data=data,
        initial_max_evals=1)
    with plugin_call(META, batch_id="batch-1", task_id="task-1"):
        result = builder.run(tiny_clip)

    run = result.runs[0]
    losses = [metrics["train_loss"] for _, metrics in run.history if "train_loss" in metrics]
    assert losses[-1] < losses[0]
    trained = result.model
    assert isinstance(trained, TextToImageCLIPModel) and trained is not tiny_clip
    frozen = [(trained.query_clip.text_model, tiny_clip.query_clip.text_model),
              (trained.items_clip.vision_model, tiny_clip.items_clip.vision_model)]
    for after, before in frozen:
        for module_after, module_before in [(after.embeddings, before.embeddings),
                                            *zip(after.encoder.layers[:FIXED], before.encoder.layers[:FIXED],
                                                 strict=True)]:
            for (name, p_after), p_before in zip(module_after.named_parameters(), module_before.parameters(),
                                                 strict=True):
                assert torch.equal(p_after, p_before), f"frozen {name} changed"

    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("iteration / Tiny CLIP Test Plugin / batch-1")
    (recorded,) = client.search_runs([experiment.experiment_id])
    assert recorded.info.status == "FINISHED" and recorded.data.tags[TAG_SHA256]
    assert recorded.data.params["query_lr"] == "0.0001" and recorded.data.params["items_lr"] == "0.0001"
    assert recorded.data.metrics["best_test_ndcg_at_10"] == pytest.approx(result.best_scores.ndcg_at_10)

    loaded = load_run_model(manager, result.best_run_id, settings.max_seq_length)
    assert isinstance(loaded, TextToImageCLIPModel)
    queries, images = ["red", "a blue picture"], [picture("red"), picture("blue")]
    with torch.no_grad():
        assert torch.allclose(loaded.encode_queries(queries), trained.encode_queries(queries), atol=1e-5)
        assert torch.allclose(loaded.encode_items(images), trained.encode_items(images), atol=1e-5)
