"""Contract tests of loyalty.points.v1.PointsService through a real gRPC server, on both backends
(see conftest.py). The points service hears membership's events on the shared bus: a shop created
in membership gets its points program, a member who joins gets an account, a completed order earns.
Events are asynchronous, so tests wait (with a deadline) for the state they expect."""

from __future__ import annotations

import calendar
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import error_details_pb2
from google.type import date_pb2
from grpc_status import rpc_status
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from loyalty.common.v1 import envelope_pb2
from loyalty.membership.v1 import events_pb2 as mev
from loyalty.membership.v1 import membership_service_pb2 as mpb
from loyalty.points.v1 import events_pb2 as pev
from loyalty.points.v1 import points_service_pb2 as pp
from loyalty.points.v1 import points_service_pb2_grpc
from sqlalchemy import event, select

from services.kit.events import stream_name
from services.membership.tables import kit as membership_kit
from services.points.earning import EventOutOfOrder
from tests.conftest import ADMIN_KEY, Authed, Failure, Shop, create_shop, failure_of
from tests.support.builders import eventually
from tests.support.events import membership_envelope

T = TypeVar("T")
YUAN = 100
DEADLINE = 5.0
SHANGHAI = ZoneInfo("Asia/Shanghai")
MEMBERSHIP_STREAM = stream_name("membership")
E = pp  # entry kinds and actions read as E.ENTRY_KIND_EARN, E.ACTION_JOIN


# ----- helpers: time ---------------------------------------------------------------------------------


def rid() -> str:
    return uuid.uuid4().hex


def ts(value: str | datetime) -> Timestamp:
    """A Timestamp from an aware datetime or an ISO string with an offset ("...Z" or "+08:00")."""
    moment = datetime.fromisoformat(value.replace("Z", "+00:00")) if isinstance(value, str) else value
    assert moment.tzinfo is not None, "give times with their offset"
    out = Timestamp()
    out.FromDatetime(moment.astimezone(UTC))
    return out


def at(stamp: Timestamp) -> datetime:
    return stamp.ToDatetime(tzinfo=UTC)


def now() -> datetime:
    return datetime.now(UTC)


def add_months(day: date, months: int) -> date:
    index = day.month - 1 + months
    year, month = day.year + index // 12, index % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def expiry_of(earned: datetime, zone: ZoneInfo = SHANGHAI, months: int = 12) -> datetime:
    """ROLLING_MONTHS: valid through the same shop-local day `months` later (clamped to the month's
    end), expiring at the local midnight that ends that day."""
    through = add_months(earned.astimezone(zone).date(), months)
    return datetime.combine(through + timedelta(days=1), dtime(), tzinfo=zone).astimezone(UTC)


def ordinary(moment: datetime, zone: ZoneInfo = SHANGHAI) -> datetime:
    """`moment`, or a day or two before it, so that it is no member day (the 1st) in the shop's zone:
    no multiplier applies (the members these tests make have no birthday)."""
    while moment.astimezone(zone).day == 1:
        moment -= timedelta(days=1)
    return moment


def ordinary_time(zone: ZoneInfo = SHANGHAI) -> datetime:
    """A recent moment on which no multiplier applies."""
    return ordinary(now() - timedelta(minutes=5), zone)


def local_noon(day: date, zone: ZoneInfo = SHANGHAI) -> datetime:
    return datetime.combine(day, dtime(12), tzinfo=zone)


# ----- helpers: errors -------------------------------------------------------------------------------


def fails(call: Callable[..., Any], request: Any) -> Failure:
    """Calls and expects a failure; returns its code and error details."""
    with pytest.raises(grpc.RpcError) as caught:
        call(request)
    return failure_of(caught.value)


def assert_insufficient(failure: Failure, shortfall: int) -> None:
    assert failure.code == grpc.StatusCode.FAILED_PRECONDITION, failure
    assert failure.reason == "INSUFFICIENT_POINTS", failure
    assert failure.metadata.get("shortfall") == str(shortfall), failure
    assert failure.preconditions, "a PreconditionFailure detail"


# ----- helpers: shops, members, orders ---------------------------------------------------------------


@dataclass
class PointsShop:
    """A shop seen from both services: `shop.api` is membership, `api` is points (same key);
    `admin` is points with the admin key; `bus` the bus the services share."""

    shop: Shop
    api: Authed
    admin: Authed
    zone: ZoneInfo = SHANGHAI
    bus: Any = None

    @property
    def shop_id(self) -> str:
        return self.shop.shop_id


@dataclass
class Member:
    """A member as the tests know it; what membership would put in an OrderCompleted it no longer
    sends (see `order`) is kept from the join."""

    member_id: str
    buyer_id: str
    joined_at: datetime | None = None
    birthday: tuple[int, int] | None = None  # (month, day), when consented
    referrer_member_id: str = ""
    completed_orders: int = field(default=0, compare=False)


def points_stub(points: Any, key: str) -> Authed:
    return Authed(points_service_pb2_grpc.PointsServiceStub(points.channel), key)


def points_shop(points: Any, shop: Shop, zone: ZoneInfo = SHANGHAI) -> PointsShop:
    """Waits until points has heard of the shop (ProgramChanged) and made its points program."""
    api = points_stub(points, shop.key)
    # The first shop of a session may wait behind the backlog of the membership tests' events.
    eventually(lambda: api.GetPointsProgram(pp.GetPointsProgramRequest(shop_id=shop.shop_id)),
               "points knows the shop", timeout=60.0)
    return PointsShop(shop, api, points_stub(points, ADMIN_KEY), zone, points.bus)


@pytest.fixture
def ps(points: Any, shop: Shop) -> PointsShop:
    return points_shop(points, shop)


def get_balance(s: PointsShop, m: Member | str) -> pp.Balance:
    member_id = m.member_id if isinstance(m, Member) else m
    return s.api.GetBalance(pp.GetBalanceRequest(shop_id=s.shop_id, member_id=member_id))


def ledger(s: PointsShop, m: Member, page_size: int = 100, **filters: Any) -> list[pp.LedgerEntry]:
    """The member's whole ledger (newest first), over every page."""
    entries: list[pp.LedgerEntry] = []
    token = ""
    for _ in range(1000):
        page = s.api.ListLedger(pp.ListLedgerRequest(shop_id=s.shop_id, member_id=m.member_id, page_size=page_size,
                                                     page_token=token, **filters))
        entries.extend(page.entries)
        token = page.next_page_token
        if not token:
            return entries
    raise AssertionError("the ledger's pages never end")


def entries(s: PointsShop, m: Member, kind: int, *, order_id: str | None = None,
            action: int | None = None) -> list[pp.LedgerEntry]:
    return [e for e in ledger(s, m) if e.kind == kind
            and (order_id is None or e.source.order_id == order_id)
            and (action is None or e.source.action == action)]


def wait_entries(s: PointsShop, m: Member, kind: int, count: int = 1, timeout: float = DEADLINE,
                 **match: Any) -> list[pp.LedgerEntry]:
    def probe() -> list[pp.LedgerEntry] | None:
        found = entries(s, m, kind, **match)
        return found if len(found) >= count else None

    return eventually(probe, f"{count} {pp.EntryKind.Name(kind)} entries {match} for {m.member_id}", timeout)


def assert_consistent(s: PointsShop, m: Member) -> pp.Balance:
    """The invariant: the ledger sums to the balance (available and held)."""
    balance = get_balance(s, m)
    all_entries = ledger(s, m)
    assert sum(e.amount for e in all_entries) == balance.available, (balance, all_entries)
    assert sum(e.held_delta for e in all_entries) == balance.held, (balance, all_entries)
    return balance


def join(s: PointsShop, buyer: str | None = None, **fields: Any) -> Member:
    """Joins in membership and waits until points has the account and its JOIN earning."""
    buyer = buyer or "b-" + uuid.uuid4().hex[:10]
    fields.setdefault("join_channel", mpb.JOIN_CHANNEL_HOME_PAGE_MODULE)
    joined = s.shop.api.JoinMember(mpb.JoinMemberRequest(request_id=rid(), shop_id=s.shop_id, buyer_id=buyer,
                                                         **fields))
    profile, consent = fields.get("profile"), fields.get("consent_fields", ())
    birthday = ((profile.birthday.month, profile.birthday.day)
                if profile is not None and mpb.PROFILE_FIELD_BIRTHDAY in consent else None)
    member = Member(joined.member_id, buyer, at(joined.join_time), birthday, fields.get("referrer_member_id", ""))
    wait_entries(s, member, E.ENTRY_KIND_EARN, action=E.ACTION_JOIN)
    return member


def birthday_fields(month: int, day: int) -> dict[str, Any]:
    return {"profile": mpb.Profile(birthday=date_pb2.Date(year=1990, month=month, day=day)),
            "consent_fields": [mpb.PROFILE_FIELD_BIRTHDAY]}


# Membership completes an order only within its bounds (commands.LATE_COMPLETION back, CLOCK_SKEW
# ahead), and a trade completed before the buyer joined (less CLOCK_SKEW) does not count for the
# member. Inside them (with a margin for the time a test takes), orders go through membership.
MEMBERSHIP_LATEST_LATE = timedelta(days=30)
MEMBERSHIP_SKEW = timedelta(minutes=5)


@dataclass
class PublishedOrder:
    """An order whose events a test published itself: what its OrderRefunded events carry."""

    shop_id: str
    member_id: str
    amount_fen: int
    rate_milli: int
    refunded_fen: int = 0


# (shop_id, order_id) -> the order, for `refund`.
PUBLISHED_ORDERS: dict[tuple[str, str], PublishedOrder] = {}


def through_membership(m: Member, when: datetime) -> bool:
    """Whether membership would complete an order at `when` and count it for the member."""
    current = now()
    joined = m.joined_at is None or when >= m.joined_at - MEMBERSHIP_SKEW
    return current - MEMBERSHIP_LATEST_LATE <= when <= current + timedelta(minutes=1) and joined


def publish_membership_event(s: PointsShop, payload: Any) -> None:
    """Delivers an event to points as membership would have sent it, on the bus the services share."""
    assert s.bus is not None, "a shop made by points_shop"
    s.bus.publish(MEMBERSHIP_STREAM, [membership_envelope(payload, s.shop_id)])


def order(s: PointsShop, m: Member, fen: int, when: datetime | str | None = None, order_id: str | None = None,
          rate_milli: int = 1000) -> str:
    """A completed order of the member's (completed at `when`, default now). Through membership
    when it would complete and count it; otherwise (a date it refuses, or before the join) its
    OrderCompleted is published as membership would have sent it, at `rate_milli` (the member's
    tier's rate; Regular by default): these tests are about how points treats the event."""
    order_id = order_id or "o-" + uuid.uuid4().hex[:12]
    moment = None if when is None else at(ts(when))
    if moment is None or through_membership(m, moment):
        paid = {} if moment is None else {"paid_time": ts(moment)}
        s.shop.api.RecordOrder(mpb.RecordOrderRequest(shop_id=s.shop_id, order_id=order_id, buyer_id=m.buyer_id,
                                                      amount_fen=fen, **paid))
        done = {} if moment is None else {"complete_time": ts(moment)}
        s.shop.api.CompleteOrder(mpb.CompleteOrderRequest(request_id=rid(), shop_id=s.shop_id, order_id=order_id,
                                                          **done))
    else:
        birth_month, birth_day = m.birthday or (0, 0)
        publish_membership_event(s, mev.OrderCompleted(
            shop_id=s.shop_id, order_id=order_id, member_id=m.member_id, amount_fen=fen, completed_at=ts(moment),
            points_rate_milli=rate_milli, first_completed_order=m.completed_orders == 0,
            referrer_member_id=m.referrer_member_id, birth_month=birth_month, birth_day=birth_day))
        PUBLISHED_ORDERS[(s.shop_id, order_id)] = PublishedOrder(s.shop_id, m.member_id, fen, rate_milli)
    m.completed_orders += 1
    return order_id


