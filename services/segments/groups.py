"""The documents' predefined groups (DOMAIN.md "Segmentation and tags") as rules over the same
compiler as custom segments, with each shop's windows and thresholds (GroupSettings, kept as JSON
in `group_settings`; the documents' figures until the shop changes them).

Two readings of the documents' words, so that a group means what an operator expects:
- new to activate (可运营会员新客): no trade in the member's history and no purchase ever recorded
  (a member whose only order was refunded in full has purchased, so is not "new").
- churn risk (流失): no activity within the idle days, and joined before them (a member who joined
  yesterday and did nothing since is new, not lost).
- promotion-sensitive (活动敏感) and purchasing power (购买力): counted over the trades in their
  window, so a member without a trade in it is in none of them (no promotion share, no average
  order); spreaders (高传播) count shares and referrals together, lifetime."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace
from datetime import datetime
from enum import IntEnum

from sqlalchemy import Connection, select

from services.kit.errors import Violations
from services.kit.storage import upsert
from services.segments.rules import MAX_DAYS, All, AnyOf, Condition, Fact, Op, Rule
from services.segments.tables import group_settings

PREFIX = "predefined."


class Group(IntEnum):
    HIGH_POTENTIAL = 1
    HIGH_CONTRIBUTION = 2
    NEW_TO_ACTIVATE = 3
    REPURCHASE_WINDOW = 4
    HIGH_QUALITY = 5
    LOST_HIGH_QUALITY = 6
    CHURN_RISK = 7
    PROMOTION_SENSITIVE = 8
    SPREADERS = 9
    PURCHASING_POWER_LOW = 10
    PURCHASING_POWER_HIGH = 11

    @property
    def segment_id(self) -> str:
        return PREFIX + self.name.lower()


BY_ID = {g.segment_id: g for g in Group}


@dataclass(frozen=True)
class Settings:
    """A shop's windows (days) and thresholds; the defaults are the documents' figures."""

    high_potential_window_days: int = 180
    high_potential_recent_days: int = 30
    high_contribution_window_days: int = 180
    high_contribution_min_trades: int = 2
    high_contribution_recent_days: int = 30
    repurchase_window_days: int = 15
    high_quality_min_trades: int = 3
    high_quality_min_average_order_fen: int = 30000
    lost_high_quality_min_trades: int = 3
    lost_high_quality_idle_days: int = 365
    churn_idle_days: int = 90
    promotion_sensitive_window_days: int = 365
    promotion_sensitive_min_trades: int = 2
    promotion_sensitive_min_share_percent: int = 50
    spreaders_min_actions: int = 5
    purchasing_power_window_days: int = 365
    purchasing_power_low_max_average_order_fen: int = 10000
    purchasing_power_high_min_average_order_fen: int = 50000


FIELDS = tuple(f.name for f in fields(Settings))
DAYS = tuple(name for name in FIELDS if name.endswith("_days"))
MIN_TRADES = tuple(name for name in FIELDS if name.endswith("_min_trades"))
MAX_TRADES = 1_000_000
MAX_AVERAGE_ORDER_FEN = 10**12
MAX_ACTIONS = 1_000_000


def field_violation(name: str, value: int) -> str | None:
    """What is wrong with one setting's value, or None."""
    if name in DAYS:
        return None if 1 <= value <= MAX_DAYS else f"1-{MAX_DAYS} days"
    if name in MIN_TRADES:
        return None if 1 <= value <= MAX_TRADES else f"1-{MAX_TRADES} trades"
    if name.endswith("_percent"):
        return None if 1 <= value <= 100 else "1-100 percent"
    if name.endswith("_min_actions"):
        return None if 1 <= value <= MAX_ACTIONS else f"1-{MAX_ACTIONS} shares and referrals"
    return None if 0 <= value <= MAX_AVERAGE_ORDER_FEN else f"0-{MAX_AVERAGE_ORDER_FEN} fen"


def violations(s: Settings, v: Violations, prefix: str = "settings") -> Violations:
    """Every setting in range, and the groups' windows consistent."""
    for name in FIELDS:
        problem = field_violation(name, getattr(s, name))
        if problem:
            v.add(f"{prefix}.{name}", problem)
    v.check(s.high_potential_recent_days < s.high_potential_window_days, f"{prefix}.high_potential_recent_days",
            "shorter than high_potential_window_days (else the group is empty)")
    v.check(s.purchasing_power_low_max_average_order_fen < s.purchasing_power_high_min_average_order_fen,
            f"{prefix}.purchasing_power_low_max_average_order_fen",
            "below purchasing_power_high_min_average_order_fen (else a member could be both low and high)")
    return v


def _days(fact: Fact, op: Op, days: int) -> Condition:
    return Condition(fact, op, (days,))


