"""What the member centre's endpoints take and answer (pydantic, so that the OpenAPI schema says
exactly what a buyer's browser gets), and the conversions from the services' messages. Money is
integer fen, points integers, times ISO 8601 in UTC, enums lower-case words. The rewards side
is in centre_rewards_models."""

from __future__ import annotations

import hashlib
from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal

from fastapi import Header
from google.protobuf.timestamp_pb2 import Timestamp
from loyalty.membership.v1 import membership_service_pb2 as mpb
from loyalty.points.v1 import points_service_pb2 as pp
from pydantic import AfterValidator, BaseModel, Field

from gateway.problems import Problem
from gateway.tokens import Buyer

# A client's request id (AIP-155): the Idempotency-Key header or `request_id` in the body.
KEY_PATTERN = r"^[A-Za-z0-9_.:-]{8,100}$"
PAGE_TOKEN_PATTERN = r"^[A-Za-z0-9_=-]{0,1024}$"
ID_PATTERN = r"^[A-Za-z0-9_.:-]{1,64}$"


def _plain_text(value: str) -> str:
    """Text a person typed: no control characters, nothing that is not UTF-8 (lone surrogates)."""
    if any(ord(c) < 32 or 0xD800 <= ord(c) <= 0xDFFF or ord(c) == 0x7F for c in value):
        raise ValueError("must be plain text without control characters")
    return value


PlainText = Annotated[str, AfterValidator(_plain_text)]


class ProblemOut(BaseModel):
    """An RFC 9457 problem: `reason` is the machine-readable cause (the service's reason)."""

    type: str
    title: str
    status: int
    detail: str
    reason: str | None = None
    errors: list[dict[str, str]] | None = None
    instance: str | None = None


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The error answers a route declares: with those of every route (400 and 422 of bad input,
    401 and 403 of the buyer token, 429 of the rate limits, 503 of a service away)."""
    described = {400: "a value the services refuse (see `errors`)", 401: "no or an invalid buyer token",
                 403: "the token belongs to another shop",
                 404: "the buyer is not a member of the shop (NOT_A_MEMBER)", 409: "refused (see `reason`)",
                 422: "the request is not valid", 429: "too many requests", 503: "a service is unavailable"}
    return {s: {"model": ProblemOut, "description": described.get(s, "error"),
                "content": {"application/problem+json": {}}} for s in sorted({400, 401, 403, 422, 429, 503, *statuses})}


# ----- conversions ------------------------------------------------------------------------------


def when(ts: Timestamp) -> datetime | None:
    """A protobuf time, or None when unset."""
    if not ts.seconds and not ts.nanos:
        return None
    return ts.ToDatetime(tzinfo=UTC)


def word(enum: Any, value: int, prefix: str) -> str:
    """An enum value as a lower-case word: JOIN_CHANNEL_HOME_PAGE_MODULE -> home_page_module."""
    try:
        name = enum.Name(value)
    except ValueError:
        return "unspecified"
    return name.removeprefix(prefix).lower()


def scoped_request_id(buyer: Buyer, operation: str, key: str) -> str:
    """The request id the services see: the client's key, kept to this buyer and operation, so
    that two buyers (or two operations) choosing the same key never meet."""
    digest = hashlib.sha256(f"{buyer.shop_id}\n{buyer.buyer_id}\n{operation}\n{key}".encode()).hexdigest()
    return f"gw-{operation}-{digest[:40]}"


def client_key(header: str | None, body: str | None) -> str:
    """The client's request id from the header or the body (the same when both), or 422."""
    if header and body and header != body:
        raise Problem(422, "Idempotency-Key and request_id differ: send one", reason="REQUEST_ID_MISMATCH",
                      errors=[{"field": "request_id", "message": "differs from the Idempotency-Key header"}])
    key = header or body
    if not key:
        raise Problem(422, "a request id is required: send an Idempotency-Key header (or request_id)",
                      reason="REQUEST_ID_REQUIRED",
                      errors=[{"field": "request_id",
                               "message": "required: a client-chosen id that makes retries safe"}])
    return key


