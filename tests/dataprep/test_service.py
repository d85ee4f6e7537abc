"""DataPrepService through real servers: ingest, NATS and the dataprep service, with the test plugins."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

from services.api.embedding_studio.v1 import clickstream_pb2_grpc, dataprep_pb2_grpc, events_pb2
from services.api.embedding_studio.v1 import dataprep_pb2 as pb
from services.client.channels import open_channel
from services.common.nats import DATASET_FAILED, DATASET_READY
from services.common.settings import Limits, Settings
from services.fine_tuning.context import plugin_call
from services.fine_tuning.data import DatasetKey, DatasetStore, ItemStorageProducer, LoadDataset, prepare_data
from services.fine_tuning.discovery import discover_plugins
from tests.conftest import MALFORMED_BATCH_IDS
from tests.dataprep.conftest import PLUGINS, write_items
from tests.dataprep.helpers import published, register_batch
from tests.servers import InProcessService, ServiceProcess

TEXT = "Text Test Method"


def prepare(dataprep, method: str = TEXT, batch_id: str = "batch-1", task_id: str = "") -> pb.Dataset:
    return dataprep.PrepareDataset(pb.PrepareDatasetRequest(fine_tuning_method=method, batch_id=batch_id,
                                                            task_id=task_id), timeout=60).dataset


def rpc_error(call, request) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(request, timeout=60)
    return info.value


def test_prepare_dataset_makes_the_plugins_dataset_of_a_released_batch(
        ingest, dataprep, dataprep_settings: Settings) -> None:
    batch_id = register_batch(ingest)
    dataset = prepare(dataprep, batch_id=batch_id)
    assert dataset.status == pb.DATASET_STATUS_READY, dataset.error
    assert (dataset.fine_tuning_method, dataset.plugin_version, dataset.batch_id) == (TEXT, "1.0.0", batch_id)
    assert dataset.train_sessions + dataset.test_sessions == 12 and dataset.test_sessions > 0
    assert dataset.items == 10 and Path(dataset.uri).is_dir()
    got = dataprep.GetDataset(pb.GetDatasetRequest(fine_tuning_method=TEXT, batch_id=batch_id)).dataset
    assert got == dataset

    # The trainer's side: the same plugin, inside plugin_call with LoadDataset, gets the stored data.
    plugin = discover_plugins(PLUGINS).create(TEXT)
    stored = LoadDataset(DatasetStore.open(dataprep_settings.artifacts_uri))
    with plugin_call(plugin.meta, batch_id=batch_id, dataset=stored):
        builder = plugin.get_fine_tuning_builder([])
    assert len(builder.ranking_data.train) == dataset.train_sessions
    assert builder.ranking_data.items["item-4"] == "text of item 4"


def test_asked_twice_a_dataset_is_made_once_and_announced_for_each_task(ingest, dataprep, nats_server) -> None:
    batch_id = register_batch(ingest)
    first = prepare(dataprep, batch_id=batch_id, task_id="task-a")
    second = prepare(dataprep, batch_id=batch_id, task_id="task-b")
    assert first == second  # same created_at: not made again
    announced = [events_pb2.DatasetReady.FromString(m) for m in
                 published(nats_server.url, DATASET_READY, count=2)]
    assert sorted(e.task_id for e in announced) == ["task-a", "task-b"]
    assert all(e.dataset == first for e in announced)


def test_a_failing_plugin_fails_the_dataset_with_its_error_and_it_is_announced(ingest, dataprep, nats_server) -> None:
    batch_id = register_batch(ingest)
    dataset = prepare(dataprep, method="Failing Test Method", batch_id=batch_id, task_id="task-f")
    assert dataset.status == pb.DATASET_STATUS_FAILED
    assert "plugin 'Failing Test Method'" in dataset.error and "failing_plugin.py" in dataset.error
    assert "RuntimeError: initial model weights not found" in dataset.error
    got = dataprep.GetDataset(pb.GetDatasetRequest(fine_tuning_method="Failing Test Method", batch_id=batch_id))
    assert got.dataset.status == pb.DATASET_STATUS_FAILED and got.dataset.error == dataset.error
    [event] = [events_pb2.DatasetFailed.FromString(m) for m in
               published(nats_server.url, DATASET_FAILED, count=1)]
    assert event.task_id == "task-f" and event.dataset.error == dataset.error


def test_items_missing_from_the_source_are_listed_in_the_failure(ingest, dataprep, items_file: Path) -> None:
    write_items(items_file, {f"item-{i}": "t" for i in range(7)})
    dataset = prepare(dataprep, batch_id=register_batch(ingest))
    assert dataset.status == pb.DATASET_STATUS_FAILED
    assert "3 items missing from" in dataset.error and "'item-7', 'item-8', 'item-9'" in dataset.error


def test_a_failed_dataset_is_made_when_asked_again_after_the_cause_is_fixed(ingest, dataprep, items_file) -> None:
    full = items_file.read_text()
    write_items(items_file, {"item-0": "t"})
    batch_id = register_batch(ingest)
    assert prepare(dataprep, batch_id=batch_id).status == pb.DATASET_STATUS_FAILED
    items_file.write_text(full)
    assert prepare(dataprep, batch_id=batch_id).status == pb.DATASET_STATUS_READY
    got = dataprep.GetDataset(pb.GetDatasetRequest(fine_tuning_method=TEXT, batch_id=batch_id)).dataset
    assert got.status == pb.DATASET_STATUS_READY and not got.error


def test_a_batch_without_clicks_fails_as_having_no_usable_sessions(ingest, dataprep) -> None:
    dataset = prepare(dataprep, batch_id=register_batch(ingest, clicked=False))
    assert dataset.status == pb.DATASET_STATUS_FAILED
    assert "no usable sessions: all 12 sessions are irrelevant" in dataset.error


def test_an_unknown_plugin_is_not_found_listing_the_plugins_and_the_broken_files(ingest, dataprep) -> None:
    batch_id = register_batch(ingest)
    error = rpc_error(dataprep.PrepareDataset, pb.PrepareDatasetRequest(fine_tuning_method="Nope", batch_id=batch_id))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert "no plugin named 'Nope'" in error.details() and "'Text Test Method'" in error.details()
    assert "broken_plugin.py" in error.details()


def test_a_batch_still_collecting_or_unknown_is_refused(ingest, dataprep) -> None:
    collecting = register_batch(ingest, release=None)
    error = rpc_error(dataprep.PrepareDataset, pb.PrepareDatasetRequest(fine_tuning_method=TEXT, batch_id=collecting))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION and "still collecting" in error.details()
    error = rpc_error(dataprep.PrepareDataset, pb.PrepareDatasetRequest(fine_tuning_method=TEXT, batch_id="batch-77"))
    assert error.code() == grpc.StatusCode.NOT_FOUND and "batch-77" in error.details()


def test_empty_fields_are_invalid_arguments_naming_the_field(dataprep) -> None:
    error = rpc_error(dataprep.PrepareDataset, pb.PrepareDatasetRequest(fine_tuning_method=TEXT))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and error.details() == "batch_id: must not be empty"
    error = rpc_error(dataprep.GetDataset, pb.GetDatasetRequest(batch_id="batch-1"))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "fine_tuning_method" in error.details()


@pytest.mark.parametrize("batch_id", MALFORMED_BATCH_IDS)
def test_a_malformed_batch_id_is_invalid_argument_before_ingest_is_asked(ingest, dataprep, batch_id: str) -> None:
    register_batch(ingest)  # batch-1 exists: none of these may alias it
    for call, request in ((dataprep.PrepareDataset, pb.PrepareDatasetRequest(fine_tuning_method=TEXT,
                                                                             batch_id=batch_id)),
                          (dataprep.GetDataset, pb.GetDatasetRequest(fine_tuning_method=TEXT, batch_id=batch_id))):
        error = rpc_error(call, request)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, batch_id
        assert error.details() == f"batch_id: {batch_id!r} is not a batch id (batch ids look like 'batch-1')"


def test_an_ingest_answer_that_asking_again_cannot_change_fails_the_dataset_at_once(
        ingest_settings: Settings, dataprep_settings: Settings, items_file: Path) -> None:
    from services.dataprep.main import start as start_dataprep
    from services.ingest.main import start as start_ingest

    secured = ingest_settings.model_copy(update={"auth_token": "s3cret"})
    with InProcessService(lambda port: start_ingest(secured, Limits(), "127.0.0.1", port)) as ingest_service:
        with open_channel(ingest_service.address, secured) as channel:
            batch_id = register_batch(clickstream_pb2_grpc.ClickstreamServiceStub(channel))
        # Dataprep lacks the token: ingest answers UNAUTHENTICATED, which no retry will change.
        settings = dataprep_settings.model_copy(update={"ingest_addr": ingest_service.address})
        with InProcessService(lambda port: start_dataprep(settings, Limits(), "127.0.0.1", port)) as service, \
                grpc.insecure_channel(service.address) as channel:
            dataset = prepare(dataprep_pb2_grpc.DataPrepServiceStub(channel), batch_id=batch_id)
    assert dataset.status == pb.DATASET_STATUS_FAILED
    assert "UNAUTHENTICATED" in dataset.error and f"reading batch '{batch_id}'" in dataset.error


def test_get_dataset_of_an_unprepared_batch_is_not_found(dataprep) -> None:
    error = rpc_error(dataprep.GetDataset, pb.GetDatasetRequest(fine_tuning_method=TEXT, batch_id="batch-1",
                                                                plugin_version="0.9"))
    assert error.code() == grpc.StatusCode.NOT_FOUND and "PrepareDataset makes it" in error.details()


def test_the_stored_dataset_survives_the_service_and_needs_no_items_to_load(
        ingest, dataprep, dataprep_settings: Settings, items_file: Path) -> None:
    batch_id = register_batch(ingest)
    prepare(dataprep, batch_id=batch_id)
    items_file.unlink()
    plugin = discover_plugins(PLUGINS).create(TEXT)
    stored = LoadDataset(DatasetStore.open(dataprep_settings.artifacts_uri))
    with plugin_call(plugin.meta, batch_id=batch_id, dataset=stored):
        data = prepare_data([], plugin.parser, plugin.splitter, plugin.retriever, plugin.data_loader,
                            ItemStorageProducer())
    assert len(data.items) == 10


def test_with_s3_items_and_s3_artifacts_the_dataset_is_stored_in_the_bucket(
        ingest, s3, tmp_path: Path, nats_server, ingest_server, monkeypatch: pytest.MonkeyPatch) -> None:
    from services.dataprep.main import start

    bucket = s3.new_bucket()
    for i in range(10):
        s3.client().put_object(Bucket=bucket, Key=f"items/item-{i}", Body=f"s3 text {i}".encode())
    monkeypatch.setenv("ES_ITEMS_URI", f"s3://{bucket}/items")
    settings = Settings(state_dir=tmp_path / "state", nats_url=nats_server.url, ingest_addr=ingest_server.address,
                        plugins_path=PLUGINS, artifacts_uri=f"s3://{bucket}/artifacts")
    batch_id = register_batch(ingest)
    with InProcessService(lambda port: start(settings, Limits(), "127.0.0.1", port)) as service, \
            grpc.insecure_channel(service.address) as channel:
        dataset = prepare(dataprep_pb2_grpc.DataPrepServiceStub(channel), batch_id=batch_id)
    assert dataset.status == pb.DATASET_STATUS_READY, dataset.error
    assert dataset.uri.startswith(f"s3://{bucket}/artifacts/datasets/")
    plugin = discover_plugins(PLUGINS).create(TEXT)
    store = DatasetStore.open(settings.artifacts_uri)
    assert store.manifest(DatasetKey.of(plugin.meta, batch_id)).items == 10
    with plugin_call(plugin.meta, batch_id=batch_id, dataset=LoadDataset(store)):
        assert plugin.get_fine_tuning_builder([]).ranking_data.items["item-2"] == "s3 text 2"


def test_es_serve_dataprep_serves_health_and_stops_cleanly_on_sigterm(
        tmp_path: Path, nats_server, ingest_server) -> None:
    env = {"ES_STATE_DIR": str(tmp_path / "state"), "ES_NATS_URL": nats_server.url,
           "ES_INGEST_ADDR": ingest_server.address, "ES_PLUGINS_PATH": str(PLUGINS)}
    service = ServiceProcess("dataprep", env, tmp_path / "dataprep.log").start()
    deadline = time.monotonic() + 20
    while "consumer_bound" not in service.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "consumer_bound" in service.log()
    assert service.terminate() == 0
    assert '"stopped"' in service.log()


def test_concurrent_requests_share_one_piece_of_work_which_get_dataset_shows_pending(
        ingest, dataprep, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gate = tmp_path / "gate"
    gate.mkdir()
    monkeypatch.setenv("GATED_PLUGIN_DIR", str(gate))
    batch_id = register_batch(ingest)
    with ThreadPoolExecutor(2) as pool:
        calls = [pool.submit(prepare, dataprep, "Gated Test Method", batch_id, f"task-{n}") for n in range(2)]
        deadline = time.monotonic() + 20
        while not list(gate.glob("started-*")) and time.monotonic() < deadline:
            time.sleep(0.05)
        pending = dataprep.GetDataset(pb.GetDatasetRequest(fine_tuning_method="Gated Test Method",
                                                           batch_id=batch_id)).dataset
        assert pending.status == pb.DATASET_STATUS_PENDING
        (gate / "open").touch()
        first, second = (call.result(60) for call in calls)
    assert first == second and first.status == pb.DATASET_STATUS_READY
    assert len(list(gate.glob("started-*"))) == 1


def test_a_plugin_that_never_calls_prepare_data_fails_its_dataset_saying_so(ingest, dataprep) -> None:
    dataset = prepare(dataprep, method="No Prepare Test Method", batch_id=register_batch(ingest))
    assert dataset.status == pb.DATASET_STATUS_FAILED
    assert "never called prepare_data in get_fine_tuning_builder" in dataset.error


def test_a_plugin_failing_after_prepare_data_still_has_its_dataset_ready(ingest, dataprep) -> None:
    dataset = prepare(dataprep, method="Fails After Prepare Test Method", batch_id=register_batch(ingest))
    assert dataset.status == pb.DATASET_STATUS_READY and dataset.items == 10