def no_member_day(s: PointsShop) -> None:
    """Deletes the shop's member day, for a test whose orders must go through membership (it counts
    only trades completed after the join, so they complete now) and earn unmultiplied even on the 1st."""
    (member_day,) = [m for m in s.api.ListMultipliers(pp.ListMultipliersRequest(shop_id=s.shop_id)).multipliers
                     if m.kind == pp.MULTIPLIER_KIND_MEMBER_DAY]
    s.api.DeleteMultiplier(pp.DeleteMultiplierRequest(request_id=rid(), shop_id=s.shop_id,
                                                      multiplier_id=member_day.multiplier_id))


def buy(s: PointsShop, m: Member, fen: int, when: datetime | str | None = None) -> tuple[str, pp.LedgerEntry]:
    """A completed order and the EARN it brought (waited for)."""
    order_id = order(s, m, fen, when)
    (earned,) = wait_entries(s, m, E.ENTRY_KIND_EARN, order_id=order_id, action=E.ACTION_PURCHASE)
    return order_id, earned


def refund(s: PointsShop, order_id: str, fen: int) -> None:
    """A refund in membership; of an order `order` published, its OrderRefunded as membership sends it."""
    refund_id = "r-" + uuid.uuid4().hex[:12]
    published = PUBLISHED_ORDERS.get((s.shop_id, order_id))
    if published is None:
        s.shop.api.RefundOrder(mpb.RefundOrderRequest(request_id=rid(), shop_id=s.shop_id, order_id=order_id,
                                                      refund_id=refund_id, amount_fen=fen))
        return
    published.refunded_fen += fen
    publish_membership_event(s, mev.OrderRefunded(
        shop_id=s.shop_id, order_id=order_id, refund_id=refund_id, member_id=published.member_id,
        refund_amount_fen=fen, total_refunded_fen=published.refunded_fen, order_amount_fen=published.amount_fen,
        after_completion=True, fully_refunded=published.refunded_fen >= published.amount_fen,
        points_rate_milli=published.rate_milli, refunded_at=ts(now())))


def refund_and_wait(s: PointsShop, m: Member, order_id: str, fen: int) -> pp.LedgerEntry:
    """A refund after completion and the CLAWBACK it brought (the newest one for the order)."""
    before = len(entries(s, m, E.ENTRY_KIND_CLAWBACK, order_id=order_id))
    refund(s, order_id, fen)
    return wait_entries(s, m, E.ENTRY_KIND_CLAWBACK, before + 1, order_id=order_id)[0]


def earn(s: PointsShop, m: Member, points: int) -> pp.EarnResponse:
    return s.api.Earn(pp.EarnRequest(request_id=rid(), shop_id=s.shop_id, member_id=m.member_id, points=points,
                                     source=pp.Source(reference="test")))


def spend_request(s: PointsShop, m: Member, points: int, **fields: Any) -> pp.SpendRequest:
    fields.setdefault("request_id", rid())
    return pp.SpendRequest(shop_id=s.shop_id, member_id=m.member_id, points=points, **fields)


def hold_request(s: PointsShop, m: Member, points: int, **fields: Any) -> pp.HoldRequest:
    fields.setdefault("request_id", rid())
    return pp.HoldRequest(shop_id=s.shop_id, member_id=m.member_id, points=points, **fields)


def capture(s: PointsShop, hold_id: str) -> pp.CaptureHoldResponse:
    return s.api.CaptureHold(pp.CaptureHoldRequest(request_id=rid(), shop_id=s.shop_id, hold_id=hold_id))


def release(s: PointsShop, hold_id: str) -> pp.ReleaseHoldResponse:
    return s.api.ReleaseHold(pp.ReleaseHoldRequest(request_id=rid(), shop_id=s.shop_id, hold_id=hold_id))


def record(s: PointsShop, m: Member, action: int, when: datetime | None = None,
           subject: str = "") -> pp.RecordActionResponse:
    occur = {} if when is None else {"occur_time": ts(when)}
    return s.api.RecordAction(pp.RecordActionRequest(request_id=rid(), shop_id=s.shop_id, member_id=m.member_id,
                                                     action=action, subject=subject, **occur))


def expire(s: PointsShop, as_of: datetime) -> pp.ExpirePointsResponse:
    """ExpirePoints with the shop's key, as of a moment already past."""
    return s.api.ExpirePoints(pp.ExpirePointsRequest(request_id=rid(), shop_id=s.shop_id, as_of=ts(as_of)))


def expire_ahead(s: PointsShop, as_of: datetime) -> pp.ExpirePointsResponse:
    """ExpirePoints of the shop as of a moment still to come: only the admin key may."""
    return s.admin.ExpirePoints(pp.ExpirePointsRequest(request_id=rid(), shop_id=s.shop_id, as_of=ts(as_of)))


def outbox(db: Any, shop_id: str, payload_type: type[T]) -> list[T]:
    """The events a service wrote to its outbox for one shop, oldest first."""
    table = db.kit.outbox
    rows = db.read(lambda c: c.execute(select(table.c.envelope).where(
        table.c.shop_id == shop_id, table.c.event_type == payload_type.DESCRIPTOR.full_name)
        .order_by(table.c.id)).all())
    out = []
    for row in rows:
        envelope = envelope_pb2.EventEnvelope.FromString(row.envelope)
        payload = payload_type()
        envelope.payload.Unpack(payload)
        out.append(payload)
    return out


def membership_envelopes(membership: Any, shop_id: str, payload_type: type) -> list[bytes]:
    db = membership.running.app.db
    rows = db.read(lambda c: c.execute(select(membership_kit.outbox.c.envelope).where(
        membership_kit.outbox.c.shop_id == shop_id,
        membership_kit.outbox.c.event_type == payload_type.DESCRIPTOR.full_name).order_by(
        membership_kit.outbox.c.id)).all())
    return [row.envelope for row in rows]


def update_program(s: PointsShop, **changes: Any) -> pp.PointsProgram:
    program = s.api.GetPointsProgram(pp.GetPointsProgramRequest(shop_id=s.shop_id))
    for name, value in changes.items():
        setattr(program, name, value)
    return s.api.UpdatePointsProgram(pp.UpdatePointsProgramRequest(request_id=rid(), shop_id=s.shop_id,
                                                                   program=program))


# ----- accounts and the program ------------------------------------------------------------------------


def test_join_opens_an_account_with_the_join_points(ps: PointsShop) -> None:
    buyer = "b-" + uuid.uuid4().hex[:8]
    joined = ps.shop.api.JoinMember(mpb.JoinMemberRequest(request_id=rid(), shop_id=ps.shop_id, buyer_id=buyer,
                                                          join_channel=mpb.JOIN_CHANNEL_LIVE_STREAM))
    member = Member(joined.member_id, buyer)
    balance = eventually(lambda: get_balance(ps, member), "the account exists")
    (entry,) = wait_entries(ps, member, E.ENTRY_KIND_EARN)
    assert entry.amount == 100 and entry.held_delta == 0 and entry.balance_after == 100
    assert entry.source.action == E.ACTION_JOIN
    assert at(entry.expire_time) == expiry_of(at(joined.join_time))
    balance = assert_consistent(ps, member)
    assert (balance.available, balance.held, balance.lifetime_earned) == (100, 0, 100)
    assert balance.shop_id == ps.shop_id and balance.member_id == member.member_id
    assert at(balance.next_expiry_time) == at(entry.expire_time) and balance.next_expiry_amount == 100


def test_a_member_points_never_heard_of_is_not_found(ps: PointsShop) -> None:
    failure = fails(ps.api.GetBalance, pp.GetBalanceRequest(shop_id=ps.shop_id, member_id="m_nobody"))
    assert failure.code == grpc.StatusCode.NOT_FOUND and failure.reason == "MEMBER_NOT_FOUND"


def test_an_imported_member_gets_an_account_without_join_points(ps: PointsShop) -> None:
    imported = ps.shop.api.ImportMembers(mpb.ImportMembersRequest(
        request_id=rid(), shop_id=ps.shop_id, members=[mpb.ImportedMember(buyer_id="imported-1")]))
    member = Member(imported.member_ids[0], "imported-1")
    balance = eventually(lambda: get_balance(ps, member), "the imported member's account exists")
    assert balance.available == 0 and balance.lifetime_earned == 0
    assert ledger(ps, member) == []


def test_the_default_points_program_takes_the_membership_time_zone(points: Any, membership: Any, admin: Any,
                                                                   ps: PointsShop) -> None:
    program = ps.api.GetPointsProgram(pp.GetPointsProgramRequest(shop_id=ps.shop_id))
    assert program.shop_id == ps.shop_id and program.time_zone == "Asia/Shanghai"
    assert program.expiry_policy == pp.EXPIRY_POLICY_ROLLING_MONTHS and program.expiry_months == 12
    assert program.points_per_yuan == 100 and program.leave_policy == pp.LEAVE_POLICY_FORFEIT
    assert program.daily_pool_points == 0 and program.default_hold_ttl_seconds == 900
    tokyo = points_shop(points, create_shop(membership, admin, time_zone="Asia/Tokyo"))
    assert tokyo.api.GetPointsProgram(pp.GetPointsProgramRequest(shop_id=tokyo.shop_id)).time_zone == "Asia/Tokyo"


def test_default_earn_rules(ps: PointsShop) -> None:
    rules = {r.action: r for r in ps.api.ListEarnRules(pp.ListEarnRulesRequest(shop_id=ps.shop_id)).rules}
    assert set(rules) == {E.ACTION_PURCHASE, E.ACTION_JOIN, E.ACTION_FOLLOW_SHOP, E.ACTION_COMPLETE_PROFILE,
                          E.ACTION_DAILY_SIGN_IN, E.ACTION_REVIEW, E.ACTION_SHARE, E.ACTION_INVITE_FRIEND,
                          E.ACTION_REFERRAL, E.ACTION_SURVEY, E.ACTION_BROWSE}
    assert all(r.enabled and r.rule_id for r in rules.values())

    def shape(action: int) -> tuple:
        r = rules[action]
        return r.points, (r.caps.per_day, r.caps.per_month, r.caps.lifetime)

    assert shape(E.ACTION_PURCHASE) == (1, (0, 0, 0)) and rules[E.ACTION_PURCHASE].multipliers_apply
    assert shape(E.ACTION_JOIN) == (100, (0, 0, 0))
    assert shape(E.ACTION_FOLLOW_SHOP) == (20, (0, 0, 0))
    assert shape(E.ACTION_COMPLETE_PROFILE) == (50, (0, 0, 0))
    sign_in = rules[E.ACTION_DAILY_SIGN_IN]
    assert sign_in.points == 5 and sign_in.streak_days == 7 and sign_in.streak_bonus == 20
    assert sign_in.multipliers_apply
    assert shape(E.ACTION_REVIEW) == (10, (3, 0, 0))
    assert shape(E.ACTION_SHARE) == (5, (3, 0, 0))
    assert shape(E.ACTION_INVITE_FRIEND) == (20, (0, 10, 0))
    assert shape(E.ACTION_REFERRAL) == (0, (0, 0, 0)) and rules[E.ACTION_REFERRAL].min_order_fen == 0
    assert shape(E.ACTION_SURVEY) == (20, (0, 0, 0))
    assert shape(E.ACTION_BROWSE) == (1, (5, 0, 0))


def test_default_multipliers_are_member_day_and_birthday_month(ps: PointsShop) -> None:
    found = ps.api.ListMultipliers(pp.ListMultipliersRequest(shop_id=ps.shop_id)).multipliers
    by_kind = {m.kind: m for m in found}
    assert len(found) == 2 and set(by_kind) == {pp.MULTIPLIER_KIND_MEMBER_DAY, pp.MULTIPLIER_KIND_BIRTHDAY}
    member_day, birthday = by_kind[pp.MULTIPLIER_KIND_MEMBER_DAY], by_kind[pp.MULTIPLIER_KIND_BIRTHDAY]
    assert member_day.day_of_month == 1 and member_day.multiplier_milli == 2000
    assert birthday.birthday_window == pp.BIRTHDAY_WINDOW_MONTH and birthday.multiplier_milli == 2000
    assert member_day.multiplier_id and birthday.multiplier_id


# ----- purchases -------------------------------------------------------------------------------------


def test_done_when_a_completed_order_earns_within_a_second(ps: PointsShop) -> None:
    member = join(ps)
    order_id = order(ps, member, 123456, ordinary_time())
    (entry,) = wait_entries(ps, member, E.ENTRY_KIND_EARN, order_id=order_id, timeout=1.0)
    assert entry.amount == 1234 and entry.source.action == E.ACTION_PURCHASE


