"""Where datasets live (`ES_ARTIFACTS_URI`): a local folder or an S3 prefix, each publishing a complete
dataset at once or not at all, and removing what a killed writer left behind when it is opened."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
import uuid
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from services.common.logging import get_logger
from services.common.settings import local_path
from services.fine_tuning.data.dataset_format import MANIFEST_FILE, DatasetKey, DatasetManifest
from services.fine_tuning.data.errors import DatasetError
from services.fine_tuning.data.s3 import S3Location, is_missing, s3_client

log = get_logger("datasets")


class DatasetStore(ABC):
    """Where datasets live (`ES_ARTIFACTS_URI`): a local folder or `s3://bucket/prefix`.

    `publish` makes a complete dataset visible at once or not at all; the first complete dataset of a
    key wins and later ones are discarded (a dataset is a snapshot and never changes). Failures are
    recorded beside the datasets so that every replica can answer for them.
    """

    uri: str

    # A write left unfinished this long was a writer that died (younger ones may be another replica's
    # write in progress): opening a store removes its leftovers.
    STALE_TEMPORARY_S = 3600.0

    @staticmethod
    def open(uri: str) -> DatasetStore:
        if not uri:
            raise ValueError("the artifacts URI is empty: set ES_ARTIFACTS_URI to a folder or s3://bucket/prefix")
        uri = local_path(uri)
        if uri.startswith("s3://"):
            return S3DatasetStore(uri)
        if "://" in uri:
            raise ValueError(f"unsupported artifacts URI {uri!r}: use a local folder, file:///folder or "
                             "s3://bucket/prefix")
        return LocalDatasetStore(Path(uri).expanduser())

    @abstractmethod
    def dataset_uri(self, key: DatasetKey) -> str: ...

    @abstractmethod
    def manifest(self, key: DatasetKey) -> DatasetManifest | None:
        """The published dataset's manifest, or None if there is none."""

    @abstractmethod
    def publish(self, key: DatasetKey, files: dict[str, bytes], manifest: DatasetManifest) -> DatasetManifest:
        """Writes `files` and then the manifest; returns the manifest now visible (another writer's, if
        one published first)."""

    @abstractmethod
    def read(self, key: DatasetKey, manifest: DatasetManifest, name: str) -> bytes: ...

    @abstractmethod
    def _write_record(self, name: str, data: bytes | None) -> None:
        """Writes (None: deletes) a small JSON record under `failures/`."""

    @abstractmethod
    def _read_record(self, name: str) -> bytes | None: ...

    def record_failure(self, key: DatasetKey, reason: str) -> None:
        record = {"dataset_id": key.dataset_id, "plugin_name": key.plugin_name, "plugin_version": key.plugin_version,
                  "batch_id": key.batch_id, "error": reason, "failed_at": int(time.time())}
        self._write_record(f"{key.dataset_id}.json", json.dumps(record).encode())

    def failure(self, key: DatasetKey) -> dict[str, Any] | None:
        data = self._read_record(f"{key.dataset_id}.json")
        return None if data is None else json.loads(data)

    def clear_failure(self, key: DatasetKey) -> None:
        self._write_record(f"{key.dataset_id}.json", None)

    def read_verified(self, key: DatasetKey, manifest: DatasetManifest, name: str) -> bytes:
        data = self.read(key, manifest, name)
        stored = manifest.files.get(name)
        if stored is None:
            raise DatasetError(f"dataset {key.dataset_id}: its manifest lists no {name}")
        if hashlib.sha256(data).hexdigest() != stored.sha256:
            raise DatasetError(f"dataset {key.dataset_id}: {name} does not match its manifest's sha256 (corrupted)")
        return data


