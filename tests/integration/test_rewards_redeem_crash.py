"""Crash safety of redemption, on PostgreSQL: the rewards service, served as a process of its own
(`python -m tests.support.rewards_crash serve`: the service with a test-only fault hook), is
SIGKILLed right after each step of each redemption saga took effect and before the saga recorded
it; once restarted, its recovery job completes or undoes the redemption by itself. Afterwards the
member's points (balance and holds), the reward's stock and the member's limit agree with the
redemption's final state, and nothing was taken or given twice.

Membership and points run in this process on a Redis database of their own, so that the served
rewards is the only reader of membership's events there."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from loyalty.membership.v1 import membership_service_pb2_grpc as mgrpc
from loyalty.points.v1 import points_service_pb2 as pp
from loyalty.rewards.v1 import rewards_service_pb2 as rpb
from loyalty.rewards.v1 import rewards_service_pb2_grpc as rgrpc

from services import registry
from services.kit.cache import RedisCache
from services.kit.config import Settings
from services.kit.redis_bus import RedisStreamsBus
from services.points import reasons as points_reasons
from services.rewards import reasons
from services.rewards.redeeming import redemption_id_for
from tests.backends import free_port
from tests.support.builders import eventually, rid
from tests.support.redemptions import balance, get_redemption, ledger, points_api, redeem, refusal, stock_of
from tests.support.rewards import create_reward, fund, join_member
from tests.support.services import (
    ADMIN_KEY,
    AUTH_SECRET,
    PII_KEY,
    Authed,
    Backend,
    ServiceUnderTest,
    Shop,
    create_shop,
    start_service,
    stop_service,
)

ROOT = Path(__file__).resolve().parents[2]
PRICE = 100
STOCK = 5
REDIS_DB = 3  # this module's own Redis database: its streams and consumer groups


@dataclass
class World:
    backend: Backend
    membership: ServiceUnderTest
    points: ServiceUnderTest
    env: dict[str, str]
    crash_file: Path


@pytest.fixture(scope="module")
def world(backend: Backend, settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    if backend.name != "postgres":
        pytest.skip("crash tests run on PostgreSQL")
    redis_url = backend.redis_url.rsplit("/", 1)[0] + f"/{REDIS_DB}"
    bus = RedisStreamsBus(redis_url, block_ms=100, claim_idle_ms=500, claim_interval=0.5)
    started: dict[str, ServiceUnderTest] = {}
    for name in ("membership", "points"):
        started[name] = start_service(registry.entry(name).server(), backend, settings, bus=bus,
                                      cache=RedisCache(redis_url))
    tmp = tmp_path_factory.mktemp("crash")
    env = {**os.environ, "LOYALTY_REDIS_URL": redis_url, "LOYALTY_ADMIN_KEY": ADMIN_KEY,
           "LOYALTY_AUTH_SECRET": AUTH_SECRET.decode(), "LOYALTY_PII_KEY": PII_KEY, "LOYALTY_HOST": "127.0.0.1",
           "LOYALTY_WORKERS": "1", "LOYALTY_GRACE_SECONDS": "1", "LOYALTY_LOG_LEVEL": "WARNING",
           "LOYALTY_ACCESS_LOG": "0", "LOYALTY_AUTO_MIGRATE": "1", "LOYALTY_THREADS": "4",
           "LOYALTY_REWARDS_DB_URL": backend.database_url("rewards_crash"),
           "LOYALTY_REWARDS_PORT": str(free_port()), "LOYALTY_POINTS_ADDR": started["points"].address,
           "LOYALTY_TEST_CRASH_FILE": str(tmp / "crash")}
    yield World(backend, started["membership"], started["points"], env, tmp / "crash")
    for service in started.values():
        stop_service(service, close_bus=False)
    bus.close()


class ServedRewards:
    """The rewards service as a process of its own, restarted after each crash."""

    def __init__(self, world: World, log_path: Path):
        self.world, self.log_path, self.env = world, log_path, world.env
        self.channel = grpc.insecure_channel(f"127.0.0.1:{world.env['LOYALTY_REWARDS_PORT']}")
        self.process: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        with self.log_path.open("a") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "tests.support.rewards_crash", "serve"], cwd=ROOT,
                                            env=self.env, stdout=log, stderr=subprocess.STDOUT)
        eventually(self.serving, "rewards serves", timeout=60)

    def serving(self) -> bool:
        assert self.process is not None and self.process.poll() is None, self.log_path.read_text()
        try:
            return health_pb2_grpc.HealthStub(self.channel).Check(
                health_pb2.HealthCheckRequest(), timeout=1).status == health_pb2.HealthCheckResponse.SERVING
        except grpc.RpcError:
            return False

    def killed(self) -> bool:
        assert self.process is not None
        return self.process.wait(timeout=30) == -signal.SIGKILL

    def restart_with(self, env: dict[str, str]) -> None:
        """Stops the process (SIGTERM) and starts it again on `env`."""
        self.terminate()
        self.env = env
        self.start()

    def stop(self) -> None:
        self.channel.close()
        self.terminate()

    def terminate(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@dataclass
class Scene:
    """A shop of the served rewards, a funded member, and the reward they redeem."""

    shop: Shop
    api: Authed
    points: Authed
    member_id: str
    reward_id: str
    before: tuple[int, int]


@pytest.fixture
def served(world: World, tmp_path: Path) -> Iterator[ServedRewards]:
    world.crash_file.unlink(missing_ok=True)
    service = ServedRewards(world, tmp_path / "rewards.log")
    yield service
    service.stop()


def scene(world: World, served: ServedRewards, *, price: int = PRICE, **reward: object) -> Scene:
    admin = Authed(mgrpc.MembershipServiceStub(world.membership.channel), ADMIN_KEY)
    shop = create_shop(world.membership, admin)
    api = Authed(rgrpc.RewardsServiceStub(served.channel), shop.key)
    # The served rewards hears of the shop from membership's events; until then CreateReward works
    # with the default zone, which is the shop's too.
    created = create_reward(api, shop.shop_id, points_price=price, stock=STOCK, limit_per_member=1, **reward)
    member_id = join_member(shop, rewards=api)
    fund(world.points, shop, member_id, 500)
    papi = points_api(world.points, shop)
    return Scene(shop, api, papi, member_id, created.reward_id, balance(papi, shop.shop_id, member_id))


def crash_on(world: World, point: str, call: object) -> None:
    """Arms the fault hook at `point` and makes `call`, which the process's death fails."""
    world.crash_file.write_text(point)
    with pytest.raises(grpc.RpcError) as caught:
        call()  # type: ignore[operator]
    assert caught.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def restarted(served: ServedRewards) -> None:
    assert served.killed(), "the process died of the fault hook"
    served.start()


