"""A plugin whose builder fails before it prepares any data (e.g. its model is missing)."""

from services.fine_tuning.plugin import FineTuningMethod, PluginMeta


class FailingTestMethod(FineTuningMethod):
    meta = PluginMeta(name="Failing Test Method", version="0.1.0")

    def upload_initial_model(self) -> None:
        """Nothing to upload."""

    def get_fine_tuning_builder(self, clickstream):
        raise RuntimeError("initial model weights not found at /models/missing")
