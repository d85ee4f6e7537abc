"""The plugin contract of the seed: a class that inherits `FineTuningMethod`, carries
`meta = PluginMeta(name, version, description)`, and implements `upload_initial_model()` and
`get_fine_tuning_builder(clickstream)`. Tasks name a plugin by `meta.name`."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from collections.abc import Sequence


@dataclass(frozen=True)
class PluginMeta:
    """What identifies a plugin: tasks select it by `name`; datasets are keyed by (name, version)."""

    name: str
    version: str
    description: str = ""

    def __post_init__(self) -> None:
        if not self.name.strip():
            raise ValueError("PluginMeta.name must not be empty")
        if not self.version.strip():
            raise ValueError("PluginMeta.version must not be empty")


class FineTuningMethod(ABC):
    """Base class of every plugin.

    `upload_initial_model()` defines the model fine-tuning starts from and must hand it to
    `self.manager.upload_initial_model(model)`. `get_fine_tuning_builder(clickstream)` turns the
    clickstream into a ranking dataset with `prepare_data(...)` and returns the `FineTuningBuilder`
    that fine-tunes the model on it. The platform decides where each part runs: in dataprep,
    `prepare_data` builds and stores the dataset; in the trainer, the same call returns the stored one.
    """

    meta: ClassVar[PluginMeta]

    @abstractmethod
    def upload_initial_model(self) -> None: ...

    @abstractmethod
    def get_fine_tuning_builder(self, clickstream: Sequence[Any]) -> Any: ...