def settled(s: Scene, redemption_id: str, *states: int) -> rpb.Redemption:
    """The redemption once the restarted process's recovery moved it to one of `states`."""
    return eventually(lambda: (r := get_redemption(s.api, s.shop.shop_id, redemption_id)).state in states and r,
                      f"redemption {redemption_id} settled", timeout=60)


def can_redeem_again(s: Scene) -> bool:
    """Whether the member's lifetime limit (one) is free: nothing of the reward counts for them."""
    answer = s.api.ValidateRedemption(rpb.ValidateRedemptionRequest(shop_id=s.shop.shop_id, member_id=s.member_id,
                                                                    reward_id=s.reward_id))
    return reasons.LIMIT_REACHED not in answer.unavailable_reasons


def assert_completed_once(s: Scene, redemption_id: str) -> None:
    available, held = s.before
    assert balance(s.points, s.shop.shop_id, s.member_id) == (available - PRICE, held), "captured once, none held"
    assert stock_of(s.api, s.shop.shop_id, s.reward_id) == (STOCK - 1, 1), "stock taken once"
    assert not can_redeem_again(s), "the limit counts it once"


def assert_nothing_taken(s: Scene) -> None:
    assert balance(s.points, s.shop.shop_id, s.member_id) == s.before, "points whole, nothing held"
    assert stock_of(s.api, s.shop.shop_id, s.reward_id) == (STOCK, 0), "stock whole"
    assert can_redeem_again(s), "the limit given back"


def redemption_id_of(s: Scene, request_id: str) -> str:
    """The redemption a Redeem request made (its id follows from the shop and the request_id)."""
    return redemption_id_for(s.shop.shop_id, request_id)


# ----- points only: open → hold → reserve → capture → fulfil ---------------------------------------------


