"""The campaigns' part of the operators' report: each campaign's reach and, with its holdout, the
conversion of the treated against the held out.

Rules:
- The campaigns listed are the shop's whose window [start, end) overlaps the report's period;
  each is measured over its window within the period (the measured interval).
- Reach: the shop's members as rewards knows them (the members projection) who are in the
  campaign's audience now (everyone; its tiers at the member's current tier; its tags as
  segments' events said), had joined before the measured interval ended, and have not left.
  Segment audiences are not measured here (a segment is decided by the segments service when
  asked, not kept by rewards): they show no reach.
- Each member of the reach is treated or held out by checkout.held_out, the same deterministic
  split EvaluateCart and the coupon-after-order campaign apply.
- A member converted when they have at least one completed order (membership's OrderCompleted,
  kept in member_orders) in the measured interval; their orders and spend (the orders'
  amount_fen) are summed per group. An order fully refunded after completion no longer counts; a
  partial refund changes nothing (the order converted, at the amount it completed with).
- Rates are in basis points, rounded down; 0 for an empty group.

Cost: one query per campaign, the audience's members outer-joined to the shop's orders of the
measured interval grouped by member (set-wise in the database, the orders found by their
(shop_id, completed_at) index), streamed (yield_per) because the holdout split is a sha256 over
the member id that SQL cannot portably compute. So a report costs, per campaign listed, O(audience)
rows read and hashed in Python plus the database's pass over the interval's orders, in flat
memory; a shop with many campaigns over a large membership pays that many passes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, func, select

from services.rewards.campaigns import _row_to_campaign
from services.rewards.checkout import FULL_BP, AudienceKind, Campaign, CampaignStatus, held_out
from services.rewards.tables import campaigns, member_orders, member_tags, members

STREAM_ROWS = 1000


@dataclass
class Group:
    members: int = 0
    converted: int = 0
    orders: int = 0
    spend_fen: int = 0

    @property
    def conversion_rate_bp(self) -> int:
        return self.converted * FULL_BP // self.members if self.members else 0


@dataclass(frozen=True)
class CampaignFigures:
    campaign: Campaign
    status: CampaignStatus
    measured_start: datetime
    measured_end: datetime
    treated: Group
    held_out: Group

    @property
    def reach(self) -> int:
        return self.treated.members + self.held_out.members


def campaign_figures(conn: Connection, shop_id: str, start: datetime, end: datetime,
                     now: datetime) -> list[CampaignFigures]:
    """The figures of each of the shop's campaigns whose window overlaps [start, end)."""
    rows = conn.execute(select(campaigns).where(campaigns.c.shop_id == shop_id, campaigns.c.start_at < end,
                                                campaigns.c.end_at > start)
                        .order_by(campaigns.c.start_at, campaigns.c.campaign_id)).all()
    return [_measure(conn, _row_to_campaign(row), start, end, now) for row in rows]


def _measure(conn: Connection, c: Campaign, start: datetime, end: datetime, now: datetime) -> CampaignFigures:
    lo, hi = max(c.start_at, start), min(c.end_at, end)
    treated, held = Group(), Group()
    figures = CampaignFigures(c, c.status(now), lo, hi, treated, held)
    if c.audience.kind is AudienceKind.SEGMENT:
        return figures
    bought = (select(member_orders.c.member_id, func.count().label("orders"),
                     func.sum(member_orders.c.amount_fen).label("spend"))
              .where(member_orders.c.shop_id == c.shop_id, member_orders.c.completed_at >= lo,
                     member_orders.c.completed_at < hi, member_orders.c.refunded_at.is_(None))
              .group_by(member_orders.c.member_id).subquery())
    audience = select(members.c.member_id, bought.c.orders, bought.c.spend).select_from(
        members.outerjoin(bought, bought.c.member_id == members.c.member_id)).where(
        members.c.shop_id == c.shop_id, members.c.left_at.is_(None), members.c.joined_at < hi)
    if c.audience.kind is AudienceKind.TIERS:
        audience = audience.where(members.c.tier_level.in_(c.audience.tier_levels))
    elif c.audience.kind is AudienceKind.TAGS:
        audience = audience.where(members.c.member_id.in_(select(member_tags.c.member_id).where(
            member_tags.c.shop_id == c.shop_id, member_tags.c.tag_id.in_(c.audience.tag_ids), member_tags.c.tagged)))
    for row in conn.execute(audience.execution_options(yield_per=STREAM_ROWS)):
        group = held if held_out(c.campaign_id, row.member_id, c.holdout_bp) else treated
        group.members += 1
        if row.orders:
            group.converted += 1
            group.orders += int(row.orders)
            group.spend_fen += int(row.spend or 0)
    return figures
