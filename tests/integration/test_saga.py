"""Durable sagas across a real service: a redeem-shaped saga (points Hold → reserve stock here →
CaptureHold, or Release) completes, compensates on a refusal, waits out an unreachable service,
and — when its process is SIGKILLed between a step's effect and its record — is ended
consistently by the recovery of another process: completed or fully compensated, nothing held
or reserved twice."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from loyalty.points.v1 import points_service_pb2_grpc as pgrpc
from sqlalchemy import func, select

from services.kit.client import CallFailed, ServiceClient
from services.kit.errors import FailedPrecondition
from services.kit.jobs import Periodic
from services.kit.saga import COMPENSATED, COMPLETED, FAILED, RUNNING, SagaContext, SagaDefinition, Sagas, Step
from services.kit.storage import Database
from tests.support import redeem_saga
from tests.support.builders import PointsShop, balance, eventually, member_with_points, points_shop
from tests.support.services import ADMIN_KEY, Backend, ServiceUnderTest, Shop

ROOT = Path(__file__).resolve().parents[2]
SKU = "mug"
PRICE = 300


@pytest.fixture
def db(backend: Backend) -> Iterator[Database]:
    database = redeem_saga.open_database(backend.database_url("redeem"))
    yield database
    database.dispose()


@pytest.fixture
def ps(points: ServiceUnderTest, shop: Shop) -> PointsShop:
    return points_shop(points, shop)


@pytest.fixture
def client(points: ServiceUnderTest) -> ServiceClient[pgrpc.PointsServiceStub]:
    return ServiceClient(pgrpc.PointsServiceStub, points.address, key=ADMIN_KEY)


def redeem_input(member_id: str) -> dict:
    return {"member_id": member_id, "points": PRICE, "sku": SKU}


def wait_for_lease(seconds: float = 1.1) -> None:
    """The crashed runner's lease (1 s in these tests) must pass before recovery takes over."""
    time.sleep(seconds)


