"""The points vocabulary as IntEnums whose names and numbers mirror the proto enums of
loyalty.points.v1 (a unit test holds them to it), and the sets of actions rules treat alike."""

from __future__ import annotations

from enum import IntEnum


class EntryKind(IntEnum):
    EARN = 1
    SPEND = 2
    HOLD = 3
    CAPTURE = 4
    RELEASE = 5
    EXPIRE = 6
    ADJUST = 7
    CLAWBACK = 8  # 退换货扣除
    FORFEIT = 9


class Action(IntEnum):
    PURCHASE = 1
    JOIN = 2
    FOLLOW_SHOP = 3
    COMPLETE_PROFILE = 4
    DAILY_SIGN_IN = 5
    REVIEW = 6
    SHARE = 7
    INVITE_FRIEND = 8
    REFERRAL = 9
    BROWSE = 10
    SURVEY = 11
    DAILY_POOL = 12


class ExpiryPolicy(IntEnum):
    ROLLING_MONTHS = 1
    END_OF_NEXT_YEAR = 2
    NEVER = 3


class LeavePolicy(IntEnum):
    FORFEIT = 1
    KEEP = 2


class MultiplierKind(IntEnum):
    MEMBER_DAY = 1
    BIRTHDAY = 2
    CAMPAIGN = 3


class BirthdayWindow(IntEnum):
    DAY = 1
    WEEK = 2
    MONTH = 3


class Granularity(IntEnum):
    DAY = 1
    MONTH = 2


class HoldStatus(IntEnum):
    HELD = 1
    CAPTURED = 2
    RELEASED = 3


# Actions that earn once per member, whatever the caps say (固定获赠).
ONCE_ACTIONS = frozenset({Action.JOIN, Action.FOLLOW_SHOP, Action.COMPLETE_PROFILE})
# Actions that earn once per subject (the reviewed order, the invited friend, the survey).
SUBJECT_ACTIONS = frozenset({Action.REVIEW, Action.INVITE_FRIEND, Action.SURVEY})
# Actions a caller may report through RecordAction (the others come from events or settlement).
RECORDABLE = frozenset(Action) - {Action.PURCHASE, Action.REFERRAL, Action.DAILY_POOL}
