"""Plugin discovery: the shipped default plugin is found and builds without any service running; a
broken file is reported with its path and does not hide the others; two plugins with one name is an
error naming both files."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.common.errors import FailedPrecondition, NotFound
from services.fine_tuning.discovery import discover_plugins
from services.fine_tuning.training import ExperimentsManager
from tests.servers import REPO_ROOT

PLUGIN = '''
from services.fine_tuning.plugin import FineTuningMethod, PluginMeta


class {cls}(FineTuningMethod):
    meta = PluginMeta(name="{name}", version="1")

    def upload_initial_model(self):
        pass

    def get_fine_tuning_builder(self, clickstream):
        return None
'''


def test_the_default_plugin_is_discovered_and_builds_offline() -> None:
    catalog = discover_plugins(REPO_ROOT / "plugins")
    assert catalog.broken == {}
    plugin = catalog.create("Default Fine Tuning Method")
    assert plugin.meta.version
    assert isinstance(plugin.manager, ExperimentsManager)
    assert plugin.manager.main_metric == "test_ndcg_at_10"
    assert min(plugin.initial_params["num_fixed_layers"]) >= 0 and max(plugin.initial_params["num_fixed_layers"]) < 6


def test_a_broken_file_is_reported_and_the_other_plugins_still_load(tmp_path: Path) -> None:
    (tmp_path / "good.py").write_text(PLUGIN.format(cls="Good", name="good"))
    (tmp_path / "broken.py").write_text("import not_a_module_anywhere\n")
    catalog = discover_plugins(tmp_path)
    assert catalog.create("good").meta.name == "good"
    assert "not_a_module_anywhere" in catalog.broken[tmp_path / "broken.py"]
    with pytest.raises(NotFound, match=r"no plugin named 'other'.*good.*broken\.py"):
        catalog.get("other")


def test_two_plugins_with_one_name_is_an_error_naming_both_files(tmp_path: Path) -> None:
    (tmp_path / "first.py").write_text(PLUGIN.format(cls="First", name="same"))
    (tmp_path / "second.py").write_text(PLUGIN.format(cls="Second", name="same"))
    catalog = discover_plugins(tmp_path)
    with pytest.raises(FailedPrecondition) as info:
        catalog.get("same")
    assert "first.py" in info.value.message and "second.py" in info.value.message
