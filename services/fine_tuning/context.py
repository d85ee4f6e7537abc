"""The one context the platform calls a plugin in.

A plugin written as in the seed never says which batch it works on, which task it runs for, or whether
its `prepare_data` should make the dataset or read the stored one: the platform says so by calling the
plugin inside `plugin_call(...)`, and the two readers of that look here:

- `ExperimentsManager` records into the MLflow iteration of `plugin` and `batch_id`, its runs tagged
  with `task_id` (so a resumed task finds its own trials);
- `prepare_data` follows `dataset`: `PublishDataset(store)` (dataprep) runs the plugin's pipeline and
  publishes the dataset of (plugin, batch); `LoadDataset(store)` (the trainer) returns that stored
  dataset and ignores its clickstream; without one it only runs the pipeline.

The context is a `ContextVar`: enter it in the thread (or asyncio task) that calls the plugin.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING

from services.fine_tuning.plugin import PluginMeta

if TYPE_CHECKING:
    from services.fine_tuning.data.seam import LoadDataset, PublishDataset


@dataclass(frozen=True)
class PluginCall:
    """What the platform tells a plugin's library calls about the work at hand."""

    plugin: PluginMeta
    batch_id: str = ""
    task_id: str = ""
    dataset: PublishDataset | LoadDataset | None = None  # what `prepare_data` does; None: only run the pipeline


_current: ContextVar[PluginCall | None] = ContextVar("es_plugin_call", default=None)


@contextmanager
def plugin_call(plugin: PluginMeta, *, batch_id: str = "", task_id: str = "",
                dataset: PublishDataset | LoadDataset | None = None) -> Iterator[PluginCall]:
    """Calls to the plugin inside it work on `batch_id` for `task_id`, with `prepare_data` in `dataset`'s mode."""
    if dataset is not None and not batch_id:
        raise ValueError("plugin_call with a dataset mode needs the batch_id its dataset belongs to")
    call = PluginCall(plugin, batch_id, task_id, dataset)
    token = _current.set(call)
    try:
        yield call
    finally:
        _current.reset(token)


def current_plugin_call() -> PluginCall | None:
    """The innermost `plugin_call` of this thread or task, or None outside one."""
    return _current.get()
