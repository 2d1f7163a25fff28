"""A test-only saga shaped like rewards' redeem: points Hold → reserve stock here → CaptureHold,
or Release. Run as a program it executes one saga and can SIGKILL itself right after a step took
effect and before its progress was recorded (the worst moment), for the crash tests:

    python -m tests.support.redeem_saga DB_URL POINTS_ADDR KEY SHOP MEMBER POINTS SKU CRASH_AFTER
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

from loyalty.points.v1 import points_service_pb2 as pp
from loyalty.points.v1 import points_service_pb2_grpc as pgrpc
from sqlalchemy import Boolean, Column, Integer, MetaData, String, Table, insert, select, update

from services.kit.client import ServiceClient
from services.kit.errors import FailedPrecondition
from services.kit.saga import SagaContext, SagaDefinition, Sagas, Step, saga_tables
from services.kit.storage import Database, UnitOfWork
from services.kit.tables import kit_tables

KIND = "redeem"
metadata = MetaData()
kit = kit_tables(metadata)
sagas = saga_tables(metadata)
stock = Table(
    "stock", metadata,
    Column("shop_id", String(64), primary_key=True),
    Column("sku", String(64), primary_key=True),
    Column("quantity", Integer, nullable=False),
)
reservations = Table(
    "reservations", metadata,
    Column("saga_id", String(36), primary_key=True),
    Column("shop_id", String(64), nullable=False),
    Column("sku", String(64), nullable=False),
    Column("released", Boolean, nullable=False),
)


def open_database(url: str) -> Database:
    db = Database(url, service="redeem-test", kit=kit, pool_size=2)
    metadata.create_all(db.engine)
    return db


def redeem(db: Database, points: ServiceClient[pgrpc.PointsServiceStub], crash_after: str = "") -> SagaDefinition:
    """The saga's steps; `crash_after` names the step after whose effect the process dies."""

    def crash_point(step: str) -> None:
        if step == crash_after:
            os.kill(os.getpid(), signal.SIGKILL)

    def hold(ctx: SagaContext) -> dict[str, Any]:
        response = points.Hold(pp.HoldRequest(request_id=ctx.request_id(), shop_id=ctx.shop_id,
                                              member_id=ctx.data["member_id"], points=ctx.data["points"]))
        crash_point("hold")
        return {"hold_id": response.hold_id}

    def release(ctx: SagaContext) -> None:
        hold_id = ctx.data.get("hold_id")
        if hold_id is None:  # the hold's answer was never recorded: ask again (same request_id)
            try:
                hold_id = hold(ctx)["hold_id"]
            except FailedPrecondition:
                return  # it was refused, so nothing is held
        points.ReleaseHold(pp.ReleaseHoldRequest(request_id=ctx.request_id("release"), shop_id=ctx.shop_id,
                                                 hold_id=hold_id))

    def reserve(ctx: SagaContext) -> None:
        def work(uow: UnitOfWork) -> None:
            if uow.conn.execute(select(reservations).where(reservations.c.saga_id == ctx.saga_id)).first():
                return  # reserved by an earlier attempt
            taken = uow.conn.execute(update(stock).where(
                stock.c.shop_id == ctx.shop_id, stock.c.sku == ctx.data["sku"], stock.c.quantity > 0)
                .values(quantity=stock.c.quantity - 1)).rowcount
            if not taken:
                raise FailedPrecondition("out of stock", reason="OUT_OF_STOCK", subject=f"sku/{ctx.data['sku']}")
            uow.conn.execute(insert(reservations), {"saga_id": ctx.saga_id, "shop_id": ctx.shop_id,
                                                    "sku": ctx.data["sku"], "released": False})

        db.transact(work)
        crash_point("reserve")

    def unreserve(ctx: SagaContext) -> None:
        def work(uow: UnitOfWork) -> None:
            released = uow.conn.execute(update(reservations).where(
                reservations.c.saga_id == ctx.saga_id, reservations.c.released.is_(False),
            ).values(released=True)).rowcount
            if released:
                uow.conn.execute(update(stock).where(stock.c.shop_id == ctx.shop_id, stock.c.sku == ctx.data["sku"])
                                 .values(quantity=stock.c.quantity + 1))

        db.transact(work)

    def capture(ctx: SagaContext) -> None:
        points.CaptureHold(pp.CaptureHoldRequest(request_id=ctx.request_id(), shop_id=ctx.shop_id,
                                                 hold_id=ctx.data["hold_id"]))
        crash_point("capture")

    return SagaDefinition(KIND, [Step("hold", hold, release), Step("reserve", reserve, unreserve),
                                 Step("capture", capture)])


def runner(db: Database, points: ServiceClient[pgrpc.PointsServiceStub], *, crash_after: str = "",
           lease_seconds: float = 1.0, retry_seconds: float = 0.05) -> Sagas:
    return Sagas(db, sagas, [redeem(db, points, crash_after)], lease_seconds=lease_seconds,
                 retry_seconds=retry_seconds)


def stock_of(db: Database, shop_id: str, sku: str) -> int:
    return db.read(lambda c: c.execute(select(stock.c.quantity).where(
        stock.c.shop_id == shop_id, stock.c.sku == sku)).scalar_one())


def add_stock(db: Database, shop_id: str, sku: str, quantity: int) -> None:
    db.transact(lambda uow: uow.conn.execute(insert(stock), {"shop_id": shop_id, "sku": sku, "quantity": quantity}))


def main(argv: list[str]) -> None:
    url, address, key, shop_id, member_id, points, sku, crash_after = argv
    db = Database(url, service="redeem-test", kit=kit, pool_size=2)
    client = ServiceClient(pgrpc.PointsServiceStub, address, key=key)
    outcome = runner(db, client, crash_after=crash_after).execute(
        KIND, shop_id, {"member_id": member_id, "points": int(points), "sku": sku})
    print(outcome.saga_id, outcome.state, flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