def _fsync_write(path: Path, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalDatasetStore(DatasetStore):
    """`<root>/datasets/<dataset_id>/{sessions.parquet, items.parquet, manifest.json}`, written into
    `<root>/datasets/.tmp-<dataset_id>-<random>/` and published by one atomic `rename`; a crash leaves
    only a `.tmp-` entry, which no reader looks at and which the next store opened on the folder removes
    once it is `STALE_TEMPORARY_S` old (younger ones may be another replica's write in progress)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.uri = str(root)
        self._datasets = root / "datasets"
        self._failures = root / "failures"
        self._remove_stale_temporaries()

    def _remove_stale_temporaries(self) -> None:
        cutoff = time.time() - self.STALE_TEMPORARY_S
        for folder in (self._datasets, self._failures):
            for entry in folder.glob(".tmp-*") if folder.is_dir() else ():
                with contextlib.suppress(OSError):  # another opener removed it first
                    if entry.lstat().st_mtime < cutoff:
                        if entry.is_dir() and not entry.is_symlink():
                            shutil.rmtree(entry)
                        else:
                            entry.unlink()

    def dataset_uri(self, key: DatasetKey) -> str:
        return str(self._datasets / key.dataset_id)

    def manifest(self, key: DatasetKey) -> DatasetManifest | None:
        path = self._datasets / key.dataset_id / MANIFEST_FILE
        try:
            return DatasetManifest.from_json(path.read_bytes())
        except FileNotFoundError:
            return None

    def publish(self, key: DatasetKey, files: dict[str, bytes], manifest: DatasetManifest) -> DatasetManifest:
        self._datasets.mkdir(parents=True, exist_ok=True)
        temporary = self._datasets / f".tmp-{key.dataset_id}-{uuid.uuid4().hex[:8]}"
        temporary.mkdir()
        try:
            for name, data in files.items():
                _fsync_write(temporary / name, data)
            _fsync_write(temporary / MANIFEST_FILE, manifest.to_json())
            _fsync_dir(temporary)
            try:
                temporary.rename(self._datasets / key.dataset_id)
            except OSError:
                # Renaming onto a non-empty folder fails: another writer published this key first.
                existing = self.manifest(key)
                if existing is None:
                    raise
                return existing
            _fsync_dir(self._datasets)
            return manifest
        finally:
            shutil.rmtree(temporary, ignore_errors=True)

    def read(self, key: DatasetKey, manifest: DatasetManifest, name: str) -> bytes:
        return (self._datasets / key.dataset_id / name).read_bytes()

    def _write_record(self, name: str, data: bytes | None) -> None:
        path = self._failures / name
        if data is None:
            path.unlink(missing_ok=True)
            return
        self._failures.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".tmp-{uuid.uuid4().hex[:8]}-{name}")
        _fsync_write(temporary, data)
        temporary.replace(path)

    def _read_record(self, name: str) -> bytes | None:
        try:
            return (self._failures / name).read_bytes()
        except FileNotFoundError:
            return None


class S3DatasetStore(DatasetStore):
    """`<prefix>/datasets/<dataset_id>/<attempt>/{sessions,items}.parquet`, then
    `<prefix>/datasets/<dataset_id>/manifest.json` (naming the attempt) written last with
    `If-None-Match: *`: readers go through the manifest, so a crash before it leaves only unreferenced
    objects, and of two concurrent writers the first manifest wins. Credentials and endpoint come from
    boto3's defaults (`AWS_*` variables, `AWS_ENDPOINT_URL_S3`).

    Opening the store removes the unreferenced objects a killed writer left (an attempt that no manifest
    names) once they are `STALE_TEMPORARY_S` old; if S3 cannot be listed then, the store still opens
    and the sweep waits for the next opening."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self._location = S3Location.parse(uri)
        self._client = s3_client()
        try:
            self._remove_stale_attempts()
        except (BotoCoreError, ClientError) as error:
            log.warning("stale_dataset_sweep_failed", store=uri, error=str(error))

    def _remove_stale_attempts(self) -> None:
        prefix = self._key("datasets") + "/"
        has_manifest: set[str] = set()
        attempts: dict[str, dict[str, list[tuple[str, float]]]] = {}  # dataset id -> attempt -> (key, mtime)
        pages = self._client.get_paginator("list_objects_v2").paginate(Bucket=self._location.bucket, Prefix=prefix)
        for page in pages:
            for entry in page.get("Contents", []):
                parts = entry["Key"].removeprefix(prefix).split("/")
                if parts[1:] == [MANIFEST_FILE]:
                    has_manifest.add(parts[0])
                elif len(parts) == 3:
                    attempts.setdefault(parts[0], {}).setdefault(parts[1], []).append(
                        (entry["Key"], entry["LastModified"].timestamp()))
        cutoff = time.time() - self.STALE_TEMPORARY_S
        for dataset_id, by_attempt in attempts.items():
            if dataset_id in has_manifest and len(by_attempt) == 1:
                continue  # the one attempt is the one its manifest names (it is written before the manifest)
            manifest = self._get(self._key("datasets", dataset_id, MANIFEST_FILE))
            try:
                published = DatasetManifest.from_json(manifest).location if manifest is not None else None
            except DatasetError:
                continue  # a manifest this code cannot read: nothing beside it is known to be unreferenced
            for attempt, objects in by_attempt.items():
                if attempt != published and all(modified < cutoff for _, modified in objects):
                    for object_key, _ in objects:
                        self._client.delete_object(Bucket=self._location.bucket, Key=object_key)
                    log.info("stale_dataset_attempt_removed", store=self.uri, dataset_id=dataset_id, attempt=attempt)

    def _key(self, *parts: str) -> str:
        return self._location.join(*parts)

    def dataset_uri(self, key: DatasetKey) -> str:
        return f"s3://{self._location.bucket}/{self._key('datasets', key.dataset_id)}/"

    def _get(self, object_key: str) -> bytes | None:
        try:
            return self._client.get_object(Bucket=self._location.bucket, Key=object_key)["Body"].read()
        except ClientError as error:
            if is_missing(error):
                return None
            raise

    def manifest(self, key: DatasetKey) -> DatasetManifest | None:
        data = self._get(self._key("datasets", key.dataset_id, MANIFEST_FILE))
        return None if data is None else DatasetManifest.from_json(data)

    def publish(self, key: DatasetKey, files: dict[str, bytes], manifest: DatasetManifest) -> DatasetManifest:
        attempt = uuid.uuid4().hex
        written = []
        for name, data in files.items():
            object_key = self._key("datasets", key.dataset_id, attempt, name)
            self._client.put_object(Bucket=self._location.bucket, Key=object_key, Body=data)
            written.append(object_key)
        try:
            self._client.put_object(Bucket=self._location.bucket, Key=self._key("datasets", key.dataset_id,
                                                                                 MANIFEST_FILE),
                                    Body=manifest.at(attempt).to_json(),
                                    IfNoneMatch="*")
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") != "PreconditionFailed":
                raise
            for object_key in written:
                self._client.delete_object(Bucket=self._location.bucket, Key=object_key)
            existing = self.manifest(key)
            if existing is None:
                raise
            return existing
        return manifest.at(attempt)

    def read(self, key: DatasetKey, manifest: DatasetManifest, name: str) -> bytes:
        if manifest.location is None:
            raise DatasetError(f"dataset {key.dataset_id}: its manifest names no attempt (location) in {self.uri}")
        data = self._get(self._key("datasets", key.dataset_id, manifest.location, name))
        if data is None:
            raise DatasetError(f"dataset {key.dataset_id}: {name} is missing from {self.dataset_uri(key)}")
        return data

    def _write_record(self, name: str, data: bytes | None) -> None:
        object_key = self._key("failures", name)
        if data is None:
            self._client.delete_object(Bucket=self._location.bucket, Key=object_key)
        else:
            self._client.put_object(Bucket=self._location.bucket, Key=object_key, Body=data)

    def _read_record(self, name: str) -> bytes | None:
        return self._get(self._key("failures", name))


