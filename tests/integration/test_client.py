"""The kit's client of other services, against the real points and membership services: the
caller's credentials and deadline, error details decoded into the kit's errors, retries of
UNAVAILABLE only, and the trace context carried along."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from loyalty.membership.v1 import membership_service_pb2 as mpb
from loyalty.membership.v1 import membership_service_pb2_grpc as mgrpc
from loyalty.points.v1 import points_service_pb2 as pp
from loyalty.points.v1 import points_service_pb2_grpc as pgrpc
from opentelemetry.sdk.trace import TracerProvider

from services.kit.client import CallFailed, ServiceClient, error_from_rpc
from services.kit.config import Settings
from services.kit.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
)
from tests.support.builders import PointsShop, member_with_points, points_shop, rid
from tests.support.services import ServiceUnderTest, Shop


@pytest.fixture
def ps(points: ServiceUnderTest, shop: Shop) -> PointsShop:
    return points_shop(points, shop)


@pytest.fixture
def points_client(points: ServiceUnderTest, settings: Settings,
                  monkeypatch: pytest.MonkeyPatch) -> ServiceClient[pgrpc.PointsServiceStub]:
    """Points as another service reaches it: the configured address and this service's admin key."""
    monkeypatch.setenv("LOYALTY_POINTS_ADDR", points.address)
    return ServiceClient.for_service(settings, "points", pgrpc.PointsServiceStub)


def test_a_call_carries_the_services_own_key_to_the_configured_address(
    ps: PointsShop, points_client: ServiceClient
) -> None:
    member_id = member_with_points(ps, 250)
    balance = points_client.GetBalance(pp.GetBalanceRequest(shop_id=ps.shop_id, member_id=member_id))
    assert balance.available >= 250


def test_field_violations_come_back_as_invalid_argument(points_client: ServiceClient) -> None:
    with pytest.raises(InvalidArgument) as caught:
        points_client.GetBalance(pp.GetBalanceRequest(shop_id="", member_id="m"))
    assert ("shop_id", "required") in caught.value.violations
    assert caught.value.reason == "SHOP_ID_REQUIRED"
    assert caught.value.domain == "points.loyalty"


def test_not_found_keeps_its_reason(ps: PointsShop, points_client: ServiceClient) -> None:
    with pytest.raises(NotFound) as caught:
        points_client.GetBalance(pp.GetBalanceRequest(shop_id=ps.shop_id, member_id="nobody"))
    assert caught.value.reason == "MEMBER_NOT_FOUND"
    assert caught.value.metadata == {"member_id": "nobody"}


def test_a_failed_precondition_keeps_its_subject_and_metadata(ps: PointsShop, points_client: ServiceClient) -> None:
    member_id = member_with_points(ps, 10)
    available = points_client.GetBalance(pp.GetBalanceRequest(shop_id=ps.shop_id, member_id=member_id)).available
    with pytest.raises(FailedPrecondition) as caught:
        points_client.Hold(pp.HoldRequest(request_id=rid(), shop_id=ps.shop_id, member_id=member_id,
                                          points=available + 1))
    error = caught.value
    assert (error.reason, error.subject) == ("INSUFFICIENT_POINTS", f"member/{member_id}")
    assert error.metadata["available"] == str(available)
    assert error.metadata["requested"] == str(available + 1)


def test_a_shop_key_is_refused_for_another_shop_and_a_bad_key_is_unauthenticated(
    membership: ServiceUnderTest, settings: Settings, shop: Shop
) -> None:
    as_shop = ServiceClient(mgrpc.MembershipServiceStub, membership.address, key=shop.key)
    with pytest.raises(PermissionDenied):
        as_shop.GetProgram(mpb.GetProgramRequest(shop_id="another-shop"))
    forged = ServiceClient(mgrpc.MembershipServiceStub, membership.address, key="lk_forged")
    with pytest.raises(Unauthenticated):
        forged.GetProgram(mpb.GetProgramRequest(shop_id=shop.shop_id))


# ----- retries, deadlines and trace context, against a small server of our own --------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RecordingHealth(health.HealthServicer):
    """A health service that remembers each call's metadata and can answer with a given code."""

    def __init__(self, fail_with: grpc.StatusCode | None = None, delay: float = 0.0):
        super().__init__()
        self.calls: list[dict[str, str]] = []
        self.fail_with, self.delay = fail_with, delay

    def Check(self, request: health_pb2.HealthCheckRequest, context: grpc.ServicerContext) -> object:
        self.calls.append(dict(context.invocation_metadata()))
        time.sleep(self.delay)
        if self.fail_with is not None:
            context.abort(self.fail_with, "refused on purpose")
        return super().Check(request, context)


