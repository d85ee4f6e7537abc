"""Names the item and id fields of loaded rows, so producers read any loader's output."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class DatasetFieldsNormalizer:
    """`DatasetFieldsNormalizer("item", "item_id")`: rows carry the item under `item_field_name` and its
    id under `id_field_name` (the loaders here write "item" and "item_id")."""

    def __init__(self, item_field_name: str = "item", id_field_name: str = "item_id") -> None:
        if not item_field_name or not id_field_name or item_field_name == id_field_name:
            raise ValueError(f"item_field_name and id_field_name must be two different non-empty names, "
                             f"got {item_field_name!r} and {id_field_name!r}")
        self.item_field_name = item_field_name
        self.id_field_name = id_field_name

    def __call__(self, row: Mapping[str, Any]) -> tuple[str, Any]:
        """(item id, item) of one loaded row."""
        try:
            return str(row[self.id_field_name]), row[self.item_field_name]
        except KeyError as error:
            raise ValueError(f"a loaded row has no {error.args[0]!r} field (fields: {sorted(row)}); the "
                             f"normalizer expects {self.id_field_name!r} and {self.item_field_name!r}") from None
