"""Errors as RFC 9457 problem details (`application/problem+json`). A gRPC failure keeps its
reason (`INSUFFICIENT_POINTS`), its field violations and its retry delay, under the HTTP status
the gRPC code maps to; bad input is a 4xx, never a 500."""

from __future__ import annotations

import logging
from typing import Any

import grpc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from google.rpc import error_details_pb2, status_pb2
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("loyalty.gateway")

MEDIA_TYPE = "application/problem+json"
TYPE_BASE = "https://loyalty-suite.dev/problems/"

# The standard mapping (google.rpc.Code → HTTP), as grpc-gateway and Google's APIs use it.
# FAILED_PRECONDITION is 409: the request is well formed but the resource's state refuses it.
HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}
TITLES = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
          409: "Conflict", 413: "Content Too Large", 415: "Unsupported Media Type", 422: "Unprocessable Content",
          429: "Too Many Requests", 499: "Client Closed Request", 500: "Internal Server Error",
          501: "Not Implemented", 502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}


class Problem(Exception):
    """An answer other than success. `reason` is machine-readable (the gRPC reason when there is
    one); `errors` are field violations ({"field", "message"})."""

    def __init__(self, status: int, detail: str, *, reason: str = "", errors: list[dict[str, str]] | None = None,
                 retry_after: int | None = None, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status, self.detail, self.reason = status, detail, reason
        self.errors = errors or []
        self.headers = dict(headers or {})
        if retry_after is not None:
            self.headers["Retry-After"] = str(max(1, retry_after))

    def body(self, instance: str = "") -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": TYPE_BASE + self.reason.lower().replace("_", "-") if self.reason else "about:blank",
            "title": TITLES.get(self.status, "Error"), "status": self.status, "detail": self.detail,
        }
        if self.reason:
            body["reason"] = self.reason
        if self.errors:
            body["errors"] = self.errors
        if instance:
            body["instance"] = instance
        return body

    def response(self, instance: str = "") -> JSONResponse:
        return JSONResponse(self.body(instance), status_code=self.status, headers=self.headers, media_type=MEDIA_TYPE)


def from_rpc_error(error: grpc.RpcError) -> Problem:
    """A gRPC failure from a service, as the problem the buyer gets."""
    code = error.code() if callable(getattr(error, "code", None)) else grpc.StatusCode.UNKNOWN
    message = error.details() if callable(getattr(error, "details", None)) else ""
    reason, errors, retry_after = "", [], None
    for key, value in _trailing(error):
        if key != "grpc-status-details-bin" or not isinstance(value, bytes):
            continue
        status = status_pb2.Status.FromString(value)
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                reason = info.reason
            elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                errors = [{"field": v.field, "message": v.description} for v in bad.field_violations]
            elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                retry = error_details_pb2.RetryInfo()
                detail.Unpack(retry)
                retry_after = retry.retry_delay.seconds + (1 if retry.retry_delay.nanos else 0)
    status = HTTP_STATUS.get(code)
    if status is None:  # INTERNAL, UNKNOWN, DATA_LOSS: a fault upstream, not the caller's
        log.error("upstream failed", extra={"grpc_code": code.name, "detail": message})
        return Problem(502, "a service behind the gateway failed; try again later", reason=reason or "UPSTREAM_FAILED")
    if status == 503 and retry_after is None:
        retry_after = 1
    if status in (503, 504) and not reason:  # the channel's own failure: its text names our addresses
        log.warning("upstream unreachable", extra={"grpc_code": code.name, "detail": message})
        return Problem(status, "a service behind the gateway does not answer; try again later",
                       reason="UPSTREAM_UNAVAILABLE", retry_after=retry_after)
    return Problem(status, message or code.name, reason=reason, errors=errors, retry_after=retry_after)


def _trailing(error: grpc.RpcError) -> tuple[tuple[str, str | bytes], ...]:
    try:
        return tuple(error.trailing_metadata() or ())
    except Exception:  # an error without trailers has no details to read
        return ()


PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem", "type": "object", "required": ["type", "title", "status", "detail"],
    "description": "An error (RFC 9457 problem details).",
    "properties": {
        "type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
        "detail": {"type": "string"}, "instance": {"type": "string"},
        "reason": {"type": "string", "description": "Machine-readable: the service's reason (INSUFFICIENT_POINTS)."},
        "errors": {"type": "array", "description": "The fields that are not valid.", "items": {
            "type": "object", "required": ["field", "message"],
            "properties": {"field": {"type": "string"}, "message": {"type": "string"}}}},
    },
}
# What any operation may answer, besides what its route declares: by what it takes.
_SIGNED = {401: "No valid credentials.", 403: "The credentials do not reach this (another shop, an origin "
           "the shop does not list).", 429: "Over the shop's or the buyer's rate limit: see Retry-After.",
           502: "A service behind the gateway failed.", 503: "A service behind the gateway does not answer: "
           "see Retry-After.", 504: "A service behind the gateway did not answer in time."}
_WITH_INPUT = {422: "The request is not valid: `errors` names the fields."}
_WITH_BODY = {400: "The body is not JSON."}


def _document(schema: dict[str, Any]) -> None:
    """Declares in the OpenAPI schema the problems every operation can answer (in place)."""
    schema.setdefault("components", {}).setdefault("schemas", {})["Problem"] = PROBLEM_SCHEMA
    schema["components"]["schemas"].pop("HTTPValidationError", None)
    schema["components"]["schemas"].pop("ValidationError", None)
    content = {MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}
    retry_after = {"Retry-After": {"description": "Seconds to wait before trying again.",
                                   "schema": {"type": "integer"}}}
    for path in schema.get("paths", {}).values():
        for operation in path.values():
            answers = operation.setdefault("responses", {})
            expected = dict(_SIGNED) if operation.get("security") else {}
            if operation.get("parameters") or operation.get("requestBody"):
                expected.update(_WITH_INPUT)
            if operation.get("requestBody"):
                expected.update(_WITH_BODY)
            for status, description in expected.items():
                answers.setdefault(str(status), {"description": description})
            for status, answer in answers.items():
                declared = answer.get("content", {})
                fastapis = "HTTPValidationError" in str(declared)
                if status.isdigit() and int(status) >= 400 and (not declared or fastapis):
                    answer["content"] = content
                    if fastapis:
                        answer["description"] = _WITH_INPUT[422]
                    if status in ("429", "503"):
                        answer["headers"] = retry_after
            operation["responses"] = dict(sorted(answers.items()))


def install(app: FastAPI) -> None:
    """Every error the app can meet answers as a problem, and /openapi.json says which."""
    build_schema = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            _document(build_schema())
        return app.openapi_schema

    app.openapi = openapi

    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return exc.response(request.url.path)

    @app.exception_handler(grpc.RpcError)
    async def _rpc(request: Request, exc: grpc.RpcError) -> JSONResponse:
        return from_rpc_error(exc).response(request.url.path)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"field": ".".join(str(p) for p in e.get("loc", ()) if p not in ("body", "query", "path", "header")),
                   "message": str(e.get("msg", "invalid"))} for e in exc.errors()]
        reason = "INVALID_" + (errors[0]["field"].split(".")[0].upper() or "REQUEST") if errors else "INVALID_REQUEST"
        return Problem(422, "the request is not valid", reason=reason, errors=errors).response(request.url.path)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return Problem(exc.status_code, str(exc.detail), headers=dict(exc.headers or {})).response(request.url.path)

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:
        log.exception("gateway bug", extra={"path": request.url.path})
        return Problem(500, "the gateway failed to answer", reason="GATEWAY_FAILED").response()
