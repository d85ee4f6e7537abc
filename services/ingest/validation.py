"""Input checks of the ingest API: a request that breaks any of them is refused whole with
INVALID_ARGUMENT naming the field (`search_results[3].object_id`) and the limit or rule it broke."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from google.protobuf import struct_pb2

from services.api.embedding_studio.v1 import clickstream_pb2 as pb
from services.common.checks import check_id, check_meta, check_text
from services.common.errors import InvalidArgument
from services.common.settings import Limits


class Validator:
    def __init__(self, limits: Limits) -> None:
        self.limits = limits

    def _id(self, field: str, value: str, required: bool = True) -> None:
        check_id(field, value, self.limits.max_id_length, required)

    def _meta(self, field: str, meta: struct_pb2.Struct) -> None:
        check_meta(field, meta, self.limits)

    def _distinct(self, field: str, values: Sequence[Any], id_field: str, noun: str, limit: int, variable: str,
                  required: bool = True) -> dict[str, int]:
        """A repeated field: at least one `noun` (if `required`), at most `limit` (setting `variable`), each
        one's `id_field` an id that no earlier one repeats; returns each id's index."""
        if required and not values:
            raise InvalidArgument(field, f"must hold at least one {noun}")
        if len(values) > limit:
            raise InvalidArgument(field, f"holds {len(values)} {noun}s; {variable} is {limit}")
        seen: dict[str, int] = {}
        for i, value in enumerate(values):
            value_id = getattr(value, id_field)
            self._id(f"{field}[{i}].{id_field}", value_id)
            if value_id in seen:
                raise InvalidArgument(f"{field}[{i}].{id_field}", f"'{value_id}' repeats {field}[{seen[value_id]}]")
            seen[value_id] = i
        return seen

    def _timestamp(self, field: str, created_at: int, now: int) -> None:
        if created_at == 0:
            return
        if created_at < now - self.limits.max_event_age_s:
            raise InvalidArgument(field, f"{created_at} is more than ES_MAX_EVENT_AGE_S="
                                         f"{self.limits.max_event_age_s} seconds before server time {now}")
        if created_at > now + self.limits.max_clock_skew_s:
            raise InvalidArgument(field, f"{created_at} is more than ES_MAX_CLOCK_SKEW_S="
                                         f"{self.limits.max_clock_skew_s} seconds after server time {now}")

    def session(self, request: pb.RegisterSessionRequest, now: int) -> None:
        limits = self.limits
        self._id("session_id", request.session_id)
        if not request.search_query.strip():
            raise InvalidArgument("search_query", "must not be empty")
        if len(request.search_query) > limits.max_query_length:
            raise InvalidArgument("search_query", f"is {len(request.search_query)} characters long; "
                                                  f"ES_MAX_QUERY_LENGTH is {limits.max_query_length}")
        check_text("search_query", request.search_query)
        results = request.search_results
        seen = self._distinct("search_results", results, "object_id", "result", limits.max_results, "ES_MAX_RESULTS")
        for i, result in enumerate(results):
            if not math.isfinite(result.rank):
                raise InvalidArgument(f"search_results[{i}].rank", f"must be a finite number, not {result.rank}")
            self._meta(f"search_results[{i}].meta", result.meta)
            self._team(i, result.team, bool(request.experiment_id))
        if request.experiment_id:
            self.experiment_id(request.experiment_id)
        self._meta("search_meta", request.search_meta)
        self._id("user_id", request.user_id, required=False)
        self._timestamp("created_at", request.created_at, now)
        self.events(request.events, now, set(seen), allow_empty=True)

    def events(self, events: Sequence[pb.Event], now: int, shown: set[str] | frozenset[str] | None,
               allow_empty: bool = False) -> None:
        """Checks events; `shown` (the session's object ids) is None when the caller checks it later."""
        limits = self.limits
        self._distinct("events", events, "event_id", "event", limits.max_events_per_request,
                       "ES_MAX_EVENTS_PER_REQUEST", required=not allow_empty)
        for i, event in enumerate(events):
            self._id(f"events[{i}].object_id", event.object_id)
            if shown is not None and event.object_id not in shown:
                raise InvalidArgument(f"events[{i}].object_id",
                                      f"'{event.object_id}' is not among the session's search_results")
            if len(event.event_type) > limits.max_event_type_length:
                raise InvalidArgument(f"events[{i}].event_type", f"is {len(event.event_type)} characters long; "
                                      f"ES_MAX_EVENT_TYPE_LENGTH is {limits.max_event_type_length}")
            check_text(f"events[{i}].event_type", event.event_type)
            self._timestamp(f"events[{i}].created_at", event.created_at, now)
            self._meta(f"events[{i}].meta", event.meta)

    @staticmethod
    def _team(i: int, team: int, in_experiment: bool) -> None:
        field = f"search_results[{i}].team"
        if team not in pb.Team.values():
            raise InvalidArgument(field, f"is {team}, not a Team (TEAM_CHAMPION = 1, TEAM_CHALLENGER = 2)")
        if in_experiment and team == pb.TEAM_UNSPECIFIED:
            raise InvalidArgument(field, "must say which model put the result there (TEAM_CHAMPION or "
                                         "TEAM_CHALLENGER): the session belongs to an experiment")
        if not in_experiment and team != pb.TEAM_UNSPECIFIED:
            raise InvalidArgument(field, "is set, but the session names no experiment_id: a team only means "
                                         "something in an online experiment's session")

    def experiment_id(self, experiment_id: str) -> None:
        self._id("experiment_id", experiment_id)

    def session_id(self, session_id: str) -> None:
        self._id("session_id", session_id)
