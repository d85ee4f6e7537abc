"""Item storages: item id -> what the model's item tower takes (text, or image bytes for CLIP), made
from loaded rows by a storage producer, and stored with a dataset as an Arrow table."""

from __future__ import annotations

import io
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar

import pyarrow as pa
from PIL import Image, UnidentifiedImageError

from services.fine_tuning.data.errors import UnreadableItems
from services.fine_tuning.data.normalizer import DatasetFieldsNormalizer

ITEM_KINDS = ("text", "image")


class ItemStorage(Mapping[str, Any]):
    """Item id -> model input; `kind` is "text" (values are `str`) or "image" (encoded image `bytes`)."""

    def __init__(self, kind: str, items: Mapping[str, Any]) -> None:
        if kind not in ITEM_KINDS:
            raise ValueError(f"kind must be one of {', '.join(ITEM_KINDS)}, got {kind!r}")
        self.kind = kind
        self._items = dict(items)

    def __getitem__(self, item_id: str) -> Any:
        return self._items[item_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def to_arrow(self) -> pa.Table:
        value_type = pa.string() if self.kind == "text" else pa.binary()
        return pa.table({"item_id": pa.array(list(self._items), pa.string()),
                         "item": pa.array(list(self._items.values()), value_type)})

    @classmethod
    def from_arrow(cls, kind: str, table: pa.Table) -> ItemStorage:
        return cls(kind, dict(zip(table.column("item_id").to_pylist(), table.column("item").to_pylist(), strict=True)))


class ItemStorageProducer:
    """Text items: each loaded item must be a `str` or UTF-8 bytes (a text file)."""

    kind: ClassVar[str] = "text"

    def __init__(self, normalizer: DatasetFieldsNormalizer | None = None) -> None:
        self.normalizer = normalizer or DatasetFieldsNormalizer()

    def __call__(self, rows: Sequence[Mapping[str, Any]]) -> ItemStorage:
        items: dict[str, Any] = {}
        unreadable: dict[str, str] = {}
        for row in rows:
            item_id, value = self.normalizer(row)
            try:
                items[item_id] = self.convert(value)
            except ValueError as error:
                unreadable[item_id] = str(error)
        if unreadable:
            raise UnreadableItems(unreadable)
        return ItemStorage(self.kind, items)

    def convert(self, value: Any) -> Any:
        if isinstance(value, str):
            return value
        if isinstance(value, bytes):
            try:
                return value.decode("utf-8")
            except UnicodeDecodeError as error:
                raise ValueError(f"not UTF-8 text ({error.reason} at byte {error.start})") from None
        raise ValueError(f"expected text, got {type(value).__name__}")


class CLIPItemStorageProducer(ItemStorageProducer):
    """Image items for CLIP: the encoded image bytes, checked to be an image PIL can open (the model's
    processor decodes and resizes them when it embeds, so the dataset keeps the original)."""

    kind: ClassVar[str] = "image"

    def convert(self, value: Any) -> Any:
        if not isinstance(value, bytes):
            raise ValueError(f"expected image bytes, got {type(value).__name__}")
        try:
            with Image.open(io.BytesIO(value)) as image:
                image.verify()
        except (UnidentifiedImageError, OSError, SyntaxError) as error:
            raise ValueError(f"not a readable image ({error})") from None
        return value
