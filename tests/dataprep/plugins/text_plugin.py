"""A text plugin written as in the seed (only the imports are ours): its builder is a small object that
keeps the ranking data, since the training library is not what these tests are about."""

from dataclasses import dataclass

from services.fine_tuning.data import (
    ClickstreamParser,
    ClickstreamSessionsSplitter,
    DatasetFieldsNormalizer,
    ItemsSourceLoader,
    ItemStorageProducer,
    RankingData,
    SearchResult,
    TextQueryItem,
    TextQueryRetriever,
    WeightedEventType,
    prepare_data,
)
from services.fine_tuning.plugin import FineTuningMethod, PluginMeta


@dataclass
class TinyBuilder:
    ranking_data: RankingData


class TextTestMethod(FineTuningMethod):
    meta = PluginMeta(name="Text Test Method", version="1.0.0", description="text items from ES_ITEMS_URI")

    def __init__(self) -> None:
        self.data_loader = ItemsSourceLoader()
        self.retriever = TextQueryRetriever()
        self.parser = ClickstreamParser(TextQueryItem, SearchResult, WeightedEventType({"click": 1.0, "buy": 3.0}))
        self.splitter = ClickstreamSessionsSplitter(test_size_ratio=0.3, random_state=7)
        self.normalizer = DatasetFieldsNormalizer("item", "item_id")
        self.storage_producer = ItemStorageProducer(self.normalizer)

    def upload_initial_model(self) -> None:
        """Nothing to upload: these tests never train."""

    def get_fine_tuning_builder(self, clickstream) -> TinyBuilder:
        ranking_dataset = prepare_data(clickstream, self.parser, self.splitter, self.retriever, self.data_loader,
                                       self.storage_producer)
        return TinyBuilder(ranking_data=ranking_dataset)