def recover_until_finished(sagas: Sagas, saga_id: str, timeout: float = 15.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sagas.recover()
        outcome = sagas.outcome(saga_id)
        if outcome.finished:
            return outcome.state
        time.sleep(0.1)
    raise AssertionError(f"saga {saga_id} still {sagas.outcome(saga_id)} after {timeout}s of recovery")


def test_a_redeem_holds_reserves_and_captures(db: Database, ps: PointsShop, client: ServiceClient) -> None:
    member_id = member_with_points(ps, 1000)
    before = balance(ps, member_id)
    redeem_saga.add_stock(db, ps.shop_id, SKU, 5)
    sagas = redeem_saga.runner(db, client)
    outcome = sagas.execute(redeem_saga.KIND, ps.shop_id, redeem_input(member_id))
    assert outcome.state == COMPLETED
    assert outcome.data["hold_id"]
    after = balance(ps, member_id)
    assert (after.available, after.held) == (before.available - PRICE, 0)
    assert redeem_saga.stock_of(db, ps.shop_id, SKU) == 4
    assert sagas.step_states(outcome.saga_id) == {"hold": "DONE", "reserve": "DONE", "capture": "DONE"}


def test_out_of_stock_releases_the_hold(db: Database, ps: PointsShop, client: ServiceClient) -> None:
    member_id = member_with_points(ps, 1000)
    before = balance(ps, member_id)
    redeem_saga.add_stock(db, ps.shop_id, SKU, 0)
    sagas = redeem_saga.runner(db, client)
    outcome = sagas.execute(redeem_saga.KIND, ps.shop_id, redeem_input(member_id))
    assert outcome.state == COMPENSATED
    assert outcome.error == "reserve: out of stock"
    assert sagas.step_states(outcome.saga_id) == {"hold": "COMPENSATED", "reserve": "REFUSED",
                                                   "capture": "PENDING"}
    after = balance(ps, member_id)
    assert (after.available, after.held) == (before.available, 0)
    assert redeem_saga.stock_of(db, ps.shop_id, SKU) == 0


def test_a_refused_hold_takes_nothing(db: Database, ps: PointsShop, client: ServiceClient) -> None:
    member_id = member_with_points(ps, 10)
    before = balance(ps, member_id)
    redeem_saga.add_stock(db, ps.shop_id, SKU, 5)
    sagas = redeem_saga.runner(db, client)
    outcome = sagas.execute(redeem_saga.KIND, ps.shop_id, {**redeem_input(member_id), "points": 10**9})
    assert outcome.state == COMPENSATED
    assert sagas.step_states(outcome.saga_id)["hold"] == "REFUSED"
    assert balance(ps, member_id) == before
    assert redeem_saga.stock_of(db, ps.shop_id, SKU) == 5


def test_a_saga_started_again_with_its_id_runs_once(db: Database, ps: PointsShop, client: ServiceClient) -> None:
    member_id = member_with_points(ps, 1000)
    before = balance(ps, member_id)
    redeem_saga.add_stock(db, ps.shop_id, SKU, 5)
    saga_id = str(uuid.uuid4())  # e.g. derived from the caller's redemption id
    outcomes = []
    for _ in range(2):  # the caller retried; another replica may take the retry
        sagas = redeem_saga.runner(db, client)
        outcomes.append(sagas.run(sagas.start(redeem_saga.KIND, ps.shop_id, redeem_input(member_id),
                                              saga_id=saga_id)))
    assert [o.state for o in outcomes] == [COMPLETED, COMPLETED]
    assert outcomes[0].data == outcomes[1].data
    assert balance(ps, member_id).available == before.available - PRICE
    assert redeem_saga.stock_of(db, ps.shop_id, SKU) == 4


def test_an_unreachable_service_leaves_the_saga_for_recovery(
    db: Database, ps: PointsShop, client: ServiceClient
) -> None:
    member_id = member_with_points(ps, 1000)
    before = balance(ps, member_id)
    redeem_saga.add_stock(db, ps.shop_id, SKU, 5)
    unreachable = ServiceClient(pgrpc.PointsServiceStub, "127.0.0.1:9", key=ADMIN_KEY, timeout=0.3)
    outcome = redeem_saga.runner(db, unreachable).execute(redeem_saga.KIND, ps.shop_id, redeem_input(member_id))
    assert outcome.state == RUNNING
    assert "UNAVAILABLE" in outcome.error or "CallFailed" in outcome.error
    # Another replica, which reaches points, finishes it once the retry delay passed.
    recovery = redeem_saga.runner(db, client)
    assert recover_until_finished(recovery, outcome.saga_id) == COMPLETED
    after = balance(ps, member_id)
    assert (after.available, after.held) == (before.available - PRICE, 0)


def run_and_crash(db_url: str, points: ServiceUnderTest, ps: PointsShop, member_id: str, crash_after: str) -> str:
    """Runs the saga in another process that SIGKILLs itself after `crash_after` took effect;
    returns the saga's id."""
    child = subprocess.run(
        [sys.executable, "-m", "tests.support.redeem_saga", db_url, points.address, ADMIN_KEY, ps.shop_id,
         member_id, str(PRICE), SKU, crash_after],
        cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert child.returncode == -signal.SIGKILL, (child.returncode, child.stderr)
    return saga_of_shop(db_url, ps.shop_id)


def saga_of_shop(db_url: str, shop_id: str) -> str:
    db = Database(db_url, service="redeem-test", kit=redeem_saga.kit, pool_size=1)
    try:
        table = redeem_saga.sagas.sagas
        return db.read(lambda c: c.execute(select(table.c.saga_id).where(table.c.shop_id == shop_id)).scalar_one())
    finally:
        db.dispose()


@pytest.mark.parametrize("crash_after", ["hold", "reserve", "capture"])
def test_a_saga_killed_between_steps_is_completed_by_recovery(
    db: Database, points: ServiceUnderTest, ps: PointsShop, client: ServiceClient, crash_after: str
) -> None:
    member_id = member_with_points(ps, 1000)
    before = balance(ps, member_id)
    redeem_saga.add_stock(db, ps.shop_id, SKU, 5)
    saga_id = run_and_crash(db.url, points, ps, member_id, crash_after)
    recovery = redeem_saga.runner(db, client)
    assert recovery.outcome(saga_id).state == RUNNING
    wait_for_lease()
    assert recover_until_finished(recovery, saga_id) == COMPLETED
    after = balance(ps, member_id)
    assert (after.available, after.held) == (before.available - PRICE, 0), "captured once, nothing left held"
    assert redeem_saga.stock_of(db, ps.shop_id, SKU) == 4, "reserved once"
    reserved = db.read(lambda c: c.execute(select(func.count()).select_from(redeem_saga.reservations)).scalar_one())
    assert reserved == 1


def test_a_saga_killed_after_its_hold_is_compensated_when_the_stock_is_gone(
    db: Database, points: ServiceUnderTest, ps: PointsShop, client: ServiceClient
) -> None:
    member_id = member_with_points(ps, 1000)
    before = balance(ps, member_id)
    redeem_saga.add_stock(db, ps.shop_id, SKU, 0)
    saga_id = run_and_crash(db.url, points, ps, member_id, "hold")
    assert balance(ps, member_id).held == PRICE
    wait_for_lease()
    recovery = redeem_saga.runner(db, client)
    assert recover_until_finished(recovery, saga_id) == COMPENSATED
    after = balance(ps, member_id)
    assert (after.available, after.held) == (before.available, 0), "the hold was released, once"
    assert recovery.step_states(saga_id) == {"hold": "COMPENSATED", "reserve": "REFUSED", "capture": "PENDING"}


def test_the_recovery_job_of_a_periodic_worker_finishes_a_crashed_saga_by_itself(
    db: Database, points: ServiceUnderTest, ps: PointsShop, client: ServiceClient
) -> None:
    member_id = member_with_points(ps, 1000)
    before = balance(ps, member_id)
    redeem_saga.add_stock(db, ps.shop_id, SKU, 5)
    saga_id = run_and_crash(db.url, points, ps, member_id, "hold")
    recovery = redeem_saga.runner(db, client)
    worker = Periodic([recovery.recovery_job(interval=0.2)])
    worker.start()
    try:
        eventually(lambda: recovery.outcome(saga_id).finished, "the recovery job finished the saga", timeout=15)
    finally:
        worker.stop()
    assert recovery.outcome(saga_id).state == COMPLETED
    assert balance(ps, member_id).available == before.available - PRICE


def test_two_recoveries_at_once_drive_a_saga_once(
    db: Database, points: ServiceUnderTest, ps: PointsShop, client: ServiceClient
) -> None:
    member_id = member_with_points(ps, 1000)
    before = balance(ps, member_id)
    redeem_saga.add_stock(db, ps.shop_id, SKU, 5)
    saga_id = run_and_crash(db.url, points, ps, member_id, "reserve")
    wait_for_lease()
    first, second = redeem_saga.runner(db, client), redeem_saga.runner(db, client)
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda s: s.recover(), [first, second]))
    assert first.outcome(saga_id).state == COMPLETED
    after = balance(ps, member_id)
    assert (after.available, after.held) == (before.available - PRICE, 0)
    assert redeem_saga.stock_of(db, ps.shop_id, SKU) == 4