def test_purchase_earns_per_whole_yuan_at_the_tier_rate(ps: PointsShop) -> None:
    member = join(ps)
    no_member_day(ps)  # membership qualifies the tier from trades after the join: these complete now
    first_at = now()
    _, first = buy(ps, member, 123456, first_at)  # 1,234.56 yuan at Regular (1000): the member becomes Silver
    assert first.amount == 1234 and first.source.action == E.ACTION_PURCHASE
    assert at(first.expire_time) == expiry_of(first_at)
    _, second = buy(ps, member, 10199, now())  # 101.99 yuan at Silver (1500): floor(101 × 1.5)
    assert second.amount == 151
    balance = assert_consistent(ps, member)
    assert balance.available == 100 + 1234 + 151 and balance.lifetime_earned == 100 + 1234 + 151


def test_member_day_is_judged_in_the_shop_time_zone(ps: PointsShop) -> None:
    member = join(ps)
    _, member_day = buy(ps, member, 100 * YUAN, "2026-12-01T02:00:00+08:00")
    _, day_before = buy(ps, member, 100 * YUAN, "2026-11-30T23:59:59+08:00")
    assert member_day.amount == 200 and day_before.amount == 100


def test_member_day_follows_the_shops_own_time_zone(points: Any, membership: Any, admin: Any) -> None:
    tokyo = points_shop(points, create_shop(membership, admin, time_zone="Asia/Tokyo"), ZoneInfo("Asia/Tokyo"))
    member = join(tokyo)
    # 00:30 on 1 December in Tokyo, still 30 November in Shanghai.
    _, entry = buy(tokyo, member, 100 * YUAN, "2026-11-30T15:30:00Z")
    assert entry.amount == 200
    assert at(entry.expire_time) == expiry_of(at(ts("2026-11-30T15:30:00Z")), ZoneInfo("Asia/Tokyo"))


def test_birthday_month_doubles_and_never_compounds_with_member_day(ps: PointsShop) -> None:
    member = join(ps, **birthday_fields(12, 10))
    _, birthday_month = buy(ps, member, 100 * YUAN, "2026-12-15T12:00:00+08:00")
    _, both = buy(ps, member, 100 * YUAN, "2026-12-01T12:00:00+08:00")
    _, neither = buy(ps, member, 100 * YUAN, "2026-11-15T12:00:00+08:00")
    assert (birthday_month.amount, both.amount, neither.amount) == (200, 200, 100)


def test_a_campaign_multiplier_beats_member_day_and_ends_when_deleted(ps: PointsShop) -> None:
    member = join(ps)
    campaign = ps.api.CreateMultiplier(pp.CreateMultiplierRequest(request_id=rid(), shop_id=ps.shop_id,
                                                                  multiplier=pp.Multiplier(
        name="元旦三倍", kind=pp.MULTIPLIER_KIND_CAMPAIGN, multiplier_milli=3000,
        start_time=ts("2027-01-01T00:00:00+08:00"), end_time=ts("2027-01-02T00:00:00+08:00"))))
    assert campaign.multiplier_id and campaign.multiplier_milli == 3000
    listed = ps.api.ListMultipliers(pp.ListMultipliersRequest(shop_id=ps.shop_id)).multipliers
    assert campaign.multiplier_id in {m.multiplier_id for m in listed}
    _, in_window = buy(ps, member, 100 * YUAN, "2027-01-01T10:00:00+08:00")
    _, member_day_only = buy(ps, member, 100 * YUAN, "2027-02-01T10:00:00+08:00")
    _, after_window = buy(ps, member, 100 * YUAN, "2027-01-02T00:00:00+08:00")  # end is exclusive
    assert (in_window.amount, member_day_only.amount, after_window.amount) == (300, 200, 100)
    ps.api.DeleteMultiplier(pp.DeleteMultiplierRequest(request_id=rid(), shop_id=ps.shop_id,
                                                       multiplier_id=campaign.multiplier_id))
    listed = ps.api.ListMultipliers(pp.ListMultipliersRequest(shop_id=ps.shop_id)).multipliers
    assert campaign.multiplier_id not in {m.multiplier_id for m in listed}
    _, deleted = buy(ps, member, 100 * YUAN, "2027-01-01T11:00:00+08:00")
    assert deleted.amount == 200  # member day still doubles


# ----- refunds -------------------------------------------------------------------------------------


def test_refunds_claw_back_what_the_remaining_amount_no_longer_earns(ps: PointsShop) -> None:
    member = join(ps)
    order_id, earned = buy(ps, member, 123456, ordinary_time())
    assert earned.amount == 1234
    first = refund_and_wait(ps, member, order_id, 23456)  # 1,000.00 yuan remain: they keep 1000
    assert first.amount == -234 and first.source.order_id == order_id and first.held_delta == 0
    second = refund_and_wait(ps, member, order_id, 50)  # 999.50 remain: 999
    assert second.amount == -1
    third = refund_and_wait(ps, member, order_id, 99950)  # all of it: everything the order earned
    assert third.amount == -999
    assert sum(e.amount for e in entries(ps, member, E.ENTRY_KIND_CLAWBACK)) == -1234
    assert assert_consistent(ps, member).available == 100


def test_a_full_refund_claws_back_everything_at_once(ps: PointsShop) -> None:
    member = join(ps)
    order_id, earned = buy(ps, member, 50099, "2026-12-01T09:00:00+08:00")  # member day: 1000
    assert earned.amount == 1000
    clawback = refund_and_wait(ps, member, order_id, 50099)
    assert clawback.amount == -1000 and clawback.kind == E.ENTRY_KIND_CLAWBACK
    assert assert_consistent(ps, member).available == 100


def test_clawing_back_spent_points_leaves_a_debt_that_later_earnings_pay_first(ps: PointsShop) -> None:
    member = join(ps)
    order_id, _ = buy(ps, member, 500 * YUAN, ordinary_time())
    ps.api.Spend(spend_request(ps, member, 600))
    refund_and_wait(ps, member, order_id, 500 * YUAN)
    balance = assert_consistent(ps, member)
    assert balance.available == -500
    assert_insufficient(fails(ps.api.Spend, spend_request(ps, member, 1)), 501)
    assert earn(ps, member, 300).balance.available == -200
    assert_insufficient(fails(ps.api.Hold, hold_request(ps, member, 1)), 201)
    assert earn(ps, member, 250).balance.available == 50
    balance = assert_consistent(ps, member)
    # The debt ate the first earning and 200 of the second: 50 points remain to expire.
    assert balance.next_expiry_amount == 50
    assert ps.api.Spend(spend_request(ps, member, 50)).balance.available == 0


def test_a_refund_before_completion_earns_on_what_remains_without_clawback(ps: PointsShop) -> None:
    member = join(ps)
    no_member_day(ps)  # membership's own handling of the refund: the order completes now, after the join
    order_id = "o-" + uuid.uuid4().hex[:12]
    ps.shop.api.RecordOrder(mpb.RecordOrderRequest(shop_id=ps.shop_id, order_id=order_id, buyer_id=member.buyer_id,
                                                   amount_fen=200 * YUAN))
    refund(ps, order_id, 50 * YUAN)
    ps.shop.api.CompleteOrder(mpb.CompleteOrderRequest(request_id=rid(), shop_id=ps.shop_id, order_id=order_id,
                                                       complete_time=ts(now())))
    (earned,) = wait_entries(ps, member, E.ENTRY_KIND_EARN, order_id=order_id)
    assert earned.amount == 150
    assert entries(ps, member, E.ENTRY_KIND_CLAWBACK) == []
    # A later refund takes back only its own share, not the part refunded before completion again.
    clawback = refund_and_wait(ps, member, order_id, 20 * YUAN)
    assert clawback.amount == -20


def test_a_refund_delivered_before_its_completion_waits_for_it(points: Any, membership: Any, ps: PointsShop) -> None:
    member = join(ps)
    buy(ps, member, 10 * YUAN)  # now, through membership: its OrderCompleted is the model
    # Craft a completion and a full refund of a new order from the member's real completion.
    completed = envelope_pb2.EventEnvelope.FromString(
        membership_envelopes(membership, ps.shop_id, mev.OrderCompleted)[-1])
    done = mev.OrderCompleted()
    completed.payload.Unpack(done)
    done.order_id, done.amount_fen, completed.id = "o-ooo-" + uuid.uuid4().hex[:8], 500 * YUAN, str(uuid.uuid4())
    completed.payload.Pack(done)
    refunded = envelope_pb2.EventEnvelope(id=str(uuid.uuid4()), type=mev.OrderRefunded.DESCRIPTOR.full_name,
                                          shop_id=ps.shop_id)
    refunded.payload.Pack(mev.OrderRefunded(
        shop_id=ps.shop_id, order_id=done.order_id, refund_id="r1", member_id=member.member_id,
        refund_amount_fen=500 * YUAN, total_refunded_fen=500 * YUAN, order_amount_fen=500 * YUAN,
        after_completion=True, fully_refunded=True, points_rate_milli=1000, refunded_at=done.completed_at))
    consumer = points.running.app.consumers[0]
    with pytest.raises(EventOutOfOrder):  # not applied, not recorded: the bus delivers it again
        consumer.handle(refunded.SerializeToString())
    assert consumer.handle(completed.SerializeToString())
    assert consumer.handle(refunded.SerializeToString())
    assert [e.amount for e in entries(ps, member, E.ENTRY_KIND_EARN, order_id=done.order_id)] == [500]
    assert [e.amount for e in entries(ps, member, E.ENTRY_KIND_CLAWBACK, order_id=done.order_id)] == [-500]
    assert_consistent(ps, member)


# ----- spending and holds -----------------------------------------------------------------------------


def test_spend_uses_the_earliest_expiring_lot_first(ps: PointsShop) -> None:
    member = join(ps)
    early_at = ordinary(now() - timedelta(days=300))
    _, early = buy(ps, member, 80 * YUAN, early_at)  # expires in about two months
    earn(ps, member, 500)  # expires in a year, like the join points
    balance = get_balance(ps, member)
    assert balance.available == 680
    assert at(balance.next_expiry_time) == expiry_of(early_at) and balance.next_expiry_amount == 80
    spent = ps.api.Spend(spend_request(ps, member, 50, source=pp.Source(redemption_id="rd-1")))
    assert spent.entry.kind == E.ENTRY_KIND_SPEND and spent.entry.amount == -50
    assert spent.entry.source.redemption_id == "rd-1" and spent.entry.balance_after == 630
    assert spent.balance.available == 630 and spent.balance.next_expiry_amount == 30
    after = ps.api.Spend(spend_request(ps, member, 40)).balance
    # The early lot is used up; the next expiry is the year-long lots (join and earn, same day).
    assert at(after.next_expiry_time) > at(early.expire_time)
    assert after.available == 590
    assert_consistent(ps, member)


def test_spending_or_holding_more_than_available_is_refused_with_the_shortfall(ps: PointsShop) -> None:
    member = join(ps)
    assert_insufficient(fails(ps.api.Spend, spend_request(ps, member, 130)), 30)
    assert_insufficient(fails(ps.api.Hold, hold_request(ps, member, 101)), 1)
    balance = assert_consistent(ps, member)
    assert (balance.available, balance.held) == (100, 0)


def test_hold_then_capture(points: Any, ps: PointsShop) -> None:
    member = join(ps)
    earn(ps, member, 400)
    held = ps.api.Hold(hold_request(ps, member, 300, ttl_seconds=600, source=pp.Source(redemption_id="rd-9")))
    assert held.hold_id and (held.balance.available, held.balance.held) == (200, 300)
    assert 590 <= (at(held.expire_time) - now()).total_seconds() <= 610
    (hold_entry,) = entries(ps, member, E.ENTRY_KIND_HOLD)
    assert (hold_entry.amount, hold_entry.held_delta) == (-300, 300) and hold_entry.source.hold_id == held.hold_id
    captured = capture(ps, held.hold_id)
    assert captured.entry.kind == E.ENTRY_KIND_CAPTURE
    assert (captured.entry.amount, captured.entry.held_delta) == (0, -300)
    assert (captured.balance.available, captured.balance.held) == (200, 0)
    assert capture(ps, held.hold_id) == captured  # repeated: the same answer
    failure = fails(ps.api.ReleaseHold, pp.ReleaseHoldRequest(request_id=rid(), shop_id=ps.shop_id,
                                                              hold_id=held.hold_id))
    assert failure.code == grpc.StatusCode.FAILED_PRECONDITION and failure.reason == "HOLD_CAPTURED"
    assert len(entries(ps, member, E.ENTRY_KIND_CAPTURE)) == 1
    assert_consistent(ps, member)


