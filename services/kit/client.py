"""Calling another service of the suite: one channel per target, the caller's own credentials, a
deadline on every call, retries of UNAVAILABLE with exponential backoff (tenacity), the trace
context in the metadata, and google.rpc error details turned back into the kit's errors, so a
handler catches NotFound or FailedPrecondition from another service as it would its own.

    points = ServiceClient.for_service(settings, "points", PointsServiceStub)
    hold = points.Hold(pp.HoldRequest(request_id=..., shop_id=..., member_id=..., points=100))
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import grpc
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from opentelemetry import propagate
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from services.kit.config import Settings
from services.kit.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    ServiceError,
    Unauthenticated,
)

S = TypeVar("S")
R = TypeVar("R", bound=Message)

# Codes at which the callee did not act, so the call may be sent again. A mutation's request_id
# makes a repeat safe even when a response was lost; other codes are answers, not accidents.
RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE})

_channels: dict[str, grpc.Channel] = {}
_channels_lock = threading.Lock()


def channel_for(address: str) -> grpc.Channel:
    """The process's one channel to `address` (a channel multiplexes every call to a target)."""
    with _channels_lock:
        channel = _channels.get(address)
        if channel is None:
            channel = grpc.insecure_channel(address, options=[
                ("grpc.keepalive_time_ms", 30_000),
                ("grpc.max_receive_message_length", 16 << 20),
                ("grpc.enable_retries", 0),  # retries are ours (below), with the caller's deadline
            ])
            _channels[address] = channel
        return channel


def close_channels() -> None:
    """Closes every channel (at shutdown, after the server stopped taking calls)."""
    with _channels_lock:
        channels = list(_channels.values())
        _channels.clear()
    for channel in channels:
        channel.close()


class CallFailed(ServiceError):
    """A call that failed without a domain answer (UNAVAILABLE after every retry, a deadline,
    an internal error of the callee). `code` is the gRPC code's name, so passed on unhandled it
    answers with the same code."""

    def __init__(self, message: str, *, code: str, reason: str, metadata: dict[str, str] | None = None):
        super().__init__(message, reason=reason, metadata=metadata)
        self.code = code


_BY_CODE: dict[grpc.StatusCode, type[ServiceError]] = {
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
}


@dataclass(frozen=True)
class RpcDetails:
    """The google.rpc details of a failed call: its ErrorInfo, BadRequest field violations and
    PreconditionFailure violations."""

    info: error_details_pb2.ErrorInfo
    violations: list[tuple[str, str]]
    preconditions: list[error_details_pb2.PreconditionFailure.Violation]


def rpc_details(error: grpc.RpcError) -> RpcDetails:
    info = error_details_pb2.ErrorInfo()
    violations: list[tuple[str, str]] = []
    preconditions: list[error_details_pb2.PreconditionFailure.Violation] = []
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    for detail in status.details if status else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            detail.Unpack(info)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations = [(v.field, v.description) for v in bad.field_violations]
        elif detail.Is(error_details_pb2.PreconditionFailure.DESCRIPTOR):
            failure = error_details_pb2.PreconditionFailure()
            detail.Unpack(failure)
            preconditions = list(failure.violations)
    return RpcDetails(info, violations, preconditions)


def error_from_rpc(error: grpc.RpcError) -> ServiceError:
    """The kit error a failed call stands for: its class from the code; reason, metadata,
    field violations and precondition subject from the details. `domain` names the callee."""
    code: grpc.StatusCode = error.code()  # type: ignore[attr-defined]
    message: str = error.details() or code.name  # type: ignore[attr-defined]
    details = rpc_details(error)
    info, violations = details.info, details.violations
    subject = details.preconditions[0].subject if details.preconditions else ""
    reason, metadata = info.reason or code.name, dict(info.metadata)
    result: ServiceError
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        result = InvalidArgument(violations or [("request", message)], reason=reason)
        result.metadata = metadata
    elif code == grpc.StatusCode.FAILED_PRECONDITION:
        result = FailedPrecondition(message, reason=reason, subject=subject, metadata=metadata)
    elif code in _BY_CODE:
        result = _BY_CODE[code](message, reason=reason, metadata=metadata)
    else:
        result = CallFailed(message, code=code.name, reason=reason, metadata=metadata)
    result.domain = info.domain  # type: ignore[attr-defined]
    return result


class ServiceClient(Generic[S]):
    """Calls to one service through its generated stub: `client.Method(request)` (or call()).
    Failures raise kit errors (see error_from_rpc), never grpc.RpcError."""

    def __init__(self, stub_type: Callable[[grpc.Channel], S], address: str, *, key: str, timeout: float = 5.0,
                 attempts: int = 4, backoff: float = 0.05, max_backoff: float = 1.0,
                 retry_codes: Iterable[grpc.StatusCode] = RETRYABLE):
        self.address = address
        self.stub = stub_type(channel_for(address))
        self.timeout, self.attempts = timeout, attempts
        self.backoff, self.max_backoff = backoff, max_backoff
        self.retry_codes = frozenset(retry_codes)
        self._auth = ("authorization", f"Bearer {key}")

    @classmethod
    def for_service(cls, settings: Settings, service: str, stub_type: Callable[[grpc.Channel], S], *,
                    key: str | None = None, **options: Any) -> ServiceClient[S]:
        """A client of `service` at its configured address (LOYALTY_<SERVICE>_ADDR), calling with
        this service's admin key unless a shop's `key` is given, with the configured deadline."""
        options.setdefault("timeout", settings.call_timeout_seconds)
        return cls(stub_type, settings.address(service), key=key or settings.admin_key, **options)

    def __getattr__(self, method: str) -> Callable[..., Any]:
        if method.startswith("_"):
            raise AttributeError(method)
        return lambda request, **kwargs: self.call(method, request, **kwargs)

    def call(self, method: str, request: Message, *, timeout: float | None = None) -> Any:
        """Sends `request` to `method`, retrying what RETRYABLE allows within one deadline."""
        rpc = getattr(self.stub, method)
        deadline = time.monotonic() + (timeout or self.timeout)

        def retryable(exc: BaseException) -> bool:
            # Another attempt only if it could still get a useful share of the deadline.
            return (isinstance(exc, grpc.RpcError) and exc.code() in self.retry_codes  # type: ignore[attr-defined]
                    and deadline - time.monotonic() > self.backoff)

        def attempt() -> Any:
            metadata = [self._auth]
            carrier: dict[str, str] = {}
            propagate.inject(carrier)
            metadata.extend(carrier.items())
            return rpc(request, metadata=metadata, timeout=max(deadline - time.monotonic(), 0.001))

        backoff = wait_exponential_jitter(multiplier=self.backoff, max=self.max_backoff, jitter=self.backoff)
        retrying = Retrying(
            retry=retry_if_exception(retryable),
            stop=stop_after_attempt(self.attempts),
            # A backoff never sleeps past the deadline.
            wait=lambda state: min(backoff(state), max(deadline - time.monotonic(), 0.0)),
            reraise=True,
        )
        try:
            return retrying(attempt)
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from exc


    def stream(self, method: str, request: Message, *, timeout: float) -> Iterator[Any]:
        """The messages of a server-streaming `method`, read as they come (flat memory for any
        length), within `timeout` seconds for the whole stream. Not retried: a stream that fails
        part-way raises the kit error (see error_from_rpc) where it failed, and the caller knows
        how far it got."""
        metadata = [self._auth]
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        metadata.extend(carrier.items())
        responses = getattr(self.stub, method)(request, metadata=metadata, timeout=timeout)
        try:
            yield from responses
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from exc
        finally:
            responses.cancel()
