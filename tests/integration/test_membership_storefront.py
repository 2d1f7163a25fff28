"""The storefront member module's settings, kept with the program: smart or custom mode (a call
to action of at most 13 characters and a 702x110 background image), the origins the shop's pages
call the gateway from, and CheckJoinEligibility handing the card's mode to the storefront."""

from __future__ import annotations

import grpc
from google.protobuf import field_mask_pb2
from loyalty.membership.v1 import membership_service_pb2 as pb

from tests.conftest import Shop
from tests.integration.test_membership import rid, rpc_error

IMAGE = "https://img.example.com/card.png"


def configure(shop: Shop, *paths: str, **fields: object) -> pb.Program:
    return shop.api.UpdateProgram(pb.UpdateProgramRequest(
        request_id=rid(), shop_id=shop.shop_id, update_mask=field_mask_pb2.FieldMask(paths=list(paths)), **fields))


def custom(text: str, url: str = IMAGE, width: int = 702, height: int = 110) -> pb.StorefrontCard:
    return pb.StorefrontCard(mode=pb.CARD_MODE_CUSTOM, call_to_action=text, background_image_url=url,
                             background_image_width=width, background_image_height=height)


def test_a_new_program_shows_the_smart_card_and_allows_no_origin(shop: Shop) -> None:
    program = shop.api.GetProgram(pb.GetProgramRequest(shop_id=shop.shop_id))
    assert program.storefront_card.mode == pb.CARD_MODE_SMART and list(program.storefront_origins) == []


def test_custom_mode_is_kept_and_reaches_the_join_decision(shop: Shop) -> None:
    program = configure(shop, "storefront_card", storefront_card=custom("入会领20元券"))
    assert program.storefront_card == custom("入会领20元券")
    seen = shop.api.CheckJoinEligibility(pb.CheckJoinEligibilityRequest(shop_id=shop.shop_id, buyer_id="b1"))
    assert seen.storefront_card.mode == pb.CARD_MODE_CUSTOM and seen.storefront_card.call_to_action == "入会领20元券"
    # Back to smart: the custom parts are dropped, not kept half-valid.
    program = configure(shop, "storefront_card", storefront_card=pb.StorefrontCard(mode=pb.CARD_MODE_SMART))
    assert program.storefront_card == pb.StorefrontCard(mode=pb.CARD_MODE_SMART)


def test_custom_mode_is_validated_field_by_field(shop: Shop) -> None:
    for card, field in [
        (custom("一二三四五六七八九十一二三四"), "storefront_card.call_to_action"),  # 14 characters
        (custom(""), "storefront_card.call_to_action"),
        (custom("Join", url="ftp://x/y.png"), "storefront_card.background_image_url"),
        (custom("Join", url="javascript:alert(1)"), "storefront_card.background_image_url"),
        (custom("Join", width=700), "storefront_card.background_image_width"),
        (custom("Join", height=0), "storefront_card.background_image_width"),
        (pb.StorefrontCard(mode=7), "storefront_card.mode"),
    ]:
        err, _, fields = rpc_error(lambda card=card: configure(shop, "storefront_card", storefront_card=card))
        assert err.code() is grpc.StatusCode.INVALID_ARGUMENT and field in fields, (card, fields)
    thirteen = configure(shop, "storefront_card", storefront_card=custom("一二三四五六七八九十一二三"))
    assert thirteen.storefront_card.mode == pb.CARD_MODE_CUSTOM  # 13 is the most


def test_storefront_origins_are_origins_only(shop: Shop) -> None:
    program = configure(shop, "storefront_origins",
                        storefront_origins=["https://shop.example.com", "http://127.0.0.1:8080"])
    assert list(program.storefront_origins) == ["https://shop.example.com", "http://127.0.0.1:8080"]
    for bad in ["https://shop.example.com/", "shop.example.com", "https://a.com/path", "*"]:
        err, _, fields = rpc_error(lambda bad=bad: configure(shop, "storefront_origins", storefront_origins=[bad]))
        assert err.code() is grpc.StatusCode.INVALID_ARGUMENT and "storefront_origins[0]" in fields
    assert list(configure(shop, "storefront_origins").storefront_origins) == []
