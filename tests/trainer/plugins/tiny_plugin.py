"""A test plugin: the default plugin's shape with a tiny 2-layer BERT (ES_TEST_MODEL_PATH), and epochs,
trials, the first learning rate and a pause after the last trial read from a JSON file of knobs
(ES_TEST_KNOBS) each time a task builds it, so a test can make a trial last long enough to cancel or kill
it, train nothing worth keeping, or cancel a task between its training and its submission."""

import json
import os
import time
from pathlib import Path

from sentence_transformers import SentenceTransformer

from services.fine_tuning.data import (
    ClickstreamParser,
    ClickstreamSessionsSplitter,
    DatasetFieldsNormalizer,
    DummyEventType,
    ItemsSourceLoader,
    ItemStorageProducer,
    SearchResult,
    TextQueryItem,
    TextQueryRetriever,
    prepare_data,
)
from services.fine_tuning.plugin import FineTuningMethod, PluginMeta
from services.fine_tuning.settings import settings
from services.fine_tuning.training import (
    ClickContrastiveLoss,
    ExperimentsManager,
    FineTuningBuilder,
    FineTuningSettings,
    MetricsAccumulator,
    TextToTextModel,
)


def knob(name: str, default: float) -> float:
    path = os.environ.get("ES_TEST_KNOBS")
    return json.loads(Path(path).read_text()).get(name, default) if path and Path(path).exists() else default


class PausingBuilder(FineTuningBuilder):
    """Waits `pause_after_training_s` (the knob when the task built it) after the search, before the
    trainer submits its result."""

    pause_after_training_s = 0.0

    def run(self, *args, **kwargs):
        result = super().run(*args, **kwargs)
        time.sleep(self.pause_after_training_s)
        return result


class TinyFineTuningMethod(FineTuningMethod):
    meta = PluginMeta(name="Tiny Test Method", version="1.0", description="a 2-layer BERT for tests")

    def __init__(self):
        self.data_loader = ItemsSourceLoader()
        self.retriever = TextQueryRetriever()
        self.parser = ClickstreamParser(TextQueryItem, SearchResult, DummyEventType)
        self.splitter = ClickstreamSessionsSplitter(test_size_ratio=0.25)
        self.normalizer = DatasetFieldsNormalizer("item", "item_id")
        self.storage_producer = ItemStorageProducer(self.normalizer)
        self.accumulators = [MetricsAccumulator("train_loss", True, True, True, True)]
        self.manager = ExperimentsManager(settings.MLFLOW_TRACKING_URI, "test_ndcg_at_10", self.accumulators)
        self.initial_params = {"num_fixed_layers": [0, 1], "query_lr": [1e-3],
                               "items_lr": [knob("items_lr", 1e-3), 3e-4], "query_weight_decay": [0.0],
                               "items_weight_decay": [0.0], "margin": [0.05]}
        self.settings = FineTuningSettings(
            loss_func=ClickContrastiveLoss(), max_seq_length=32, batch_size=16, test_each_n_sessions=0.5,
            num_epochs=int(knob("epochs", 1)), early_stopping_patience=1_000_000)

    def upload_initial_model(self):
        model = SentenceTransformer(os.environ["ES_TEST_MODEL_PATH"], device="cpu")
        self.manager.upload_initial_model(TextToTextModel(model, 32))

    def get_fine_tuning_builder(self, clickstream):
        ranking_dataset = prepare_data(clickstream, self.parser, self.splitter, self.retriever, self.data_loader,
                                       self.storage_producer)
        builder = PausingBuilder(
            data_loader=self.data_loader,
            query_retriever=self.retriever,
            clickstream_parser=self.parser,
            clickstream_sessions_splitter=self.splitter,
            dataset_fields_normalizer=self.normalizer,
            item_storage_producer=self.storage_producer,
            accumulators=self.accumulators,
            experiments_manager=self.manager,
            fine_tuning_settings=self.settings,
            initial_params=self.initial_params,
            ranking_data=ranking_dataset,
            initial_max_evals=int(knob("trials", 2)),
        )
        builder.pause_after_training_s = knob("pause_after_training_s", 0.0)
        return builder