@pytest.mark.parametrize("step", ["open", "hold", "reserve", "capture", "fulfil"])
def test_a_redemption_killed_after_any_step_is_completed_after_restart(world: World, served: ServedRewards,
                                                                      step: str) -> None:
    s = scene(world, served)
    request_id = rid()
    crash_on(world, f"redeem:{step}", lambda: redeem(s.api, s.shop.shop_id, s.member_id, s.reward_id,
                                                     request_id=request_id))
    restarted(served)
    redemption_id = redemption_id_of(s, request_id)
    done = settled(s, redemption_id, rpb.REDEMPTION_STATE_COMPLETED, rpb.REDEMPTION_STATE_FAILED)
    assert done.state == rpb.REDEMPTION_STATE_COMPLETED and len(done.coupon_ids) == 1
    assert_completed_once(s, redemption_id)
    # The caller's retry is answered with the same redemption, and takes nothing more.
    again = redeem(s.api, s.shop.shop_id, s.member_id, s.reward_id, request_id=request_id)
    assert again == get_redemption(s.api, s.shop.shop_id, redemption_id)
    assert_completed_once(s, redemption_id)


def test_a_refused_redemption_killed_while_giving_back_ends_failed_with_nothing_taken(
    world: World, served: ServedRewards
) -> None:
    s = scene(world, served, price=10**6)
    request_id = rid()
    crash_on(world, "redeem:undo open", lambda: redeem(s.api, s.shop.shop_id, s.member_id, s.reward_id,
                                                       request_id=request_id))
    restarted(served)
    failed = settled(s, redemption_id_of(s, request_id), rpb.REDEMPTION_STATE_FAILED)
    assert failed.failure_reason == reasons.INSUFFICIENT_POINTS
    assert balance(s.points, s.shop.shop_id, s.member_id) == s.before
    assert stock_of(s.api, s.shop.shop_id, s.reward_id) == (STOCK, 0)
    again = refusal(redeem, s.api, s.shop.shop_id, s.member_id, s.reward_id, request_id=request_id)
    assert again.reason == reasons.INSUFFICIENT_POINTS


# ----- points + cash ----------------------------------------------------------------------------------


def awaiting_payment(world: World, served: ServedRewards, crash: str = "") -> tuple[Scene, str]:
    s = scene(world, served, cash_price_fen=990)
    request_id = rid()
    if crash:
        crash_on(world, crash, lambda: redeem(s.api, s.shop.shop_id, s.member_id, s.reward_id,
                                              request_id=request_id))
        restarted(served)
        redemption_id = redemption_id_of(s, request_id)
        settled(s, redemption_id, rpb.REDEMPTION_STATE_AWAITING_PAYMENT)
    else:
        redemption_id = redeem(s.api, s.shop.shop_id, s.member_id, s.reward_id, request_id=request_id).redemption_id
    available, held = s.before
    assert balance(s.points, s.shop.shop_id, s.member_id) == (available - PRICE, held + PRICE)
    assert stock_of(s.api, s.shop.shop_id, s.reward_id) == (STOCK - 1, 1)
    return s, redemption_id


def confirm_request(s: Scene, redemption_id: str) -> rpb.ConfirmPaymentRequest:
    return rpb.ConfirmPaymentRequest(request_id=rid(), shop_id=s.shop.shop_id, redemption_id=redemption_id,
                                     payment_reference="pay-" + uuid.uuid4().hex[:8])


@pytest.mark.parametrize("step", ["hold", "reserve"])
def test_a_points_and_cash_redemption_killed_before_it_awaits_payment_awaits_it_after_restart(
    world: World, served: ServedRewards, step: str
) -> None:
    s, redemption_id = awaiting_payment(world, served, crash=f"redeem-cash:{step}")
    paid = s.api.ConfirmPayment(confirm_request(s, redemption_id))
    assert paid.state == rpb.REDEMPTION_STATE_COMPLETED
    assert_completed_once(s, redemption_id)


@pytest.mark.parametrize("step", ["confirmed", "capture", "fulfil"])
def test_a_payment_killed_after_any_step_completes_after_restart(world: World, served: ServedRewards,
                                                                 step: str) -> None:
    s, redemption_id = awaiting_payment(world, served)
    request = confirm_request(s, redemption_id)
    crash_on(world, f"redeem-paid:{step}", lambda: s.api.ConfirmPayment(request))
    restarted(served)
    done = settled(s, redemption_id, rpb.REDEMPTION_STATE_COMPLETED, rpb.REDEMPTION_STATE_FAILED)
    assert (done.state, done.payment_reference) == (rpb.REDEMPTION_STATE_COMPLETED, request.payment_reference)
    assert_completed_once(s, redemption_id)
    assert s.api.ConfirmPayment(request) == done


