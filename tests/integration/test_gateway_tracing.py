"""One trace per request, from the browser into the services, on both backends: the gateway's
SERVER span continues the caller's `traceparent` (or starts a trace), and the span of every
service the request calls belongs to the same trace, under the gateway's span. The
services run in this process, so one in-memory exporter sees both sides."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from tests.backends import wait_until
from tests.conftest import Backend, ServiceUnderTest, Shop
from tests.support.gateway import Storefront, gateway_settings, start_gateway
from tests.support.probe import PATH, add_probe
from tests.support.tracing import recorded_spans

ELIGIBILITY = "/loyalty.membership.v1.MembershipService/CheckJoinEligibility"


@pytest.fixture(scope="module")
def spans() -> Iterator[InMemorySpanExporter]:
    with recorded_spans() as exporter:
        yield exporter


@pytest.fixture(scope="module")
def gateway(backend: Backend, suite: dict[str, ServiceUnderTest], spans: InMemorySpanExporter,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Storefront]:
    running = add_probe(start_gateway(gateway_settings(backend, suite, tmp_path_factory.mktemp("traced"))))
    yield Storefront(running)
    running.stop()


def of_trace(spans: InMemorySpanExporter, trace_id: int) -> list[ReadableSpan]:
    return [s for s in spans.get_finished_spans() if s.context.trace_id == trace_id]


def ancestors(spans: InMemorySpanExporter, span: ReadableSpan) -> list[ReadableSpan]:
    """The spans `span` descends from, nearest first (the gateway's own spans of its dependencies
    and endpoint lie between its request's span and the services')."""
    by_id = {s.context.span_id: s for s in of_trace(spans, span.context.trace_id)}
    found: list[ReadableSpan] = []
    while span.parent is not None and span.parent.span_id in by_id:
        span = by_id[span.parent.span_id]
        found.append(span)
    return found


def traced_call(gateway: Storefront, spans: InMemorySpanExporter, token: str,
                continued: bool) -> tuple[str | None, ReadableSpan, ReadableSpan]:
    """One probe request (with a new `traceparent` when `continued`): what it sent, the gateway's
    span of it, and membership's span of the call it made. The services look for a tracer
    provider once a second: until they see the test's, their calls make no span, so the request
    is repeated until one does."""
    found: list[tuple[str | None, ReadableSpan, ReadableSpan]] = []

    def one() -> bool:
        traceparent = f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01" if continued else None
        headers = {"authorization": f"Bearer {token}", **({"traceparent": traceparent} if traceparent else {})}
        before = {s.context.span_id for s in spans.get_finished_spans()}
        with gateway.client() as http:
            assert http.get(PATH, headers=headers).status_code == 200
        wait_until(lambda: any(s.name == f"GET {PATH}" and s.context.span_id not in before
                               for s in spans.get_finished_spans()), "the gateway's span")
        served = next(s for s in spans.get_finished_spans()
                      if s.name == f"GET {PATH}" and s.context.span_id not in before)
        called = [s for s in spans.get_finished_spans()
                  if s.name == ELIGIBILITY and s.context.trace_id == served.context.trace_id]
        if called:
            found.append((traceparent, served, called[0]))
        return bool(called)

    wait_until(one, "membership's span of the call")
    return found[0]


def test_the_callers_trace_runs_through_the_gateway_into_the_services(
        gateway: Storefront, spans: InMemorySpanExporter, shop: Shop) -> None:
    token = gateway.token(shop, "b-traced")
    sent, served, called = traced_call(gateway, spans, token, continued=True)
    assert sent is not None
    _, trace_id, parent_id, _ = sent.split("-")
    assert format(served.context.trace_id, "032x") == trace_id  # the caller's trace is kept
    assert served.parent is not None and format(served.parent.span_id, "016x") == parent_id
    assert served.kind == SpanKind.SERVER and served.attributes["http.route"] == PATH
    assert served.attributes["http.response.status_code"] == 200
    assert called.context.trace_id == served.context.trace_id  # one trace across the services
    assert served in ancestors(spans, called) and called.kind == SpanKind.SERVER


def test_a_request_without_a_trace_starts_one_that_the_services_join(
        gateway: Storefront, spans: InMemorySpanExporter, shop: Shop) -> None:
    token = gateway.token(shop, "b-untraced")
    _, served, called = traced_call(gateway, spans, token, continued=False)
    assert served.parent is None  # a new trace, rooted at the gateway
    assert called.context.trace_id == served.context.trace_id
    assert served in ancestors(spans, called)


def test_the_platforms_probes_are_not_traced(gateway: Storefront, spans: InMemorySpanExporter,
                                              shop: Shop) -> None:
    trace_id = secrets.token_hex(16)
    with gateway.client(headers={"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"}) as http:
        assert http.get("/healthz").status_code == 200 and http.get("/readyz").status_code == 200
    traced_call(gateway, spans, gateway.token(shop, "b-after"), continued=True)  # finishes after the probes
    assert of_trace(spans, int(trace_id, 16)) == []
