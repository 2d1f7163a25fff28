"""Contract tests of loyalty.membership.v1.MembershipService through a real gRPC server, on both
backends (see conftest.py)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import grpc
import pytest
from google.protobuf import field_mask_pb2
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from google.type import date_pb2
from loyalty.common.v1 import envelope_pb2
from loyalty.membership.v1 import events_pb2
from loyalty.membership.v1 import membership_service_pb2 as pb
from loyalty.membership.v1 import membership_service_pb2_grpc as pb_grpc
from sqlalchemy import select

from services.membership.tables import kit, members
from tests.conftest import ADMIN_KEY, Authed, Failure, ServiceUnderTest, Shop, create_shop, failure_of

YUAN = 100
M = TypeVar("M", bound=Message)


def rid() -> str:
    return uuid.uuid4().hex


def join(shop: Shop, buyer: str, **fields: Any) -> pb.Member:
    fields.setdefault("join_channel", pb.JOIN_CHANNEL_HOME_PAGE_MODULE)
    return shop.api.JoinMember(pb.JoinMemberRequest(request_id=rid(), shop_id=shop.shop_id, buyer_id=buyer, **fields))


def pay(shop: Shop, buyer: str, fen: int, order_id: str | None = None) -> str:
    order_id = order_id or "o-" + uuid.uuid4().hex[:12]
    shop.api.RecordOrder(pb.RecordOrderRequest(shop_id=shop.shop_id, order_id=order_id, buyer_id=buyer,
                                               amount_fen=fen))
    return order_id


def complete(shop: Shop, order_id: str) -> pb.CompleteOrderResponse:
    return shop.api.CompleteOrder(pb.CompleteOrderRequest(shop_id=shop.shop_id, order_id=order_id))


def buy(shop: Shop, buyer: str, fen: int) -> pb.CompleteOrderResponse:
    return complete(shop, pay(shop, buyer, fen))


def tier_of(shop: Shop, member_id: str) -> int:
    return shop.api.GetTier(pb.GetTierRequest(shop_id=shop.shop_id, member_id=member_id)).tier.level


def refund(shop: Shop, order_id: str, fen: int, refund_id: str | None = None) -> pb.RefundOrderResponse:
    return shop.api.RefundOrder(pb.RefundOrderRequest(shop_id=shop.shop_id, order_id=order_id,
                                                      refund_id=refund_id or rid()[:16], amount_fen=fen))


def rpc_error(call: Callable[..., object], *args: object,
              **kwargs: object) -> tuple[grpc.RpcError, Failure, dict[str, str]]:
    """Calls and expects a failure; returns the error, its details and its field violations."""
    with pytest.raises(grpc.RpcError) as caught:
        call(*args, **kwargs)
    failure = failure_of(caught.value)
    return caught.value, failure, failure.fields


def outbox_events(membership: ServiceUnderTest, shop_id: str, payload_type: type[M]) -> list[M]:
    db = membership.running.app.db
    rows = db.read(lambda c: c.execute(select(kit.outbox.c.envelope).where(
        kit.outbox.c.shop_id == shop_id, kit.outbox.c.event_type == payload_type.DESCRIPTOR.full_name)
        .order_by(kit.outbox.c.id)).all())
    out = []
    for row in rows:
        envelope = envelope_pb2.EventEnvelope.FromString(row.envelope)
        payload = payload_type()
        envelope.payload.Unpack(payload)
        out.append(payload)
    return out


# ----- qualification -----------------------------------------------------------------------


def test_join_then_orders_totalling_1000_yuan_make_the_member_silver(shop: Shop) -> None:
    member = join(shop, "b1")
    assert tier_of(shop, member.member_id) == 0
    buy(shop, "b1", 400 * YUAN)
    result = buy(shop, "b1", 600 * YUAN)
    assert result.tier_changed and result.tier.code == "silver"
    assert tier_of(shop, member.member_id) == 1
    by_buyer = shop.api.GetTier(pb.GetTierRequest(shop_id=shop.shop_id, buyer_id="b1"))
    assert by_buyer.tier.code == "silver" and by_buyer.member_id == member.member_id


def test_paid_but_not_completed_order_does_not_count(shop: Shop) -> None:
    member = join(shop, "b1")
    pay(shop, "b1", 5000 * YUAN)
    got = shop.api.GetMember(pb.GetMemberRequest(shop_id=shop.shop_id, member_id=member.member_id))
    assert got.cumulative_spend_fen == 0 and got.trade_count == 0
    assert tier_of(shop, member.member_id) == 0


def test_order_before_joining_does_not_make_a_member_and_does_not_count(shop: Shop) -> None:
    result = buy(shop, "visitor", 2000 * YUAN)
    assert not result.HasField("tier") and not result.order.counted
    rpc = rpc_error(shop.api.GetTier, pb.GetTierRequest(shop_id=shop.shop_id, buyer_id="visitor"))
    assert rpc[0].code() == grpc.StatusCode.NOT_FOUND


def test_completing_an_order_twice_counts_it_once(shop: Shop) -> None:
    member = join(shop, "b1")
    order_id = pay(shop, "b1", 700 * YUAN)
    first = complete(shop, order_id)
    again = complete(shop, order_id)
    assert again.order == first.order
    got = shop.api.GetMember(pb.GetMemberRequest(shop_id=shop.shop_id, member_id=member.member_id))
    assert got.cumulative_spend_fen == 700 * YUAN and got.trade_count == 1


def test_the_trade_earns_at_the_tier_held_before_the_upgrade_it_triggers(membership: ServiceUnderTest,
                                                                         shop: Shop) -> None:
    join(shop, "b1")
    result = buy(shop, "b1", 1200 * YUAN)
    assert result.tier.code == "silver"
    (event,) = outbox_events(membership, shop.shop_id, events_pb2.OrderCompleted)
    assert event.tier_code == "regular" and event.points_rate_milli == 1000
    assert event.amount_fen == 1200 * YUAN and event.first_completed_order
    second = buy(shop, "b1", 10 * YUAN)
    assert second.order.counted
    events = outbox_events(membership, shop.shop_id, events_pb2.OrderCompleted)
    assert events[1].points_rate_milli == 1500 and not events[1].first_completed_order


def test_spend_or_count_upgrades_on_trade_count_alone(membership: ServiceUnderTest, admin: Authed) -> None:
    shop = create_shop(membership, admin, qualification_mode=pb.QUALIFICATION_MODE_SPEND_OR_COUNT)
    member = join(shop, "b1")
    for _ in range(4):
        buy(shop, "b1", 10 * YUAN)
    assert tier_of(shop, member.member_id) == 0
    assert buy(shop, "b1", 10 * YUAN).tier.code == "silver"  # the 5th trade: 50 yuan in all


def test_trade_count_mode_ignores_spend(membership: ServiceUnderTest, admin: Authed) -> None:
    shop = create_shop(membership, admin, qualification_mode=pb.QUALIFICATION_MODE_TRADE_COUNT)
    member = join(shop, "b1")
    buy(shop, "b1", 50_000 * YUAN)
    assert tier_of(shop, member.member_id) == 0


def test_partial_refund_reduces_spend_and_full_refund_removes_the_trade(membership: ServiceUnderTest,
                                                                        shop: Shop) -> None:
    member = join(shop, "b1")
    order_id = pay(shop, "b1", 800 * YUAN)
    complete(shop, order_id)
    refund(shop, order_id, 300 * YUAN)
    got = shop.api.GetMember(pb.GetMemberRequest(shop_id=shop.shop_id, member_id=member.member_id))
    assert got.cumulative_spend_fen == 500 * YUAN and got.trade_count == 1
    last = refund(shop, order_id, 500 * YUAN)
    assert last.order.status == pb.ORDER_STATUS_REFUNDED and not last.order.counted
    got = shop.api.GetMember(pb.GetMemberRequest(shop_id=shop.shop_id, member_id=member.member_id))
    assert got.cumulative_spend_fen == 0 and got.trade_count == 0
    events = outbox_events(membership, shop.shop_id, events_pb2.OrderRefunded)
    assert [e.refund_amount_fen for e in events] == [300 * YUAN, 500 * YUAN]
    assert events[-1].fully_refunded and events[-1].points_rate_milli == 1000 and events[-1].after_completion


def test_refund_before_completion_lowers_what_the_completion_counts(shop: Shop) -> None:
    member = join(shop, "b1")
    order_id = pay(shop, "b1", 1100 * YUAN)
    refund(shop, order_id, 200 * YUAN)
    result = complete(shop, order_id)
    assert result.tier.code == "regular"
    got = shop.api.GetMember(pb.GetMemberRequest(shop_id=shop.shop_id, member_id=member.member_id))
    assert got.cumulative_spend_fen == 900 * YUAN


def test_a_refund_repeated_with_its_id_is_applied_once(shop: Shop) -> None:
    member = join(shop, "b1")
    order_id = pay(shop, "b1", 800 * YUAN)
    complete(shop, order_id)
    refund(shop, order_id, 100 * YUAN, refund_id="r1")
    refund(shop, order_id, 100 * YUAN, refund_id="r1")
    got = shop.api.GetMember(pb.GetMemberRequest(shop_id=shop.shop_id, member_id=member.member_id))
    assert got.cumulative_spend_fen == 700 * YUAN
    err, info, _ = rpc_error(refund, shop, order_id, 50 * YUAN, refund_id="r1")
    assert err.code() == grpc.StatusCode.ALREADY_EXISTS and info.reason == "REFUND_CONFLICT"


def test_refund_beyond_the_order_is_refused_with_what_remains(shop: Shop) -> None:
    join(shop, "b1")
    order_id = pay(shop, "b1", 100 * YUAN)
    err, info, _ = rpc_error(refund, shop, order_id, 101 * YUAN)
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert info.reason == "REFUND_EXCEEDS_ORDER" and info.metadata["remaining_fen"] == str(100 * YUAN)


def test_refund_keeps_the_tier_under_never_and_lowers_it_under_recompute(membership: ServiceUnderTest,
                                                                         admin: Authed) -> None:
    for policy, expected in ((pb.DOWNGRADE_POLICY_NEVER, "silver"), (pb.DOWNGRADE_POLICY_RECOMPUTE, "regular")):
        shop = create_shop(membership, admin, downgrade_policy=policy)
        member = join(shop, "b1")
        order_id = pay(shop, "b1", 1000 * YUAN)
        assert complete(shop, order_id).tier.code == "silver"
        result = refund(shop, order_id, 1 * YUAN)
        assert result.tier.code == expected
        assert tier_of(shop, member.member_id) == {"silver": 1, "regular": 0}[expected]


def test_recorded_order_with_other_details_is_a_conflict(shop: Shop) -> None:
    pay(shop, "b1", 100, order_id="o1")
    pay(shop, "b1", 100, order_id="o1")  # a retry is fine
    err, info, _ = rpc_error(pay, shop, "b1", 200, order_id="o1")
    assert err.code() == grpc.StatusCode.ALREADY_EXISTS and info.reason == "ORDER_CONFLICT"


# ----- tiers ---------------------------------------------------------------------------------


def test_manual_tier_is_applied_and_audited(shop: Shop) -> None:
    member = join(shop, "b1")
    tier_of(shop, member.member_id)  # cached now
    response = shop.api.SetTier(pb.SetTierRequest(request_id=rid(), shop_id=shop.shop_id, member_id=member.member_id,
                                                  tier_level=3, reason="VIP complaint goodwill", operator="ops-li"))
    assert response.from_level == 0 and response.tier.code == "platinum"
    assert tier_of(shop, member.member_id) == 3
    history = shop.api.ListTierHistory(pb.ListTierHistoryRequest(shop_id=shop.shop_id, member_id=member.member_id))
    latest = history.changes[0]
    assert (latest.from_level, latest.to_level, latest.reason) == (0, 3, pb.TIER_CHANGE_REASON_MANUAL)
    assert latest.note == "VIP complaint goodwill" and latest.operator == "ops-li"


def test_manual_tier_needs_a_reason_and_an_operator(shop: Shop) -> None:
    member = join(shop, "b1")
    err, _, violations = rpc_error(shop.api.SetTier, pb.SetTierRequest(
        request_id=rid(), shop_id=shop.shop_id, member_id=member.member_id, tier_level=2))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert {"reason", "operator"} <= set(violations)
    err, _, violations = rpc_error(shop.api.SetTier, pb.SetTierRequest(
        request_id=rid(), shop_id=shop.shop_id, member_id=member.member_id, tier_level=9, reason="x", operator="y"))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "tier_level" in violations


def _raised_ladder(shop: Shop) -> list[pb.Tier]:
    tiers = list(shop.api.GetProgram(pb.GetProgramRequest(shop_id=shop.shop_id)).tiers)
    tiers[1].min_spend_fen = 2000 * YUAN  # silver now needs 2,000 yuan
    return tiers


def test_rule_change_moves_nobody_until_their_next_trade(membership: ServiceUnderTest, admin: Authed) -> None:
    shop = create_shop(membership, admin, downgrade_policy=pb.DOWNGRADE_POLICY_RECOMPUTE)
    silver = join(shop, "b1")
    buy(shop, "b1", 1500 * YUAN)
    other = join(shop, "b2")
    buy(shop, "b2", 1500 * YUAN)
    shop.api.ConfigureTiers(pb.ConfigureTiersRequest(
        request_id=rid(), shop_id=shop.shop_id, tiers=_raised_ladder(shop),
        downgrade_policy=pb.DOWNGRADE_POLICY_RECOMPUTE))
    assert tier_of(shop, silver.member_id) == 1 and tier_of(shop, other.member_id) == 1
    buy(shop, "b1", 10 * YUAN)  # the next trade applies the new rules
    assert tier_of(shop, silver.member_id) == 0
    assert tier_of(shop, other.member_id) == 1


def test_reevaluation_dry_run_counts_what_the_real_run_moves(membership: ServiceUnderTest, admin: Authed) -> None:
    shop = create_shop(membership, admin, downgrade_policy=pb.DOWNGRADE_POLICY_RECOMPUTE)
    ids = {}
    for buyer, yuan in (("b1", 1500), ("b2", 2500), ("b3", 100), ("b4", 3500)):
        ids[buyer] = join(shop, buyer).member_id
        buy(shop, buyer, yuan * YUAN)
    for buyer, level in (("b3", 1), ("b4", 0)):
        shop.api.SetTier(pb.SetTierRequest(request_id=rid(), shop_id=shop.shop_id, member_id=ids[buyer],
                                           tier_level=level, reason="test", operator="ops"))
    tiers = _raised_ladder(shop)
    shop.api.ConfigureTiers(pb.ConfigureTiersRequest(request_id=rid(), shop_id=shop.shop_id, tiers=tiers,
                                                     downgrade_policy=pb.DOWNGRADE_POLICY_RECOMPUTE))
    dry = shop.api.ReevaluateTiers(pb.ReevaluateTiersRequest(request_id=rid(), shop_id=shop.shop_id, dry_run=True))
    assert tier_of(shop, ids["b1"]) == 1  # nothing moved
    real = shop.api.ReevaluateTiers(pb.ReevaluateTiersRequest(request_id=rid(), shop_id=shop.shop_id))
    assert (dry.upgraded, dry.downgraded, dry.unchanged) == (real.upgraded, real.downgraded, real.unchanged)
    # b1 (1,500 yuan) and b3 (manual silver, 100 yuan) fall to regular; b4 (manual regular, 3,500 yuan)
    # rises back to gold; b2 (2,500 yuan) stays silver.
    assert (real.upgraded, real.downgraded, real.unchanged) == (1, 2, 1)
    assert [tier_of(shop, ids[b]) for b in ("b1", "b2", "b3", "b4")] == [0, 1, 0, 2]
    again = shop.api.ReevaluateTiers(pb.ReevaluateTiersRequest(request_id=rid(), shop_id=shop.shop_id, dry_run=True))
    assert (again.upgraded, again.downgraded) == (0, 0)
    history = shop.api.ListTierHistory(pb.ListTierHistoryRequest(shop_id=shop.shop_id, member_id=ids["b4"]))
    assert history.changes[0].reason == pb.TIER_CHANGE_REASON_REEVALUATED


def test_reevaluation_under_never_only_moves_members_up(membership: ServiceUnderTest, admin: Authed) -> None:
    shop = create_shop(membership, admin)
    low = join(shop, "b1")
    shop.api.SetTier(pb.SetTierRequest(request_id=rid(), shop_id=shop.shop_id, member_id=low.member_id, tier_level=2,
                                       reason="test", operator="ops"))
    result = shop.api.ReevaluateTiers(pb.ReevaluateTiersRequest(request_id=rid(), shop_id=shop.shop_id))
    assert result.downgraded == 0 and tier_of(shop, low.member_id) == 2


def test_shrinking_the_ladder_moves_members_above_it_to_the_new_top(shop: Shop) -> None:
    member = join(shop, "b1")
    shop.api.SetTier(pb.SetTierRequest(request_id=rid(), shop_id=shop.shop_id, member_id=member.member_id,
                                       tier_level=4, reason="test", operator="ops"))
    tiers = list(shop.api.GetProgram(pb.GetProgramRequest(shop_id=shop.shop_id)).tiers)[:3]
    shop.api.ConfigureTiers(pb.ConfigureTiersRequest(request_id=rid(), shop_id=shop.shop_id, tiers=tiers))
    assert tier_of(shop, member.member_id) == 2


def test_invalid_ladders_are_refused_with_the_offending_fields(shop: Shop) -> None:
    tiers = list(shop.api.GetProgram(pb.GetProgramRequest(shop_id=shop.shop_id)).tiers)
    tiers[2].min_spend_fen = tiers[1].min_spend_fen
    tiers[0].min_spend_fen = 5
    err, _, violations = rpc_error(shop.api.ConfigureTiers, pb.ConfigureTiersRequest(
        request_id=rid(), shop_id=shop.shop_id, tiers=tiers))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert {"tiers[0]", "tiers[2].min_spend_fen"} <= set(violations)


def test_tier_progress_shows_what_is_missing(shop: Shop) -> None:
    member = join(shop, "b1")
    buy(shop, "b1", 400 * YUAN)
    progress = shop.api.GetTierProgress(pb.GetTierProgressRequest(shop_id=shop.shop_id, member_id=member.member_id))
    assert progress.current.code == "regular" and progress.next.code == "silver"
    assert progress.spend_missing_fen == 600 * YUAN and progress.progress_permille == 400
    shop.api.SetTier(pb.SetTierRequest(request_id=rid(), shop_id=shop.shop_id, member_id=member.member_id,
                                       tier_level=4, reason="test", operator="ops"))
    top = shop.api.GetTierProgress(pb.GetTierProgressRequest(shop_id=shop.shop_id, member_id=member.member_id))
    assert not top.HasField("next") and top.progress_permille == 1000


# ----- members -------------------------------------------------------------------------------


def test_join_records_profile_consent_channel_and_referrer(shop: Shop) -> None:
    referrer = join(shop, "b0")
    member = join(shop, "b1", profile=pb.Profile(name="李雷", phone="+86 138 0013 5678",
                                                 birthday=date_pb2.Date(month=2, day=29), region="浙江"),
                  consent_fields=[pb.PROFILE_FIELD_NAME, pb.PROFILE_FIELD_PHONE, pb.PROFILE_FIELD_BIRTHDAY,
                                  pb.PROFILE_FIELD_REGION],
                  join_channel=pb.JOIN_CHANNEL_LIVE_STREAM, referrer_member_id=referrer.member_id)
    assert member.profile.name == "李雷" and member.profile.phone_masked == "138****5678"
    assert member.profile.phone == "" and member.profile.birthday.month == 2
    assert member.join_channel == pb.JOIN_CHANNEL_LIVE_STREAM and member.referrer_member_id == referrer.member_id
    assert pb.PROFILE_FIELD_PHONE in member.consent.fields and member.consent.consent_time.seconds > 0


def test_phone_is_encrypted_at_rest(membership: ServiceUnderTest, shop: Shop) -> None:
    member = join(shop, "b1", profile=pb.Profile(phone="13800135678"), consent_fields=[pb.PROFILE_FIELD_PHONE])
    db = membership.running.app.db
    row = db.read(lambda c: c.execute(select(members).where(members.c.shop_id == shop.shop_id,
                                                            members.c.member_id == member.member_id)).one())
    stored = b"".join(str(v).encode() if not isinstance(v, bytes) else v for v in row)
    assert b"13800135678" not in stored and b"5678" not in row.phone_cipher


def test_profile_fields_need_consent(shop: Shop) -> None:
    err, _, violations = rpc_error(join, shop, "b1", profile=pb.Profile(phone="13800135678"))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "profile.phone" in violations
    member = join(shop, "b2")
    err, _, violations = rpc_error(shop.api.UpdateProfile, pb.UpdateProfileRequest(
        request_id=rid(), shop_id=shop.shop_id, member_id=member.member_id, profile=pb.Profile(name="韩梅梅"),
        update_mask=field_mask_pb2.FieldMask(paths=["name"])))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "profile.name" in violations
    updated = shop.api.UpdateProfile(pb.UpdateProfileRequest(
        request_id=rid(), shop_id=shop.shop_id, member_id=member.member_id, profile=pb.Profile(name="韩梅梅"),
        update_mask=field_mask_pb2.FieldMask(paths=["name"]), consent_fields=[pb.PROFILE_FIELD_NAME]))
    assert updated.profile.name == "韩梅梅"


def test_join_threshold_refuses_buyers_who_do_not_follow(membership: ServiceUnderTest, admin: Authed) -> None:
    shop = create_shop(membership, admin, join_threshold=pb.JoinThreshold(require_follow=True))
    err, info, _ = rpc_error(join, shop, "b1")
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION and info.reason == "JOIN_THRESHOLD_NOT_MET"
    assert join(shop, "b1", facts=pb.BuyerFacts(follows_shop=True)).status == pb.MEMBER_STATUS_ACTIVE


def test_a_buyer_joins_once(shop: Shop) -> None:
    member = join(shop, "b1")
    err, info, _ = rpc_error(join, shop, "b1")
    assert err.code() == grpc.StatusCode.ALREADY_EXISTS and info.metadata["member_id"] == member.member_id


def test_leaving_erases_personal_data_and_keeps_anonymised_history(membership: ServiceUnderTest, shop: Shop) -> None:
    joined = pb.JoinMemberRequest(
        request_id=rid(), shop_id=shop.shop_id, buyer_id="b1", join_channel=pb.JOIN_CHANNEL_HOME_PAGE_MODULE,
        profile=pb.Profile(name="李雷", phone="13800135678", region="浙江"),
        consent_fields=[pb.PROFILE_FIELD_NAME, pb.PROFILE_FIELD_PHONE, pb.PROFILE_FIELD_REGION])
    member = shop.api.JoinMember(joined)
    buy(shop, "b1", 1200 * YUAN)
    shop.api.LeaveMember(pb.LeaveMemberRequest(request_id=rid(), shop_id=shop.shop_id, member_id=member.member_id))
    left = shop.api.GetMember(pb.GetMemberRequest(shop_id=shop.shop_id, member_id=member.member_id))
    assert left.status == pb.MEMBER_STATUS_LEFT and left.buyer_id == ""
    assert left.profile == pb.Profile() and not left.consent.fields and left.consent.revoke_time.seconds > 0
    assert left.cumulative_spend_fen == 1200 * YUAN  # anonymised history stays
    db = membership.running.app.db
    row = db.read(lambda c: c.execute(select(members).where(members.c.shop_id == shop.shop_id,
                                                            members.c.member_id == member.member_id)).one())
    assert (row.name_cipher, row.phone_cipher, row.region_cipher, row.buyer_id_cipher, row.buyer_hash) == (None,) * 5
    err, _, _ = rpc_error(shop.api.GetTier, pb.GetTierRequest(shop_id=shop.shop_id, buyer_id="b1"))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    # A replay of the join must not bring the erased profile back.
    err, info, _ = rpc_error(shop.api.JoinMember, joined)
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION and "李雷" not in str(err.details())
    assert info.reason == "REQUEST_ANSWER_ERASED"
    assert join(shop, "b1").member_id != member.member_id  # may join again, as a new member
    (event,) = outbox_events(membership, shop.shop_id, events_pb2.MemberLeft)
    assert event.member_id == member.member_id


def test_import_is_all_or_nothing_with_an_error_per_row(shop: Shop) -> None:
    join(shop, "existing")
    rows = [
        pb.ImportedMember(buyer_id="c1", cumulative_spend_fen=3500 * YUAN, trade_count=7),
        pb.ImportedMember(buyer_id="c2", profile=pb.Profile(phone="12345"), consent_fields=[pb.PROFILE_FIELD_PHONE]),
        pb.ImportedMember(buyer_id="existing"),
        pb.ImportedMember(buyer_id="c1"),
    ]
    err, _, violations = rpc_error(shop.api.ImportMembers, pb.ImportMembersRequest(
        request_id=rid(), shop_id=shop.shop_id, members=rows))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert {"members[1].profile.phone", "members[2].buyer_id", "members[3].buyer_id"} <= set(violations)
    assert "members[0].buyer_id" not in violations
    listed = shop.api.ListMembers(pb.ListMembersRequest(shop_id=shop.shop_id))
    assert [m.buyer_id for m in listed.members] == ["existing"]  # nothing half-imported

    ok = shop.api.ImportMembers(pb.ImportMembersRequest(request_id=rid(), shop_id=shop.shop_id, members=[
        rows[0], pb.ImportedMember(buyer_id="c3", tier_level=4)]))
    assert ok.imported_count == 2
    assert tier_of(shop, ok.member_ids[0]) == 2 and tier_of(shop, ok.member_ids[1]) == 4
    imported = shop.api.GetMember(pb.GetMemberRequest(shop_id=shop.shop_id, member_id=ok.member_ids[0]))
    assert imported.join_channel == pb.JOIN_CHANNEL_CRM_IMPORT and imported.trade_count == 7


def test_export_streams_every_member_of_the_shop_only(membership: ServiceUnderTest, admin: Authed, shop: Shop) -> None:
    for i in range(7):
        join(shop, f"b{i}")
    other = create_shop(membership, admin)
    join(other, "x")
    exported = list(shop.api.ExportMembers(pb.ExportMembersRequest(shop_id=shop.shop_id)))
    assert sorted(m.buyer_id for m in exported) == [f"b{i}" for i in range(7)]


def test_list_members_pages_through_everyone(shop: Shop) -> None:
    for i in range(5):
        join(shop, f"b{i}")
    seen, token = [], ""
    while True:
        page = shop.api.ListMembers(pb.ListMembersRequest(shop_id=shop.shop_id, page_size=2, page_token=token))
        seen += [m.buyer_id for m in page.members]
        token = page.next_page_token
        if not token:
            break
    assert sorted(seen) == [f"b{i}" for i in range(5)]
    err, _, violations = rpc_error(shop.api.ListMembers, pb.ListMembersRequest(shop_id=shop.shop_id,
                                                                               page_token="garbage"))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "page_token" in violations


def test_events_announce_joins_completions_and_tier_changes(membership: ServiceUnderTest, shop: Shop) -> None:
    member = join(shop, "b1")
    buy(shop, "b1", 3000 * YUAN)
    (joined,) = outbox_events(membership, shop.shop_id, events_pb2.MemberJoined)
    assert joined.member_id == member.member_id and joined.join_channel == pb.JOIN_CHANNEL_HOME_PAGE_MODULE
    (changed,) = outbox_events(membership, shop.shop_id, events_pb2.TierChanged)
    assert (changed.from_level, changed.to_level, changed.to_code) == (0, 2, "gold")
    assert changed.reason == pb.TIER_CHANGE_REASON_QUALIFIED


# ----- idempotency -----------------------------------------------------------------------------


def test_retry_with_the_same_request_id_returns_the_first_answer_and_changes_nothing(membership: ServiceUnderTest,
                                                                                     shop: Shop) -> None:
    request = pb.JoinMemberRequest(request_id="join-1", shop_id=shop.shop_id, buyer_id="b1", join_channel=1)
    first = shop.api.JoinMember(request)
    again = shop.api.JoinMember(request)
    assert again == first
    assert len(outbox_events(membership, shop.shop_id, events_pb2.MemberJoined)) == 1


def test_the_same_request_id_with_another_request_is_refused(shop: Shop) -> None:
    shop.api.JoinMember(pb.JoinMemberRequest(request_id="r", shop_id=shop.shop_id, buyer_id="b1", join_channel=1))
    err, info, violations = rpc_error(shop.api.JoinMember, pb.JoinMemberRequest(
        request_id="r", shop_id=shop.shop_id, buyer_id="b2", join_channel=1))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and info.reason == "REQUEST_ID_REUSED"
    assert "request_id" in violations


def test_mutations_without_a_request_id_are_refused(shop: Shop) -> None:
    err, _, violations = rpc_error(shop.api.JoinMember, pb.JoinMemberRequest(shop_id=shop.shop_id, buyer_id="b1",
                                                                             join_channel=1))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "request_id" in violations


# ----- shops and keys ----------------------------------------------------------------------------


def test_a_second_shop_sees_nothing_of_the_first(membership: ServiceUnderTest, admin: Authed, shop: Shop) -> None:
    member = join(shop, "b1")
    other = create_shop(membership, admin)
    err, info, _ = rpc_error(other.api.GetMember, pb.GetMemberRequest(shop_id=shop.shop_id, member_id=member.member_id))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED and info.reason == "SHOP_MISMATCH"
    err, _, _ = rpc_error(other.api.GetMember, pb.GetMemberRequest(shop_id=other.shop_id, member_id=member.member_id))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    err, _, _ = rpc_error(other.api.GetTier, pb.GetTierRequest(shop_id=other.shop_id, buyer_id="b1"))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert list(other.api.ExportMembers(pb.ExportMembersRequest(shop_id=other.shop_id))) == []
    err, _, _ = rpc_error(other.api.SetTier, pb.SetTierRequest(request_id=rid(), shop_id=shop.shop_id,
                                                                member_id=member.member_id, tier_level=4,
                                                                reason="x", operator="y"))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert tier_of(shop, member.member_id) == 0


def test_calls_need_a_valid_key_and_programs_need_the_admin(membership: ServiceUnderTest, shop: Shop) -> None:
    stub = pb_grpc.MembershipServiceStub(membership.channel)
    err, info, _ = rpc_error(stub.GetProgram, pb.GetProgramRequest(shop_id=shop.shop_id))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED and info.reason == "MISSING_CREDENTIALS"
    forged = Authed(stub, shop.key[:-3] + "abc")
    err, _, _ = rpc_error(forged.GetProgram, pb.GetProgramRequest(shop_id=shop.shop_id))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    err, info, _ = rpc_error(shop.api.CreateProgram, pb.CreateProgramRequest(request_id=rid(), shop_id="new-shop",
                                                                             name="x"))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED and info.reason == "ADMIN_ONLY"
    issued = Authed(stub, ADMIN_KEY).IssueApiKey(pb.IssueApiKeyRequest(request_id=rid(), shop_id=shop.shop_id))
    assert Authed(stub, issued.api_key).GetProgram(pb.GetProgramRequest(shop_id=shop.shop_id)).shop_id == shop.shop_id


# ----- bad input -----------------------------------------------------------------------------------


def test_missing_shop_is_invalid_argument_with_the_field(admin: Authed) -> None:
    err, _, violations = rpc_error(admin.GetTier, pb.GetTierRequest(member_id="m_1"))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "shop_id" in violations


def test_unknown_shop_and_unknown_member_are_not_found(admin: Authed, shop: Shop) -> None:
    err, info, _ = rpc_error(admin.GetTier, pb.GetTierRequest(shop_id="no-such-shop", member_id="m_1"))
    assert err.code() == grpc.StatusCode.NOT_FOUND and info.reason == "PROGRAM_NOT_FOUND"
    err, info, _ = rpc_error(shop.api.GetTier, pb.GetTierRequest(shop_id=shop.shop_id, member_id="m_nobody"))
    assert err.code() == grpc.StatusCode.NOT_FOUND and info.reason == "MEMBER_NOT_FOUND"
    assert info.domain == "membership.loyalty"
    err, _, _ = rpc_error(complete, shop, "never-recorded")
    assert err.code() == grpc.StatusCode.NOT_FOUND


def test_negative_and_absurd_amounts_are_invalid(shop: Shop) -> None:
    err, _, violations = rpc_error(pay, shop, "b1", -100)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "amount_fen" in violations
    err, _, violations = rpc_error(pay, shop, "b1", 10**15)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "amount_fen" in violations
    order_id = pay(shop, "b1", 100)
    err, _, violations = rpc_error(refund, shop, order_id, -1)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "amount_fen" in violations


@pytest.mark.parametrize("phone", ["12345", "2380013567", "138001356789", "1380013567x", "+1 212 555 0100"])
def test_malformed_phones_are_invalid(shop: Shop, phone: str) -> None:
    err, _, violations = rpc_error(join, shop, "b1", profile=pb.Profile(phone=phone),
                                   consent_fields=[pb.PROFILE_FIELD_PHONE])
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "profile.phone" in violations


def test_oversized_and_malformed_fields_are_invalid(shop: Shop) -> None:
    err, _, violations = rpc_error(join, shop, "b" * 65, profile=pb.Profile(name="名" * 101, region="r" * 101),
                                   consent_fields=[pb.PROFILE_FIELD_NAME, pb.PROFILE_FIELD_REGION])
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert {"buyer_id", "profile.name", "profile.region"} <= set(violations)
    err, _, violations = rpc_error(join, shop, "bad id with spaces")
    assert "buyer_id" in violations
    err, _, violations = rpc_error(join, shop, "b1", profile=pb.Profile(birthday=date_pb2.Date(month=2, day=30)),
                                   consent_fields=[pb.PROFILE_FIELD_BIRTHDAY])
    assert "profile.birthday" in violations
    err, _, violations = rpc_error(shop.api.JoinMember, pb.JoinMemberRequest(
        request_id="x" * 200, shop_id=shop.shop_id, buyer_id="b1", join_channel=1))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "request_id" in violations
    err, _, violations = rpc_error(shop.api.JoinMember, pb.JoinMemberRequest(
        request_id=rid(), shop_id=shop.shop_id, buyer_id="b1"))
    assert "join_channel" in violations
    err, _, violations = rpc_error(shop.api.ListMembers, pb.ListMembersRequest(shop_id=shop.shop_id, page_size=-1))
    assert "page_size" in violations


def test_bad_program_settings_are_invalid(admin: Authed) -> None:
    err, _, violations = rpc_error(admin.CreateProgram, pb.CreateProgramRequest(
        request_id=rid(), shop_id="bad shop!", name="x"))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "shop_id" in violations
    err, _, violations = rpc_error(admin.CreateProgram, pb.CreateProgramRequest(
        request_id=rid(), shop_id="good-shop", name="", time_zone="Mars/Olympus"))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert {"name", "time_zone"} <= set(violations)


# ----- programs and concurrency ------------------------------------------------------------------


def test_update_program_changes_only_the_named_fields(shop: Shop) -> None:
    before = shop.api.GetProgram(pb.GetProgramRequest(shop_id=shop.shop_id))
    updated = shop.api.UpdateProgram(pb.UpdateProgramRequest(
        request_id=rid(), shop_id=shop.shop_id, name="Renamed", time_zone="Asia/Tokyo",
        join_threshold=pb.JoinThreshold(require_follow=True),
        update_mask=field_mask_pb2.FieldMask(paths=["time_zone", "join_threshold"])))
    assert updated.name == before.name and updated.time_zone == "Asia/Tokyo"
    assert updated.join_threshold.require_follow and list(updated.tiers) == list(before.tiers)
    err, info, _ = rpc_error(join, shop, "b1")
    assert info.reason == "JOIN_THRESHOLD_NOT_MET"
    err, _, violations = rpc_error(shop.api.UpdateProgram, pb.UpdateProgramRequest(
        request_id=rid(), shop_id=shop.shop_id, update_mask=field_mask_pb2.FieldMask(paths=["tiers"])))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "update_mask" in violations


def test_concurrent_completions_for_one_member_lose_no_spend(shop: Shop) -> None:
    member = join(shop, "b1")
    order_ids = [pay(shop, "b1", 100 * YUAN + i) for i in range(16)]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda o: complete(shop, o), order_ids + order_ids))
    assert all(r.order.counted for r in results)
    got = shop.api.GetMember(pb.GetMemberRequest(shop_id=shop.shop_id, member_id=member.member_id))
    assert got.trade_count == 16 and got.cumulative_spend_fen == sum(100 * YUAN + i for i in range(16))
    assert got.tier_code == "silver"
    history = shop.api.ListTierHistory(pb.ListTierHistoryRequest(shop_id=shop.shop_id, member_id=member.member_id))
    assert [c.to_level for c in history.changes] == [1, 0]  # one upgrade, after the join


def test_concurrent_retries_of_one_join_create_one_member(membership: ServiceUnderTest, shop: Shop) -> None:
    request = pb.JoinMemberRequest(request_id="same", shop_id=shop.shop_id, buyer_id="b1", join_channel=1)
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: shop.api.JoinMember(request), range(8)))
    assert len({r.member_id for r in results}) == 1
    assert len(outbox_events(membership, shop.shop_id, events_pb2.MemberJoined)) == 1


def test_concurrent_recordings_of_one_order_keep_one_and_answer_alike(shop: Shop) -> None:
    """Without a request_id the order id is the key: every caller gets the one order; a caller with
    other details gets a conflict, however the calls interleave."""
    join(shop, "b1")
    same = pb.RecordOrderRequest(shop_id=shop.shop_id, order_id="o-race", buyer_id="b1", amount_fen=100 * YUAN)
    other = pb.RecordOrderRequest(shop_id=shop.shop_id, order_id="o-race", buyer_id="b1", amount_fen=99 * YUAN)

    def record(request: pb.RecordOrderRequest) -> object:
        try:
            return shop.api.RecordOrder(request)
        except grpc.RpcError as exc:
            return exc.code()

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(record, [same] * 12))
        conflicts = list(pool.map(record, [other] * 4))
    assert {(a.order_id, a.amount_fen, a.buyer_id) for a in answers} == {("o-race", 100 * YUAN, "b1")}
    assert conflicts == [grpc.StatusCode.ALREADY_EXISTS] * 4
    complete(shop, "o-race")
    assert shop.api.GetMember(pb.GetMemberRequest(shop_id=shop.shop_id, buyer_id="b1")).trade_count == 1


@pytest.mark.parametrize("years", [-8000, -30, 2, 7000])
def test_trade_times_far_from_now_are_refused_on_every_order_call(shop: Shop, years: int) -> None:
    """A trade dated years away would be counted for the tier and then fail points' shop-local
    calendar; every order call refuses it up front."""
    far = Timestamp(seconds=int(time.time()) + years * 365 * 86400)
    join(shop, "b1")
    paid = pay(shop, "b1", 100)
    calls = [
        (shop.api.RecordOrder, pb.RecordOrderRequest(shop_id=shop.shop_id, order_id=f"o-{years}", buyer_id="b1",
                                                     amount_fen=100, paid_time=far), "paid_time"),
        (shop.api.CompleteOrder, pb.CompleteOrderRequest(shop_id=shop.shop_id, order_id=paid, complete_time=far),
         "complete_time"),
        (shop.api.RefundOrder, pb.RefundOrderRequest(shop_id=shop.shop_id, order_id=paid, refund_id="r1",
                                                     amount_fen=50, refund_time=far), "refund_time"),
    ]
    for call, request, field in calls:
        err, _, violations = rpc_error(call, request)
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and field in violations
    member = shop.api.GetMember(pb.GetMemberRequest(shop_id=shop.shop_id, buyer_id="b1"))
    assert member.trade_count == 0 and member.cumulative_spend_fen == 0


def test_hostile_values_are_invalid_arguments_not_internal_errors(shop: Shop) -> None:
    order_id = pay(shop, "b1", 100)
    err, _, violations = rpc_error(shop.api.CompleteOrder, pb.CompleteOrderRequest(
        shop_id=shop.shop_id, order_id=order_id, complete_time=Timestamp(seconds=10**12)))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "complete_time" in violations
    member_id = join(shop, "b2").member_id
    try:  # SQLite stores a NUL; PostgreSQL text cannot hold one
        shop.api.SetTier(pb.SetTierRequest(request_id=rid(), shop_id=shop.shop_id, member_id=member_id,
                                           tier_level=1, reason="nul\x00inside", operator="ops"))
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT
    err, _, violations = rpc_error(shop.api.GetMember, pb.GetMemberRequest(shop_id=shop.shop_id,
                                                                           member_id="m" * 100_000))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "member_id" in violations


def test_an_update_mask_of_star_changes_every_field_named_by_the_resource(shop: Shop) -> None:
    member = join(shop, "b1")
    updated = shop.api.UpdateProfile(pb.UpdateProfileRequest(
        request_id=rid(), shop_id=shop.shop_id, member_id=member.member_id,
        profile=pb.Profile(name="韩梅梅", region="浙江"), update_mask=field_mask_pb2.FieldMask(paths=["*"]),
        consent_fields=[pb.PROFILE_FIELD_NAME, pb.PROFILE_FIELD_GENDER, pb.PROFILE_FIELD_PHONE,
                        pb.PROFILE_FIELD_BIRTHDAY, pb.PROFILE_FIELD_REGION]))
    assert updated.profile.name == "韩梅梅" and updated.profile.region == "浙江"
    program = shop.api.UpdateProgram(pb.UpdateProgramRequest(
        request_id=rid(), shop_id=shop.shop_id, name="全部更新", time_zone="Asia/Shanghai",
        update_mask=field_mask_pb2.FieldMask(paths=["*"])))
    assert program.name == "全部更新" and not program.join_threshold.require_follow
    err, _, violations = rpc_error(shop.api.UpdateProgram, pb.UpdateProgramRequest(
        request_id=rid(), shop_id=shop.shop_id, name="x"))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "update_mask" in violations