def test_hold_then_release_restores_the_lots(ps: PointsShop) -> None:
    member = join(ps)
    early_at = ordinary(now() - timedelta(days=200))
    _, early = buy(ps, member, 60 * YUAN, early_at)
    before = get_balance(ps, member)
    assert before.next_expiry_amount == 60
    held = ps.api.Hold(hold_request(ps, member, 100))
    assert 890 <= (at(held.expire_time) - now()).total_seconds() <= 910  # the default 15 minutes
    assert (held.balance.available, held.balance.held) == (60, 100)
    released = release(ps, held.hold_id)
    assert released.entry.kind == E.ENTRY_KIND_RELEASE
    assert (released.entry.amount, released.entry.held_delta) == (100, -100)
    after = released.balance
    assert (after.available, after.held) == (160, 0)
    assert after.next_expiry_time == before.next_expiry_time and after.next_expiry_amount == 60
    assert release(ps, held.hold_id) == released
    failure = fails(ps.api.CaptureHold, pp.CaptureHoldRequest(request_id=rid(), shop_id=ps.shop_id,
                                                              hold_id=held.hold_id))
    assert failure.code == grpc.StatusCode.FAILED_PRECONDITION and failure.reason == "HOLD_RELEASED"
    # The restored early lot is still the first to go.
    spent = ps.api.Spend(spend_request(ps, member, 60)).balance
    assert at(spent.next_expiry_time) > at(early.expire_time)
    assert_consistent(ps, member)


def test_a_hold_past_its_ttl_is_released_by_itself(ps: PointsShop) -> None:
    member = join(ps)
    held = ps.api.Hold(hold_request(ps, member, 70, ttl_seconds=1))
    assert held.balance.held == 70
    eventually(lambda: get_balance(ps, member).held == 0, "the sweeper releases the hold", timeout=8.0)
    balance = assert_consistent(ps, member)
    assert balance.available == 100
    failure = fails(ps.api.CaptureHold, pp.CaptureHoldRequest(request_id=rid(), shop_id=ps.shop_id,
                                                              hold_id=held.hold_id))
    assert failure.code == grpc.StatusCode.FAILED_PRECONDITION
    assert failure.reason in ("HOLD_EXPIRED", "HOLD_RELEASED")


def test_an_unknown_hold_is_not_found(ps: PointsShop) -> None:
    for call, request_type in ((ps.api.CaptureHold, pp.CaptureHoldRequest),
                               (ps.api.ReleaseHold, pp.ReleaseHoldRequest)):
        failure = fails(call, request_type(request_id=rid(), shop_id=ps.shop_id, hold_id="h_nothing"))
        assert failure.code == grpc.StatusCode.NOT_FOUND


# ----- expiry ---------------------------------------------------------------------------------------
# The points app expires due lots by itself about every minute (as_of now) in the test settings, so
# exact ExpirePoints counts are checked on lots that expire in the future, with a future as_of: the
# admin's alone (a shop key expires only what is due now).


def test_the_expiry_example_of_the_spec(ps: PointsShop) -> None:
    member = join(ps)
    # Completed in this order, so that both earn at Regular (the larger order makes the member Silver).
    _, jan_16 = buy(ps, member, 50 * YUAN, "2025-01-15T16:00:00Z")  # 00:00 on 16 January in Shanghai
    _, late_jan_15 = buy(ps, member, 123456, "2025-01-15T15:59:59Z")  # 23:59:59 on 15 January in Shanghai
    assert (late_jan_15.amount, jan_16.amount) == (1234, 50)
    assert at(late_jan_15.expire_time) == at(ts("2026-01-15T16:00:00Z"))
    assert at(jan_16.expire_time) == at(ts("2026-01-16T16:00:00Z"))
    nothing = expire(ps, at(ts("2026-01-15T15:59:59Z")))
    assert (nothing.members, nothing.lots, nothing.points) == (0, 0, 0)
    expire(ps, at(ts("2026-01-15T16:00:00Z")))
    expire(ps, at(ts("2026-01-16T16:00:00Z")))
    # Both lots are long past expiry, so the background job may have been first; each expired once.
    assert sorted(e.amount for e in entries(ps, member, E.ENTRY_KIND_EXPIRE)) == [-1234, -50]
    assert assert_consistent(ps, member).available == 100


def test_lots_expire_at_the_shop_local_midnight_twelve_months_on(ps: PointsShop) -> None:
    member = join(ps)
    day = now().astimezone(SHANGHAI).date() - timedelta(days=40)
    last_second = datetime.combine(day, dtime(23, 59, 59), tzinfo=SHANGHAI)
    midnight = datetime.combine(day + timedelta(days=1), dtime(), tzinfo=SHANGHAI)
    # Completed in this order, so that both earn at Regular (the larger order makes the member Silver).
    _, next_day = buy(ps, member, 50 * YUAN, midnight)
    _, same_day = buy(ps, member, 123456, last_second)
    ends = datetime.combine(add_months(day, 12) + timedelta(days=1), dtime(), tzinfo=SHANGHAI)
    assert at(same_day.expire_time) == ends == expiry_of(last_second)
    assert at(next_day.expire_time) == expiry_of(midnight) > ends
    nothing = expire_ahead(ps, ends - timedelta(seconds=1))
    assert (nothing.members, nothing.lots, nothing.points) == (0, 0, 0)
    first = expire_ahead(ps, ends)
    assert (first.members, first.lots, first.points) == (1, 1, same_day.amount)
    again = expire_ahead(ps, ends)
    assert (again.members, again.lots, again.points) == (0, 0, 0)
    second = expire_ahead(ps, at(next_day.expire_time))
    assert (second.members, second.lots, second.points) == (1, 1, next_day.amount)
    expired = entries(ps, member, E.ENTRY_KIND_EXPIRE)
    assert sorted(e.amount for e in expired) == sorted([-same_day.amount, -next_day.amount])
    balance = assert_consistent(ps, member)
    assert balance.available == 100


def test_expire_points_retried_with_its_request_id_gives_the_first_answer(ps: PointsShop) -> None:
    member = join(ps)
    _, lot = buy(ps, member, 30 * YUAN, ordinary(now() - timedelta(days=100)))
    request = pp.ExpirePointsRequest(request_id=rid(), shop_id=ps.shop_id, as_of=lot.expire_time)
    first = ps.admin.ExpirePoints(request)
    assert (first.members, first.lots, first.points) == (1, 1, lot.amount)
    assert ps.admin.ExpirePoints(request) == first
    assert len(entries(ps, member, E.ENTRY_KIND_EXPIRE)) == 1


def test_the_expiry_day_is_clamped_to_the_end_of_a_shorter_month(ps: PointsShop) -> None:
    member = join(ps)
    _, leap_day = buy(ps, member, 10 * YUAN, "2024-02-29T12:00:00+08:00")
    assert at(leap_day.expire_time) == at(ts("2025-03-01T00:00:00+08:00"))  # valid through 28 February 2025
    _, end_of_march = buy(ps, member, 10 * YUAN, "2025-03-31T12:00:00+08:00")
    assert at(end_of_march.expire_time) == at(ts("2026-04-01T00:00:00+08:00"))


def test_lots_past_expiry_are_neither_counted_nor_spent_before_expire_points_runs(ps: PointsShop) -> None:
    member = join(ps)
    buy(ps, member, 700 * YUAN, "2025-01-10T12:00:00+08:00")  # expired on 11 January 2026
    balance = get_balance(ps, member)
    assert balance.available == 100
    assert at(balance.next_expiry_time) > now() and balance.next_expiry_amount == 100
    assert_insufficient(fails(ps.api.Spend, spend_request(ps, member, 101)), 1)
    expire(ps, now())
    (expired,) = entries(ps, member, E.ENTRY_KIND_EXPIRE)  # by this call or by the background job
    assert expired.amount == -700
    assert assert_consistent(ps, member).available == 100


def test_expire_points_with_a_shop_key_needs_the_shop_id(ps: PointsShop) -> None:
    failure = fails(ps.api.ExpirePoints, pp.ExpirePointsRequest(request_id=rid(), as_of=ts(now())))
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT and "shop_id" in failure.fields


def test_expire_points_needs_a_request_id(ps: PointsShop) -> None:
    failure = fails(ps.api.ExpirePoints, pp.ExpirePointsRequest(shop_id=ps.shop_id, as_of=ts(now())))
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT and "request_id" in failure.fields


def test_a_shop_key_expires_only_what_is_due_now(ps: PointsShop) -> None:
    member = join(ps)
    _, lot = buy(ps, member, 30 * YUAN, ordinary(now() - timedelta(days=100)))
    ahead = pp.ExpirePointsRequest(request_id=rid(), shop_id=ps.shop_id, as_of=lot.expire_time)
    failure = fails(ps.api.ExpirePoints, ahead)
    assert failure.code == grpc.StatusCode.PERMISSION_DENIED and failure.reason == "EXPIRY_AHEAD_ADMIN_ONLY"
    assert entries(ps, member, E.ENTRY_KIND_EXPIRE) == []
    assert get_balance(ps, member).available == 100 + lot.amount
    due_now = ps.api.ExpirePoints(pp.ExpirePointsRequest(request_id=rid(), shop_id=ps.shop_id))
    assert (due_now.members, due_now.lots, due_now.points) == (0, 0, 0)
    by_admin = ps.admin.ExpirePoints(ahead)
    assert (by_admin.members, by_admin.lots, by_admin.points) == (1, 1, lot.amount)
    assert assert_consistent(ps, member).available == 100


def test_the_admin_expires_points_of_every_shop(points: Any, ps: PointsShop) -> None:
    member = join(ps)
    _, lot = buy(ps, member, 40 * YUAN, ordinary(now() - timedelta(days=300)))
    admin_points = points_stub(points, ADMIN_KEY)
    everywhere = admin_points.ExpirePoints(pp.ExpirePointsRequest(request_id=rid(), as_of=lot.expire_time))
    assert everywhere.members >= 1 and everywhere.lots >= 1 and everywhere.points >= lot.amount
    (expired,) = entries(ps, member, E.ENTRY_KIND_EXPIRE)
    assert expired.amount == -lot.amount
    assert_consistent(ps, member)


# ----- balances and the ledger ------------------------------------------------------------------------


def test_a_write_is_visible_on_the_very_next_balance_read(ps: PointsShop) -> None:
    member = join(ps)
    expected = get_balance(ps, member).available
    for points in (5, 17, 1):
        earn(ps, member, points)
        expected += points
        assert get_balance(ps, member).available == expected
        ps.api.Spend(spend_request(ps, member, 3))
        expected -= 3
        assert get_balance(ps, member).available == expected
    ps.api.Hold(hold_request(ps, member, 4))
    assert get_balance(ps, member).held == 4


def test_an_event_driven_earning_is_in_the_balance_as_soon_as_in_the_ledger(ps: PointsShop) -> None:
    """The balance cache must not lag behind the ledger after a write made by an event consumer:
    once ListLedger shows a purchase's EARN, the next GetBalance includes it. (A race: it is tried
    many times over, each with a freshly cached balance.)"""
    member = join(ps)
    stale = []
    for i in range(150):
        before = get_balance(ps, member)  # cached now
        order_id = order(ps, member, 2 * YUAN, ordinary_time())
        while True:
            newest = ps.api.ListLedger(pp.ListLedgerRequest(shop_id=ps.shop_id, member_id=member.member_id,
                                                            page_size=1)).entries
            if newest and newest[0].source.order_id == order_id:
                break
        after = get_balance(ps, member)
        if after.available != newest[0].balance_after:
            stale.append((i, before.available, after.available, newest[0].balance_after))
    assert stale == [], f"GetBalance lagged behind the ledger (try, before, got, ledger's balance_after): {stale}"


