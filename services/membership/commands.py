"""The commands: plain data the servicer builds from requests, one per mutating RPC. Each checks
its own ids and fields when it is built (as in every service); this is the one place where that
happens. Rules that need stored state (a tier level within the shop's ladder, consent already
given) are checked by the handlers."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from services.kit.errors import InvalidArgument, Violations
from services.kit.timeutil import utcnow
from services.kit.validation import check_ids, validate_id
from services.membership import domain, order_details, rules
from services.membership.domain import DowngradePolicy, ProfileField, ProfileInput, QualificationMode, Tier

MAX_IMPORT_ROWS = 1000
MAX_AMOUNT_FEN = 10**13  # 100 billion yuan: anything above is a unit mistake
# A trade time outside these bounds is a bug upstream, and one near the ends of the calendar cannot
# be turned into a shop-local day by the services that use it.
EARLIEST_TRADE = datetime(2000, 1, 1)
LATEST_TRADE_AHEAD = timedelta(days=366)
EARLIEST_JOIN = EARLIEST_TRADE
# A completion is reported as actions are (points' RecordAction): late by a month at most, never
# ahead of the clock beyond skew; a later or earlier one would earn multipliers of another day.
LATE_COMPLETION = timedelta(days=31)
CLOCK_SKEW = timedelta(minutes=5)


def check_trade_time(at: datetime, field: str, v: Violations) -> None:
    v.check(EARLIEST_TRADE <= at <= utcnow() + LATEST_TRADE_AHEAD, field,
            "must be after 2000-01-01 and within a year from now")


def _name(v: Violations, value: str, field_name: str) -> None:
    v.check(0 < len(value) <= domain.MAX_NAME, field_name, f"required, at most {domain.MAX_NAME} characters")


def require_one_member_key(member_id: str, buyer_id: str) -> None:
    """Reads name a member by member_id or by buyer_id, never both."""
    if bool(member_id) == bool(buyer_id):
        raise InvalidArgument([("member_id", "give exactly one of member_id and buyer_id")])
    v = Violations()
    validate_id(member_id, "member_id", v, required=False)
    validate_id(buyer_id, "buyer_id", v, required=False)
    v.raise_if_any()


def require_member_id(member_id: str) -> None:
    v = Violations()
    validate_id(member_id, "member_id", v)
    v.raise_if_any()


# ----- programs ---------------------------------------------------------------------------------


def check_audited(v: Violations, reason: str, operator: str) -> None:
    """An operator's change (a manual tier, a growth adjustment) says who made it and why."""
    v.check(0 < len(reason.strip()) <= domain.MAX_NOTE, "reason", f"required, at most {domain.MAX_NOTE} characters")
    v.check(0 < len(operator.strip()) <= domain.MAX_NAME, "operator",
            f"required, at most {domain.MAX_NAME} characters")


@dataclass(frozen=True)
class CreateProgram:
    shop_id: str
    name: str
    time_zone: str
    require_follow: bool
    tiers: tuple[Tier, ...]  # empty: the default ladder
    mode: QualificationMode
    policy: DowngradePolicy
    rules: rules.ProgramRules = rules.ProgramRules()  # the join threshold's further parts

    def __post_init__(self) -> None:
        v = check_ids(self.shop_id)
        _name(v, self.name, "name")
        domain.validate_time_zone(self.time_zone, v)
        rules.validate_rules(self.rules, v)
        domain.validate_tiers(list(self.tiers or domain.default_tiers(self.mode)), v, self.mode)
        v.raise_if_any()


