"""One trace per HTTP request, across the services it calls.

FastAPI opens the request's SERVER span itself (its native OpenTelemetry support): the span
continues the caller's `traceparent` (or starts a trace), is named by the route
(`GET /v1/storefront/card`), carries the status, and is current while the route runs, with
child spans for the dependencies and the endpoint. upstream.py injects the current context into
every gRPC call's metadata, and the services' interceptor continues it, so the services' spans
join the request's trace. The gateway only chooses what is traced: every request but the
platform's probes. Nothing is recorded unless a tracer provider is set up
(LOYALTY_TRACE_EXPORTER): then each request costs a few no-op calls."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from fastapi.telemetry import TelemetryConfig

UNTRACED_PATHS = frozenset({"/healthz", "/readyz"})  # asked every few seconds by the platform


def _untraced(scope: MutableMapping[str, Any]) -> bool:
    return scope.get("path") in UNTRACED_PATHS


TELEMETRY: TelemetryConfig = {"exclude": _untraced}