def test_the_ledger_is_newest_first_paginated_and_filtered(ps: PointsShop) -> None:
    member = join(ps)
    for points in (10, 20, 30):
        earn(ps, member, points)
        time.sleep(0.01)
        ps.api.Spend(spend_request(ps, member, points // 10))
        time.sleep(0.01)
    full = ledger(ps, member)
    assert len(full) == 7
    assert [e.entry_id for e in full] == sorted((e.entry_id for e in full), reverse=True)
    assert [at(e.create_time) for e in full] == sorted((at(e.create_time) for e in full), reverse=True)
    assert full[0].balance_after == get_balance(ps, member).available == 100 + 60 - 6
    pages = []
    token = ""
    while True:
        page = ps.api.ListLedger(pp.ListLedgerRequest(shop_id=ps.shop_id, member_id=member.member_id, page_size=3,
                                                      page_token=token))
        pages.append([e.entry_id for e in page.entries])
        token = page.next_page_token
        if not token:
            break
    assert [len(p) for p in pages] == [3, 3, 1]
    assert [i for p in pages for i in p] == [e.entry_id for e in full]
    spends = ledger(ps, member, kinds=[E.ENTRY_KIND_SPEND])
    assert [e.amount for e in spends] == [-3, -2, -1]
    both = ledger(ps, member, kinds=[E.ENTRY_KIND_SPEND, E.ENTRY_KIND_EARN])
    assert len(both) == 7
    start, end = full[4].create_time, full[1].create_time  # [start, end): entries 4, 3, 2
    window = ledger(ps, member, start_time=start, end_time=end)
    assert [e.entry_id for e in window] == [e.entry_id for e in full if at(start) <= at(e.create_time) < at(end)]
    assert [e.entry_id for e in window] == [e.entry_id for e in full[2:5]]


# ----- actions --------------------------------------------------------------------------------------
# Occur times are recent shop-local days (the service takes occur_time only within the last 31 days).


def local_today() -> date:
    return now().astimezone(SHANGHAI).date()


def days_ago(days: int) -> datetime:
    """Shop-local noon `days` days ago."""
    return local_noon(local_today() - timedelta(days=days))


def test_daily_sign_in_earns_once_per_shop_local_day(ps: PointsShop) -> None:
    member = join(ps)
    day = local_today() - timedelta(days=3)
    while day.day == 1 or (day + timedelta(days=1)).day == 1:  # no member day: 5 points each
        day -= timedelta(days=1)
    late = datetime.combine(day, dtime(23, 30), tzinfo=SHANGHAI)  # like 2026-11-23T15:30:00Z
    first = record(ps, member, E.ACTION_DAILY_SIGN_IN, late)
    assert first.points == 5 and first.not_earned_reason == "" and first.multiplier_milli == 1000
    assert first.streak_days == 1 and first.balance.available == 105
    again = record(ps, member, E.ACTION_DAILY_SIGN_IN, late + timedelta(minutes=15))
    assert again.points == 0 and again.not_earned_reason == "ALREADY_SIGNED_IN_TODAY"
    next_day = record(ps, member, E.ACTION_DAILY_SIGN_IN, late + timedelta(hours=1))  # like 2026-11-23T16:30:00Z
    assert next_day.points == 5 and next_day.streak_days == 2 and next_day.not_earned_reason == ""
    assert assert_consistent(ps, member).available == 110


def test_every_seventh_consecutive_sign_in_earns_the_streak_bonus_unmultiplied(ps: PointsShop) -> None:
    member = join(ps)
    days = [local_today() - timedelta(days=k) for k in range(10, 3, -1)]  # 7 consecutive days
    # Triple points on the 7th day, so the bonus can be seen not to be multiplied (×3 beats a member day).
    ps.api.CreateMultiplier(pp.CreateMultiplierRequest(request_id=rid(), shop_id=ps.shop_id, multiplier=pp.Multiplier(
        name="sign-in ×3", kind=pp.MULTIPLIER_KIND_CAMPAIGN, multiplier_milli=3000,
        start_time=ts(datetime.combine(days[6], dtime(), tzinfo=SHANGHAI)),
        end_time=ts(datetime.combine(days[6] + timedelta(days=1), dtime(), tzinfo=SHANGHAI)),
        actions=[E.ACTION_DAILY_SIGN_IN])))
    got = [record(ps, member, E.ACTION_DAILY_SIGN_IN, local_noon(day)) for day in days]
    assert [r.streak_days for r in got] == [1, 2, 3, 4, 5, 6, 7]
    assert [r.points for r in got[:6]] == [10 if day.day == 1 else 5 for day in days[:6]]
    assert got[6].multiplier_milli == 3000 and got[6].points == 5 * 3 + 20
    gap_day = days[6] + timedelta(days=2)
    gap = record(ps, member, E.ACTION_DAILY_SIGN_IN, local_noon(gap_day))
    assert gap.streak_days == 1 and gap.points == (10 if gap_day.day == 1 else 5)
    assert_consistent(ps, member)


def test_once_only_actions_earn_once(ps: PointsShop) -> None:
    member = join(ps)
    when = ordinary(days_ago(5))
    for action, points in ((E.ACTION_FOLLOW_SHOP, 20), (E.ACTION_COMPLETE_PROFILE, 50)):
        first = record(ps, member, action, when)
        assert (first.points, first.not_earned_reason, first.multiplier_milli) == (points, "", 1000)
        again = record(ps, member, action, when + timedelta(days=1))
        assert (again.points, again.not_earned_reason) == (0, "ALREADY_EARNED")
    join_again = record(ps, member, E.ACTION_JOIN, when)
    assert (join_again.points, join_again.not_earned_reason) == (0, "ALREADY_EARNED")
    assert assert_consistent(ps, member).available == 100 + 20 + 50


def test_subject_actions_need_a_subject_and_earn_once_per_subject(ps: PointsShop) -> None:
    member = join(ps)
    when = ordinary(days_ago(3))
    for action in (E.ACTION_REVIEW, E.ACTION_INVITE_FRIEND, E.ACTION_SURVEY):
        failure = fails(ps.api.RecordAction, pp.RecordActionRequest(
            request_id=rid(), shop_id=ps.shop_id, member_id=member.member_id, action=action, occur_time=ts(when)))
        assert failure.code == grpc.StatusCode.INVALID_ARGUMENT and "subject" in failure.fields
    for action, points in ((E.ACTION_REVIEW, 10), (E.ACTION_INVITE_FRIEND, 20), (E.ACTION_SURVEY, 20)):
        assert record(ps, member, action, when, subject="s-1").points == points
        again = record(ps, member, action, when, subject="s-1")
        assert (again.points, again.not_earned_reason) == (0, "ALREADY_EARNED")
        assert record(ps, member, action, when, subject="s-2").points == points
    assert assert_consistent(ps, member).available == 100 + 2 * (10 + 20 + 20)


def test_daily_and_monthly_caps(ps: PointsShop) -> None:
    member = join(ps)
    day = ordinary(days_ago(5))
    reviews = [record(ps, member, E.ACTION_REVIEW, day + timedelta(minutes=k), subject=f"o-{k}") for k in range(4)]
    assert [r.points for r in reviews] == [10, 10, 10, 0]
    assert reviews[3].not_earned_reason == "DAILY_CAP_REACHED"
    assert record(ps, member, E.ACTION_REVIEW, day + timedelta(days=1), subject="o-9").points == 10
    shares = [record(ps, member, E.ACTION_SHARE, day + timedelta(minutes=k)) for k in range(4)]
    assert [(r.points, r.not_earned_reason) for r in shares] == [(5, "")] * 3 + [(0, "DAILY_CAP_REACHED")]
    expected = 100 + 40 + 15
    # Ten invitations a month: the 11th this month earns nothing, one last month did.
    this_month = now() - timedelta(minutes=1)
    invites = [record(ps, member, E.ACTION_INVITE_FRIEND, this_month, subject=f"f-{k}") for k in range(11)]
    assert [r.points for r in invites] == [20] * 10 + [0]
    assert invites[10].not_earned_reason == "MONTHLY_CAP_REACHED"
    expected += 200
    last_month = datetime.combine(local_today().replace(day=1), dtime(), tzinfo=SHANGHAI) - timedelta(minutes=1)
    if now() - last_month < timedelta(days=30):
        assert record(ps, member, E.ACTION_INVITE_FRIEND, last_month, subject="f-99").points == 20
        expected += 20
    assert assert_consistent(ps, member).available == expected


def test_a_lifetime_cap_and_a_disabled_rule_earn_nothing(ps: PointsShop) -> None:
    member = join(ps)
    rule = ps.api.UpsertEarnRule(pp.UpsertEarnRuleRequest(request_id=rid(), shop_id=ps.shop_id, rule=pp.EarnRule(
        action=E.ACTION_SHARE, enabled=True, points=7, caps=pp.Caps(per_day=3, lifetime=2))))
    assert rule.points == 7 and rule.caps.lifetime == 2 and rule.enabled
    got = [record(ps, member, E.ACTION_SHARE, days_ago(k)) for k in (6, 5, 4)]
    assert [(r.points, r.not_earned_reason) for r in got] == [(7, ""), (7, ""), (0, "LIFETIME_CAP_REACHED")]
    ps.api.UpsertEarnRule(pp.UpsertEarnRuleRequest(request_id=rid(), shop_id=ps.shop_id, rule=pp.EarnRule(
        action=E.ACTION_BROWSE, enabled=False, points=1, caps=pp.Caps(per_day=5))))
    rules = {r.action: r for r in ps.api.ListEarnRules(pp.ListEarnRulesRequest(shop_id=ps.shop_id)).rules}
    assert not rules[E.ACTION_BROWSE].enabled and rules[E.ACTION_SHARE].points == 7
    disabled = record(ps, member, E.ACTION_BROWSE, days_ago(2))
    assert (disabled.points, disabled.not_earned_reason) == (0, "RULE_DISABLED")
    assert assert_consistent(ps, member).available == 114


# ----- referral, leaving -------------------------------------------------------------------------------


def test_a_referral_rewards_both_members_on_the_first_purchase_only(ps: PointsShop) -> None:
    referrer = join(ps)
    referee = join(ps, referrer_member_id=referrer.member_id)
    order_id, purchase = buy(ps, referee, 30050, ordinary_time())
    assert purchase.amount == 300
    (to_referrer,) = wait_entries(ps, referrer, E.ENTRY_KIND_EARN, action=E.ACTION_REFERRAL)
    (to_referee,) = wait_entries(ps, referee, E.ENTRY_KIND_EARN, action=E.ACTION_REFERRAL)
    assert to_referrer.amount == 300 and to_referee.amount == 300
    buy(ps, referee, 50000, ordinary_time())
    assert len(entries(ps, referrer, E.ENTRY_KIND_EARN, action=E.ACTION_REFERRAL)) == 1
    assert len(entries(ps, referee, E.ENTRY_KIND_EARN, action=E.ACTION_REFERRAL)) == 1
    assert assert_consistent(ps, referrer).available == 100 + 300
    assert assert_consistent(ps, referee).available == 100 + 300 + 300 + 500


def test_leaving_forfeits_the_balance_and_later_events_earn_nothing(points: Any, membership: Any,
                                                                    ps: PointsShop) -> None:
    member = join(ps)
    buy(ps, member, 250 * YUAN, ordinary_time())
    held = ps.api.Hold(hold_request(ps, member, 50))
    assert (held.balance.available, held.balance.held) == (300, 50)
    ps.shop.api.LeaveMember(mpb.LeaveMemberRequest(request_id=rid(), shop_id=ps.shop_id, member_id=member.member_id,
                                                   reason="moving away"))
    (forfeit,) = wait_entries(ps, member, E.ENTRY_KIND_FORFEIT)
    assert forfeit.amount == -350 and forfeit.balance_after == 0
    (released,) = entries(ps, member, E.ENTRY_KIND_RELEASE)
    assert (released.amount, released.held_delta) == (50, -50)
    balance = assert_consistent(ps, member)
    assert (balance.available, balance.held) == (0, 0)

    # An order completion that arrives after the leave (crafted from the member's earlier one).
    envelope = envelope_pb2.EventEnvelope.FromString(
        membership_envelopes(membership, ps.shop_id, mev.OrderCompleted)[-1])
    late = mev.OrderCompleted()
    envelope.payload.Unpack(late)
    late.order_id, envelope.id = "o-late-" + uuid.uuid4().hex[:8], str(uuid.uuid4())
    envelope.payload.Pack(late)
    points.bus.publish(MEMBERSHIP_STREAM, [envelope.SerializeToString()])
    other = join(ps)  # a later event on the same stream: once it is handled, so is the crafted one
    buy(ps, other, 10 * YUAN, ordinary_time())
    assert entries(ps, member, E.ENTRY_KIND_EARN, order_id=late.order_id) == []
    try:
        response = record(ps, member, E.ACTION_FOLLOW_SHOP)
        assert response.points == 0
    except grpc.RpcError as exc:
        assert exc.code() in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND)
    balance = assert_consistent(ps, member)
    assert (balance.available, balance.held) == (0, 0)


# ----- adjust and earn -----------------------------------------------------------------------------


def test_adjust_needs_an_operator_and_a_reason_and_cannot_go_below_zero(ps: PointsShop) -> None:
    member = join(ps)

    def adjust(points: int, operator: str = "ops-1", reason: str = "goodwill") -> pp.AdjustRequest:
        return pp.AdjustRequest(request_id=rid(), shop_id=ps.shop_id, member_id=member.member_id, points=points,
                                operator=operator, reason=reason)

    for request, missing in ((adjust(5, operator=""), "operator"), (adjust(5, reason=""), "reason")):
        failure = fails(ps.api.Adjust, request)
        assert failure.code == grpc.StatusCode.INVALID_ARGUMENT and missing in failure.fields
    up = ps.api.Adjust(adjust(25))
    assert up.entry.kind == E.ENTRY_KIND_ADJUST and up.entry.amount == 25 and up.balance.available == 125
    assert up.entry.source.operator == "ops-1" and up.entry.source.reason == "goodwill"
    assert_insufficient(fails(ps.api.Adjust, adjust(-126)), 1)
    down = ps.api.Adjust(adjust(-125, reason="fraud"))
    assert down.entry.amount == -125 and down.balance.available == 0 and down.entry.source.reason == "fraud"
    assert_consistent(ps, member)


def test_earn_grants_positive_points(ps: PointsShop) -> None:
    member = join(ps)
    for bad in (0, -5):
        failure = fails(ps.api.Earn, pp.EarnRequest(request_id=rid(), shop_id=ps.shop_id,
                                                    member_id=member.member_id, points=bad))
        assert failure.code == grpc.StatusCode.INVALID_ARGUMENT and "points" in failure.fields
    granted = earn(ps, member, 88)
    assert granted.entry.kind == E.ENTRY_KIND_EARN and granted.entry.amount == 88
    assert granted.entry.source.reference == "test" and granted.entry.expire_time.seconds > 0
    assert granted.balance.available == 188 and granted.balance.lifetime_earned == 188
    assert_consistent(ps, member)


# ----- idempotency ---------------------------------------------------------------------------------


def test_spend_and_earn_retries_return_the_first_answer_and_change_nothing(ps: PointsShop) -> None:
    member = join(ps)
    earn_request = pp.EarnRequest(request_id=rid(), shop_id=ps.shop_id, member_id=member.member_id, points=40)
    first_earn = ps.api.Earn(earn_request)
    assert ps.api.Earn(earn_request) == first_earn
    request = spend_request(ps, member, 30)
    first = ps.api.Spend(request)
    assert ps.api.Spend(request) == first
    hold = hold_request(ps, member, 10)
    first_hold = ps.api.Hold(hold)
    assert ps.api.Hold(hold) == first_hold
    capture_request = pp.CaptureHoldRequest(request_id=rid(), shop_id=ps.shop_id, hold_id=first_hold.hold_id)
    assert ps.api.CaptureHold(capture_request) == ps.api.CaptureHold(capture_request)
    balance = assert_consistent(ps, member)
    assert (balance.available, balance.held) == (100 + 40 - 30 - 10, 0)
    assert len(entries(ps, member, E.ENTRY_KIND_SPEND)) == 1 and len(entries(ps, member, E.ENTRY_KIND_EARN)) == 2


def test_the_same_request_id_with_another_request_is_refused(ps: PointsShop) -> None:
    member = join(ps)
    ps.api.Spend(spend_request(ps, member, 10, request_id="same-id"))
    for request in (spend_request(ps, member, 11, request_id="same-id"),):
        failure = fails(ps.api.Spend, request)
        assert failure.code == grpc.StatusCode.INVALID_ARGUMENT and failure.reason == "REQUEST_ID_REUSED"
    ps.api.Earn(pp.EarnRequest(request_id="earn-id", shop_id=ps.shop_id, member_id=member.member_id, points=5))
    failure = fails(ps.api.Earn, pp.EarnRequest(request_id="earn-id", shop_id=ps.shop_id,
                                                member_id=member.member_id, points=6))
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT and failure.reason == "REQUEST_ID_REUSED"
    assert assert_consistent(ps, member).available == 95


def test_a_redelivered_order_completed_earns_once(points: Any, membership: Any, ps: PointsShop) -> None:
    member = join(ps)
    no_member_day(ps)  # membership's own envelopes are redelivered: the orders complete now, after the join
    order_id, earned = buy(ps, member, 77 * YUAN, now())
    envelopes = membership_envelopes(membership, ps.shop_id, mev.OrderCompleted)
    assert len(envelopes) == 1
    points.bus.publish(MEMBERSHIP_STREAM, envelopes + envelopes)
    buy(ps, member, 3 * YUAN, now())  # a later event: once it is handled, so are the repeats
    assert [e.amount for e in entries(ps, member, E.ENTRY_KIND_EARN, order_id=order_id)] == [77]
    assert assert_consistent(ps, member).available == 100 + 77 + 3


# ----- concurrency -----------------------------------------------------------------------------------


def _fifty_concurrent(call: Callable[..., Any], make: Callable[[], Any]) -> list:
    requests = [make() for _ in range(50)]

    def attempt(request: Any) -> Any:
        try:
            return call(request)
        except grpc.RpcError as exc:
            status = rpc_status.from_call(exc)
            info = error_details_pb2.ErrorInfo()
            for detail in status.details if status else ():
                if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                    detail.Unpack(info)
            return (exc.code(), info.reason)

    with ThreadPoolExecutor(10) as pool:
        return list(pool.map(attempt, requests))


def test_concurrent_spends_never_overdraw(ps: PointsShop) -> None:
    member = join(ps)
    earn(ps, member, 900)
    results = _fifty_concurrent(ps.api.Spend, lambda: spend_request(ps, member, 30))
    succeeded = [r for r in results if isinstance(r, pp.SpendResponse)]
    refused = [r for r in results if not isinstance(r, pp.SpendResponse)]
    assert len(succeeded) == 33
    assert set(refused) == {(grpc.StatusCode.FAILED_PRECONDITION, "INSUFFICIENT_POINTS")}
    assert all(r.balance.available >= 0 for r in succeeded)
    balance = assert_consistent(ps, member)
    assert (balance.available, balance.held) == (10, 0)


def test_concurrent_holds_never_overdraw(ps: PointsShop) -> None:
    member = join(ps)
    earn(ps, member, 900)
    results = _fifty_concurrent(ps.api.Hold, lambda: hold_request(ps, member, 30))
    succeeded = [r for r in results if isinstance(r, pp.HoldResponse)]
    refused = [r for r in results if not isinstance(r, pp.HoldResponse)]
    assert len(succeeded) == 33 and len({r.hold_id for r in succeeded}) == 33
    assert set(refused) == {(grpc.StatusCode.FAILED_PRECONDITION, "INSUFFICIENT_POINTS")}
    balance = assert_consistent(ps, member)
    assert (balance.available, balance.held) == (10, 990)


def test_concurrent_copies_of_a_request_all_get_the_first_answer(ps: PointsShop) -> None:
    member = join(ps)  # 100 points
    first, second = spend_request(ps, member, 30), spend_request(ps, member, 30)
    with ThreadPoolExecutor(10) as pool:
        answers = list(pool.map(ps.api.Spend, [first, second] * 10))
    assert all(a == answers[0] for a in answers[0::2]) and all(a == answers[1] for a in answers[1::2])
    assert answers[0].entry.entry_id != answers[1].entry.entry_id
    assert len(entries(ps, member, E.ENTRY_KIND_SPEND)) == 2
    balance = assert_consistent(ps, member)
    assert balance.available == 40 == min(answers[0].balance.available, answers[1].balance.available)


@contextmanager
def round_trips(points: Any) -> Iterator[list[str]]:
    """The statements (with BEGIN and COMMIT) of the write transactions made meanwhile."""
    engine, seen = points.running.app.db.engine, []
    by_thread: dict[int, list[str]] = {}

    def on_begin(_conn: Any) -> None:
        by_thread[threading.get_ident()] = ["BEGIN"]

    def on_statement(_conn: Any, _cursor: Any, statement: str, _parameters: Any, context: Any, *_: Any) -> None:
        statement = context.statement if context is not None else statement  # as written, not as prepared
        if statement.startswith("BEGIN"):  # SQLite's, counted above
            return
        by_thread.setdefault(threading.get_ident(), []).append(statement[:60])

    def on_commit(_conn: Any) -> None:
        statements = by_thread.pop(threading.get_ident(), [])
        if any(s.startswith("INSERT INTO ledger") for s in statements):
            seen.extend([*statements, "COMMIT"])

    listeners = [("begin", on_begin), ("before_cursor_execute", on_statement), ("commit", on_commit)]
    for name, listener in listeners:
        event.listen(engine, name, listener)
    try:
        yield seen
    finally:
        for name, listener in listeners:
            event.remove(engine, name, listener)


def test_a_spend_is_a_handful_of_statements(points: Any, ps: PointsShop) -> None:
    member = join(ps)
    ps.api.Spend(spend_request(ps, member, 1))  # the program is remembered from here on
    with round_trips(points) as statements:
        ps.api.Spend(spend_request(ps, member, 1))
    # BEGIN, the account lock, its lots, the lot taken, the entry, the account, the outbox,
    # the idempotency record, COMMIT.
    assert 0 < len(statements) <= 9, statements


# ----- the invariant under random operations -------------------------------------------------------------


@dataclass
class Model:
    holds: list[list[Any]] = field(default_factory=list)  # [hold_id, state, first answer]
    orders: list[list[Any]] = field(default_factory=list)  # [order_id, amount_fen, refunded_fen, earned]


OPERATIONS = st.one_of(
    st.tuples(st.just("earn"), st.integers(1, 400)),
    st.tuples(st.just("spend"), st.integers(1, 500)),
    st.tuples(st.just("hold"), st.integers(1, 500)),
    st.tuples(st.just("capture"), st.integers(0, 9)),
    st.tuples(st.just("release"), st.integers(0, 9)),
    st.tuples(st.just("buy"), st.integers(100, 80_000)),
    st.tuples(st.just("refund"), st.integers(0, 9), st.booleans(), st.integers(0, 10**6)),
    st.tuples(st.just("expire"), st.booleans()),
)


def _step(s: PointsShop, m: Member, model: Model, op: tuple) -> None:
    kind = op[0]
    if kind == "earn":
        earn(s, m, op[1])
    elif kind in ("spend", "hold"):
        available = get_balance(s, m).available
        call, request = ((s.api.Spend, spend_request(s, m, op[1])) if kind == "spend"
                         else (s.api.Hold, hold_request(s, m, op[1])))
        if op[1] > available:
            assert_insufficient(fails(call, request), op[1] - available)
        else:
            response = call(request)
            assert response.balance.available == available - op[1] >= 0
            if kind == "hold":
                model.holds.append([response.hold_id, "held", None])
    elif kind in ("capture", "release") and model.holds:
        hold = model.holds[op[1] % len(model.holds)]
        hold_id, state, first = hold
        target = "captured" if kind == "capture" else "released"
        do = capture if kind == "capture" else release
        if state == "held":
            hold[1], hold[2] = target, do(s, hold_id)
        elif state == target:
            assert do(s, hold_id).entry == first.entry
        else:
            call, request_type = ((s.api.CaptureHold, pp.CaptureHoldRequest) if kind == "capture"
                                  else (s.api.ReleaseHold, pp.ReleaseHoldRequest))
            failure = fails(call, request_type(request_id=rid(), shop_id=s.shop_id, hold_id=hold_id))
            assert failure.code == grpc.StatusCode.FAILED_PRECONDITION
            assert failure.reason == ("HOLD_CAPTURED" if state == "captured" else "HOLD_RELEASED")
    elif kind == "buy":
        order_id, earned = buy(s, m, op[1], ordinary_time())
        model.orders.append([order_id, op[1], 0, earned.amount])
    elif kind == "refund":
        open_orders = [o for o in model.orders if o[1] - o[2] >= 100]
        if not open_orders:
            return
        entry = open_orders[op[1] % len(open_orders)]
        order_id, amount, refunded, earned = entry
        remaining = amount - refunded
        fen = remaining if op[2] or remaining < 200 else 100 + op[3] % (remaining - 100)
        refund_and_wait(s, m, order_id, fen)  # at least a yuan less: at least a point back
        entry[2] += fen
        if entry[2] == amount:
            assert sum(e.amount for e in entries(s, m, E.ENTRY_KIND_CLAWBACK, order_id=order_id)) == -earned
    elif kind == "expire":
        # With a lot that expires in a few days, expired now by an ExpirePoints as of its expiry (a lot
        # already past expiry could be expired by the background job at any moment). Not in debt: an
        # earning would pay the debt first.
        with_lot = op[1] and get_balance(s, m).available >= 0
        as_of, points = now(), 0
        if with_lot:
            earned_on = add_months(now().astimezone(SHANGHAI).date() + timedelta(days=2), -12)
            _, lot = buy(s, m, 5 * YUAN, local_noon(earned_on))
            as_of, points = at(lot.expire_time), lot.amount
        done = expire_ahead(s, as_of) if with_lot else expire(s, as_of)
        assert (done.members, done.lots, done.points) == ((1, 1, points) if with_lot else (0, 0, 0))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture],
          phases=[Phase.explicit, Phase.reuse, Phase.generate])