@pytest.mark.parametrize("step", ["release", "give_back"])
def test_a_cancellation_killed_after_any_step_gives_everything_back_after_restart(
    world: World, served: ServedRewards, step: str
) -> None:
    s, redemption_id = awaiting_payment(world, served)
    crash_on(world, f"redeem-unwind:{step}", lambda: s.api.CancelRedemption(rpb.CancelRedemptionRequest(
        request_id=rid(), shop_id=s.shop.shop_id, redemption_id=redemption_id)))
    restarted(served)
    assert get_redemption(s.api, s.shop.shop_id, redemption_id).state == rpb.REDEMPTION_STATE_CANCELLED
    eventually(lambda: balance(s.points, s.shop.shop_id, s.member_id) == s.before, "the hold released", timeout=60)
    eventually(lambda: stock_of(s.api, s.shop.shop_id, s.reward_id) == (STOCK, 0), "the stock back", timeout=60)
    assert_nothing_taken(s)


# ----- an operator's cancellation of a gift ------------------------------------------------------------


@pytest.mark.parametrize("step", ["refund", "give_back"])
def test_an_operators_cancellation_killed_after_any_step_returns_points_and_stock_once(
    world: World, served: ServedRewards, step: str
) -> None:
    s = scene(world, served, name="Mug", kind=rpb.REWARD_KIND_GIFT,
              gift=rpb.GiftSpec(gift_class=rpb.GIFT_CLASS_PARTICIPATION))
    done = redeem(s.api, s.shop.shop_id, s.member_id, s.reward_id)
    assert_completed_once(s, done.redemption_id)
    crash_on(world, f"redeem-refund:{step}", lambda: s.api.CancelRedemption(rpb.CancelRedemptionRequest(
        request_id=rid(), shop_id=s.shop.shop_id, redemption_id=done.redemption_id, reason="damaged",
        operator="alice")))
    restarted(served)
    assert get_redemption(s.api, s.shop.shop_id, done.redemption_id).state == rpb.REDEMPTION_STATE_CANCELLED
    eventually(lambda: stock_of(s.api, s.shop.shop_id, s.reward_id) == (STOCK, 0), "the stock back", timeout=60)
    assert_nothing_taken(s)


# ----- a refusal after the reservation, killed while giving back ---------------------------------------------


@pytest.mark.parametrize("step", ["undo reserve", "undo hold", "undo open"])
def test_a_redemption_whose_capture_is_refused_gives_back_once_though_killed_while_doing_so(
    world: World, served: ServedRewards, step: str
) -> None:
    s = scene(world, served)
    request_id = rid()
    crash_on(world, "redeem:reserve", lambda: redeem(s.api, s.shop.shop_id, s.member_id, s.reward_id,
                                                     request_id=request_id))
    # While rewards is down, the hold is released (an operator, or its TTL): the capture will be refused.
    (held,) = [e for e in ledger(s.points, s.shop.shop_id, s.member_id) if e.kind == pp.ENTRY_KIND_HOLD]
    s.points.ReleaseHold(pp.ReleaseHoldRequest(request_id=rid(), shop_id=s.shop.shop_id, hold_id=held.source.hold_id))
    world.crash_file.write_text(f"redeem:{step}")
    restarted(served)  # its recovery dies while giving back
    restarted(served)
    failed = settled(s, redemption_id_of(s, request_id), rpb.REDEMPTION_STATE_FAILED)
    assert failed.failure_reason == points_reasons.HOLD_RELEASED
    assert_nothing_taken(s)


# ----- an accident: points unreachable ---------------------------------------------------------------


def test_a_redemption_points_cannot_be_reached_for_is_pending_and_completes_once_points_answers(
    world: World, served: ServedRewards
) -> None:
    s = scene(world, served)
    served.restart_with({**world.env, "LOYALTY_POINTS_ADDR": f"127.0.0.1:{free_port()}"})  # nobody answers there
    request_id = rid()
    pending = redeem(s.api, s.shop.shop_id, s.member_id, s.reward_id, request_id=request_id)
    assert pending.state == rpb.REDEMPTION_STATE_PENDING
    assert balance(s.points, s.shop.shop_id, s.member_id) == s.before

    served.restart_with(world.env)
    settled(s, pending.redemption_id, rpb.REDEMPTION_STATE_COMPLETED)
    assert_completed_once(s, pending.redemption_id)
    assert redeem(s.api, s.shop.shop_id, s.member_id, s.reward_id, request_id=request_id).state == (
        rpb.REDEMPTION_STATE_COMPLETED)
