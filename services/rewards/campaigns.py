"""Campaigns (营销活动) as the database keeps them, the operators' handlers, EvaluateCart's reads,
and what campaigns do on membership's events: each shop's tier discounts (ProgramChanged) and a
coupon after each completed order (OrderCompleted), issued once per campaign and order through
the wallet's unique (source, reference)."""

from __future__ import annotations

import json
import logging
import secrets
from dataclasses import replace

from loyalty.membership.v1 import events_pb2 as membership_events
from sqlalchemy import Connection, Row, delete, func, insert, select, update

from services.kit.errors import FailedPrecondition, NotFound, Violations
from services.kit.storage import UnitOfWork
from services.kit.timeutil import from_timestamp, utcnow
from services.rewards import audiences, catalogue, checkout, reasons, wallet
from services.rewards.checkout import (
    DEFAULT_TIER_DISCOUNTS_BP,
    FULL_BP,
    Audience,
    AudienceKind,
    Buyer,
    Campaign,
    CampaignKind,
    CampaignStatus,
    WalletCoupon,
)
from services.rewards.commands import campaigns as commands
from services.rewards.domain import CouponSource, CouponState, RewardKind
from services.rewards.service import RewardsService
from services.rewards.tables import campaigns, coupons, members, tier_discounts

log = logging.getLogger("loyalty.rewards.campaigns")


# ----- rows ---------------------------------------------------------------------------------------------


def _row_to_campaign(row: Row) -> Campaign:
    a = json.loads(row.audience)
    audience = Audience(AudienceKind(a["kind"]), tuple(a["tier_levels"]), tuple(a["tag_ids"]), a["segment_id"])
    return Campaign(shop_id=row.shop_id, campaign_id=row.campaign_id, name=row.name, kind=CampaignKind(row.kind),
                    start_at=row.start_at, end_at=row.end_at, audience=audience, all_items=row.all_items,
                    skus=tuple(json.loads(row.skus)), discount_permille=row.discount_permille,
                    cash_off_fen=row.cash_off_fen, threshold_fen=row.threshold_fen,
                    coupon_reward_id=row.coupon_reward_id, holdout_bp=row.holdout_bp, created_at=row.created_at,
                    updated_at=row.updated_at)


def _values(c: Campaign) -> dict[str, object]:
    """The row of a campaign but for its keys and created_at."""
    a = c.audience
    audience = {"kind": int(a.kind), "tier_levels": sorted(a.tier_levels), "tag_ids": list(a.tag_ids),
                "segment_id": a.segment_id}
    return {"name": c.name, "kind": int(c.kind), "audience": json.dumps(audience), "start_at": c.start_at,
            "end_at": c.end_at, "all_items": c.all_items, "skus": json.dumps(list(c.skus)),
            "discount_permille": c.discount_permille, "cash_off_fen": c.cash_off_fen,
            "threshold_fen": c.threshold_fen, "coupon_reward_id": c.coupon_reward_id,
            "holdout_bp": c.holdout_bp, "updated_at": c.updated_at}


def read_campaign(conn: Connection, shop_id: str, campaign_id: str) -> Campaign:
    """The shop's campaign, or NOT_FOUND (another shop's id too)."""
    row = conn.execute(select(campaigns).where(campaigns.c.shop_id == shop_id,
                                               campaigns.c.campaign_id == campaign_id)).first()
    if row is None:
        raise NotFound(f"no campaign {campaign_id} in shop {shop_id}", reason=reasons.CAMPAIGN_NOT_FOUND,
                       metadata={"campaign_id": campaign_id})
    return _row_to_campaign(row)


# ----- the operators' campaigns -------------------------------------------------------------------------


def _check_references(conn: Connection, c: Campaign) -> None:
    """What the fields' checks cannot know: whether the coupon to give is a coupon reward of the
    shop's catalogue. (The audience's tags and segment are checked with segments before the
    transaction: check_audience.)"""
    if c.kind is CampaignKind.COUPON_AFTER_ORDER:
        reward = catalogue.read_reward(conn, c.shop_id, c.coupon_reward_id)
        if reward.kind is not RewardKind.COUPON:
            raise FailedPrecondition(f"reward {reward.reward_id} is not a coupon reward (a campaign gives coupons)",
                                     reason=reasons.COUPON_NOT_A_COUPON_REWARD, subject=f"reward/{reward.reward_id}",
                                     metadata={"reward_id": reward.reward_id})


def _sorted(audience: Audience) -> Audience:
    """The tier levels in order, as they are stored and answered."""
    return replace(audience, tier_levels=tuple(sorted(audience.tier_levels)))


