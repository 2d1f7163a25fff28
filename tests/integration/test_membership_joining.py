"""The join decision through the real gRPC API on both backends: each kind of threshold (follows,
completed trades, spend, ANY of them), from the facts the caller states and membership's own
order facts, CheckJoinEligibility's answer for the storefront card, and JoinMember enforcing the
same threshold."""

from __future__ import annotations

import grpc
from google.protobuf import field_mask_pb2
from loyalty.membership.v1 import membership_service_pb2 as pb

from tests.conftest import Authed, ServiceUnderTest, Shop, create_shop
from tests.integration.test_membership import YUAN, complete, join, pay, rid, rpc_error

FOLLOW, TRADES, SPEND = pb.JOIN_REQUIREMENT_FOLLOW, pb.JOIN_REQUIREMENT_COMPLETED_TRADES, pb.JOIN_REQUIREMENT_SPEND


def threshold(shop: Shop, **parts: object) -> pb.Program:
    return shop.api.UpdateProgram(pb.UpdateProgramRequest(
        request_id=rid(), shop_id=shop.shop_id, join_threshold=pb.JoinThreshold(**parts),
        update_mask=field_mask_pb2.FieldMask(paths=["join_threshold"])))


def check(shop: Shop, buyer: str, **facts: object) -> pb.CheckJoinEligibilityResponse:
    return shop.api.CheckJoinEligibility(pb.CheckJoinEligibilityRequest(
        shop_id=shop.shop_id, buyer_id=buyer, facts=pb.BuyerFacts(**facts)))


def test_anyone_may_join_by_default_and_the_card_shows_no_benefit(shop: Shop) -> None:
    seen = check(shop, "b1")
    assert seen.eligible and not seen.is_member and list(seen.unmet) == [] and not seen.has_join_benefit


def test_follow_threshold(shop: Shop) -> None:
    threshold(shop, require_follow=True)
    assert list(check(shop, "b1").unmet) == [FOLLOW] and not check(shop, "b1").eligible
    assert check(shop, "b1", follows_shop=True).eligible


def test_completed_trade_threshold_counts_the_buyers_own_orders_from_before_joining(shop: Shop) -> None:
    threshold(shop, min_completed_trades=1)
    assert list(check(shop, "b1").unmet) == [TRADES]
    order = pay(shop, "b1", 50 * YUAN)
    assert list(check(shop, "b1").unmet) == [TRADES]  # paid is not completed
    complete(shop, order)
    seen = check(shop, "b1")
    assert seen.eligible and seen.completed_trades == 1 and seen.spent_fen == 50 * YUAN
    assert check(shop, "b2", completed_trades=3).eligible  # the caller's facts count too


def test_spend_threshold_takes_the_larger_of_the_stated_and_own_figures(shop: Shop) -> None:
    threshold(shop, min_spend_fen=200 * YUAN)
    complete(shop, pay(shop, "b1", 150 * YUAN))
    seen = check(shop, "b1", spent_fen=100 * YUAN)
    assert list(seen.unmet) == [SPEND] and seen.spent_fen == 150 * YUAN  # never summed
    assert check(shop, "b1", spent_fen=250 * YUAN).eligible


def test_all_parts_by_default_any_part_when_combined_by_any(shop: Shop) -> None:
    threshold(shop, require_follow=True, min_completed_trades=2, min_spend_fen=500 * YUAN)
    assert list(check(shop, "b1", follows_shop=True, spent_fen=600 * YUAN).unmet) == [TRADES]
    assert check(shop, "b1", follows_shop=True, spent_fen=600 * YUAN, completed_trades=2).eligible
    program = threshold(shop, require_follow=True, min_completed_trades=2, min_spend_fen=500 * YUAN,
                        combine=pb.JOIN_THRESHOLD_COMBINE_ANY)
    assert program.join_threshold.combine == pb.JOIN_THRESHOLD_COMBINE_ANY
    assert check(shop, "b1", spent_fen=600 * YUAN).eligible
    assert list(check(shop, "b1").unmet) == [FOLLOW, TRADES, SPEND]


def test_join_member_enforces_the_threshold_it_reports(shop: Shop) -> None:
    threshold(shop, min_spend_fen=100 * YUAN)
    err, failure, _ = rpc_error(join, shop, "b1")
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION and failure.reason == "JOIN_THRESHOLD_NOT_MET"
    assert failure.metadata["unmet"] == "spend"
    member = join(shop, "b1", facts=pb.BuyerFacts(spent_fen=100 * YUAN))
    seen = check(shop, "b1")
    assert seen.is_member and seen.member_id == member.member_id and seen.tier.code == "regular"
    assert not seen.eligible and list(seen.unmet) == []


def test_the_join_benefit_is_configured_and_shown_on_the_card(shop: Shop) -> None:
    program = shop.api.UpdateProgram(pb.UpdateProgramRequest(
        request_id=rid(), shop_id=shop.shop_id, join_benefit=pb.JoinBenefit(text="入会礼: 10元无门槛券",
                                                                            pack_id="pk_welcome"),
        update_mask=field_mask_pb2.FieldMask(paths=["join_benefit"])))
    assert program.join_benefit.pack_id == "pk_welcome"
    seen = check(shop, "b1")
    assert seen.has_join_benefit and seen.join_benefit.text == "入会礼: 10元无门槛券"
    err, _, fields = rpc_error(shop.api.UpdateProgram, pb.UpdateProgramRequest(
        request_id=rid(), shop_id=shop.shop_id, join_benefit=pb.JoinBenefit(text="x" * 300, pack_id="bad id!"),
        update_mask=field_mask_pb2.FieldMask(paths=["join_benefit"])))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "join_benefit.text" in fields and "join_benefit.pack_id" in fields


def test_eligibility_is_per_shop_and_checks_its_input(shop: Shop) -> None:
    err, _, fields = rpc_error(check, shop, "", spent_fen=-1)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "buyer_id" in fields and "facts.spent_fen" in fields
    err, _, _ = rpc_error(shop.api.CheckJoinEligibility, pb.CheckJoinEligibilityRequest(
        shop_id="shop-of-someone-else", buyer_id="b1"))
    assert err.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED)


def test_a_program_created_with_a_richer_threshold_keeps_it(membership: ServiceUnderTest, admin: Authed) -> None:
    shop = create_shop(membership, admin, join_threshold=pb.JoinThreshold(min_completed_trades=1))
    got = shop.api.GetProgram(pb.GetProgramRequest(shop_id=shop.shop_id))
    assert got.join_threshold.min_completed_trades == 1
    assert list(check(shop, "b1").unmet) == [TRADES]