@dataclass(frozen=True)
class UpdateProgram:
    """None: not named by the update mask."""

    shop_id: str
    name: str | None
    time_zone: str | None
    require_follow: bool | None
    join_parts: tuple[int, int, int] | None = None  # (min trades, min spend fen, combine) with join_threshold
    join_benefit: tuple[str, str] | None = None  # (text, pack id)
    validity_months: int | None = None
    notice_days: int | None = None
    card: tuple[int, str, str, int, int] | None = None  # (mode, call to action, image url, width, height)
    storefront_origins: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        v = check_ids(self.shop_id)
        if self.card is not None:
            v.check(self.card[0] in (0, *map(int, rules.CardMode)), "storefront_card.mode", "unknown mode")
        if self.name is not None:
            _name(v, self.name, "name")
        if self.time_zone is not None:
            domain.validate_time_zone(self.time_zone, v)
        if self.join_parts is not None:
            v.check(self.join_parts[2] in (0, *map(int, rules.Combine)), "join_threshold.combine",
                    "unknown combine")
        rules.validate_rules(self.rules(rules.ProgramRules()), v)
        v.raise_if_any()

    def rules(self, current: rules.ProgramRules) -> rules.ProgramRules:
        """The program's rules with what this update names changed."""
        changed: dict = {}
        if self.join_parts is not None:
            trades, spend, combine = self.join_parts
            changed.update(join_min_trades=trades, join_min_spend_fen=spend,
                           join_combine=rules.Combine.ANY if combine == rules.Combine.ANY else rules.Combine.ALL)
        if self.join_benefit is not None:
            changed.update(benefit_text=self.join_benefit[0].strip(), benefit_pack_id=self.join_benefit[1])
        if self.validity_months is not None:
            changed["validity_months"] = self.validity_months
        if self.notice_days is not None:
            changed["notice_days"] = self.notice_days
        if self.card is not None:
            mode, text, url, width, height = self.card
            custom = mode == rules.CardMode.CUSTOM
            changed.update(card_mode=rules.CardMode.CUSTOM if custom else rules.CardMode.SMART,
                           card_call_to_action=text.strip() if custom else "", card_image_url=url if custom else "",
                           card_image_size=(width, height) if custom else (0, 0))
        if self.storefront_origins is not None:
            changed["storefront_origins"] = tuple(dict.fromkeys(o.strip() for o in self.storefront_origins))
        return replace(current, **changed)


@dataclass(frozen=True)
class IssueApiKey:
    shop_id: str
    label: str

    def __post_init__(self) -> None:
        v = check_ids(self.shop_id)
        v.check(len(self.label) <= domain.MAX_NAME, "label", f"at most {domain.MAX_NAME} characters")
        v.raise_if_any()


@dataclass(frozen=True)
class ConfigureTiers:
    shop_id: str
    tiers: tuple[Tier, ...]
    mode: QualificationMode
    policy: DowngradePolicy

    def __post_init__(self) -> None:
        v = check_ids(self.shop_id)
        domain.validate_tiers(list(self.tiers), v, self.mode)
        v.raise_if_any()


# ----- members ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class JoinMember:
    shop_id: str
    buyer_id: str
    profile: ProfileInput
    consent: frozenset[ProfileField]
    channel: int
    referrer_member_id: str
    follows_shop: bool
    completed_trades: int = 0  # facts the caller states (BuyerFacts)
    spent_fen: int = 0

    def __post_init__(self) -> None:
        v = check_ids(self.shop_id)
        validate_id(self.buyer_id, "buyer_id", v)
        v.check(self.completed_trades >= 0, "facts.completed_trades", "must not be negative")
        v.check(0 <= self.spent_fen <= MAX_AMOUNT_FEN, "facts.spent_fen", f"must be 0..{MAX_AMOUNT_FEN} fen")
        v.check(self.channel > 0, "join_channel", "required: where the buyer joined")
        validate_id(self.referrer_member_id, "referrer_member_id", v, required=False)
        domain.validate_profile(self.profile, set(self.consent), v)
        v.raise_if_any()


@dataclass(frozen=True)
class UpdateProfile:
    shop_id: str
    member_id: str
    profile: ProfileInput
    new_consent: frozenset[ProfileField]

    def __post_init__(self) -> None:
        v = check_ids(self.shop_id)
        validate_id(self.member_id, "member_id", v)
        v.check(bool(self.profile.given), "update_mask", "name at least one of: " + ", ".join(domain.PROFILE_PATHS))
        v.raise_if_any()


@dataclass(frozen=True)
class LeaveMember:
    shop_id: str
    member_id: str
    reason: str

    def __post_init__(self) -> None:
        v = check_ids(self.shop_id)
        validate_id(self.member_id, "member_id", v)
        v.check(len(self.reason) <= domain.MAX_NOTE, "reason", f"at most {domain.MAX_NOTE} characters")
        v.raise_if_any()


@dataclass(frozen=True)
class ImportRow:
    buyer_id: str
    profile: ProfileInput
    consent: frozenset[ProfileField]
    join_time: datetime | None
    cumulative_spend_fen: int
    trade_count: int
    tier_level: int | None