@given(operations=st.lists(OPERATIONS, min_size=1, max_size=8))
def test_the_ledger_always_sums_to_the_balance(ps: PointsShop, operations: list[tuple]) -> None:
    member, model = join(ps), Model()
    for op in operations:
        _step(ps, member, model, op)
        assert_consistent(ps, member)


# ----- the daily pool --------------------------------------------------------------------------------


def test_the_daily_pool_is_split_evenly_and_settled_once(ps: PointsShop) -> None:
    assert update_program(ps, daily_pool_points=1000).daily_pool_points == 1000
    members = [join(ps) for _ in range(3)]
    days, participants = set(), []
    for m in members + members[:1]:  # joining twice is harmless
        joined = ps.api.JoinDailyPool(pp.JoinDailyPoolRequest(request_id=rid(), shop_id=ps.shop_id,
                                                              member_id=m.member_id))
        days.add(joined.day)
        participants.append(joined.participants)
    assert participants == [1, 2, 3, 3]
    (day,) = days
    assert day == now().astimezone(SHANGHAI).date().isoformat()
    settled = ps.api.SettleDailyPool(pp.SettleDailyPoolRequest(request_id=rid(), shop_id=ps.shop_id, day=day))
    assert (settled.day, settled.participants, settled.points_each, settled.already_settled) == (day, 3, 333, False)
    for m in members:
        (share,) = wait_entries(ps, m, E.ENTRY_KIND_EARN, action=E.ACTION_DAILY_POOL)
        assert share.amount == 333
    again = ps.api.SettleDailyPool(pp.SettleDailyPoolRequest(request_id=rid(), shop_id=ps.shop_id, day=day))
    assert again.already_settled
    for m in members:
        assert len(entries(ps, m, E.ENTRY_KIND_EARN, action=E.ACTION_DAILY_POOL)) == 1
        assert assert_consistent(ps, m).available == 433


