"""Domain errors that every service raises and the gRPC layer turns into a status a person can act on.

Each error maps to one gRPC status code; `InvalidArgument` also carries the offending field as a
`google.rpc.BadRequest` detail (grpcio-status), so clients can point at it programmatically.
"""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status


class ServiceError(Exception):
    """A failure whose message is meant for the caller."""

    code = grpc.StatusCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_status(self) -> grpc.Status:
        return rpc_status.to_status(status_pb2.Status(code=self.code.value[0], message=self.message))


class InvalidArgument(ServiceError):
    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason

    def to_status(self) -> grpc.Status:
        violation = error_details_pb2.BadRequest.FieldViolation(field=self.field, description=self.reason)
        detail = any_pb2.Any()
        detail.Pack(error_details_pb2.BadRequest(field_violations=[violation]))
        status = status_pb2.Status(code=code_pb2.INVALID_ARGUMENT, message=self.message, details=[detail])
        return rpc_status.to_status(status)


class NotFound(ServiceError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(ServiceError):
    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(ServiceError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class Unavailable(ServiceError):
    code = grpc.StatusCode.UNAVAILABLE


class Unauthenticated(ServiceError):
    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(ServiceError):
    code = grpc.StatusCode.PERMISSION_DENIED


def field_violation(error: grpc.RpcError) -> error_details_pb2.BadRequest.FieldViolation | None:
    """The first field violation a failed call carried, if any (for clients and tests)."""
    status = rpc_status.from_call(error)
    if status is None:
        return None
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            if bad_request.field_violations:
                return bad_request.field_violations[0]
    return None
