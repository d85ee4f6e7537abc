"""The seam: `prepare_data` standalone, inside `plugin_call` with `PublishDataset` (writes) and
with `LoadDataset` (reads back, ignoring its clickstream); the local and S3 dataset stores publish a
complete dataset atomically, so a crash mid-write leaves nothing visible."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from services.fine_tuning.context import plugin_call
from services.fine_tuning.data import (
    AWSS3ClickstreamParser,
    AWSS3DataLoader,
    ClickstreamParser,
    ClickstreamSessionsSplitter,
    CLIPItemStorageProducer,
    DatasetError,
    DatasetKey,
    DatasetManifest,
    DatasetNotFound,
    DatasetStore,
    DummyEventType,
    ItemsSourceLoader,
    ItemStorageProducer,
    LoadDataset,
    MissingItems,
    NoUsableSessions,
    PublishDataset,
    RankingData,
    SearchResult,
    SessionWithEvents,
    ShownResult,
    TextQueryItem,
    TextQueryRetriever,
    WeightedEventType,
    prepare_data,
)
from services.fine_tuning.data.dataset_format import SESSIONS_FILE
from services.fine_tuning.data.errors import ArtifactStoreError
from services.fine_tuning.plugin import PluginMeta
from services.fine_tuning.training import ExperimentsManager
from tests.dataprep.conftest import write_items
from tests.dataprep.helpers import clickstream, raw_session
from tests.dataprep.test_loaders import png
from tests.s3_server import S3Server

META = PluginMeta("Seam Test", "2.0")


def text_pipeline(items_path: Path) -> tuple:
    return (ClickstreamParser(TextQueryItem, SearchResult, WeightedEventType({"click": 1.0, "buy": 2.5})),
            ClickstreamSessionsSplitter(test_size_ratio=0.3, random_state=3), TextQueryRetriever(),
            ItemsSourceLoader(str(items_path)), ItemStorageProducer())


@pytest.fixture
def items_path(tmp_path: Path) -> Path:
    return write_items(tmp_path / "items.jsonl", {f"item-{i}": f"text {i}" for i in range(10)})


def summary(data: RankingData) -> tuple:
    def sessions(side):
        return [(s.session_id, s.query, s.is_irrelevant, s.created_at, s.results) for s in side]

    return sessions(data.train), sessions(data.test), dict(data.items), data.items.kind


def test_prepare_data_outside_any_context_runs_the_pipeline_in_process(items_path: Path) -> None:
    data = prepare_data(clickstream(), *text_pipeline(items_path))
    assert len(data.train) + len(data.test) == 12 and data.test
    assert set(data.items) == {f"item-{i}" for i in range(10)} and data.items["item-3"] == "text 3"
    assert "item-3" in data.items and len(data.items) == 10


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> DatasetStore:
    if request.param == "local":
        return DatasetStore.open(str(tmp_path / "artifacts"))
    s3: S3Server = request.getfixturevalue("s3")
    return DatasetStore.open(f"s3://{s3.new_bucket()}/es/artifacts")


def test_a_dataset_prepared_in_dataprep_is_returned_whole_by_the_trainers_prepare_data(
        store: DatasetStore, items_path: Path) -> None:
    sessions = clickstream()
    sessions[0].events.append(sessions[0].events[0].__class__(event_id="b", object_id="item-2", event_type="buy"))
    prepared = PublishDataset(store)
    with plugin_call(META, batch_id="batch-1", dataset=prepared):
        made = prepare_data(sessions, *text_pipeline(items_path))
    assert prepared.manifest is not None and prepared.manifest.items == 10
    loaded = LoadDataset(store)
    with plugin_call(META, batch_id="batch-1", dataset=loaded):
        # The trainer passes no clickstream and the items are gone: nothing is parsed or downloaded.
        items_path.unlink()
        back = prepare_data([], *text_pipeline(items_path))
    assert loaded.ranking_data is back
    assert summary(back) == summary(made)
    assert max(r.event_weight for s in back.train + back.test for r in s.results) == 2.5


def test_loading_a_dataset_that_was_never_prepared_names_plugin_batch_and_store(
        store: DatasetStore, items_path: Path) -> None:
    with plugin_call(META, batch_id="batch-9", dataset=LoadDataset(store)), \
            pytest.raises(DatasetNotFound, match=r"'Seam Test' 2\.0 for batch 'batch-9'"):
        prepare_data([], *text_pipeline(items_path))


def test_datasets_are_keyed_by_plugin_name_version_and_batch(store: DatasetStore, items_path: Path) -> None:
    with plugin_call(META, batch_id="batch-1", dataset=PublishDataset(store)):
        prepare_data(clickstream(), *text_pipeline(items_path))
    for meta, batch in ((PluginMeta("Seam Test", "2.1"), "batch-1"), (PluginMeta("Other", "2.0"), "batch-1"),
                        (META, "batch-2")):
        assert store.manifest(DatasetKey.of(meta, batch)) is None
    assert store.manifest(DatasetKey.of(META, "batch-1")) is not None


def bare_manifest(key: DatasetKey) -> DatasetManifest:
    return DatasetManifest(format="embedding-studio-dataset/1", dataset_id=key.dataset_id, plugin_name=key.plugin_name,
                           plugin_version=key.plugin_version, batch_id=key.batch_id, created_at=0, item_kind="text",
                           train_sessions=0, test_sessions=0, items=0)


# manifest.json as the code before `DatasetManifest` wrote it (a dict), on a local store and on S3.
MANIFEST_BEFORE_THE_DATACLASS = {
    "format": "embedding-studio-dataset/1", "dataset_id": "seam-test--2-0--batch-1--0123456789",
    "plugin_name": "Seam Test", "plugin_version": "2.0", "batch_id": "batch-1", "created_at": 1764633600,
    "item_kind": "text", "train_sessions": 12, "test_sessions": 3, "items": 10,
    "files": {"sessions.parquet": {"sha256": "ab" * 32, "bytes": 2048}, "items.parquet": {"sha256": "cd" * 32,
                                                                                          "bytes": 1024}},
}


@pytest.mark.parametrize("location", [None, "5f0c"])
def test_a_manifest_written_before_the_dataclass_reads_back_and_writes_the_same_json(location: str | None) -> None:
    written = {**MANIFEST_BEFORE_THE_DATACLASS, **({"location": location} if location else {})}
    manifest = DatasetManifest.from_json(json.dumps(written, indent=1).encode())
    assert (manifest.items, manifest.location, manifest.files["items.parquet"].bytes) == (10, location, 1024)
    assert json.loads(manifest.to_json()) == written


def test_an_unreadable_manifest_is_a_dataset_error_naming_what_is_missing() -> None:
    with pytest.raises(DatasetError, match=r"unreadable dataset manifest \(KeyError: 'items'\)"):
        DatasetManifest.from_json(json.dumps({k: v for k, v in MANIFEST_BEFORE_THE_DATACLASS.items()
                                              if k != "items"}).encode())
    with pytest.raises(DatasetError, match="unreadable dataset manifest"):
        DatasetManifest.from_json(b"{not json")


class CrashAfterFirstFile(dict):
    """Files whose iteration dies after the first one, as a process killed mid-write would."""

    def items(self) -> Iterator[tuple[str, bytes]]:
        first = next(iter(super().items()))
        yield first
        raise KeyboardInterrupt("killed mid-write")


def test_a_crash_mid_write_leaves_no_visible_dataset_and_a_retry_publishes_it(
        store: DatasetStore, items_path: Path) -> None:
    key = DatasetKey.of(META, "batch-1")
    manifest = bare_manifest(key)
    with pytest.raises(KeyboardInterrupt):
        store.publish(key, CrashAfterFirstFile({"sessions.parquet": b"x", "items.parquet": b"y"}), manifest)
    assert store.manifest(key) is None
    with plugin_call(META, batch_id="batch-1", dataset=LoadDataset(store)), pytest.raises(DatasetNotFound):
        prepare_data([], *text_pipeline(items_path))
    prepared = PublishDataset(store)
    with plugin_call(META, batch_id="batch-1", dataset=prepared):
        prepare_data(clickstream(), *text_pipeline(items_path))
    assert store.manifest(key) == prepared.manifest


def test_a_killed_writers_temporary_folder_is_invisible(tmp_path: Path, items_path: Path) -> None:
    store = DatasetStore.open(str(tmp_path / "artifacts"))
    key = DatasetKey.of(META, "batch-1")
    leftover = tmp_path / "artifacts" / "datasets" / f".tmp-{key.dataset_id}-dead"
    leftover.mkdir(parents=True)
    (leftover / "sessions.parquet").write_bytes(b"half")
    (leftover / "manifest.json").write_text("{}")
    assert store.manifest(key) is None
    with plugin_call(META, batch_id="batch-1", dataset=PublishDataset(store)):
        prepare_data(clickstream(), *text_pipeline(items_path))
    assert store.manifest(key) is not None


def test_opening_the_store_removes_killed_writers_stale_temporaries_only(tmp_path: Path) -> None:
    datasets, failures = tmp_path / "artifacts" / "datasets", tmp_path / "artifacts" / "failures"
    stale_folder, fresh_folder = datasets / ".tmp-abc-dead", datasets / ".tmp-abc-writing"
    stale_record, published = failures / ".tmp-1234-record.json", datasets / "abc"
    for folder in (stale_folder, fresh_folder, published):
        folder.mkdir(parents=True)
        (folder / "sessions.parquet").write_bytes(b"half")
    failures.mkdir()
    stale_record.write_text("{}")
    two_hours_ago = time.time() - 7200
    for entry in (stale_folder, stale_record, published):
        os.utime(entry, (two_hours_ago, two_hours_ago))
    DatasetStore.open(str(tmp_path / "artifacts"))
    assert not stale_folder.exists() and not stale_record.exists()
    assert fresh_folder.exists()  # maybe another replica's write in progress
    assert (published / "sessions.parquet").exists()


def test_opening_an_s3_store_removes_killed_writers_stale_attempts_only(s3: S3Server,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    bucket, client = s3.new_bucket(), s3.client()
    uri = f"s3://{bucket}/es"
    published, crashed = DatasetKey.of(META, "batch-1"), DatasetKey.of(META, "batch-2")
    manifest = DatasetStore.open(uri).publish(published, {"sessions.parquet": b"whole"}, bare_manifest(published))

    def leftover(key: DatasetKey, attempt: str) -> str:
        object_key = f"es/datasets/{key.dataset_id}/{attempt}/sessions.parquet"
        client.put_object(Bucket=bucket, Key=object_key, Body=b"half")
        return object_key

    lost_race = leftover(published, "dead")  # lost to the manifest above, killed before deleting its files
    unpublished = leftover(crashed, "dead")  # killed before writing its manifest
    monkeypatch.setattr(DatasetStore, "STALE_TEMPORARY_S", 1.5)
    time.sleep(2.0)
    writing = leftover(crashed, "writing")  # young: maybe another replica's write in progress
    store = DatasetStore.open(uri)
    remaining = {entry["Key"] for entry in client.list_objects_v2(Bucket=bucket)["Contents"]}
    assert lost_race not in remaining and unpublished not in remaining
    assert writing in remaining
    assert store.read(published, manifest, "sessions.parquet") == b"whole"
    assert store.manifest(published) == manifest


def test_an_s3_store_opens_when_its_bucket_cannot_be_listed(s3: S3Server) -> None:
    # The sweep's listing fails (logged as a warning); opening does not: the service starts and answers.
    store = DatasetStore.open("s3://no-such-bucket-for-the-sweep/es")
    assert store.uri == "s3://no-such-bucket-for-the-sweep/es"


def test_the_first_published_dataset_of_a_key_wins(store: DatasetStore, items_path: Path) -> None:
    first = PublishDataset(store)
    with plugin_call(META, batch_id="batch-1", dataset=first):
        prepare_data(clickstream(), *text_pipeline(items_path))
    second = PublishDataset(store)
    with plugin_call(META, batch_id="batch-1", dataset=second):
        prepare_data(clickstream(sessions=20), *text_pipeline(items_path))
    assert second.manifest == first.manifest == store.manifest(DatasetKey.of(META, "batch-1"))


def test_stored_files_are_open_formats_checked_against_the_manifest(tmp_path: Path, items_path: Path) -> None:
    store = DatasetStore.open(str(tmp_path / "artifacts"))
    prepared = PublishDataset(store)
    with plugin_call(META, batch_id="batch-1", dataset=prepared):
        prepare_data(clickstream(), *text_pipeline(items_path))
    folder = Path(store.dataset_uri(DatasetKey.of(META, "batch-1")))
    assert sorted(p.name for p in folder.iterdir()) == ["items.parquet", "manifest.json", "sessions.parquet"]
    assert DatasetManifest.from_json((folder / "manifest.json").read_bytes()) == prepared.manifest
    sessions = pq.read_table(folder / "sessions.parquet").to_pylist()
    assert {row["split"] for row in sessions} == {"train", "test"} and sessions[0]["results"][0]["position"] == 1
    (folder / "items.parquet").write_bytes(b"tampered")
    with plugin_call(META, batch_id="batch-1", dataset=LoadDataset(store)), \
            pytest.raises(DatasetError, match=r"items\.parquet does not match"):
        prepare_data([], *text_pipeline(items_path))


def test_a_plugin_calling_prepare_data_twice_in_one_preparation_is_refused(tmp_path: Path, items_path: Path) -> None:
    store = DatasetStore.open(str(tmp_path / "artifacts"))
    with plugin_call(META, batch_id="batch-1", dataset=PublishDataset(store)):
        prepare_data(clickstream(), *text_pipeline(items_path))
        with pytest.raises(DatasetError, match="called twice"):
            prepare_data(clickstream(), *text_pipeline(items_path))


def test_an_image_dataset_from_s3_locators_round_trips_as_image_bytes(s3: S3Server, tmp_path: Path) -> None:
    bucket = s3.new_bucket()
    colors = ["red", "green", "blue", "black"]
    for color in colors:
        s3.client().put_object(Bucket=bucket, Key=f"img/{color}.png", Body=png(color))
    sessions = [
        SessionWithEvents(session_id=f"s{n}", search_query=f"a {colors[n % 4]} picture",
                          search_results=[ShownResult(object_id=c, rank=0.5, meta={"bucket": bucket,
                                                                                   "file": f"img/{c}.png"})
                                          for c in colors],
                          events=[raw_session("x", "q", [colors[n % 4]], clicks={colors[n % 4]: "click"}).events[0]])
        for n in range(8)
    ]
    pipeline = (AWSS3ClickstreamParser(TextQueryItem, SearchResult, DummyEventType), ClickstreamSessionsSplitter(),
                TextQueryRetriever(), AWSS3DataLoader(aws_access_key_id="testing", aws_secret_access_key="testing"),
                CLIPItemStorageProducer())
    store = DatasetStore.open(f"s3://{bucket}/artifacts")
    with plugin_call(META, batch_id="batch-1", dataset=PublishDataset(store)):
        prepare_data(sessions, *pipeline)
    with plugin_call(META, batch_id="batch-1", dataset=LoadDataset(store)):
        data = prepare_data([], *pipeline)
    assert data.items.kind == "image" and data.items["blue"] == png("blue")
    assert data.train[0].results[0].item_info == {"bucket": bucket, "file": "img/red.png"}
    with plugin_call(META, batch_id="batch-1", dataset=LoadDataset(store)), \
            pytest.raises(DatasetError, match="holds image items"):
        prepare_data([], *pipeline[:4], ItemStorageProducer())


def test_missing_items_fail_the_preparation_and_publish_nothing(tmp_path: Path) -> None:
    store = DatasetStore.open(str(tmp_path / "artifacts"))
    few = write_items(tmp_path / "few.jsonl", {f"item-{i}": "t" for i in range(8)})
    prepared = PublishDataset(store)
    with plugin_call(META, batch_id="batch-1", dataset=prepared), \
            pytest.raises(MissingItems, match="'item-8', 'item-9'"):
        prepare_data(clickstream(), *text_pipeline(few))
    assert prepared.manifest is None and store.manifest(DatasetKey.of(META, "batch-1")) is None


def test_a_batch_without_any_click_has_no_usable_sessions(items_path: Path) -> None:
    with pytest.raises(NoUsableSessions, match="all 3 sessions are irrelevant"):
        prepare_data([raw_session(f"s{i}", f"q{i}", ["item-1"]) for i in range(3)], *text_pipeline(items_path))
    with pytest.raises(NoUsableSessions, match="no sessions"):
        prepare_data([], *text_pipeline(items_path))


def test_the_store_refuses_unknown_uri_schemes() -> None:
    with pytest.raises(ValueError, match="use a local folder, file:///folder or s3://bucket/prefix"):
        DatasetStore.open("gs://bucket/x")
    with pytest.raises(ValueError, match="must be local"):
        DatasetStore.open("file://otherhost/data")


def test_a_file_uri_opens_the_local_folder_it_names(tmp_path: Path, items_path: Path) -> None:
    folder = tmp_path / "with space"
    store = DatasetStore.open(folder.as_uri())  # file:///.../with%20space
    with plugin_call(META, batch_id="batch-1", dataset=PublishDataset(store)):
        prepare_data(clickstream(), *text_pipeline(items_path))
    assert store.manifest(DatasetKey.of(META, "batch-1")) is not None
    assert any(folder.rglob("manifest.json"))


def test_one_plugin_call_tells_the_experiments_manager_and_prepare_data_and_ends_with_its_block(
        store: DatasetStore, items_path: Path) -> None:
    with pytest.raises(RuntimeError, match=r"outside the platform's plugin_call"):
        ExperimentsManager.scope()
    with pytest.raises(ValueError, match="needs the batch_id"), plugin_call(META, dataset=PublishDataset(store)):
        pass
    published = PublishDataset(store)
    with plugin_call(META, batch_id="batch-1", task_id="task-1", dataset=published) as outer:
        assert ExperimentsManager.scope() == outer and (outer.batch_id, outer.task_id) == ("batch-1", "task-1")
        with plugin_call(META, batch_id="batch-2", task_id="task-2") as inner:  # no dataset mode: only runs it
            assert ExperimentsManager.scope() is inner
            prepare_data(clickstream(), *text_pipeline(items_path))
        assert ExperimentsManager.scope() is outer
        prepare_data(clickstream(), *text_pipeline(items_path))
    assert published.manifest is not None and store.manifest(DatasetKey.of(META, "batch-1")) == published.manifest
    assert store.manifest(DatasetKey.of(META, "batch-2")) is None
    with pytest.raises(RuntimeError, match="plugin_call"):
        ExperimentsManager.scope()


def test_a_store_failing_under_the_trainers_read_is_a_retryable_store_error_not_a_bad_dataset(
        tmp_path: Path, items_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The S3 server goes away between dataprep's publish and the trainer's read (an outage, not a bad
    # dataset): the trainer must defer the task, so the error is the store's, which it retries.
    server = S3Server().start()
    try:
        for name, value in server.env.items():
            monkeypatch.setenv(name, value)
        s3_store = DatasetStore.open(f"s3://{server.new_bucket()}/es/artifacts")
        with plugin_call(META, batch_id="batch-1", dataset=PublishDataset(s3_store)):
            prepare_data(clickstream(), *text_pipeline(items_path))
    finally:
        server.stop()
    with plugin_call(META, batch_id="batch-1", dataset=LoadDataset(s3_store)), \
            pytest.raises(ArtifactStoreError, match=r"cannot read dataset .* from s3://"):
        prepare_data([], *text_pipeline(items_path))
    # A disk that fails to read a dataset's file: the same.
    local = DatasetStore.open(str(tmp_path / "artifacts"))
    with plugin_call(META, batch_id="batch-1", dataset=PublishDataset(local)):
        prepare_data(clickstream(), *text_pipeline(items_path))
    sessions_file = tmp_path / "artifacts" / "datasets" / DatasetKey.of(META, "batch-1").dataset_id / SESSIONS_FILE
    sessions_file.unlink()
    sessions_file.mkdir()  # reading it is now an OSError (IsADirectoryError)
    with plugin_call(META, batch_id="batch-1", dataset=LoadDataset(local)), \
            pytest.raises(ArtifactStoreError, match="cannot read dataset"):
        prepare_data([], *text_pipeline(items_path))
