"""`settings` for plugins, with the seed's names: `settings.MLFLOW_TRACKING_URI` maps to
`ES_MLFLOW_TRACKING_URI` (DESIGN.md), read when used, so a plugin can be built before it is configured."""

from __future__ import annotations

from services.common.settings import Settings


class PluginSettings:
    @property
    def MLFLOW_TRACKING_URI(self) -> str:
        return Settings().mlflow_tracking_uri

    @property
    def ITEMS_URI(self) -> str:
        return Settings().items_uri


settings = PluginSettings()
