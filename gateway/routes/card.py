"""GET /v1/storefront/card: the storefront member module (店铺首页会员模块), decided on every visit
(gateway/card.py); POST /v1/storefront/join: the module's join button (立即入会)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Header, Query, Request
from google.type import date_pb2
from loyalty.membership.v1 import membership_service_pb2 as mpb
from pydantic import BaseModel, Field

from gateway.card import MemberCard, card_for
from gateway.problems import Problem
from gateway.tokens import CurrentBuyer
from gateway.upstream import Upstreams

router = APIRouter(prefix="/v1/storefront", tags=["storefront"])

# The join's request id (AIP-155): a retried click sends the same key and gets the same join.
IdempotencyKey = Annotated[str, Header(alias="Idempotency-Key", pattern=r"^[A-Za-z0-9_.:-]{8,128}$",
                                       description="Chosen by the client once per join; a retry sends it again.")]
PRINTABLE = r"^[^\x00-\x1f\x7f]+$"  # no control characters in what is kept about a person
# The shop the page names (the widget sends it so that CORS is decided before the token is read);
# it must be the token's shop.
ShopQuery = Annotated[str | None, Query(max_length=128, description="The shop the page belongs to; must be the "
                                                                    "token's (403 SHOP_MISMATCH otherwise).")]


PROBLEM_SCHEMA = {"type": "object", "required": ["type", "title", "status", "detail"], "properties": {
    "type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
    "detail": {"type": "string"}, "reason": {"type": "string"}, "instance": {"type": "string"},
    "errors": {"type": "array", "items": {"type": "object", "properties": {
        "field": {"type": "string"}, "message": {"type": "string"}}}}}}


def _problem(description: str) -> dict[str, Any]:
    """An error answer in the OpenAPI description: an RFC 9457 problem."""
    return {"description": description, "content": {"application/problem+json": {"schema": PROBLEM_SCHEMA}}}


ERRORS: dict[int | str, dict[str, Any]] = {
    401: _problem("No buyer token, or an invalid or expired one"),
    403: _problem("`shop_id` names another shop than the token's"),
    422: _problem("A parameter is not valid"),
    429: _problem("Too many requests (Retry-After)"),
    503: _problem("A service behind the gateway is unavailable"),
}


@router.get("/card", response_model=MemberCard, responses=ERRORS,
            summary="The member card (店铺首页会员模块) for the token's buyer: member, join, or nothing")
async def get_card(request: Request, buyer: CurrentBuyer, shop_id: ShopQuery = None) -> MemberCard:
    return await card_for(request.app.state.upstreams, buyer)


class JoinProfile(BaseModel):
    """Profile fields the buyer fills in when joining; each one given is one they consent to share
    (身份授权)."""

    name: str | None = Field(None, min_length=1, max_length=64, pattern=PRINTABLE)
    gender: Literal["FEMALE", "MALE"] | None = None
    phone: str | None = Field(None, pattern=r"^(\+86)?1[3-9][0-9]{9}$", description="Mainland mobile, 11 digits.")
    birthday: dt.date | None = Field(None, description="From 1900 to today (400 INVALID_PROFILE_BIRTHDAY otherwise).")
    region: str | None = Field(None, min_length=1, max_length=64, pattern=PRINTABLE)


class JoinRequest(BaseModel):
    profile: JoinProfile | None = Field(None, description="Fields the buyer chose to share (all optional).")


_GENDER = {"FEMALE": mpb.GENDER_FEMALE, "MALE": mpb.GENDER_MALE}
_CONSENT = [("name", mpb.PROFILE_FIELD_NAME), ("gender", mpb.PROFILE_FIELD_GENDER), ("phone", mpb.PROFILE_FIELD_PHONE),
            ("birthday", mpb.PROFILE_FIELD_BIRTHDAY), ("region", mpb.PROFILE_FIELD_REGION)]


@router.post("/join", response_model=MemberCard,
             responses=ERRORS | {
                 400: _problem("Membership refused a profile field"),
                 409: _problem("The buyer does not meet the join threshold (JOIN_THRESHOLD_NOT_MET)"),
                 422: _problem("A field or the Idempotency-Key header is missing or not valid")},
             summary="Joins the token's buyer (立即入会) from the storefront module and answers their new card")
async def join(request: Request, buyer: CurrentBuyer, idempotency_key: IdempotencyKey,
               body: Annotated[JoinRequest | None, Body()] = None, shop_id: ShopQuery = None) -> MemberCard:
    profile, consent = _profile(body.profile if body else None)
    up: Upstreams = request.app.state.upstreams
    try:
        await up.call(up.membership.JoinMember, mpb.JoinMemberRequest(
            request_id=idempotency_key, shop_id=buyer.shop_id, buyer_id=buyer.buyer_id, profile=profile,
            consent_fields=consent, join_channel=mpb.JOIN_CHANNEL_HOME_PAGE_MODULE,
            facts=mpb.BuyerFacts(follows_shop=buyer.follows_shop, completed_trades=buyer.completed_trades,
                                 spent_fen=buyer.spent_fen)), buyer.shop_id)
    except Problem as problem:
        # Joined already (another tab, an earlier click): the card shows them as the member they are.
        if problem.reason != "ALREADY_MEMBER":
            raise
    return await card_for(up, buyer)


def _profile(given: JoinProfile | None) -> tuple[mpb.Profile, list[int]]:
    """The profile message and the fields consented to: exactly those given."""
    if given is None:
        return mpb.Profile(), []
    profile = mpb.Profile(name=given.name or "", gender=_GENDER.get(given.gender or "", mpb.GENDER_UNSPECIFIED),
                          phone=given.phone or "", region=given.region or "")
    if given.birthday is not None:
        profile.birthday.CopyFrom(date_pb2.Date(year=given.birthday.year, month=given.birthday.month,
                                                day=given.birthday.day))
    return profile, [field for name, field in _CONSENT if getattr(given, name) is not None]
