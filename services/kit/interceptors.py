"""One server interceptor for the cross-cutting work of every call: decoding the request,
admission (a bounded number of calls in flight), authentication and shop scoping, a trace span,
mapping errors to gRPC statuses with google.rpc details, and a JSON access log. One wrapper
instead of five keeps the per-call Python work small.

The access log writes every failed call and every slow one, and one in `1 / sample` of the
others (each such line says how many calls it stands for): a line costs about as much as a
cached read itself, so logging every OK call would halve the throughput of the hot reads."""

from __future__ import annotations

import itertools
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import grpc
from google.protobuf.any_pb2 import Any as AnyProto
from google.protobuf.duration_pb2 import Duration
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status
from opentelemetry import propagate, trace
from sqlalchemy.exc import DBAPIError, StatementError

from services.kit import reasons
from services.kit.auth import KeyRing, authorize, bearer_token, set_principal
from services.kit.errors import FailedPrecondition, InvalidArgument, ServiceError, Unavailable
from services.kit.storage import is_connection_error
from services.kit.telemetry import Outage

log = logging.getLogger("loyalty.access")
errlog = logging.getLogger("loyalty.errors")
tracer = trace.get_tracer("loyalty.rpc")

_UNAUTHENTICATED_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.")


def _pack(message: object) -> AnyProto:
    packed = AnyProto()
    packed.Pack(message)
    return packed


def to_status(error: ServiceError, domain: str) -> grpc.Status:
    """A domain error as a gRPC status carrying ErrorInfo and, where they apply, BadRequest
    field violations or a PreconditionFailure."""
    details = [_pack(error_details_pb2.ErrorInfo(reason=error.reason, domain=domain, metadata=error.metadata))]
    if isinstance(error, InvalidArgument):
        details.append(
            _pack(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(field=f, description=d) for f, d in error.violations
                    ]
                )
            )
        )
    elif isinstance(error, Unavailable):
        delay = Duration()
        delay.FromMilliseconds(int(error.retry_after * 1000))
        details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
    elif isinstance(error, FailedPrecondition):
        details.append(
            _pack(
                error_details_pb2.PreconditionFailure(
                    violations=[
                        error_details_pb2.PreconditionFailure.Violation(
                            type=error.reason, subject=error.subject, description=error.message
                        )
                    ]
                )
            )
        )
    code = getattr(code_pb2, error.code)
    return rpc_status.to_status(status_pb2.Status(code=code, message=error.message, details=details))


class Admission:
    """At most `limit` calls run at once and at most `queue` more wait (up to `wait` seconds) for
    a turn; any call beyond is refused at once, so an outage or a burst never builds a backlog
    that outlives it, and threads stay free for health checks."""

    def __init__(self, *, service: str, limit: int, queue: int, wait: float):
        self.limit, self.queue, self.wait = limit, queue, wait
        self._slots = threading.Semaphore(limit)
        self._lock = threading.Lock()
        self._waiting = 0
        self.saturation = Outage(f"call capacity of {service}", errlog)

    def enter(self) -> None:
        """Takes a slot, or raises Unavailable (OVERLOADED)."""
        if not self._slots.acquire(blocking=False):
            with self._lock:
                queued = self._waiting < self.queue
                if queued:
                    self._waiting += 1
            try:
                admitted = queued and self._slots.acquire(timeout=self.wait)
            finally:
                if queued:
                    with self._lock:
                        self._waiting -= 1
            if not admitted:
                self.saturation.failed(f"{self.limit} calls in flight and {self.queue} waiting")
                raise Unavailable("the server is at capacity; retry shortly", reason=reasons.OVERLOADED,
                                  retry_after=max(self.wait, 0.1))
        self.saturation.recovered()

    def leave(self) -> None:
        self._slots.release()


class _Undecodable:
    """Stands for a request whose bytes are not its message (invalid UTF-8 in a string field, a
    wrong wire type, a truncated field): grpcio would answer INTERNAL before any interceptor."""

    __slots__ = ("error",)

    def __init__(self, error: Exception):
        self.error = error


