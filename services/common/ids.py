"""The one home of the checks every service makes of the ids and numbers in its requests.

Each raises `InvalidArgument` naming the field, before any store or dependency is asked, so a request
that can never succeed is not answered UNAVAILABLE (which tells clients to retry) or INTERNAL. Numbers
parse strictly: ASCII digits, no sign, no leading zero, no whitespace, at most 18 digits (they fit a
64-bit integer column), so `batch-01`, `batch-1\\n`, an Arabic-Indic one and `²` are never aliases of anything.
"""

from __future__ import annotations

import re

from services.common.errors import InvalidArgument

_NUMBER = re.compile(r"[1-9][0-9]{0,17}", re.ASCII)
_BATCH_ID = re.compile(r"batch-([1-9][0-9]{0,17})", re.ASCII)
# Task ids name NATS KV keys and subject tokens: no wildcards (`*`, `>`), dots, spaces or slashes.
_TOKEN = re.compile(r"[A-Za-z0-9_-]+", re.ASCII)
# MLflow run ids are uuid4 hex.
_RUN_ID = re.compile(r"[0-9a-f]{32}", re.ASCII)


def check_id(field: str, value: str, max_length: int, required: bool = True) -> None:
    """Not empty (unless not `required`), at most `max_length` characters (ES_MAX_ID_LENGTH)."""
    if required and not value.strip():
        raise InvalidArgument(field, "must not be empty")
    if len(value) > max_length:
        raise InvalidArgument(field, f"is {len(value)} characters long; ES_MAX_ID_LENGTH is {max_length}")


def parse_number(field: str, value: str, what: str) -> int:
    """A positive integer written plainly ("1", "42"); `what` says what it numbers, for the error."""
    if not _NUMBER.fullmatch(value):
        raise InvalidArgument(field, f"{value!r} is not {what} (a whole number from 1, in plain digits)")
    return int(value)


def parse_batch_id(field: str, value: str) -> int:
    """The number of a batch id ("batch-1" -> 1)."""
    match = _BATCH_ID.fullmatch(value)
    if match is None:
        raise InvalidArgument(field, f"{value!r} is not a batch id (batch ids look like 'batch-1')")
    return int(match.group(1))


def check_token(field: str, value: str) -> None:
    """Letters, digits, '_' and '-' only (a task id, which names a NATS KV key)."""
    if not _TOKEN.fullmatch(value):
        raise InvalidArgument(field, f"{value!r} may hold only letters, digits, '_' and '-'")


def check_run_id(field: str, value: str) -> None:
    if not _RUN_ID.fullmatch(value):
        raise InvalidArgument(field, f"{value!r} is not an MLflow run id (32 lowercase hex digits)")
