"""CLIP plugins run as the platform runs them, on pictures in a real S3 server (moto) and with MLflow in a
SQLite store: dataprep's instance prepares and stores the dataset, the trainer's uploads the initial
model, gets the stored dataset back through the same `get_fine_tuning_builder` call and runs the search
from the initial model.

The seed document's own plugin does so from a plugin folder of its own, its code as the document prints
it with only the imports ours and a local model folder in place of the hub name; the shipped CLIP plugin
does so from plugins/, and says which variable names its model when none is set."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from services.fine_tuning.context import plugin_call
from services.fine_tuning.data import DatasetStore, LoadDataset, PublishDataset, SessionWithEvents
from services.fine_tuning.discovery import PluginCatalog, discover_plugins
from services.fine_tuning.plugin import FineTuningMethod
from services.fine_tuning.training import (
    CLIP_INITIAL_PARAMS,
    INITIAL_PARAMS,
    MINILM_INITIAL_PARAMS,
    IterationResult,
    TextToImageCLIPModel,
)
from services.fine_tuning.training.builder import load_run_model
from tests.fine_tuning.clip_helpers import COLORS, color_clickstream, picture
from tests.s3_server import S3Server
from tests.servers import REPO_ROOT

SEED_PLUGIN = Path(__file__).parent / "seed_plugin" / "seed_plugin.py.txt"
SEED_MODEL_NAME = '"clip-ViT-B-32"'
CLIP_PLUGIN = "CLIP Text To Image Fine Tuning Method"


@pytest.fixture
def artifacts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tracking_uri: str) -> Path:
    """The dataset store's folder; MLflow is the SQLite store, named where plugins read it from
    (`settings.MLFLOW_TRACKING_URI`)."""
    monkeypatch.setenv("ES_MLFLOW_TRACKING_URI", tracking_uri)
    return tmp_path / "artifacts"


def public_pictures(s3: S3Server) -> Callable[[str], dict[str, Any]]:
    """Uploads a public picture per colour; returns each colour's S3 locator, as a result's meta holds it."""
    bucket = s3.new_bucket()
    for color in COLORS:
        s3.client().put_object(Bucket=bucket, Key=f"pictures/{color}.png", Body=picture(color), ACL="public-read")
    return lambda color: {"bucket": bucket, "file": f"pictures/{color}.png"}


def run_as_the_platform_does(catalog: PluginCatalog, name: str, clickstream: list[SessionWithEvents],
                             artifacts: Path) -> tuple[FineTuningMethod, IterationResult]:
    meta = catalog.get(name).meta
    store = DatasetStore.open(str(artifacts))
    prepared = PublishDataset(store)
    with plugin_call(meta, batch_id="batch-1", dataset=prepared):  # dataprep
        catalog.create(name).get_fine_tuning_builder(clickstream)
    assert prepared.manifest is not None and prepared.manifest.item_kind == "image"
    plugin = catalog.create(name)  # the trainer
    with plugin_call(meta, batch_id="batch-1", task_id="task-1"):
        plugin.upload_initial_model()
        with plugin_call(meta, batch_id="batch-1", dataset=LoadDataset(store)):
            builder = plugin.get_fine_tuning_builder([])
        start = load_run_model(plugin.manager, plugin.manager.initial_run_id(),
                               builder.fine_tuning_settings.max_seq_length)
        assert isinstance(start, TextToImageCLIPModel)
        return plugin, builder.run(start)


def assert_every_trial_finished_and_the_best_model_loads_back(plugin: FineTuningMethod, result: IterationResult,
                                                              trials: int) -> None:
    client = plugin.manager.client
    experiment = client.get_experiment_by_name(f"iteration / {plugin.meta.name} / batch-1")
    assert [r.info.status for r in client.search_runs([experiment.experiment_id])] == ["FINISHED"] * trials
    assert isinstance(result.model, TextToImageCLIPModel)
    loaded = load_run_model(plugin.manager, result.best_run_id, None)
    with torch.no_grad():
        assert torch.allclose(loaded.encode_queries(["red"]), result.model.encode_queries(["red"]), atol=1e-5)
        assert torch.allclose(loaded.encode_items([picture("red")]), result.model.encode_items([picture("red")]),
                              atol=1e-5)


def test_the_seed_documents_plugin_runs_unchanged_from_a_plugin_folder_of_its_own(
        s3: S3Server, tiny_clip_path: Path, artifacts: Path, tmp_path: Path) -> None:
    source = SEED_PLUGIN.read_text()
    assert source.count(SEED_MODEL_NAME) == 1
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "seed_plugin.py").write_text(source.replace(SEED_MODEL_NAME, repr(str(tiny_clip_path))))
    catalog = discover_plugins(plugins)
    assert catalog.broken == {}

    plugin, result = run_as_the_platform_does(catalog, "Default Fine Tuning Method",
                                              color_clickstream(public_pictures(s3)), artifacts)

    assert_every_trial_finished_and_the_best_model_loads_back(plugin, result, trials=2)
    run = plugin.manager.client.get_run(result.best_run_id)
    assert run.data.params["settings.loss.loss"] == "CosineProbMarginRankingLoss"
    assert [run.data.params[f"settings.{name}"] for name in ("step_size", "test_each_n_sessions", "num_epochs")] == [
        "35", "0.5", "3"]
    assert int(run.data.params["num_fixed_layers"]) in (5, 6, 7, 8)
    assert "best_test_not_irrelevant_dist_shift" in run.data.metrics  # the seed's main metric


def test_the_shipped_clip_plugin_runs_end_to_end_on_s3_pictures(
        s3: S3Server, tiny_clip_path: Path, artifacts: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ES_CLIP_MODEL_PATH", str(tiny_clip_path))
    catalog = discover_plugins(REPO_ROOT / "plugins")

    plugin, result = run_as_the_platform_does(catalog, CLIP_PLUGIN, color_clickstream(public_pictures(s3)), artifacts)

    assert_every_trial_finished_and_the_best_model_loads_back(plugin, result, trials=4)
    assert "best_test_ndcg_at_10" in plugin.manager.client.get_run(result.best_run_id).data.metrics


def test_the_clip_plugin_builds_without_a_model_and_says_which_variable_names_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ES_CLIP_MODEL_PATH", raising=False)
    plugin = discover_plugins(REPO_ROOT / "plugins").create(CLIP_PLUGIN)  # as dataprep builds it
    with pytest.raises(ValueError, match="set ES_CLIP_MODEL_PATH to its folder"):
        plugin.upload_initial_model()
    monkeypatch.setenv("ES_CLIP_MODEL_PATH", str(tmp_path))
    with pytest.raises(ValueError, match=r"no modules\.json"):
        plugin.upload_initial_model()


def test_a_seed_plugin_updating_initial_params_in_place_leaves_the_shipped_plugins_spaces_alone(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(INITIAL_PARAMS, "num_fixed_layers", [11])  # what `self.initial_params.update(...)` can do
    catalog = discover_plugins(REPO_ROOT / "plugins")
    assert catalog.create(CLIP_PLUGIN).initial_params == CLIP_INITIAL_PARAMS
    assert catalog.create("Default Fine Tuning Method").initial_params == MINILM_INITIAL_PARAMS
    assert CLIP_INITIAL_PARAMS["num_fixed_layers"] == [5, 6, 7, 8]