def _decoding(deserializer: Callable[[bytes], object] | None) -> Callable[[bytes], object] | None:
    if deserializer is None:
        return None

    def decode(raw: bytes) -> object:
        try:
            return deserializer(raw)
        except Exception as exc:  # DecodeError, or UnicodeDecodeError from some runtimes
            return _Undecodable(exc)

    return decode


class AccessLog:
    """Which calls get a line: every failed or slow one, and every `every`-th of the others."""

    def __init__(self, *, sample: float, slow_ms: float):
        if not 0 < sample <= 1:
            raise ValueError(f"the access log sample must be in (0, 1], not {sample!r}")
        self.every = round(1 / sample)
        self.slow_seconds = slow_ms / 1000
        self._calls = itertools.count()  # next() is atomic under the GIL: no lock per call

    def write(self, method: str, request: object, code: str, start: float, error_id: str) -> None:
        seconds = time.perf_counter() - start
        sampled = 1
        if code == "OK" and seconds < self.slow_seconds:
            if next(self._calls) % self.every:
                return
            sampled = self.every
        if log.isEnabledFor(logging.INFO):
            log.info("rpc", extra={"method": method, "code": code, "ms": round(seconds * 1000, 2),
                                   "shop_id": getattr(request, "shop_id", ""),
                                   "request_id": getattr(request, "request_id", ""), "error_id": error_id,
                                   "sampled": sampled})