def check_audience(service: RewardsService, cmd: commands.CreateCampaign | commands.UpdateCampaign) -> None:
    """The tags or segment the campaign's new audience names exist in segments (asked before the
    campaign's transaction, so no transaction waits on another service), once its fields are right."""
    audience = cmd.campaign.audience if isinstance(cmd, commands.CreateCampaign) else cmd.changes.get("audience")
    if isinstance(audience, Audience):
        v = Violations()
        commands.check_audience(v, audience)
        v.raise_if_any()
        audiences.check_audience(service, cmd.shop_id, audience)


def create_campaign(service: RewardsService, uow: UnitOfWork, cmd: commands.CreateCampaign) -> Campaign:
    now = utcnow()
    campaign = replace(cmd.campaign, shop_id=cmd.shop_id, campaign_id="cg_" + secrets.token_hex(10),
                       audience=_sorted(cmd.campaign.audience), created_at=now, updated_at=now)
    _check_references(uow.conn, campaign)
    uow.conn.execute(insert(campaigns).values(shop_id=campaign.shop_id, campaign_id=campaign.campaign_id,
                                              created_at=now, **_values(campaign)))
    return campaign


def get_campaign(service: RewardsService, query: commands.CampaignQuery) -> Campaign:
    return service.db.read(lambda conn: read_campaign(conn, query.shop_id, query.campaign_id))


def update_campaign(service: RewardsService, uow: UnitOfWork, cmd: commands.UpdateCampaign) -> Campaign:
    """The masked fields changed; the whole result must still be a campaign Create would accept."""
    stored = read_campaign(uow.conn, cmd.shop_id, cmd.campaign_id)
    changed = replace(stored, **cmd.changes, updated_at=utcnow())  # type: ignore[arg-type]
    changed = replace(changed, audience=_sorted(changed.audience))
    commands.campaign_violations(changed).raise_if_any()
    _check_references(uow.conn, changed)
    uow.conn.execute(update(campaigns).where(campaigns.c.shop_id == cmd.shop_id,
                                             campaigns.c.campaign_id == cmd.campaign_id).values(**_values(changed)))
    return changed


def list_campaigns(service: RewardsService, query: commands.ListCampaigns) -> list[Campaign]:
    """A page in campaign id order (read with limit + 1 rows to know whether another follows),
    filtered on the status as of now."""
    now = utcnow()
    select_page = select(campaigns).where(campaigns.c.shop_id == query.shop_id)
    if query.status is CampaignStatus.NOT_STARTED:
        select_page = select_page.where(campaigns.c.start_at > now)
    elif query.status is CampaignStatus.RUNNING:
        select_page = select_page.where(campaigns.c.start_at <= now, campaigns.c.end_at > now)
    elif query.status is CampaignStatus.ENDED:
        select_page = select_page.where(campaigns.c.end_at <= now)
    if query.after is not None:
        select_page = select_page.where(campaigns.c.campaign_id > query.after)
    select_page = select_page.order_by(campaigns.c.campaign_id).limit(query.limit + 1)
    return service.db.read(lambda conn: [_row_to_campaign(r) for r in conn.execute(select_page).all()])


# ----- checkout -----------------------------------------------------------------------------------------


def _tier_discount_bp(conn: Connection, shop_id: str, level: int) -> int:
    """The tier's price in basis points: the shop's ladder as membership announced it, the default
    ladder until it did (a level the ladder lacks pays full price)."""
    rows = dict(conn.execute(select(tier_discounts.c.level, tier_discounts.c.discount_bp)
                             .where(tier_discounts.c.shop_id == shop_id)).all())
    return (rows or DEFAULT_TIER_DISCOUNTS_BP).get(level, FULL_BP)


def _buyer(conn: Connection, shop_id: str, member_id: str) -> Buyer:
    """The buyer as rewards knows them: a current member with their tier's discount, or a buyer
    (no member id given, one rewards never heard of, or one who left)."""
    if not member_id:
        return Buyer()
    row = conn.execute(select(members.c.tier_level, members.c.left_at).where(
        members.c.shop_id == shop_id, members.c.member_id == member_id)).first()
    if row is None or row.left_at is not None:
        return Buyer()
    return Buyer(member_id, row.tier_level, _tier_discount_bp(conn, shop_id, row.tier_level))


