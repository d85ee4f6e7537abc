"""The seed's text-to-image example under a name of its own: CLIP with a text query tower and an image
items tower (`TextToImageCLIPModel`), items downloaded from the S3 file each result's meta names
(`{"bucket": ..., "file": ...}`), trained with the click-contrastive loss and position-aware click weights,
and chosen by held-out nDCG@10. Its shape follows the seed's plugin document.

The model is read from a local sentence-transformers CLIP folder named by ES_CLIP_MODEL_PATH (e.g.
clip-ViT-B-32, saved with `SentenceTransformer.save` where a hub is reachable); nothing is downloaded
at run time."""

import copy
import os
from pathlib import Path

from sentence_transformers import SentenceTransformer

from services.fine_tuning.data import (
    AWSS3ClickstreamParser,
    AWSS3DataLoader,
    ClickstreamSessionsSplitter,
    CLIPItemStorageProducer,
    DatasetFieldsNormalizer,
    DummyEventType,
    SearchResult,
    SessionWithEvents,
    TextQueryItem,
    TextQueryRetriever,
    prepare_data,
)
from services.fine_tuning.plugin import FineTuningMethod, PluginMeta
from services.fine_tuning.settings import settings
from services.fine_tuning.training import (
    CLIP_INITIAL_PARAMS,
    ClickContrastiveLoss,
    ExperimentsManager,
    FineTuningBuilder,
    FineTuningSettings,
    MetricsAccumulator,
    TextToImageCLIPModel,
)

MODEL_PATH_VARIABLE = "ES_CLIP_MODEL_PATH"
MAX_SEQ_LENGTH = 77  # CLIP's text positions


def clip_model_path() -> Path:
    """The local CLIP folder named by ES_CLIP_MODEL_PATH, read when the model is needed (dataprep builds
    the plugin without it)."""
    value = os.environ.get(MODEL_PATH_VARIABLE, "")
    if not value:
        raise ValueError(f"the CLIP plugin needs a local sentence-transformers CLIP model: set {MODEL_PATH_VARIABLE} "
                         "to its folder (e.g. clip-ViT-B-32 saved with SentenceTransformer.save); nothing is "
                         "downloaded from a hub")
    path = Path(value).expanduser()
    if not (path / "modules.json").is_file():
        raise ValueError(f"{MODEL_PATH_VARIABLE}={value} is not a sentence-transformers model folder (it has no "
                         "modules.json)")
    return path


class CLIPFineTuningMethod(FineTuningMethod):
    meta = PluginMeta(
        name="CLIP Text To Image Fine Tuning Method",
        version="0.1.0",
        description="Text-to-image fine-tuning of a local CLIP model from clicks on S3 images",
    )

    def __init__(self):
        # Anonymous, as in the seed (public buckets); pass role_arn or keys for a private one.
        self.data_loader = AWSS3DataLoader()
        self.retriever = TextQueryRetriever()
        self.parser = AWSS3ClickstreamParser(TextQueryItem, SearchResult, DummyEventType)
        self.splitter = ClickstreamSessionsSplitter()
        self.normalizer = DatasetFieldsNormalizer("item", "item_id")
        self.storage_producer = CLIPItemStorageProducer(self.normalizer)

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

        self.initial_params = copy.deepcopy(CLIP_INITIAL_PARAMS)

        self.settings = FineTuningSettings(
            loss_func=ClickContrastiveLoss(),
            max_seq_length=MAX_SEQ_LENGTH,
            num_epochs=3,
            batch_size=64,
            test_each_n_sessions=0.5,
        )

    def upload_initial_model(self) -> None:
        clip = SentenceTransformer(str(clip_model_path()), device="cpu", local_files_only=True)
        self.manager.upload_initial_model(TextToImageCLIPModel(clip, MAX_SEQ_LENGTH))

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
            initial_max_evals=4,
        )