class ServiceInterceptor(grpc.ServerInterceptor):
    """`access_log_sample` is the share of successful, fast calls that get a line (1 logs every
    call); a call slower than `slow_call_ms`, or one that fails, is always logged."""

    def __init__(self, *, service: str, keyring: KeyRing, admin_methods: frozenset[str], access_log: bool,
                 admission: Admission | None = None, access_log_sample: float = 0.01,
                 slow_call_ms: float = 250.0):
        self.domain = f"{service}.loyalty"
        self.keyring = keyring
        self.admin_methods = admin_methods
        self.access_log = AccessLog(sample=access_log_sample, slow_ms=slow_call_ms) if access_log else None
        self.admission = admission
        self._wrapped: dict[str, grpc.RpcMethodHandler] = {}
        self._tracing = _traced()
        self._tracing_checked_at = time.monotonic()

    def _tracing_on(self) -> bool:
        """Whether calls get spans. Asking OpenTelemetry costs an environment lookup per call
        while no provider is set, so it is asked at most once a second until one is (a provider,
        once set, cannot be replaced)."""
        if self._tracing:
            return True
        now = time.monotonic()
        if now - self._tracing_checked_at >= 1.0:
            self._tracing_checked_at = now
            self._tracing = _traced()
        return self._tracing

    def intercept_service(self, continuation: Callable, handler_call_details: grpc.HandlerCallDetails):
        method = handler_call_details.method
        wrapped = self._wrapped.get(method)
        if wrapped is not None:
            return wrapped
        handler = continuation(handler_call_details)
        if handler is None or method.startswith(_UNAUTHENTICATED_PREFIXES):
            return handler
        wrapped = self._wrap(method, handler)
        self._wrapped[method] = wrapped
        return wrapped

    def _wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        admin_only = method in self.admin_methods
        decode = _decoding(handler.request_deserializer)
        if handler.unary_unary is not None:
            inner = handler.unary_unary

            def unary(request: object, context: grpc.ServicerContext) -> object:
                return self._call(method, admin_only, inner, request, context)

            return grpc.unary_unary_rpc_method_handler(unary, decode, handler.response_serializer)
        if handler.unary_stream is not None:
            inner_stream = handler.unary_stream

            def unary_stream(request: object, context: grpc.ServicerContext) -> Iterator:
                yield from self._stream(method, admin_only, inner_stream, request, context)

            return grpc.unary_stream_rpc_method_handler(unary_stream, decode, handler.response_serializer)
        raise NotImplementedError(f"{method}: only unary and server-streaming calls are supported")

    def _enter(self, admin_only: bool, request: object, context: grpc.ServicerContext) -> tuple:
        metadata = context.invocation_metadata()
        principal = self.keyring.authenticate(bearer_token(metadata))
        if isinstance(request, _Undecodable):
            raise InvalidArgument([("request", f"not a valid encoding of this call's request ({request.error})")],
                                  reason=reasons.MALFORMED_REQUEST)
        authorize(principal, getattr(request, "shop_id", None), admin_only=admin_only)
        set_principal(principal)
        return metadata

    def _call(self, method: str, admin_only: bool, inner: Callable, request: object,
              context: grpc.ServicerContext) -> object:
        start = time.perf_counter()
        status: grpc.Status | None = None
        error_id = ""
        code = "OK"
        admitted = False
        try:
            if self.admission is not None:
                self.admission.enter()
                admitted = True
            metadata = self._enter(admin_only, request, context)
            with tracer.start_as_current_span(
                method, context=_parent(metadata), kind=trace.SpanKind.SERVER
            ) if self._tracing_on() else _NOOP:
                return inner(request, context)
        except Exception as exc:
            code, status, error_id = self._failure(method, exc)
        finally:
            if admitted:
                self.admission.leave()
            if self.access_log is not None:
                self.access_log.write(method, request, code, start, error_id)
        context.abort_with_status(status)

    def _stream(self, method: str, admin_only: bool, inner: Callable, request: object,
                context: grpc.ServicerContext) -> Iterator:
        start = time.perf_counter()
        status: grpc.Status | None = None
        error_id = ""
        code = "OK"
        admitted = False
        try:
            if self.admission is not None:
                self.admission.enter()
                admitted = True
            self._enter(admin_only, request, context)
            yield from inner(request, context)
        except Exception as exc:
            code, status, error_id = self._failure(method, exc)
        finally:
            if admitted:
                self.admission.leave()
            if self.access_log is not None:
                self.access_log.write(method, request, code, start, error_id)
        if status is not None:
            context.abort_with_status(status)

    def _failure(self, method: str, exc: Exception) -> tuple[str, grpc.Status, str]:
        """(code, status, error id) for a failed call; unexpected ones are logged with their traceback."""
        if isinstance(exc, ValueError | StatementError) and "NUL (0x00)" in str(exc):
            # PostgreSQL text cannot hold NUL characters; the driver refuses before sending ("A string
            # literal cannot contain NUL (0x00) characters"; not any message with "NULL" in its SQL).
            exc = InvalidArgument([("request", "text fields must not contain NUL characters")])
        elif isinstance(exc, DBAPIError) and is_connection_error(exc):
            # A path that reached the engine without Database's retries (a streamed read).
            exc = Unavailable("the database is unreachable; retry shortly", reason=reasons.DATABASE_UNAVAILABLE)
        if isinstance(exc, ServiceError):
            return exc.code, to_status(exc, self.domain), ""
        error_id = uuid.uuid4().hex[:12]
        errlog.exception("unexpected error", extra={"method": method, "error_id": error_id})
        return "INTERNAL", _internal(error_id, self.domain), error_id


class _NoopContext:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


_NOOP = _NoopContext()


def _traced() -> bool:
    """Spans only when a tracer provider is configured: the no-op path costs nothing."""
    return not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider | trace.NoOpTracerProvider)


def _parent(metadata: tuple | None) -> object:
    carrier = {k: v for k, v in metadata or () if k in ("traceparent", "tracestate")}
    return propagate.extract(carrier) if carrier else None


def _internal(error_id: str, domain: str) -> grpc.Status:
    info = error_details_pb2.ErrorInfo(reason=reasons.INTERNAL, domain=domain, metadata={"error_id": error_id})
    return rpc_status.to_status(
        status_pb2.Status(
            code=code_pb2.INTERNAL, message=f"internal error (error id {error_id})", details=[_pack(info)]
        )
    )
