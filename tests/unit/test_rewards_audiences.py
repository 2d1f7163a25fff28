"""Tag and segment audiences at checkout, decided without a database: a member carrying one of a
campaign's tags is in it; a segment the segments service cannot answer for (nothing listens at
its address) holds nobody, says SEGMENTS_NOT_AVAILABLE, and the cart is priced without it."""

from __future__ import annotations

import socket
from datetime import datetime, timedelta

from loyalty.segments.v1 import segments_service_pb2_grpc as segments_grpc

from services.kit.client import ServiceClient
from services.rewards import audiences, checkout, reasons
from services.rewards.checkout import Audience, AudienceKind, Buyer, Campaign, CampaignKind, Line
from services.rewards.service import RewardsService

NOW = datetime(2026, 11, 26, 12, 0)


def campaign(campaign_id: str, audience: Audience) -> Campaign:
    return Campaign(shop_id="s1", campaign_id=campaign_id, name="会员专享", kind=CampaignKind.PERCENTAGE_DISCOUNT,
                    start_at=NOW - timedelta(days=1), end_at=NOW + timedelta(days=1), audience=audience,
                    discount_permille=900)


def closed_port() -> int:
    """A local port nothing listens on (bound, then let go)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_member_carrying_one_of_the_tags_is_in_a_tags_audience() -> None:
    tags = Audience(AudienceKind.TAGS, tag_ids=("tg_lace", "tg_vip"))
    assert checkout.audience_refusal(tags, Buyer("m1", tag_ids=frozenset({"tg_vip", "tg_other"}))) == ""
    assert checkout.audience_refusal(tags, Buyer("m1", tag_ids=frozenset({"tg_other"}))) == reasons.NOT_IN_AUDIENCE
    assert checkout.audience_refusal(tags, Buyer()) == reasons.NOT_IN_AUDIENCE


def test_a_segment_segments_cannot_answer_for_holds_nobody_and_the_cart_is_still_priced() -> None:
    segments = ServiceClient(segments_grpc.SegmentsServiceStub, f"127.0.0.1:{closed_port()}", key="k", timeout=0.5)
    service = RewardsService(db=None, points=None, segments=segments)  # type: ignore[arg-type]
    found = [campaign("cg_seg", Audience(AudienceKind.SEGMENT, segment_id="predefined.repurchase_window")),
             campaign("cg_all", Audience())]
    buyer = audiences.with_segments(service, Buyer("m1"), "s1", found, NOW)
    assert buyer.undecided_segment_ids == {"predefined.repurchase_window"} and not buyer.segment_ids

    priced = checkout.evaluate(buyer, [Line("SKU-1", 1, 10_000)], found, [], NOW)
    verdicts = {c.campaign_id: v.reason for c, v in priced.campaigns}
    assert verdicts == {"cg_seg": reasons.SEGMENTS_NOT_AVAILABLE, "cg_all": ""}
    assert (priced.applied_campaign_id, priced.total("total_fen")) == ("cg_all", 9_000)
    # A buyer who is not a member is never asked about.
    assert audiences.with_segments(service, Buyer(), "s1", found, NOW) == Buyer()