IdempotencyKey = Annotated[str | None, Header(
    alias="Idempotency-Key", pattern=KEY_PATTERN,
    description="A client-chosen id (8-100 of A-Z a-z 0-9 _ . : -): a retry with the same key does the "
                "work once and answers the same.")]


# ----- the member ---------------------------------------------------------------------------------

ConsentField = Literal["name", "gender", "phone", "birthday", "region"]
Channel = Literal["home_page_module", "live_stream", "customer_service", "post_purchase_page",
                  "order_detail_page", "parcel_qr_code", "offline_store", "referral_link"]
FIELDS = {"name": mpb.PROFILE_FIELD_NAME, "gender": mpb.PROFILE_FIELD_GENDER, "phone": mpb.PROFILE_FIELD_PHONE,
          "birthday": mpb.PROFILE_FIELD_BIRTHDAY, "region": mpb.PROFILE_FIELD_REGION}


class JoinIn(BaseModel):
    """Joining (入会): the profile fields the buyer authorises, each only with its consent."""

    consent: list[ConsentField] = Field(default_factory=list, max_length=5,
                                        description="The profile fields the buyer authorises (身份授权).")
    name: PlainText | None = Field(None, min_length=1, max_length=64)
    gender: Literal["female", "male"] | None = None
    phone: str | None = Field(None, pattern=r"^(\+86)?1[0-9]{10}$", description="Mainland mobile, 11 digits.")
    birthday: date | None = None
    region: PlainText | None = Field(None, min_length=1, max_length=64)
    channel: Channel = Field("home_page_module", description="Where the buyer joins (入会渠道).")
    referrer_member_id: str | None = Field(None, pattern=ID_PATTERN, description="Who referred the buyer (老带新).")
    request_id: str | None = Field(None, pattern=KEY_PATTERN, description="Or the Idempotency-Key header.")


class TierOut(BaseModel):
    level: int
    code: str
    name: str
    discount_bp: int = Field(description="Price paid in basis points of the list price (10000: none).")
    points_rate_milli: int = Field(description="Points per whole yuan, in thousandths.")
    benefits: list[str]


def tier_out(tier: mpb.Tier) -> TierOut:
    return TierOut(level=tier.level, code=tier.code, name=tier.name, discount_bp=tier.discount_bp,
                   points_rate_milli=tier.points_rate_milli, benefits=list(tier.benefits))


class ProfileOut(BaseModel):
    name: str | None
    gender: Literal["female", "male"] | None
    phone_masked: str | None = Field(description="e.g. 138****5678; the full number is never shown.")
    birthday: date | None
    region: str | None


class MemberTier(BaseModel):
    level: int
    code: str
    name: str
    since: datetime | None


class MeOut(BaseModel):
    member_id: str
    status: str
    profile: ProfileOut
    consent: list[str] = Field(description="The fields the buyer authorised.")
    join_channel: str
    join_time: datetime | None
    tier: MemberTier
    cumulative_spend_fen: int
    trade_count: int


def me_out(member: mpb.Member) -> MeOut:
    p = member.profile
    birthday = None
    if p.HasField("birthday") and p.birthday.year:
        try:
            birthday = date(p.birthday.year, p.birthday.month, p.birthday.day)
        except ValueError:
            birthday = None
    gender = {mpb.GENDER_FEMALE: "female", mpb.GENDER_MALE: "male"}.get(p.gender)
    return MeOut(
        member_id=member.member_id, status=word(mpb.MemberStatus, member.status, "MEMBER_STATUS_"),
        profile=ProfileOut(name=p.name or None, gender=gender,  # type: ignore[arg-type]
                           phone_masked=p.phone_masked or None, birthday=birthday, region=p.region or None),
        consent=[word(mpb.ProfileField, f, "PROFILE_FIELD_") for f in member.consent.fields],
        join_channel=word(mpb.JoinChannel, member.join_channel, "JOIN_CHANNEL_"), join_time=when(member.join_time),
        tier=MemberTier(level=member.tier_level, code=member.tier_code, name=member.tier_name,
                        since=when(member.tier_since)),
        cumulative_spend_fen=member.cumulative_spend_fen, trade_count=member.trade_count)


