"""The one home of the checks every service makes of the ids, numbers and meta objects in its requests.

Each raises `InvalidArgument` naming the field, before any store or dependency is asked, so a request
that can never succeed is not answered UNAVAILABLE (which tells clients to retry) or INTERNAL. Numbers
parse strictly: ASCII digits, no sign, no leading zero, no whitespace, at most 18 digits (they fit a
64-bit integer column), so `batch-01`, `batch-1\\n`, an Arabic-Indic one and `²` are never aliases of anything.
"""

from __future__ import annotations

import re

from google.protobuf import struct_pb2

from services.common.errors import InvalidArgument
from services.common.settings import Limits

_NUMBER = re.compile(r"[1-9][0-9]{0,17}", re.ASCII)
_BATCH_ID = re.compile(r"batch-([1-9][0-9]{0,17})", re.ASCII)
# Task ids name NATS KV keys and subject tokens: no wildcards (`*`, `>`), dots, spaces or slashes.
_TOKEN = re.compile(r"[A-Za-z0-9_-]+", re.ASCII)
# MLflow run ids are uuid4 hex.
_RUN_ID = re.compile(r"[0-9a-f]{32}", re.ASCII)


def check_text(field: str, value: str) -> None:
    """No NUL character: protobuf takes it as valid UTF-8, but PostgreSQL text cannot hold one, and the
    failed write would take the other requests of its group commit down with it (as INTERNAL)."""
    if "\x00" in value:
        raise InvalidArgument(field, f"contains the NUL character (U+0000) at index {value.index(chr(0))}")


def check_id(field: str, value: str, max_length: int, required: bool = True,
             empty_reason: str = "must not be empty") -> None:
    """Not empty (unless not `required`; `empty_reason` says why it must not be), at most `max_length`
    characters (ES_MAX_ID_LENGTH), no NUL character (`check_text`)."""
    if required and not value.strip():
        raise InvalidArgument(field, empty_reason)
    if len(value) > max_length:
        raise InvalidArgument(field, f"is {len(value)} characters long; ES_MAX_ID_LENGTH is {max_length}")
    check_text(field, value)


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


def _depth(meta: struct_pb2.Struct) -> int:
    """Levels of Structs and ListValues in `meta`, itself one (no recursion: a deep one is what is checked)."""
    deepest, stack = 0, [(meta, 1)]
    while stack:
        container, depth = stack.pop()
        deepest = max(deepest, depth)
        values = container.fields.values() if isinstance(container, struct_pb2.Struct) else container.values
        for value in values:
            kind = value.WhichOneof("kind")
            if kind in ("struct_value", "list_value"):
                stack.append((getattr(value, kind), depth + 1))
    return deepest


def check_meta(field: str, meta: struct_pb2.Struct, limits: Limits) -> None:
    """At most ES_MAX_META_BYTES (protobuf-encoded) and ES_MAX_META_DEPTH levels of nesting."""
    size = meta.ByteSize()
    if size > limits.max_meta_bytes:
        raise InvalidArgument(field, f"is {size} bytes; ES_MAX_META_BYTES is {limits.max_meta_bytes}")
    depth = _depth(meta)
    if depth > limits.max_meta_depth:
        raise InvalidArgument(field, f"nests {depth} levels of objects and lists; ES_MAX_META_DEPTH is "
                                     f"{limits.max_meta_depth}")
