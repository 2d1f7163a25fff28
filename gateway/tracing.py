"""One trace per HTTP request: a SERVER span, continued from the caller's `traceparent` when it
sends one, current while the request runs, so that every gRPC call the request makes carries it
(upstream.py injects the current context into the call's metadata) and the services' spans join
the same trace. Spans are recorded only when a tracer provider is set up (LOYALTY_TRACE_EXPORTER);
otherwise this costs a no-op span per request."""

from __future__ import annotations

from fastapi import FastAPI
from opentelemetry import context, propagate, trace
from starlette.types import ASGIApp, Message, Receive, Scope, Send

tracer = trace.get_tracer("loyalty.gateway")


class TracingMiddleware:
    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        carrier = {key.decode("latin-1"): value.decode("latin-1") for key, value in scope["headers"]
                   if key in (b"traceparent", b"tracestate")}
        token = context.attach(propagate.extract(carrier)) if carrier else None
        try:
            method, path = scope["method"], scope["path"]
            with tracer.start_as_current_span(f"{method} {path}", kind=trace.SpanKind.SERVER) as span:
                recording = span.is_recording()
                if recording:
                    span.set_attribute("http.request.method", method)
                    span.set_attribute("url.path", path)

                async def send_traced(message: Message) -> None:
                    if recording and message["type"] == "http.response.start":
                        status = message["status"]
                        span.set_attribute("http.response.status_code", status)
                        if status >= 500:
                            span.set_status(trace.StatusCode.ERROR)
                    await send(message)

                try:
                    await self.app(scope, receive, send_traced)
                finally:
                    route = getattr(scope.get("route"), "path", None)
                    if recording and route:  # the route's template, not the path: one name per endpoint
                        span.update_name(f"{method} {route}")
                        span.set_attribute("http.route", route)
        finally:
            if token is not None:
                context.detach(token)


def install(app: FastAPI) -> None:
    """Adds the request's span around every route."""
    app.add_middleware(TracingMiddleware)
