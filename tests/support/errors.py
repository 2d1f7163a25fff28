"""A failed call as a caller reads it: the status code and its google.rpc details."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status


@dataclass
class Failure:
    """A failed call as a caller sees it: the code and the google.rpc details."""

    code: grpc.StatusCode
    reason: str
    domain: str
    metadata: dict[str, str]
    fields: dict[str, str]  # BadRequest field violations
    preconditions: list[str]  # PreconditionFailure violation types


def failure_of(error: grpc.RpcError) -> Failure:
    status = rpc_status.from_call(error)
    info, fields, preconditions = error_details_pb2.ErrorInfo(), {}, []
    for detail in status.details if status else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            detail.Unpack(info)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields = {v.field: v.description for v in bad.field_violations}
        elif detail.Is(error_details_pb2.PreconditionFailure.DESCRIPTOR):
            failure = error_details_pb2.PreconditionFailure()
            detail.Unpack(failure)
            preconditions = [v.type for v in failure.violations]
    return Failure(error.code(), info.reason, info.domain, dict(info.metadata), fields, preconditions)
