"""A text plugin that, when `GATED_PLUGIN_DIR` is set, says it started (a `started-<n>` file) and waits
for an `open` file there before it prepares data: the tests stop a replica mid-work with it."""

import os
import time
from pathlib import Path

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


class GatedTestMethod(FineTuningMethod):
    meta = PluginMeta(name="Gated Test Method", version="1")

    def upload_initial_model(self) -> None:
        """Nothing to upload."""

    def get_fine_tuning_builder(self, clickstream):
        folder = os.environ.get("GATED_PLUGIN_DIR")
        if folder:
            gate = Path(folder)
            (gate / f"started-{time.monotonic_ns()}").touch()
            deadline = time.monotonic() + 30
            while not (gate / "open").exists() and time.monotonic() < deadline:
                time.sleep(0.05)
        return prepare_data(clickstream, ClickstreamParser(TextQueryItem, SearchResult, DummyEventType),
                            ClickstreamSessionsSplitter(), TextQueryRetriever(), ItemsSourceLoader(),
                            ItemStorageProducer())