def serve(servicer: RecordingHealth, port: int) -> grpc.Server:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    assert server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    return server


@pytest.fixture
def recording() -> Iterator[tuple[RecordingHealth, str]]:
    servicer, port = RecordingHealth(), free_port()
    server = serve(servicer, port)
    yield servicer, f"127.0.0.1:{port}"
    server.stop(0)


def test_unavailable_is_retried_with_backoff_until_the_service_is_up() -> None:
    port = free_port()
    servicer = RecordingHealth()
    started: list[grpc.Server] = []
    timer = threading.Timer(0.4, lambda: started.append(serve(servicer, port)))
    timer.start()
    client = ServiceClient(health_pb2_grpc.HealthStub, f"127.0.0.1:{port}", key="k", timeout=5, attempts=10,
                           backoff=0.05, max_backoff=0.2)
    try:
        answer = client.Check(health_pb2.HealthCheckRequest())
    finally:
        timer.join()
        for server in started:
            server.stop(0)
    assert answer.status == health_pb2.HealthCheckResponse.SERVING
    assert len(servicer.calls) == 1


def test_unavailable_after_every_attempt_is_a_call_failed_within_the_deadline() -> None:
    client = ServiceClient(health_pb2_grpc.HealthStub, f"127.0.0.1:{free_port()}", key="k", timeout=1.0,
                           attempts=50, backoff=0.05, max_backoff=0.2)
    started = time.monotonic()
    with pytest.raises(CallFailed) as caught:
        client.Check(health_pb2.HealthCheckRequest())
    elapsed = time.monotonic() - started
    # The last attempt fails for want of a server or of time left, depending on the machine's load.
    assert caught.value.code in {"UNAVAILABLE", "DEADLINE_EXCEEDED"}
    assert 0.2 < elapsed < 2.5  # it backed off and retried, and gave up at its deadline (1 s), not after 50 tries


@pytest.mark.parametrize("code", [grpc.StatusCode.INTERNAL, grpc.StatusCode.DEADLINE_EXCEEDED,
                                  grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.ABORTED])
def test_codes_other_than_unavailable_are_not_retried(code: grpc.StatusCode) -> None:
    servicer, port = RecordingHealth(fail_with=code), free_port()
    server = serve(servicer, port)
    try:
        client = ServiceClient(health_pb2_grpc.HealthStub, f"127.0.0.1:{port}", key="k", attempts=5)
        with pytest.raises(Exception) as caught:
            client.Check(health_pb2.HealthCheckRequest())
    finally:
        server.stop(0)
    assert len(servicer.calls) == 1
    assert caught.value.code == code.name  # type: ignore[attr-defined]


def test_each_call_carries_the_key_and_the_trace_context(recording: tuple[RecordingHealth, str]) -> None:
    servicer, address = recording
    client = ServiceClient(health_pb2_grpc.HealthStub, address, key="svc-key")
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("redeem") as span:
        client.Check(health_pb2.HealthCheckRequest())
        trace_id = format(span.get_span_context().trace_id, "032x")
    (metadata,) = servicer.calls
    assert metadata["authorization"] == "Bearer svc-key"
    assert trace_id in metadata["traceparent"]


def test_a_slow_callee_is_cut_off_at_the_deadline(recording: tuple[RecordingHealth, str]) -> None:
    servicer, address = recording
    servicer.delay = 1.0
    client = ServiceClient(health_pb2_grpc.HealthStub, address, key="k", timeout=0.2)
    started = time.monotonic()
    with pytest.raises(CallFailed) as caught:
        client.Check(health_pb2.HealthCheckRequest())
    assert caught.value.code == "DEADLINE_EXCEEDED"
    assert time.monotonic() - started < 0.9


def test_an_error_without_details_still_decodes() -> None:
    class Bare(grpc.RpcError):
        def code(self) -> grpc.StatusCode:
            return grpc.StatusCode.NOT_FOUND

        def details(self) -> str:
            return "gone"

        def trailing_metadata(self) -> tuple:
            return ()

    error = error_from_rpc(Bare())
    assert isinstance(error, NotFound)
    assert (error.message, error.reason) == ("gone", "NOT_FOUND")
