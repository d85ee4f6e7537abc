"""Online experiments at ingest: sessions of an experiment the registry announced are stored with their
teams and counted with team-draft credit in one SQL aggregate; bad experiment input is refused whole;
an old database gains the experiment column. On SQLite and on PostgreSQL, through a real gRPC server
and NATS."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import grpc
import pytest
from sqlalchemy import create_engine, text

from services.api.embedding_studio.v1 import clickstream_pb2 as pb
from services.api.embedding_studio.v1 import events_pb2
from services.api.embedding_studio.v1 import registry_pb2 as registry_pb
from services.common.errors import field_violation
from services.common.nats import EXPERIMENT_STARTED
from services.ingest.store import ClickstreamStore
from tests.ingest.helpers import session_request, wait_until_ingest_knows
from tests.nats_reader import publish

CHAMPION, CHALLENGER = pb.TEAM_CHAMPION, pb.TEAM_CHALLENGER


def announce(nats_url: str, ingest) -> str:
    """Announces a fresh experiment as the registry does and waits until ingest knows it."""
    experiment_id = f"exp-{uuid.uuid4().hex[:10]}-2-{uuid.uuid4().hex[:8]}"
    started = events_pb2.ExperimentStarted(experiment=registry_pb.Experiment(
        experiment_id=experiment_id, fine_tuning_method="plugin", champion_version="1", challenger_version="2",
        state=registry_pb.EXPERIMENT_STATE_RUNNING, started_at=int(time.time())))
    publish(nats_url, EXPERIMENT_STARTED, started.SerializeToString(), msg_id=f"experiment {experiment_id} started")
    wait_until_ingest_knows(ingest, experiment_id)
    return experiment_id


def interleaved(session_id: str, experiment_id: str, teams: list[int], clicks: tuple[int, ...] = (),
                **fields: object) -> pb.RegisterSessionRequest:
    request = session_request(session_id, results=len(teams), clicks=clicks, experiment_id=experiment_id, **fields)
    for result, team in zip(request.search_results, teams, strict=True):
        result.team = team
    return request


def outcome(ingest, experiment_id: str) -> tuple[int, int, int, int]:
    counted = ingest.GetExperimentOutcome(pb.GetExperimentOutcomeRequest(experiment_id=experiment_id)).outcome
    return counted.sessions, counted.wins, counted.losses, counted.ties


def test_an_experiments_sessions_keep_their_teams_and_are_counted_by_team_draft_credit(ingest, nats_server) -> None:
    experiment_id = announce(nats_server.url, ingest)
    teams = [CHALLENGER, CHAMPION, CHAMPION, CHALLENGER]
    ingest.RegisterSession(interleaved("won", experiment_id, teams, clicks=(0, 3, 1)))  # 2 challenger, 1 champion
    ingest.RegisterSession(interleaved("lost", experiment_id, teams, clicks=(1,)))
    ingest.RegisterSession(interleaved("no-click", experiment_id, teams))
    ingest.RegisterSession(interleaved("even", experiment_id, teams, clicks=(0, 1)))
    ingest.RegisterSession(interleaved("late", experiment_id, teams, clicks=(3,)))
    ingest.RegisterSession(session_request("plain", clicks=(0,)))  # outside the experiment: not counted
    assert outcome(ingest, experiment_id) == (5, 2, 1, 2)

    # A late click makes a won session a tie; events that are not clicks, and a click repeated on the same
    # result, give no credit.
    ingest.PushEvents(pb.PushEventsRequest(session_id="late", events=[
        pb.Event(event_id="late-1", object_id="item-2"),
        pb.Event(event_id="late-2", object_id="item-3"),
        pb.Event(event_id="view", object_id="item-1", event_type="view")]))
    assert outcome(ingest, experiment_id) == (5, 1, 1, 3)

    stored = ingest.GetSession(pb.GetSessionRequest(session_id="won")).session
    assert stored.experiment_id == experiment_id
    assert [r.team for r in stored.search_results] == teams
    retry = ingest.RegisterSession(interleaved("won", experiment_id, teams, clicks=(0, 3, 1)))
    assert retry.duplicate and retry.session == stored
    plain = ingest.GetSession(pb.GetSessionRequest(session_id="plain")).session
    assert plain.experiment_id == "" and {r.team for r in plain.search_results} == {pb.TEAM_UNSPECIFIED}
    streamed = [m.session for m in ingest.StreamBatchSessions(pb.StreamBatchSessionsRequest(batch_id="batch-1"))]
    assert [s.experiment_id for s in streamed] == [experiment_id] * 5 + [""]


def test_bad_experiment_input_is_invalid_argument_naming_the_field_and_stores_nothing(ingest, nats_server) -> None:
    experiment_id = announce(nats_server.url, ingest)
    teams = [CHALLENGER, CHAMPION]
    cases = {
        "experiment_id": interleaved("s1", "exp-0000000000-9-0badc0de", teams),
        "search_results[1].team": interleaved("s1", experiment_id, [CHALLENGER, pb.TEAM_UNSPECIFIED]),
        "search_results[0].team": interleaved("s1", experiment_id, [7, CHAMPION]),
    }
    outside = session_request("s1", results=2)
    outside.search_results[0].team = CHALLENGER
    cases["search_results[0].team "] = outside  # a team in a session that names no experiment
    for field, request in cases.items():
        with pytest.raises(grpc.RpcError) as info:
            ingest.RegisterSession(request)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, field
        assert field_violation(info.value).field == field.strip()
    with pytest.raises(grpc.RpcError) as info:
        ingest.GetExperimentOutcome(pb.GetExperimentOutcomeRequest(experiment_id="exp-0000000000-9-0badc0de"))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    summary = ingest.Ingest(iter([pb.IngestRequest(session=request) for request in cases.values()]))
    assert (summary.rejected, summary.sessions_accepted) == (4, 0)
    assert ingest.GetBatch(pb.GetBatchRequest()).batch.session_count == 0
    assert outcome(ingest, experiment_id) == (0, 0, 0, 0)


def test_a_database_of_schema_1_gains_the_experiment_column_and_keeps_its_sessions(clickstream_db_url: str,
                                                                                    tmp_path: Path) -> None:
    store = ClickstreamStore(clickstream_db_url)
    store.register_sessions([session_request("old", clicks=(0,))], int(time.time()))
    store.close()
    engine = create_engine(clickstream_db_url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.begin() as conn:  # back to what a schema-1 build wrote
        conn.execute(text("DROP INDEX sessions_by_experiment"))
        conn.execute(text("ALTER TABLE sessions DROP COLUMN experiment_id"))
        conn.execute(text("UPDATE ingest_state SET schema_version = 1"))
    engine.dispose()

    store = ClickstreamStore(clickstream_db_url)
    try:
        old = store.get_session("old")
        assert (old.experiment_id, [e.object_id for e in old.events]) == ("", ["item-0"])
        started = events_pb2.ExperimentStarted(experiment=registry_pb.Experiment(
            experiment_id="exp-0123456789-2-0badc0de", fine_tuning_method="plugin", champion_version="1",
            challenger_version="2", started_at=int(time.time())))
        assert store.record_experiment(started) and not store.record_experiment(started)
        [registered] = store.register_sessions([interleaved("new", "exp-0123456789-2-0badc0de", [CHAMPION])],
                                               int(time.time()))
        assert registered.session.experiment_id == "exp-0123456789-2-0badc0de"
        assert store.experiment_outcome("exp-0123456789-2-0badc0de").sessions == 1
    finally:
        store.close()
    with engine.connect() as conn:
        assert conn.execute(text("SELECT schema_version FROM ingest_state")).scalar_one() == 2
    engine.dispose()
