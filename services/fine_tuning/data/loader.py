"""Item loaders: fetch the items that the sessions showed, as rows `{"item_id": id, "item": value}`.

Every loader either returns every requested item or raises: `MissingItems` lists the ids the source
does not have, `UnreadableItems` the ones it has but cannot read. A dataset is never made silently
from part of its items."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from services.common.settings import local_path
from services.fine_tuning.data.errors import DatasetError, ItemSourceUnavailable, MissingItems, UnreadableItems
from services.fine_tuning.data.parser import SearchResult
from services.fine_tuning.data.s3 import S3Location, is_missing, is_out_of_reach, s3_client

Row = dict[str, Any]


class DataLoader(ABC):
    """Loads the items of `results` (unique by `item_id`; `item_info` is each result's meta)."""

    @abstractmethod
    def load(self, results: Sequence[SearchResult]) -> list[Row]: ...


def _source_error(source: str, error: BotoCoreError | ClientError) -> DatasetError | ItemSourceUnavailable:
    """Out of reach for now (a connection refused, a timeout, a 5xx, a throttle): retried; anything else
    (no credentials, access denied, no such bucket) fails the dataset with the reason."""
    message = f"cannot read items from {source}: {type(error).__name__}: {error}"
    return ItemSourceUnavailable(message) if is_out_of_reach(error) else DatasetError(message)


def _fetch_all(ids: Sequence[str], fetch: Callable[[str], bytes | None], max_workers: int, source: str) -> list[Row]:
    """Runs `fetch` over `ids` on a thread pool (S3 and file reads wait on I/O, not on the GIL); `fetch`
    returns None for a missing item and raises for an unreadable one."""
    missing: list[str] = []
    unreadable: dict[str, str] = {}
    rows: list[Row] = []

    def one(item_id: str) -> tuple[str, bytes | None, str | None]:
        try:
            return item_id, fetch(item_id), None
        except (OSError, ClientError, ValueError) as error:
            if is_out_of_reach(error):  # S3 throttles or fails for now: not this item's fault
                raise
            return item_id, None, f"{type(error).__name__}: {error}"

    try:
        with ThreadPoolExecutor(max_workers=max_workers) as pool:
            for item_id, data, error in pool.map(one, ids):
                if error is not None:
                    unreadable[item_id] = error
                elif data is None:
                    missing.append(item_id)
                else:
                    rows.append({"item_id": item_id, "item": data})
    except (BotoCoreError, ClientError) as error:
        # One reason for the whole source, not one per item.
        raise _source_error(source, error) from error
    if missing:
        raise MissingItems(missing, source)
    if unreadable:
        raise UnreadableItems(unreadable)
    return rows


def _rows_from_jsonl(lines: Iterable[bytes], wanted: set[str], item_field: str, source: str) -> list[Row]:
    found: dict[str, Row] = {}
    unreadable: dict[str, str] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            item_id = str(record["id"])
        except (ValueError, KeyError, TypeError) as error:
            raise DatasetError(f"{source} line {number} is not a JSON object with an \"id\": {error}") from None
        if item_id not in wanted:
            continue
        if not isinstance(record.get(item_field), str):
            unreadable[item_id] = f"line {number} has no string {item_field!r} field"
            continue
        found[item_id] = {"item_id": item_id, "item": record[item_field]}
    missing = wanted - found.keys() - unreadable.keys()
    if missing:
        raise MissingItems(list(missing), source)
    if unreadable:
        raise UnreadableItems(unreadable)
    return list(found.values())


class ItemsSourceLoader(DataLoader):
    """Finds items by `object_id` in one item source, so a search backend need not send item contents.

    `uri` (default: `ES_ITEMS_URI`, read when items are loaded, so a plugin can be built where no
    items are needed) is one of:
    - a local `items.jsonl` (EVALUATION.md: `{"id": ..., "text": ...}` a line): the item is the record's
      `item_field` (default "text");
    - a local folder: the item is the bytes of the file `<folder>/<object_id>`;
    - `s3://bucket/key.jsonl`: an items.jsonl object, as above;
    - `s3://bucket/prefix`: the item is the bytes of the object `<prefix>/<object_id>`, fetched by
      `max_workers` threads, with boto3's default credentials and endpoint.
    """

    def __init__(self, uri: str | None = None, item_field: str = "text", max_workers: int = 16) -> None:
        if max_workers < 1:
            raise ValueError(f"max_workers must be >= 1, got {max_workers}")
        if not item_field:
            raise ValueError("item_field must not be empty")
        self.uri = uri
        self.item_field = item_field
        self.max_workers = max_workers

    def _resolved_uri(self) -> str:
        if self.uri:
            return local_path(self.uri)
        from services.common.settings import Settings

        uri = Settings().items_uri
        if not uri:
            raise DatasetError("no item source: set ES_ITEMS_URI to an items.jsonl, a folder or s3://bucket/prefix")
        return uri

    def load(self, results: Sequence[SearchResult]) -> list[Row]:
        uri = self._resolved_uri()
        ids = list(dict.fromkeys(r.item_id for r in results))
        if uri.startswith("s3://"):
            return self._load_s3(S3Location.parse(uri), ids, uri)
        path = Path(uri).expanduser()
        if path.is_dir():
            return self._load_folder(path, ids)
        if not path.is_file():
            raise DatasetError(f"item source {uri} does not exist (ES_ITEMS_URI)")
        with path.open("rb") as handle:
            return _rows_from_jsonl(handle, set(ids), self.item_field, str(path))

    def _load_folder(self, folder: Path, ids: Sequence[str]) -> list[Row]:
        root = folder.resolve()

        def fetch(item_id: str) -> bytes | None:
            path = (root / item_id).resolve()
            if not path.is_relative_to(root):
                raise ValueError(f"object_id {item_id!r} points outside the item folder")
            return path.read_bytes() if path.is_file() else None

        return _fetch_all(ids, fetch, self.max_workers, str(folder))

    def _load_s3(self, location: S3Location, ids: Sequence[str], uri: str) -> list[Row]:
        client = s3_client()
        if location.key.endswith(".jsonl"):
            def lines() -> Iterator[bytes]:  # streamed: a catalog may be larger than memory
                try:
                    yield from client.get_object(Bucket=location.bucket, Key=location.key)["Body"].iter_lines()
                except (BotoCoreError, ClientError) as error:  # on asking, or cut off while reading
                    raise _source_error(uri, error) from None

            return _rows_from_jsonl(lines(), set(ids), self.item_field, uri)

        def fetch(item_id: str) -> bytes | None:
            try:
                return client.get_object(Bucket=location.bucket, Key=location.join(item_id))["Body"].read()
            except ClientError as error:
                if is_missing(error):
                    return None
                raise

        return _fetch_all(ids, fetch, self.max_workers, uri)


class AWSS3DataLoader(DataLoader):
    """Downloads each item from the S3 locator in its result's meta, `{"bucket": ..., "file": ...}`
    (parse with `AWSS3ClickstreamParser`), as in the seed.

    Credentials: `role_arn` is assumed (with the keys, if given, as the caller); keys alone sign
    directly; with neither, requests are anonymous (public buckets). The endpoint comes from boto3's
    configuration (`AWS_ENDPOINT_URL_S3`). `max_workers` downloads run at once.
    """

    def __init__(self, role_arn: str | None = None, aws_access_key_id: str | None = None,
                 aws_secret_access_key: str | None = None, max_workers: int = 16) -> None:
        if bool(aws_access_key_id) != bool(aws_secret_access_key):
            raise ValueError("aws_access_key_id and aws_secret_access_key must be given together")
        if max_workers < 1:
            raise ValueError(f"max_workers must be >= 1, got {max_workers}")
        self.role_arn = role_arn
        self.aws_access_key_id = aws_access_key_id
        self.aws_secret_access_key = aws_secret_access_key
        self.max_workers = max_workers

    def load(self, results: Sequence[SearchResult]) -> list[Row]:
        locators: dict[str, tuple[str, str]] = {}
        for result in results:
            bucket, file = result.item_info.get("bucket"), result.item_info.get("file")
            if not isinstance(bucket, str) or not isinstance(file, str):
                raise DatasetError(f"result {result.item_id!r} has no S3 locator {{\"bucket\", \"file\"}} in its meta; "
                                   f"parse with AWSS3ClickstreamParser")
            locators.setdefault(result.item_id, (bucket, file))
        # Built per load, not in __init__: plugins are also constructed where nothing is downloaded.
        client = s3_client(self.role_arn, self.aws_access_key_id, self.aws_secret_access_key,
                           anonymous=not (self.role_arn or self.aws_access_key_id))

        def fetch(item_id: str) -> bytes | None:
            bucket, key = locators[item_id]
            try:
                return client.get_object(Bucket=bucket, Key=key)["Body"].read()
            except ClientError as error:
                if is_missing(error):
                    return None
                raise

        sources = sorted({f"s3://{bucket}" for bucket, _ in locators.values()})
        return _fetch_all(list(locators), fetch, self.max_workers, ", ".join(sources) or "S3")