class TierProgressOut(BaseModel):
    """下一等级进度条: the tier held, the next one, and what is missing."""

    current: TierOut
    next: TierOut | None = Field(description="None at the top of the ladder.")
    qualification_mode: str
    cumulative_spend_fen: int
    trade_count: int
    spend_missing_fen: int
    trades_missing: int
    progress_permille: int = Field(ge=0, le=1000)
    growth_value: int = Field(description="成长值")
    growth_missing: int


def progress_out(p: mpb.GetTierProgressResponse) -> TierProgressOut:
    return TierProgressOut(
        current=tier_out(p.current), next=tier_out(p.next) if p.HasField("next") else None,
        qualification_mode=word(mpb.QualificationMode, p.qualification_mode, "QUALIFICATION_MODE_"),
        cumulative_spend_fen=p.cumulative_spend_fen, trade_count=p.trade_count,
        spend_missing_fen=p.spend_missing_fen, trades_missing=p.trades_missing,
        progress_permille=max(0, min(1000, p.progress_permille)), growth_value=p.growth_value,
        growth_missing=p.growth_missing)


class LeaveIn(BaseModel):
    """Leaving (自愿退出) erases the member's personal data: it needs `confirm: true`."""

    confirm: bool = Field(False, description="Must be true: the buyer confirmed leaving.")
    reason: PlainText = Field("", max_length=200)


class LeaveOut(BaseModel):
    member_id: str
    left: bool = True
    leave_time: datetime | None


# ----- points -------------------------------------------------------------------------------------


class PointsOut(BaseModel):
    available: int = Field(description="Spendable now.")
    held: int
    lifetime_earned: int
    next_expiry_time: datetime | None = Field(description="When points next expire (积分有效期), if any.")
    next_expiry_amount: int


def points_out(b: pp.Balance) -> PointsOut:
    return PointsOut(available=b.available, held=b.held, lifetime_earned=b.lifetime_earned,
                     next_expiry_time=when(b.next_expiry_time), next_expiry_amount=b.next_expiry_amount)


NO_POINTS = PointsOut(available=0, held=0, lifetime_earned=0, next_expiry_time=None, next_expiry_amount=0)


class LedgerEntryOut(BaseModel):
    entry_id: int
    kind: str = Field(description="earn, spend, hold, capture, release, expire, adjust, clawback, forfeit")
    amount: int = Field(description="Change of the available balance (signed).")
    held_delta: int
    balance_after: int
    action: str | None = Field(description="For earnings by action: purchase, daily_sign_in, …")
    order_id: str | None
    redemption_id: str | None
    reference: str | None
    create_time: datetime | None
    expire_time: datetime | None


def entry_out(e: pp.LedgerEntry) -> LedgerEntryOut:
    s = e.source
    return LedgerEntryOut(
        entry_id=e.entry_id, kind=word(pp.EntryKind, e.kind, "ENTRY_KIND_"), amount=e.amount,
        held_delta=e.held_delta, balance_after=e.balance_after,
        action=word(pp.Action, s.action, "ACTION_") if s.action else None, order_id=s.order_id or None,
        redemption_id=s.redemption_id or None, reference=s.reference or s.reason or None,
        create_time=when(e.create_time), expire_time=when(e.expire_time))


class LedgerPage(BaseModel):
    """积分明细, newest first."""

    entries: list[LedgerEntryOut]
    next_page_token: str | None = Field(description="Pass as page_token for the next page; None at the end.")


class SignInIn(BaseModel):
    request_id: str | None = Field(None, pattern=KEY_PATTERN, description="Or the Idempotency-Key header.")


class SignInOut(BaseModel):
    """每日签到: the points it earned and the streak including today."""

    points: int
    streak_days: int
    multiplier_milli: int
    balance: PointsOut