def _cart_coupons(conn: Connection, shop_id: str, coupon_ids: tuple[str, ...]) -> list[WalletCoupon]:
    """The coupons named (each once, in the order given) as the wallet has them."""
    wanted = list(dict.fromkeys(coupon_ids))
    found = {r.coupon_id: r for r in conn.execute(select(coupons).where(
        coupons.c.shop_id == shop_id, coupons.c.coupon_id.in_(wanted))).all()} if wanted else {}
    return [WalletCoupon(c, found[c].member_id, CouponState(found[c].state), found[c].face_value_fen,
                         found[c].threshold_fen, found[c].valid_from, found[c].valid_until)
            if c in found else WalletCoupon(c) for c in wanted]


def evaluate_cart(service: RewardsService, cmd: commands.EvaluateCart) -> checkout.Evaluation:
    """The cart priced now for the buyer (checkout's stacking rule), with every campaign not yet
    ended and every coupon named judged. Reads only: nothing is reserved or used."""
    now = utcnow()

    def read(conn: Connection) -> tuple[Buyer, list[Campaign], list[WalletCoupon]]:
        buyer = _buyer(conn, cmd.shop_id, cmd.member_id)
        upcoming = [_row_to_campaign(r) for r in conn.execute(select(campaigns).where(
            campaigns.c.shop_id == cmd.shop_id, campaigns.c.end_at > now,
            campaigns.c.kind != int(CampaignKind.COUPON_AFTER_ORDER))).all()]
        if buyer.member_id and audiences.wants_tags(upcoming):
            buyer = replace(buyer, tag_ids=audiences.tags_of(conn, cmd.shop_id, buyer.member_id))
        return buyer, upcoming, _cart_coupons(conn, cmd.shop_id, cmd.coupon_ids)

    buyer, upcoming, cart_coupons = service.db.read(read)
    # Segment audiences are asked of segments after the read, holding no connection meanwhile.
    buyer = audiences.with_segments(service, buyer, cmd.shop_id, upcoming, now)
    return checkout.evaluate(buyer, list(cmd.lines), upcoming, cart_coupons, now)


# ----- membership's events ------------------------------------------------------------------------------


def ladder_changed(uow: UnitOfWork, e: membership_events.ProgramChanged) -> None:
    """Keeps the shop's tier discounts from ProgramChanged: replaced whole by a newer ladder; an
    event without tiers (sent before they were carried) or older than the ladder kept changes nothing."""
    if not e.tiers:
        return
    changed_at = from_timestamp(e.changed_at, utcnow())
    kept = uow.conn.execute(select(func.max(tier_discounts.c.changed_at))
                            .where(tier_discounts.c.shop_id == e.shop_id)).scalar()
    if kept is not None and kept > changed_at:
        return
    uow.conn.execute(delete(tier_discounts).where(tier_discounts.c.shop_id == e.shop_id))
    uow.conn.execute(insert(tier_discounts), [{"shop_id": e.shop_id, "level": t.level, "code": t.code,
                                               "discount_bp": t.discount_bp, "changed_at": changed_at}
                                              for t in e.tiers])


def order_completed(service: RewardsService, uow: UnitOfWork, e: membership_events.OrderCompleted) -> None:
    """订单完成后送优惠券: one coupon per running coupon-after-order campaign that reaches the member
    (audience, holdout) and whose threshold the order met, with reference "<campaign>/<order>"
    so a redelivered event issues nothing more."""
    at = from_timestamp(e.completed_at, utcnow())
    buyer = Buyer(e.member_id, e.tier_level)
    running = [_row_to_campaign(r) for r in uow.conn.execute(select(campaigns).where(
        campaigns.c.shop_id == e.shop_id, campaigns.c.kind == int(CampaignKind.COUPON_AFTER_ORDER),
        campaigns.c.start_at <= at, campaigns.c.end_at > at)).all()]
    if not running:
        return
    if audiences.wants_tags(running):
        buyer = replace(buyer, tag_ids=audiences.tags_of(uow.conn, e.shop_id, e.member_id))
    # A segment audience is asked of segments as the event is applied (segments may not have
    # heard of this very order yet: the member's standing before it decides); an undecided one
    # gives nothing for this order (logged), as a checkout would.
    buyer = audiences.with_segments(service, buyer, e.shop_id, running, at)
    for campaign in running:
        if checkout.reaches(campaign, buyer, at) or e.amount_fen < max(campaign.threshold_fen, 1):
            continue
        try:
            reward = catalogue.read_reward(uow.conn, e.shop_id, campaign.coupon_reward_id)
        except NotFound:
            log.warning("campaign %s gives reward %s, which is gone", campaign.campaign_id, campaign.coupon_reward_id)
            continue
        wallet.issue_coupons(service, uow, reward, e.member_id, source=CouponSource.CAMPAIGN,
                             source_reference=f"{campaign.campaign_id}/{e.order_id}", quantity=1, now=utcnow())