# ----- reports -------------------------------------------------------------------------------------


def test_expiring_points_lists_the_members_with_points_expiring_in_the_window(ps: PointsShop) -> None:
    soon, later = join(ps), join(ps)
    today = now().astimezone(SHANGHAI).date()
    earned_on = add_months(today + timedelta(days=6), -12)  # valid through 6 days from today
    _, lot = buy(ps, soon, 45 * YUAN, local_noon(earned_on))  # 45, or 90 on a member day
    expires = expiry_of(local_noon(earned_on))
    assert at(lot.expire_time) == expires and timedelta(days=6) < expires - now() <= timedelta(days=7)
    balance = get_balance(ps, soon)
    assert at(balance.next_expiry_time) == expires and balance.next_expiry_amount == lot.amount
    within = ps.api.ListExpiringPoints(pp.ListExpiringPointsRequest(shop_id=ps.shop_id, within_days=10))
    assert [(e.member_id, e.points, at(e.first_expire_time)) for e in within.members] == [
        (soon.member_id, lot.amount, expires)]
    assert later.member_id not in {e.member_id for e in within.members}
    assert ps.api.ListExpiringPoints(pp.ListExpiringPointsRequest(shop_id=ps.shop_id, within_days=3)).members == []


def test_the_liability_report(ps: PointsShop) -> None:
    a, _ = join(ps), join(ps)
    earn(ps, a, 250)
    ps.api.Spend(spend_request(ps, a, 20))
    ps.api.Adjust(pp.AdjustRequest(request_id=rid(), shop_id=ps.shop_id, member_id=a.member_id, points=5,
                                   operator="ops", reason="typo"))
    hold = ps.api.Hold(hold_request(ps, a, 50))
    report = ps.api.GetLiabilityReport(pp.GetLiabilityReportRequest(shop_id=ps.shop_id))
    assert report.shop_id == ps.shop_id
    assert report.outstanding_points == 285 + 50 + 100 and report.outstanding_value_fen == 435
    assert report.members_with_points == 2
    update_program(ps, points_per_yuan=7)
    report = ps.api.GetLiabilityReport(pp.GetLiabilityReportRequest(shop_id=ps.shop_id))
    assert report.outstanding_value_fen == 435 * 100 // 7
    release(ps, hold.hold_id)

    today = now().astimezone(SHANGHAI).date()
    start = datetime.combine(today, dtime(), tzinfo=SHANGHAI)
    daily = ps.api.GetLiabilityReport(pp.GetLiabilityReportRequest(
        shop_id=ps.shop_id, granularity=pp.GRANULARITY_DAY, start_time=ts(start),
        end_time=ts(start + timedelta(days=1))))
    (period,) = [p for p in daily.periods if p.earned or p.spent or p.expired or p.adjusted]
    assert period.period == today.isoformat()
    assert (period.earned, period.spent, period.expired, period.adjusted) == (450, 20, 0, 5)
    expiring = [p for p in daily.expiry_schedule if p.expired]
    through = add_months(today, 12)
    labels = {f"{through.year:04d}-{through.month:02d}", f"{(through + timedelta(days=1)).year:04d}-"
              f"{(through + timedelta(days=1)).month:02d}"}
    assert [p.period for p in expiring] and {p.period for p in expiring} <= labels
    assert sum(p.expired for p in expiring) == 435


# ----- shops and bad input ---------------------------------------------------------------------------


def test_a_shop_key_reaches_only_its_own_shop(points: Any, membership: Any, admin: Any, ps: PointsShop) -> None:
    member = join(ps)
    other = points_shop(points, create_shop(membership, admin))
    denied = fails(other.api.GetBalance, pp.GetBalanceRequest(shop_id=ps.shop_id, member_id=member.member_id))
    assert denied.code == grpc.StatusCode.PERMISSION_DENIED
    denied = fails(other.api.Spend, pp.SpendRequest(request_id=rid(), shop_id=ps.shop_id,
                                                    member_id=member.member_id, points=10))
    assert denied.code == grpc.StatusCode.PERMISSION_DENIED
    missing = fails(other.api.GetBalance, pp.GetBalanceRequest(shop_id=other.shop_id, member_id=member.member_id))
    assert missing.code == grpc.StatusCode.NOT_FOUND
    missing = fails(other.api.ListLedger, pp.ListLedgerRequest(shop_id=other.shop_id, member_id=member.member_id))
    assert missing.code == grpc.StatusCode.NOT_FOUND
    assert assert_consistent(ps, member).available == 100


def test_bad_input_is_refused_with_the_field(points: Any, ps: PointsShop) -> None:
    member = join(ps)
    admin_points = points_stub(points, ADMIN_KEY)
    for stub in (admin_points, ps.api):
        failure = fails(stub.GetBalance, pp.GetBalanceRequest(member_id=member.member_id))
        assert failure.code == grpc.StatusCode.INVALID_ARGUMENT and "shop_id" in failure.fields
    for points_value in (0, -1):
        for call, request in ((ps.api.Spend, spend_request(ps, member, points_value)),
                              (ps.api.Hold, hold_request(ps, member, points_value)),
                              (ps.api.Earn, pp.EarnRequest(request_id=rid(), shop_id=ps.shop_id,
                                                           member_id=member.member_id, points=points_value))):
            failure = fails(call, request)
            assert failure.code == grpc.StatusCode.INVALID_ARGUMENT and "points" in failure.fields, request
    nobody = Member("m_nobody", "")
    for call, request in ((ps.api.GetBalance, pp.GetBalanceRequest(shop_id=ps.shop_id, member_id="m_nobody")),
                          (ps.api.Spend, spend_request(ps, nobody, 1)),
                          (ps.api.Earn, pp.EarnRequest(request_id=rid(), shop_id=ps.shop_id, member_id="m_nobody",
                                                       points=1))):
        failure = fails(call, request)
        assert failure.code == grpc.StatusCode.NOT_FOUND and failure.reason == "MEMBER_NOT_FOUND", request
    for name, value in (("rule_id", "r" * 33), ("multiplier_id", "x" * 65), ("order_id", "o" * 65)):
        failure = fails(ps.api.Earn, pp.EarnRequest(request_id=rid(), shop_id=ps.shop_id, member_id=member.member_id,
                                                    points=1, source=pp.Source(**{name: value})))
        assert failure.code == grpc.StatusCode.INVALID_ARGUMENT and f"source.{name}" in failure.fields
    failure = fails(ps.api.Hold, hold_request(ps, member, 1, ttl_seconds=7 * 86400 + 1))
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT and "ttl_seconds" in failure.fields
    hold_id = ps.api.Hold(hold_request(ps, member, 1, ttl_seconds=7 * 86400)).hold_id
    program = ps.api.GetPointsProgram(pp.GetPointsProgramRequest(shop_id=ps.shop_id))
    listed = ps.api.ListMultipliers(pp.ListMultipliersRequest(shop_id=ps.shop_id)).multipliers
    multiplier = pp.Multiplier(name="x", kind=pp.MULTIPLIER_KIND_MEMBER_DAY, multiplier_milli=1500, weekday=3)
    for call, request in ((ps.api.Spend, spend_request(ps, member, 1, request_id="")),
                          (ps.api.Hold, hold_request(ps, member, 1, request_id="")),
                          (ps.api.Earn, pp.EarnRequest(shop_id=ps.shop_id, member_id=member.member_id, points=1)),
                          (ps.api.Adjust, pp.AdjustRequest(shop_id=ps.shop_id, member_id=member.member_id,
                                                           points=1, operator="o", reason="r")),
                          (ps.api.RecordAction, pp.RecordActionRequest(shop_id=ps.shop_id, member_id=member.member_id,
                                                                       action=E.ACTION_FOLLOW_SHOP)),
                          (ps.api.CaptureHold, pp.CaptureHoldRequest(shop_id=ps.shop_id, hold_id=hold_id)),
                          (ps.api.ReleaseHold, pp.ReleaseHoldRequest(shop_id=ps.shop_id, hold_id=hold_id)),
                          (ps.api.UpdatePointsProgram,
                           pp.UpdatePointsProgramRequest(shop_id=ps.shop_id, program=program)),
                          (ps.api.UpsertEarnRule, pp.UpsertEarnRuleRequest(shop_id=ps.shop_id, rule=pp.EarnRule(
                              action=E.ACTION_SHARE, enabled=True, points=6))),
                          (ps.api.CreateMultiplier, pp.CreateMultiplierRequest(shop_id=ps.shop_id,
                                                                               multiplier=multiplier)),
                          (ps.api.DeleteMultiplier, pp.DeleteMultiplierRequest(
                              shop_id=ps.shop_id, multiplier_id=listed[0].multiplier_id)),
                          (ps.api.JoinDailyPool, pp.JoinDailyPoolRequest(shop_id=ps.shop_id,
                                                                         member_id=member.member_id)),
                          (ps.api.SettleDailyPool, pp.SettleDailyPoolRequest(shop_id=ps.shop_id))):
        failure = fails(call, request)
        assert failure.code == grpc.StatusCode.INVALID_ARGUMENT and "request_id" in failure.fields, request
    assert ps.api.ListMultipliers(pp.ListMultipliersRequest(shop_id=ps.shop_id)).multipliers == listed
    balance = assert_consistent(ps, member)
    assert (balance.available, balance.held) == (99, 1)