def rule_of(group: Group, s: Settings) -> Rule:
    purchase, trades = Fact.LAST_PURCHASE, Fact.TRADES
    if group is Group.HIGH_POTENTIAL:
        return All((_days(purchase, Op.WITHIN_DAYS, s.high_potential_window_days),
                    _days(purchase, Op.NOT_WITHIN_DAYS, s.high_potential_recent_days)))
    if group is Group.HIGH_CONTRIBUTION:
        return AnyOf((Condition(trades, Op.GE, (s.high_contribution_min_trades,), s.high_contribution_window_days),
                      Condition(trades, Op.GE, (1,), s.high_contribution_recent_days)))
    if group is Group.NEW_TO_ACTIVATE:
        return All((Condition(trades, Op.EQ, (0,)), _days(purchase, Op.NOT_WITHIN_DAYS, MAX_DAYS)))
    if group is Group.REPURCHASE_WINDOW:
        return _days(purchase, Op.WITHIN_DAYS, s.repurchase_window_days)
    if group is Group.HIGH_QUALITY:
        return All((Condition(trades, Op.GE, (s.high_quality_min_trades,)),
                    Condition(Fact.AVERAGE_ORDER_FEN, Op.GE, (s.high_quality_min_average_order_fen,))))
    if group is Group.LOST_HIGH_QUALITY:
        return All((Condition(trades, Op.GE, (s.lost_high_quality_min_trades,)),
                    _days(purchase, Op.NOT_WITHIN_DAYS, s.lost_high_quality_idle_days)))
    if group is Group.CHURN_RISK:
        return All((_days(Fact.LAST_ACTIVITY, Op.NOT_WITHIN_DAYS, s.churn_idle_days),
                    _days(Fact.JOINED, Op.NOT_WITHIN_DAYS, s.churn_idle_days)))
    if group is Group.PROMOTION_SENSITIVE:
        window = s.promotion_sensitive_window_days
        return All((Condition(Fact.TRADES, Op.GE, (s.promotion_sensitive_min_trades,), window),
                    Condition(Fact.PROMOTED_SHARE_PERCENT, Op.GE, (s.promotion_sensitive_min_share_percent,), window)))
    if group is Group.SPREADERS:
        return Condition(Fact.SHARES_AND_REFERRALS, Op.GE, (s.spreaders_min_actions,))
    average, window = Fact.AVERAGE_ORDER_FEN, s.purchasing_power_window_days
    if group is Group.PURCHASING_POWER_LOW:
        return Condition(average, Op.LT, (s.purchasing_power_low_max_average_order_fen,), window)
    return Condition(average, Op.GE, (s.purchasing_power_high_min_average_order_fen,), window)


def name_of(group: Group) -> str:
    return {
        Group.HIGH_POTENTIAL: "高潜力成交会员",
        Group.HIGH_CONTRIBUTION: "高贡献会员",
        Group.NEW_TO_ACTIVATE: "可运营会员新客",
        Group.REPURCHASE_WINDOW: "回购期会员",
        Group.HIGH_QUALITY: "高质量会员",
        Group.LOST_HIGH_QUALITY: "流失高质量会员",
        Group.CHURN_RISK: "流失会员",
        Group.PROMOTION_SENSITIVE: "活动敏感会员",
        Group.SPREADERS: "高传播会员",
        Group.PURCHASING_POWER_LOW: "购买力低会员",
        Group.PURCHASING_POWER_HIGH: "购买力高会员",
    }[group]


def description_of(group: Group, s: Settings) -> str:
    return {
        Group.HIGH_POTENTIAL: f"{s.high_potential_window_days}天内有购买，但近{s.high_potential_recent_days}天内未购买",
        Group.HIGH_CONTRIBUTION: f"{s.high_contribution_window_days}天内成交至少{s.high_contribution_min_trades}笔，"
                                 f"或近{s.high_contribution_recent_days}天内至少成交1笔",
        Group.NEW_TO_ACTIVATE: "已入会，尚未购买",
        Group.REPURCHASE_WINDOW: f"近{s.repurchase_window_days}天内有购买",
        Group.HIGH_QUALITY: f"累计成交至少{s.high_quality_min_trades}笔，且客单价至少"
                            f"{s.high_quality_min_average_order_fen / 100:g}元",
        Group.LOST_HIGH_QUALITY: f"累计成交至少{s.lost_high_quality_min_trades}笔，"
                                 f"近{s.lost_high_quality_idle_days}天内未购买",
        Group.CHURN_RISK: f"超过{s.churn_idle_days}天无任何活跃",
        Group.PROMOTION_SENSITIVE: f"近{s.promotion_sensitive_window_days}天内成交至少"
                                   f"{s.promotion_sensitive_min_trades}笔，其中至少{s.promotion_sensitive_min_share_percent}%使用了优惠券或参与了活动",
        Group.SPREADERS: f"累计分享与邀请入会合计至少{s.spreaders_min_actions}次",
        Group.PURCHASING_POWER_LOW: f"近{s.purchasing_power_window_days}天内客单价低于"
                                    f"{s.purchasing_power_low_max_average_order_fen / 100:g}元",
        Group.PURCHASING_POWER_HIGH: f"近{s.purchasing_power_window_days}天内客单价至少"
                                     f"{s.purchasing_power_high_min_average_order_fen / 100:g}元",
    }[group]


# ----- storage ------------------------------------------------------------------------------------------


def read_settings(conn: Connection, shop_id: str) -> tuple[Settings, datetime | None]:
    """The shop's settings and when they last changed (the defaults and None until they did)."""
    row = conn.execute(select(group_settings.c.settings, group_settings.c.updated_at)
                       .where(group_settings.c.shop_id == shop_id)).first()
    if row is None:
        return Settings(), None
    stored = json.loads(row.settings)
    return replace(Settings(), **{k: int(v) for k, v in stored.items() if k in FIELDS}), row.updated_at


def write_settings(conn: Connection, shop_id: str, s: Settings, now: datetime) -> None:
    upsert(conn, group_settings, {"shop_id": shop_id, "settings": json.dumps(asdict(s), separators=(",", ":")),
                                  "updated_at": now}, keys=("shop_id",))
