"""The kit's interceptor on a real gRPC server: unexpected failures become INTERNAL with an error
id (never a traceback), an unreachable database UNAVAILABLE with a retry delay, every call is
logged as JSON, and trace context flows from the caller through the span into emitted events."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from loyalty.common.v1 import envelope_pb2
from loyalty.membership.v1 import events_pb2
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy import MetaData, create_engine, select

from services.kit.auth import KeyRing
from services.kit.errors import NotFound, Unavailable
from services.kit.interceptors import ServiceInterceptor
from services.kit.storage import Database
from services.kit.tables import kit_tables
from services.kit.telemetry import JsonFormatter
from tests.backends import free_port
from tests.integration.test_overload import retry_delay
from tests.support.tracing import recorded_spans

KEY = "admin-key"
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
metadata = MetaData()
kit = kit_tables(metadata)
Probe = tuple[grpc.Channel, Database]  # a channel to the probe server, and its database


@pytest.fixture(scope="module")
def spans() -> Iterator[InMemorySpanExporter]:
    with recorded_spans() as exporter:
        yield exporter


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, spans: InMemorySpanExporter) -> Iterator[Probe]:
    db = Database(f"sqlite:///{tmp_path_factory.mktemp('icpt') / 'kit.db'}", service="probe", kit=kit)
    metadata.create_all(db.engine)

    def boom(request: bytes, context: grpc.ServicerContext) -> bytes:
        raise RuntimeError("a bug")

    def missing(request: bytes, context: grpc.ServicerContext) -> bytes:
        raise NotFound("no such thing", reason="THING_NOT_FOUND", metadata={"thing": "x"})

    def emit(request: bytes, context: grpc.ServicerContext) -> bytes:
        db.transact(lambda uow: uow.emit("shop-1", events_pb2.MemberLeft(shop_id="shop-1", member_id="m1")))
        return b""

    def away(request: bytes, context: grpc.ServicerContext) -> bytes:
        raise Unavailable("the database is unreachable", reason="DATABASE_UNAVAILABLE", retry_after=2.5)

    def refused(request: bytes, context: grpc.ServicerContext) -> bytes:
        # A real refused connection, reaching the engine without the Database's retries.
        engine = create_engine(f"postgresql+psycopg2://nobody@127.0.0.1:{free_port()}/none")
        try:
            with engine.connect():
                return b""
        finally:
            engine.dispose()

    def fine(request: bytes, context: grpc.ServicerContext) -> bytes:
        return b""

    handlers = {name: grpc.unary_unary_rpc_method_handler(fn) for name, fn in
                (("Boom", boom), ("Missing", missing), ("Emit", emit), ("Away", away), ("Refused", refused),
                 ("Fine", fine))}
    srv = grpc.server(futures.ThreadPoolExecutor(4), interceptors=[ServiceInterceptor(
        service="probe", keyring=KeyRing(KEY, b"s"), admin_methods=frozenset(), access_log=True)])
    srv.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("test.Probe", handlers)])
    port = srv.add_insecure_port("127.0.0.1:0")
    srv.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield channel, db
    channel.close()
    srv.stop(0)


def call(channel: grpc.Channel, method: str, extra: tuple = ()) -> bytes:
    return channel.unary_unary(f"/test.Probe/{method}")(b"", metadata=[("authorization", f"Bearer {KEY}"), *extra])


def test_an_unexpected_failure_is_internal_with_an_error_id_and_no_traceback(
    server: Probe, caplog: pytest.LogCaptureFixture
) -> None:
    channel, _ = server
    with caplog.at_level(logging.INFO), pytest.raises(grpc.RpcError) as caught:
        call(channel, "Boom")
    assert caught.value.code() == grpc.StatusCode.INTERNAL
    assert "a bug" not in caught.value.details() and "Traceback" not in caught.value.details()
    info = error_details_pb2.ErrorInfo()
    rpc_status.from_call(caught.value).details[0].Unpack(info)
    error_id = info.metadata["error_id"]
    assert error_id in caught.value.details() and info.reason == "INTERNAL"
    logged = [r for r in caplog.records if getattr(r, "error_id", "") == error_id]
    assert any(r.exc_info for r in logged)  # the traceback goes to the log, with the id


def test_domain_errors_carry_reason_domain_and_metadata(server: Probe) -> None:
    channel, _ = server
    with pytest.raises(grpc.RpcError) as caught:
        call(channel, "Missing")
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    info = error_details_pb2.ErrorInfo()
    rpc_status.from_call(caught.value).details[0].Unpack(info)
    assert (info.reason, info.domain, dict(info.metadata)) == ("THING_NOT_FOUND", "probe.loyalty", {"thing": "x"})


def test_every_call_is_logged_as_one_json_line(server: Probe, caplog: pytest.LogCaptureFixture) -> None:
    channel, _ = server
    with caplog.at_level(logging.INFO, logger="loyalty.access"), pytest.raises(grpc.RpcError):
        call(channel, "Missing")
    record = next(r for r in caplog.records if r.name == "loyalty.access")
    line = json.loads(JsonFormatter().format(record))
    assert line["method"] == "/test.Probe/Missing" and line["code"] == "NOT_FOUND" and line["ms"] >= 0


def test_successful_calls_are_sampled_and_each_line_says_how_many_calls_it_stands_for(
    server: Probe, caplog: pytest.LogCaptureFixture
) -> None:
    channel, _ = server
    with caplog.at_level(logging.INFO, logger="loyalty.access"):
        for _ in range(200):
            call(channel, "Fine")
        for _ in range(3):
            with pytest.raises(grpc.RpcError):
                call(channel, "Missing")
    lines = [json.loads(JsonFormatter().format(r)) for r in caplog.records if r.name == "loyalty.access"]
    fine = [line for line in lines if line["method"] == "/test.Probe/Fine"]
    failed = [line for line in lines if line["method"] == "/test.Probe/Missing"]
    assert len(fine) == 2 and all(line["code"] == "OK" and line["sampled"] == 100 for line in fine)
    assert len(failed) == 3 and all(line["sampled"] == 1 for line in failed)  # every failure is logged


def test_trace_context_flows_from_the_caller_into_the_span_and_the_event(
    server: Probe, spans: InMemorySpanExporter
) -> None:
    channel, db = server
    call(channel, "Emit", (("traceparent", TRACEPARENT),))
    trace_id = TRACEPARENT.split("-")[1]
    span = next(s for s in spans.get_finished_spans() if s.name == "/test.Probe/Emit")
    assert format(span.context.trace_id, "032x") == trace_id
    row = db.read(lambda c: c.execute(select(kit.outbox.c.envelope).order_by(kit.outbox.c.id.desc())).first())
    envelope = envelope_pb2.EventEnvelope.FromString(row.envelope)
    assert envelope.traceparent.split("-")[1] == trace_id and envelope.producer == "probe"


def test_calls_without_a_key_are_unauthenticated(server: Probe) -> None:
    channel, _ = server
    with pytest.raises(grpc.RpcError) as caught:
        channel.unary_unary("/test.Probe/Missing")(b"")
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_an_unreachable_database_is_unavailable_with_a_retry_delay(server: Probe) -> None:
    channel, _ = server
    for method, delay in (("Away", 2.5), ("Refused", 1.0)):
        with pytest.raises(grpc.RpcError) as caught:
            call(channel, method)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE, method
        info = error_details_pb2.ErrorInfo()
        rpc_status.from_call(caught.value).details[0].Unpack(info)
        assert (info.reason, info.domain) == ("DATABASE_UNAVAILABLE", "probe.loyalty")
        assert retry_delay(caught.value) == delay
