"""What every service gets from the shared plumbing, checked on the ingest service: bearer-token auth
with open health checks, (mutual) TLS, message-size limits, and reflection of the contract's names."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pool
from google.rpc import code_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from services.api.embedding_studio.v1 import clickstream_pb2 as pb
from services.api.embedding_studio.v1 import clickstream_pb2_grpc
from services.client.channels import open_aio_channel, open_channel
from services.common.errors import field_violation
from services.common.settings import Limits, Settings
from tests.ingest.helpers import session_request
from tests.servers import VENV_BIN, InProcessService


def serve_ingest(settings: Settings, limits: Limits | None = None) -> InProcessService:
    from services.ingest.main import start

    return InProcessService(lambda port: start(settings, limits or Limits(), "127.0.0.1", port),
                            wait_serving=not settings.tls_enabled)


@pytest.fixture
def settings(tmp_path: Path, nats_server) -> Settings:
    return Settings(state_dir=tmp_path / "state", nats_url=nats_server.url)


def test_without_the_bearer_token_every_rpc_but_health_is_unauthenticated(settings: Settings) -> None:
    secured = settings.model_copy(update={"auth_token": "s3cret"})
    with serve_ingest(secured) as service:
        with grpc.insecure_channel(service.address) as channel:
            stub = clickstream_pb2_grpc.ClickstreamServiceStub(channel)
            for call in (lambda: stub.GetBatch(pb.GetBatchRequest()),
                         lambda: list(stub.StreamBatchSessions(pb.StreamBatchSessionsRequest(batch_id="batch-1"))),
                         lambda: stub.Ingest(iter([pb.IngestRequest(session=session_request("s1"))]))):
                with pytest.raises(grpc.RpcError) as info:
                    call()
                assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
            health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
            assert health.status == health_pb2.HealthCheckResponse.SERVING
        wrong = secured.model_copy(update={"auth_token": "guess"})
        with open_channel(service.address, wrong) as channel:
            with pytest.raises(grpc.RpcError) as info:
                clickstream_pb2_grpc.ClickstreamServiceStub(channel).GetBatch(pb.GetBatchRequest())
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with open_channel(service.address, secured) as channel:
            stub = clickstream_pb2_grpc.ClickstreamServiceStub(channel)
            assert stub.GetBatch(pb.GetBatchRequest()).batch.session_count == 0
            stub.RegisterSession(session_request("s1"))
            assert stub.GetBatch(pb.GetBatchRequest()).batch.session_count == 1


def test_the_asyncio_client_sends_the_token_on_every_call_kind(settings: Settings) -> None:
    """Services call each other through `open_aio_channel`: unary calls, server streams (dataprep's
    StreamBatchSessions from ingest) and client streams (Ingest) must all carry the token."""
    secured = settings.model_copy(update={"auth_token": "s3cret"})

    async def calls(address: str, token_settings: Settings) -> list[int]:
        async with open_aio_channel(address, token_settings) as channel:
            stub = clickstream_pb2_grpc.ClickstreamServiceStub(channel)
            summary = await stub.Ingest(iter([pb.IngestRequest(session=session_request("s1"))]))
            await stub.RegisterSession(session_request("s2"))
            await stub.ReleaseBatch(pb.ReleaseBatchRequest(release_id="r1"))
            streamed = [r async for r in stub.StreamBatchSessions(pb.StreamBatchSessionsRequest(batch_id="batch-1"))]
            return [summary.sessions_accepted, len(streamed)]

    with serve_ingest(secured) as service:
        assert asyncio.run(calls(service.address, secured)) == [1, 2]
        with pytest.raises(grpc.RpcError) as info:
            asyncio.run(calls(service.address, secured.model_copy(update={"auth_token": "guess"})))
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_tls_with_a_ca_requires_and_accepts_client_certificates(settings: Settings, certificates: Path) -> None:
    server_settings = settings.model_copy(update={
        "tls_cert": certificates / "server.pem", "tls_key": certificates / "server.key",
        "tls_ca": certificates / "ca.pem"})
    client_settings = settings.model_copy(update={
        "tls_cert": certificates / "client.pem", "tls_key": certificates / "client.key",
        "tls_ca": certificates / "ca.pem"})
    anonymous_client = settings.model_copy(update={"tls_ca": certificates / "ca.pem"})
    with serve_ingest(server_settings) as service:
        with open_channel(service.address, client_settings) as channel:
            stub = clickstream_pb2_grpc.ClickstreamServiceStub(channel)
            assert stub.GetBatch(pb.GetBatchRequest(), timeout=10).batch.batch_id == "batch-1"
        with open_channel(service.address, anonymous_client) as channel:
            with pytest.raises(grpc.RpcError) as info:
                clickstream_pb2_grpc.ClickstreamServiceStub(channel).GetBatch(pb.GetBatchRequest(), timeout=10)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        with grpc.insecure_channel(service.address) as channel, pytest.raises(grpc.RpcError):
            clickstream_pb2_grpc.ClickstreamServiceStub(channel).GetBatch(pb.GetBatchRequest(), timeout=10)


_GARBAGE = b"\xff\xff\xff\xff"  # field 31 with wire type 7, which protobuf does not have


def _raw(channel: grpc.Channel, method: str, streaming: bool = False):
    kind = channel.stream_unary if streaming else channel.unary_unary
    return kind(f"/embedding_studio.v1.ClickstreamService/{method}", request_serializer=None,
                response_deserializer=None)


def test_undecodable_request_bytes_are_invalid_argument_and_unauthenticated_without_the_token(
        settings: Settings) -> None:
    with serve_ingest(settings.model_copy(update={"auth_token": "s3cret"})) as service:
        with grpc.insecure_channel(service.address) as channel:
            with pytest.raises(grpc.RpcError) as info:
                _raw(channel, "RegisterSession")(_GARBAGE)
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED  # the token before the bytes
        token = (("authorization", "Bearer s3cret"),)
        with grpc.insecure_channel(service.address) as channel:
            with pytest.raises(grpc.RpcError) as info:
                _raw(channel, "RegisterSession")(_GARBAGE, metadata=token)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert field_violation(info.value).field == "request"
            assert "is not a valid RegisterSessionRequest (4 bytes)" in info.value.details()
            # In a stream, an undecodable message is one rejection of the summary; the others are applied.
            messages = [pb.IngestRequest(session=session_request("s1")).SerializeToString(), _GARBAGE,
                        pb.IngestRequest(session=session_request("s2")).SerializeToString()]
            summary = pb.IngestResponse.FromString(_raw(channel, "Ingest", streaming=True)(iter(messages),
                                                                                           metadata=token))
            assert (summary.messages, summary.sessions_accepted, summary.rejected) == (3, 2, 1)
            assert (summary.errors[0].index, summary.errors[0].code) == (1, code_pb2.INVALID_ARGUMENT)
            assert "is not a valid IngestRequest" in summary.errors[0].reason


def test_a_message_over_the_size_limit_is_resource_exhausted(settings: Settings) -> None:
    limits = Limits(max_message_bytes=64 * 1024)
    with serve_ingest(settings, limits) as service, grpc.insecure_channel(service.address) as channel:
        request = session_request("big", results=1000)
        for result in request.search_results:
            result.meta.update({"text": "x" * 100})
        assert request.ByteSize() > limits.max_message_bytes
        with pytest.raises(grpc.RpcError) as info:
            clickstream_pb2_grpc.ClickstreamServiceStub(channel).RegisterSession(request)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_reflection_serves_the_contract_names(settings: Settings) -> None:
    with serve_ingest(settings) as service, grpc.insecure_channel(service.address) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        assert "embedding_studio.v1.ClickstreamService" in database.get_services()
        assert "grpc.health.v1.Health" in database.get_services()
        pool = descriptor_pool.DescriptorPool(database)
        service_descriptor = pool.FindServiceByName("embedding_studio.v1.ClickstreamService")
        assert {m.name for m in service_descriptor.methods} == {
            "RegisterSession", "PushEvents", "MarkSessionIrrelevant", "GetSession", "GetBatch", "ReleaseBatch",
            "StreamBatchSessions", "Ingest", "GetExperimentOutcome"}
        session = pool.FindMessageTypeByName("embedding_studio.v1.Session")
        assert {"session_id", "search_query", "search_results", "search_meta", "user_id", "created_at",
                "is_irrelevant", "events", "batch_id", "session_number"} <= set(session.fields_by_name)
        event = pool.FindMessageTypeByName("embedding_studio.v1.Event")
        assert set(event.fields_by_name) == {"event_id", "object_id", "event_type", "created_at", "meta"}


def test_serving_on_a_port_in_use_or_with_a_bad_log_level_is_a_one_line_error(settings: Settings) -> None:
    env = {**os.environ, "ES_NATS_URL": settings.nats_url, "ES_STATE_DIR": str(settings.state_dir)}
    with serve_ingest(settings) as service:
        port = service.address.rsplit(":", 1)[1]
        taken = subprocess.run([str(VENV_BIN / "es"), "serve", "ingest", "--port", port], env=env,
                               capture_output=True, text=True, timeout=60)
    assert taken.returncode == 1
    assert f"error: cannot serve ingest on 127.0.0.1:{port}: cannot bind" in taken.stderr
    assert "Traceback" not in taken.stderr
    verbose = subprocess.run([str(VENV_BIN / "es"), "serve", "ingest", "--port", "0"],
                             env={**env, "ES_LOG_LEVEL": "verbose"}, capture_output=True, text=True, timeout=60)
    assert verbose.returncode == 2
    assert "error: invalid configuration" in verbose.stderr and "log_level" in verbose.stderr
    assert "Traceback" not in verbose.stderr