@dataclass(frozen=True)
class ImportMembers:
    """会员导入: all rows or none; every invalid row is reported as members[i].field."""

    shop_id: str
    rows: tuple[ImportRow, ...]
    validate_only: bool

    def __post_init__(self) -> None:
        v = check_ids(self.shop_id)
        v.check(0 < len(self.rows) <= MAX_IMPORT_ROWS, "members", f"1..{MAX_IMPORT_ROWS} rows a call")
        v.raise_if_any()

    def check_rows(self, v: Violations, top_level: int) -> None:
        """Adds every row's problems to `v`, so that the handler reports them together with the
        buyers who are members already."""
        seen: set[str] = set()
        now = utcnow()
        for i, r in enumerate(self.rows):
            at = f"members[{i}]"
            validate_id(r.buyer_id, f"{at}.buyer_id", v)
            v.check(r.buyer_id not in seen, f"{at}.buyer_id", "appears twice in this import")
            seen.add(r.buyer_id)
            domain.validate_profile(r.profile, set(r.consent), v, prefix=f"{at}.profile")
            v.check(0 <= r.cumulative_spend_fen <= MAX_AMOUNT_FEN, f"{at}.cumulative_spend_fen",
                    f"must be 0..{MAX_AMOUNT_FEN}")
            v.check(r.trade_count >= 0, f"{at}.trade_count", "must not be negative")
            if r.tier_level is not None:
                v.check(0 <= r.tier_level <= top_level, f"{at}.tier_level", f"must be 0..{top_level}")
            v.check(r.join_time is None or EARLIEST_JOIN <= r.join_time <= now, f"{at}.join_time",
                    "must be after 2000-01-01 and not in the future")


# ----- orders -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RecordOrder:
    shop_id: str
    order_id: str
    buyer_id: str
    amount_fen: int
    paid_at: datetime
    details: order_details.OrderDetails = order_details.NONE

    def __post_init__(self) -> None:
        v = check_ids(self.shop_id)
        validate_id(self.order_id, "order_id", v)
        validate_id(self.buyer_id, "buyer_id", v)
        v.check(0 <= self.amount_fen <= MAX_AMOUNT_FEN, "amount_fen", f"must be 0..{MAX_AMOUNT_FEN} fen")
        check_trade_time(self.paid_at, "paid_time", v)
        order_details.validate(self.details, v)
        v.raise_if_any()


@dataclass(frozen=True)
class CompleteOrder:
    shop_id: str
    order_id: str
    completed_at: datetime

    def __post_init__(self) -> None:
        v = check_ids(self.shop_id)
        validate_id(self.order_id, "order_id", v)
        now = utcnow()
        v.check(now - LATE_COMPLETION <= self.completed_at <= now + CLOCK_SKEW, "complete_time",
                "must be within the last 31 days, not in the future")
        v.raise_if_any()


@dataclass(frozen=True)
class RefundOrder:
    shop_id: str
    order_id: str
    refund_id: str
    amount_fen: int
    refunded_at: datetime

    def __post_init__(self) -> None:
        v = check_ids(self.shop_id)
        validate_id(self.order_id, "order_id", v)
        validate_id(self.refund_id, "refund_id", v)
        v.check(0 < self.amount_fen <= MAX_AMOUNT_FEN, "amount_fen", "must be positive")
        check_trade_time(self.refunded_at, "refund_time", v)
        v.raise_if_any()


# ----- tiers ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SetTier:
    shop_id: str
    member_id: str
    level: int
    reason: str
    operator: str

    def __post_init__(self) -> None:
        v = check_ids(self.shop_id)
        validate_id(self.member_id, "member_id", v)
        check_audited(v, self.reason, self.operator)
        v.raise_if_any()


@dataclass(frozen=True)
class ReevaluateTiers:
    shop_id: str
    dry_run: bool

    def __post_init__(self) -> None:
        check_ids(self.shop_id).raise_if_any()


Command = (CreateProgram | UpdateProgram | IssueApiKey | ConfigureTiers | JoinMember | UpdateProfile | LeaveMember
           | ImportMembers | RecordOrder | CompleteOrder | RefundOrder | SetTier | ReevaluateTiers)
