"""Builders of ingest requests for the tests, and a wait for ingest to know an announced experiment."""

from __future__ import annotations

import time

import grpc

from services.api.embedding_studio.v1 import clickstream_pb2 as pb


def session_request(session_id: str, results: int = 3, query: str | None = None, clicks: tuple[int, ...] = (),
                    **fields: object) -> pb.RegisterSessionRequest:
    request = pb.RegisterSessionRequest(
        session_id=session_id,
        search_query=query or f"query of {session_id}",
        search_results=[pb.SearchResult(object_id=f"item-{i}", rank=1.0 - i / 100) for i in range(results)],
        events=[pb.Event(event_id=f"click-{i}", object_id=f"item-{i}") for i in clicks],
        **fields,
    )
    return request


def click(event_id: str, object_id: str, **fields: object) -> pb.Event:
    return pb.Event(event_id=event_id, object_id=object_id, **fields)


def wait_until_ingest_knows(ingest, experiment_id: str, timeout: float = 20.0) -> None:
    """Waits until ingest has consumed the announcement of `experiment_id` (it answers NOT_FOUND before)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            ingest.GetExperimentOutcome(pb.GetExperimentOutcomeRequest(experiment_id=experiment_id))
            return
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.NOT_FOUND or time.monotonic() > deadline:
                raise
            time.sleep(0.1)