def test_past_a_step_that_cannot_be_undone_a_saga_only_goes_forward(db: Database) -> None:
    """A step without a compensation is the pivot (points captured): a later refusal ends the
    saga FAILED for an operator and undoes nothing; later accidents are retried without limit."""
    undone: list[str] = []
    accidents = {"left": 5}

    def flaky(_: SagaContext) -> None:
        if accidents["left"]:
            accidents["left"] -= 1
            raise CallFailed("points is away", code="UNAVAILABLE", reason="DATABASE_UNAVAILABLE")

    def refuse(_: SagaContext) -> None:
        raise FailedPrecondition("the reward is gone", reason="REWARD_NOT_FOUND")

    steps = [Step("hold", lambda _: None, lambda _: undone.append("hold")), Step("capture", lambda _: None)]
    sagas = Sagas(db, redeem_saga.sagas, [SagaDefinition("refused", [*steps, Step("fulfil", refuse)]),
                                         SagaDefinition("flaky", [*steps, Step("fulfil", flaky)])],
                  max_attempts=2, retry_seconds=0.0)

    refused = sagas.execute("refused", "shop-pivot", {})
    assert (refused.state, refused.data["refusal"]["reason"]) == (FAILED, "REWARD_NOT_FOUND")
    assert undone == []  # the hold was captured: releasing it now would lose nothing but mean nothing

    saga_id = sagas.start("flaky", "shop-pivot", {})
    states = [sagas.run(saga_id).state]
    while states[-1] == RUNNING and len(states) < 10:
        states.append(sagas.run(saga_id).state)
    assert states == [RUNNING] * 5 + [COMPLETED]  # five accidents, more than max_attempts, and no undoing
    assert undone == []