# ----- events --------------------------------------------------------------------------------------------


def test_points_events_are_written_to_the_outbox(points: Any, ps: PointsShop) -> None:
    db = points.running.app.db
    member = join(ps)
    joined = [e for e in outbox(db, ps.shop_id, pev.PointsEarned) if e.member_id == member.member_id]
    assert [(e.points, e.action) for e in joined] == [(100, E.ACTION_JOIN)]
    earn(ps, member, 60)
    ps.api.Spend(spend_request(ps, member, 10, source=pp.Source(redemption_id="rd-5")))
    hold = ps.api.Hold(hold_request(ps, member, 20))
    capture(ps, hold.hold_id)
    ps.api.Adjust(pp.AdjustRequest(request_id=rid(), shop_id=ps.shop_id, member_id=member.member_id, points=-5,
                                   operator="ops", reason="typo"))
    order_id, _ = buy(ps, member, 40 * YUAN, ordinary_time())
    refund_and_wait(ps, member, order_id, 40 * YUAN)
    buy(ps, member, 15 * YUAN, "2024-05-05T12:00:00+08:00")
    expire(ps, now())

    earned = outbox(db, ps.shop_id, pev.PointsEarned)
    assert [e.points for e in earned] == [100, 60, 40, 15]
    assert (earned[0].action, earned[2].action, earned[3].action) == (E.ACTION_JOIN,) + (E.ACTION_PURCHASE,) * 2
    assert earned[2].order_id == order_id and earned[1].balance_after == 160 and earned[1].expire_time.seconds
    spent = outbox(db, ps.shop_id, pev.PointsSpent)
    assert [(e.points, e.kind) for e in spent] == [(10, E.ENTRY_KIND_SPEND), (20, E.ENTRY_KIND_CAPTURE)]
    assert spent[0].redemption_id == "rd-5" and spent[0].balance_after == 150
    adjusted = outbox(db, ps.shop_id, pev.PointsAdjusted)
    assert [(abs(e.points), e.kind) for e in adjusted] == [(5, E.ENTRY_KIND_ADJUST), (40, E.ENTRY_KIND_CLAWBACK)]
    assert adjusted[0].operator == "ops" and adjusted[0].reason == "typo" and adjusted[1].order_id == order_id
    expired = outbox(db, ps.shop_id, pev.PointsExpired)
    assert [(abs(e.points), e.member_id) for e in expired] == [(15, member.member_id)]
    assert all(e.shop_id == ps.shop_id for e in earned + spent + adjusted + expired)
    assert assert_consistent(ps, member).available == 100 + 60 - 10 - 20 - 5


def test_a_forfeit_is_announced_as_an_adjustment(points: Any, ps: PointsShop) -> None:
    member = join(ps)
    earn(ps, member, 23)
    ps.shop.api.LeaveMember(mpb.LeaveMemberRequest(request_id=rid(), shop_id=ps.shop_id, member_id=member.member_id))
    wait_entries(ps, member, E.ENTRY_KIND_FORFEIT)
    adjusted = outbox(points.running.app.db, ps.shop_id, pev.PointsAdjusted)
    assert [(abs(e.points), e.kind, e.balance_after) for e in adjusted] == [(123, E.ENTRY_KIND_FORFEIT, 0)]


def test_a_shop_key_cannot_change_another_shops_points_program(points: Any, membership: Any, admin: Any) -> None:
    mine, other = create_shop(membership, admin), create_shop(membership, admin)
    api = Authed(points_service_pb2_grpc.PointsServiceStub(points.channel), mine.key)
    eventually(lambda: api.GetPointsProgram(pp.GetPointsProgramRequest(shop_id=mine.shop_id)), "points knows the shop")
    program = pp.PointsProgram(expiry_policy=pp.EXPIRY_POLICY_ROLLING_MONTHS, expiry_months=1, points_per_yuan=1,
                               leave_policy=pp.LEAVE_POLICY_FORFEIT, default_hold_ttl_seconds=60)
    failure = fails(api.UpdatePointsProgram, pp.UpdatePointsProgramRequest(request_id=rid(), shop_id=other.shop_id,
                                                                          program=program))
    assert failure.code == grpc.StatusCode.PERMISSION_DENIED and failure.reason == "SHOP_MISMATCH"


def test_a_sign_in_dated_before_the_last_one_earns_nothing(ps: PointsShop) -> None:
    member = join(ps)
    assert record(ps, member, E.ACTION_DAILY_SIGN_IN, days_ago(1)).points > 0
    back = record(ps, member, E.ACTION_DAILY_SIGN_IN, days_ago(3))
    assert back.points == 0 and back.not_earned_reason == "SIGN_IN_BEFORE_LAST"
    assert back.streak_days == 1 and back.balance.available == assert_consistent(ps, member).available
    failure = fails(ps.api.RecordAction, pp.RecordActionRequest(
        request_id=rid(), shop_id=ps.shop_id, member_id=member.member_id, action=E.ACTION_SHARE,
        occur_time=ts(days_ago(40))))
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT and "occur_time" in failure.fields


# ----- partial updates (AIP-134 update masks) ---------------------------------------------------------------


def test_a_program_update_naming_only_the_expiry_settings_leaves_the_rest_alone(ps: PointsShop) -> None:
    before = update_program(ps, points_per_yuan=7, daily_pool_points=500, leave_policy=pp.LEAVE_POLICY_KEEP,
                            default_hold_ttl_seconds=120)
    updated = ps.api.UpdatePointsProgram(pp.UpdatePointsProgramRequest(
        request_id=rid(), shop_id=ps.shop_id,
        program=pp.PointsProgram(expiry_policy=pp.EXPIRY_POLICY_ROLLING_MONTHS, expiry_months=6),
        update_mask=FieldMask(paths=["expiry_policy", "expiry_months"])))
    assert updated.expiry_policy == pp.EXPIRY_POLICY_ROLLING_MONTHS and updated.expiry_months == 6
    assert (updated.points_per_yuan, updated.daily_pool_points, updated.leave_policy,
            updated.default_hold_ttl_seconds) == (7, 500, pp.LEAVE_POLICY_KEEP, 120)
    assert updated.time_zone == before.time_zone
    assert ps.api.GetPointsProgram(pp.GetPointsProgramRequest(shop_id=ps.shop_id)) == updated
    never = ps.api.UpdatePointsProgram(pp.UpdatePointsProgramRequest(
        request_id=rid(), shop_id=ps.shop_id, program=pp.PointsProgram(expiry_policy=pp.EXPIRY_POLICY_NEVER),
        update_mask=FieldMask(paths=["expiry_policy"])))
    assert never.expiry_policy == pp.EXPIRY_POLICY_NEVER and never.expiry_months == 6


def test_a_program_update_checks_what_the_mask_names(ps: PointsShop) -> None:
    before = ps.api.GetPointsProgram(pp.GetPointsProgramRequest(shop_id=ps.shop_id))
    for paths in (["expiry_months", "colour"], ["time_zone"], ["program.expiry_months"]):
        failure = fails(ps.api.UpdatePointsProgram, pp.UpdatePointsProgramRequest(
            request_id=rid(), shop_id=ps.shop_id, program=pp.PointsProgram(expiry_months=3),
            update_mask=FieldMask(paths=paths)))
        assert failure.code == grpc.StatusCode.INVALID_ARGUMENT and "update_mask" in failure.fields, paths
    failure = fails(ps.api.UpdatePointsProgram, pp.UpdatePointsProgramRequest(
        request_id=rid(), shop_id=ps.shop_id, program=pp.PointsProgram(expiry_months=0),
        update_mask=FieldMask(paths=["expiry_months"])))
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT and "program.expiry_months" in failure.fields
    failure = fails(ps.api.UpdatePointsProgram, pp.UpdatePointsProgramRequest(
        request_id=rid(), shop_id=ps.shop_id, program=pp.PointsProgram(),
        update_mask=FieldMask(paths=["leave_policy"])))
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT and "program.leave_policy" in failure.fields
    assert ps.api.GetPointsProgram(pp.GetPointsProgramRequest(shop_id=ps.shop_id)) == before


def test_a_rule_update_changes_only_what_the_mask_names(ps: PointsShop) -> None:
    def upsert(rule: pp.EarnRule, *paths: str) -> pp.EarnRule:
        return ps.api.UpsertEarnRule(pp.UpsertEarnRuleRequest(request_id=rid(), shop_id=ps.shop_id, rule=rule,
                                                              update_mask=FieldMask(paths=list(paths))))

    points_only = upsert(pp.EarnRule(action=E.ACTION_SHARE, points=8), "points")
    assert points_only.points == 8 and points_only.enabled  # not disabled by the unset `enabled`
    assert (points_only.caps.per_day, points_only.caps.per_month, points_only.caps.lifetime) == (3, 0, 0)
    monthly = upsert(pp.EarnRule(action=E.ACTION_SHARE, caps=pp.Caps(per_month=40)), "caps.per_month")
    assert (monthly.caps.per_day, monthly.caps.per_month, monthly.points) == (3, 40, 8)
    caps = upsert(pp.EarnRule(action=E.ACTION_SHARE, caps=pp.Caps(lifetime=9)), "caps")
    assert (caps.caps.per_day, caps.caps.per_month, caps.caps.lifetime) == (0, 0, 9)
    rules = {r.action: r for r in ps.api.ListEarnRules(pp.ListEarnRulesRequest(shop_id=ps.shop_id)).rules}
    assert rules[E.ACTION_SHARE] == caps
    for paths in (["points", "colour"], ["action"], ["rule.points"]):
        failure = fails(ps.api.UpsertEarnRule, pp.UpsertEarnRuleRequest(
            request_id=rid(), shop_id=ps.shop_id, rule=pp.EarnRule(action=E.ACTION_SHARE, points=1),
            update_mask=FieldMask(paths=paths)))
        assert failure.code == grpc.StatusCode.INVALID_ARGUMENT and "update_mask" in failure.fields, paths
    failure = fails(ps.api.UpsertEarnRule, pp.UpsertEarnRuleRequest(
        request_id=rid(), shop_id=ps.shop_id, rule=pp.EarnRule(action=E.ACTION_SHARE, points=-1),
        update_mask=FieldMask(paths=["points"])))
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT and "rule.points" in failure.fields
    whole = upsert(pp.EarnRule(action=E.ACTION_SHARE, enabled=True, points=2))  # no mask: everything replaced
    assert (whole.points, whole.caps.lifetime, whole.enabled) == (2, 0, True)


def test_rules_and_multipliers_page_like_every_list(ps: PointsShop) -> None:
    seen, token = [], ""
    while True:
        page = ps.api.ListEarnRules(pp.ListEarnRulesRequest(shop_id=ps.shop_id, page_size=4, page_token=token))
        seen += [r.action for r in page.rules]
        token = page.next_page_token
        if not token:
            break
    assert len(seen) == 11 and len(set(seen)) == 11
    first = ps.api.ListMultipliers(pp.ListMultipliersRequest(shop_id=ps.shop_id, page_size=1))
    rest = ps.api.ListMultipliers(pp.ListMultipliersRequest(shop_id=ps.shop_id, page_token=first.next_page_token))
    assert len(first.multipliers) == 1 and len(rest.multipliers) == 1 and not rest.next_page_token
