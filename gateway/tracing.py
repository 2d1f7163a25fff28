"""One trace per HTTP request, continued from the caller's `traceparent` when it sends one, and
carried into every gRPC call the request makes (upstream.py injects the current context)."""

from __future__ import annotations

from fastapi import FastAPI, Request, Response
from opentelemetry import context, propagate, trace
from starlette.middleware.base import RequestResponseEndpoint

tracer = trace.get_tracer("loyalty.gateway")


def install(app: FastAPI) -> None:
    @app.middleware("http")
    async def _trace(request: Request, call_next: RequestResponseEndpoint) -> Response:
        parent = propagate.extract(dict(request.headers))
        token = context.attach(parent)
        try:
            route = request.scope.get("route")
            name = f"{request.method} {getattr(route, 'path', request.url.path)}"
            with tracer.start_as_current_span(name, kind=trace.SpanKind.SERVER) as span:
                span.set_attribute("http.request.method", request.method)
                span.set_attribute("url.path", request.url.path)
                response = await call_next(request)
                span.set_attribute("http.response.status_code", response.status_code)
                return response
        finally:
            context.detach(token)
