"""Finds plugins: every `*.py` file under `ES_PLUGINS_PATH` is imported on its own, and each class in it
that inherits `FineTuningMethod` (and carries a `PluginMeta`) is a plugin, known by `meta.name`.

A file that fails to import is reported with its path and error, and the other plugins still load;
two plugins with one name is an error naming both files."""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from services.common.errors import FailedPrecondition, NotFound
from services.fine_tuning.plugin import FineTuningMethod, PluginMeta


@dataclass(frozen=True)
class PluginEntry:
    cls: type[FineTuningMethod]
    path: Path

    @property
    def meta(self) -> PluginMeta:
        return self.cls.meta


@dataclass
class PluginCatalog:
    """The plugins of one folder, and the files that could not be loaded."""

    folder: Path
    plugins: dict[str, PluginEntry] = field(default_factory=dict)
    broken: dict[Path, str] = field(default_factory=dict)  # file -> error
    duplicates: dict[str, list[Path]] = field(default_factory=dict)  # name -> every file declaring it

    def get(self, name: str) -> PluginEntry:
        """The plugin named `name`; NotFound lists what is there, FailedPrecondition explains a clash."""
        if name in self.duplicates:
            files = ", ".join(str(p) for p in self.duplicates[name])
            raise FailedPrecondition(f"two plugins are named '{name}': {files}; rename one")
        entry = self.plugins.get(name)
        if entry is None:
            known = ", ".join(f"'{n}'" for n in sorted(self.plugins)) or "none"
            hint = f"; files that failed to load: {', '.join(str(p) for p in self.broken)}" if self.broken else ""
            raise NotFound(f"no plugin named '{name}' in {self.folder} (plugins: {known}){hint}")
        return entry

    def create(self, name: str) -> FineTuningMethod:
        return self.get(name).cls()


def _import_file(path: Path) -> object:
    digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
    module_name = f"es_plugins.{path.stem}_{digest}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    return module


def discover_plugins(folder: Path) -> PluginCatalog:
    folder = Path(folder)
    catalog = PluginCatalog(folder=folder)
    if not folder.is_dir():
        catalog.broken[folder] = "ES_PLUGINS_PATH is not a folder"
        return catalog
    found: dict[str, list[PluginEntry]] = {}
    for path in sorted(folder.glob("*.py")):
        if path.name.startswith("_"):
            continue
        try:
            module = _import_file(path)
        except Exception as error:  # noqa: BLE001 - a broken plugin must not take the service down
            catalog.broken[path] = "".join(traceback.format_exception_only(error)).strip()
            continue
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if (issubclass(cls, FineTuningMethod) and cls is not FineTuningMethod and cls.__module__ == module.__name__
                    and not inspect.isabstract(cls)):
                if not isinstance(getattr(cls, "meta", None), PluginMeta):
                    catalog.broken[path] = f"{cls.__name__} has no `meta = PluginMeta(...)`"
                    continue
                found.setdefault(cls.meta.name, []).append(PluginEntry(cls, path))
    for name, entries in found.items():
        if len(entries) > 1:
            catalog.duplicates[name] = [e.path for e in entries]
        else:
            catalog.plugins[name] = entries[0]
    return catalog
