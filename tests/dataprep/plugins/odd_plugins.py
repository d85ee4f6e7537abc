"""Plugins that misuse the seam: one never calls prepare_data, one fails after it (as a builder whose
training library is missing on the dataprep node would)."""

from services.fine_tuning.data import (
    ClickstreamParser,
    ClickstreamSessionsSplitter,
    DummyEventType,
    ItemsSourceLoader,
    ItemStorageProducer,
    SearchResult,
    TextQueryItem,
    TextQueryRetriever,
    prepare_data,
)
from services.fine_tuning.plugin import FineTuningMethod, PluginMeta


class NoPrepareTestMethod(FineTuningMethod):
    meta = PluginMeta(name="No Prepare Test Method", version="1")

    def upload_initial_model(self) -> None:
        """Nothing to upload."""

    def get_fine_tuning_builder(self, clickstream):
        return None


class FailsAfterPrepareTestMethod(FineTuningMethod):
    meta = PluginMeta(name="Fails After Prepare Test Method", version="1")

    def upload_initial_model(self) -> None:
        """Nothing to upload."""

    def get_fine_tuning_builder(self, clickstream):
        prepare_data(clickstream, ClickstreamParser(TextQueryItem, SearchResult, DummyEventType),
                     ClickstreamSessionsSplitter(), TextQueryRetriever(), ItemsSourceLoader(), ItemStorageProducer())
        raise ImportError("the training library is not installed here")
