"""The member centre's endpoints (/v1/me/...): joining, my profile, tier and progress, points,
the ledger, daily sign-in and leaving. Rewards, coupons and the lottery are in centre_rewards.
Every route acts for the token's buyer in the token's shop: no shop or buyer id is taken from the
request, and the member id comes from membership's answer about that buyer."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Request
from google.type import date_pb2
from loyalty.membership.v1 import membership_service_pb2 as mpb
from loyalty.points.v1 import points_service_pb2 as pp

from gateway.members import member_id
from gateway.problems import Problem
from gateway.routes.centre_models import (
    FIELDS,
    NO_POINTS,
    PAGE_TOKEN_PATTERN,
    IdempotencyKey,
    JoinIn,
    LeaveIn,
    LeaveOut,
    LedgerPage,
    MeOut,
    PointsOut,
    SignInIn,
    SignInOut,
    TierProgressOut,
    client_key,
    entry_out,
    me_out,
    points_out,
    problems,
    progress_out,
    scoped_request_id,
    when,
)
from gateway.tokens import Buyer, CurrentBuyer
from gateway.upstream import Upstreams

router = APIRouter(prefix="/v1/me", tags=["member centre"])

GENDERS = {"female": mpb.GENDER_FEMALE, "male": mpb.GENDER_MALE}
# Points opens a member's account when it hears that they joined (an event, a moment later).
MEMBER_NOT_FOUND = "MEMBER_NOT_FOUND"


def upstreams(request: Request) -> Upstreams:
    return request.app.state.upstreams


def not_yet_opened(problem: Problem) -> bool:
    """Points does not know the member yet: they joined a moment ago."""
    return problem.status == 404 and problem.reason == MEMBER_NOT_FOUND


@router.post("/join", response_model=MeOut, status_code=201, responses=problems(409),
             summary="Join the shop (入会) with the consented profile fields")
async def join(body: JoinIn, request: Request, buyer: CurrentBuyer,
               idempotency_key: IdempotencyKey = None) -> MeOut:
    key = client_key(idempotency_key, body.request_id)
    given = {name for name in FIELDS if getattr(body, name) is not None}
    unconsented = sorted(given - set(body.consent))
    if unconsented:
        raise Problem(422, "a profile field is given without the buyer's consent", reason="CONSENT_REQUIRED",
                      errors=[{"field": name, "message": "not among the consented fields"} for name in unconsented])
    profile = mpb.Profile(name=body.name or "", gender=GENDERS.get(body.gender or "", mpb.GENDER_UNSPECIFIED),
                          phone=body.phone or "", region=body.region or "")
    if body.birthday is not None:
        profile.birthday.CopyFrom(date_pb2.Date(year=body.birthday.year, month=body.birthday.month,
                                                day=body.birthday.day))
    up = upstreams(request)
    member = await up.call(up.membership.JoinMember, mpb.JoinMemberRequest(
        request_id=scoped_request_id(buyer, "join", key), shop_id=buyer.shop_id, buyer_id=buyer.buyer_id,
        profile=profile, consent_fields=[FIELDS[name] for name in dict.fromkeys(body.consent)],
        join_channel=mpb.JoinChannel.Value("JOIN_CHANNEL_" + body.channel.upper()),
        referrer_member_id=body.referrer_member_id or "",
        facts=mpb.BuyerFacts(follows_shop=buyer.follows_shop, completed_trades=min(buyer.completed_trades, 2**31 - 1),
                             spent_fen=buyer.spent_fen)), buyer.shop_id)
    return me_out(member)


@router.get("", response_model=MeOut, responses=problems(404), summary="My profile (phone masked) and tier")
async def me(request: Request, buyer: CurrentBuyer) -> MeOut:
    up = upstreams(request)
    try:
        member = await up.call(up.membership.GetMember, mpb.GetMemberRequest(
            shop_id=buyer.shop_id, buyer_id=buyer.buyer_id), buyer.shop_id)
    except Problem as problem:
        if problem.status == 404:
            raise Problem(404, "the buyer is not a member of this shop: join first", reason="NOT_A_MEMBER") from problem
        raise
    return me_out(member)


@router.get("/tier", response_model=TierProgressOut, responses=problems(404),
            summary="My tier and progress to the next (下一等级进度条), growth value")
async def tier(request: Request, buyer: CurrentBuyer) -> TierProgressOut:
    up = upstreams(request)
    mid = await member_id(up, buyer)
    progress = await up.call(up.membership.GetTierProgress, mpb.GetTierProgressRequest(
        shop_id=buyer.shop_id, member_id=mid), buyer.shop_id)
    return progress_out(progress)


async def balance(up: Upstreams, buyer: Buyer, mid: str) -> PointsOut:
    try:
        return points_out(await up.call(up.points.GetBalance, pp.GetBalanceRequest(
            shop_id=buyer.shop_id, member_id=mid), buyer.shop_id))
    except Problem as problem:
        if not_yet_opened(problem):
            return NO_POINTS
        raise


@router.get("/points", response_model=PointsOut, responses=problems(404),
            summary="My points balance and the next expiry (积分有效期)")
async def points(request: Request, buyer: CurrentBuyer) -> PointsOut:
    up = upstreams(request)
    return await balance(up, buyer, await member_id(up, buyer))


@router.get("/ledger", response_model=LedgerPage, responses=problems(400, 404),
            summary="My points ledger (积分明细), newest first, paged")
async def ledger(request: Request, buyer: CurrentBuyer,
                 page_size: Annotated[int, Query(ge=1, le=100)] = 20,
                 page_token: Annotated[str, Query(pattern=PAGE_TOKEN_PATTERN, max_length=1024)] = "") -> LedgerPage:
    up = upstreams(request)
    mid = await member_id(up, buyer)
    try:
        page = await up.call(up.points.ListLedger, pp.ListLedgerRequest(
            shop_id=buyer.shop_id, member_id=mid, page_size=page_size, page_token=page_token), buyer.shop_id)
    except Problem as problem:
        if not_yet_opened(problem):
            return LedgerPage(entries=[], next_page_token=None)
        raise
    return LedgerPage(entries=[entry_out(e) for e in page.entries], next_page_token=page.next_page_token or None)


@router.post("/sign-in", response_model=SignInOut, responses=problems(404, 409),
             summary="Daily sign-in (每日签到): points and the streak; a second sign-in the same day is refused")
async def sign_in(request: Request, buyer: CurrentBuyer, body: SignInIn | None = None,
                  idempotency_key: IdempotencyKey = None) -> SignInOut:
    # Points takes one sign-in per shop-local day whatever the request id; a key lets a client
    # retry a lost answer and get the same one back.
    in_body = body.request_id if body else None
    key = client_key(idempotency_key, in_body) if idempotency_key or in_body else uuid.uuid4().hex
    up = upstreams(request)
    mid = await member_id(up, buyer)
    try:
        done = await up.call(up.points.RecordAction, pp.RecordActionRequest(
            request_id=scoped_request_id(buyer, "sign-in", key), shop_id=buyer.shop_id, member_id=mid,
            action=pp.ACTION_DAILY_SIGN_IN), buyer.shop_id)
    except Problem as problem:
        if not_yet_opened(problem):
            raise Problem(409, "the points account is being opened: try again in a moment",
                          reason="POINTS_ACCOUNT_NOT_READY", retry_after=1) from problem
        raise
    if done.not_earned_reason:
        detail = {"ALREADY_SIGNED_IN_TODAY": "already signed in today: come back tomorrow"}.get(
            done.not_earned_reason, "the sign-in earned nothing")
        raise Problem(409, detail, reason=done.not_earned_reason)
    return SignInOut(points=done.points, streak_days=done.streak_days, multiplier_milli=done.multiplier_milli,
                     balance=points_out(done.balance))


@router.post("/leave", response_model=LeaveOut, responses=problems(404),
             summary="Leave the shop (自愿退出): personal data is erased; needs {\"confirm\": true}")
async def leave(body: LeaveIn, request: Request, buyer: CurrentBuyer) -> LeaveOut:
    if not body.confirm:
        raise Problem(422, "leaving erases the membership and its personal data: confirm it with \"confirm\": true",
                      reason="CONFIRMATION_REQUIRED",
                      errors=[{"field": "confirm", "message": "must be true to leave"}])
    up = upstreams(request)
    mid = await member_id(up, buyer)
    left = await up.call(up.membership.LeaveMember, mpb.LeaveMemberRequest(
        request_id=scoped_request_id(buyer, "leave", mid), shop_id=buyer.shop_id, member_id=mid,
        reason=body.reason), buyer.shop_id)
    return LeaveOut(member_id=left.member_id, leave_time=when(left.leave_time))
