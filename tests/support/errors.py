"""A failed call as a caller reads it: the status code and its google.rpc details."""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from services.kit.client import rpc_details


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
    details = rpc_details(error)
    return Failure(error.code(), details.info.reason, details.info.domain, dict(details.info.metadata),
                   dict(details.violations), [v.type for v in details.preconditions])
