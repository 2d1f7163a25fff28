"""A segment's rule tree as plain values: AND / OR / NOT over conditions on member facts. Read from
the wire (every problem reported with its field path, e.g.
`segment.rule.all.rules[1].condition.values`), written back to it, and kept as JSON in the
`segments.rule` column.

Semantics (what compiler.py turns into SQL): a condition on a fact the member does not have (no
consented birth month, no trade in the window for an average order value) does not hold, whatever
the operator; NOT holds exactly for the members its rule does not select."""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import IntEnum

from loyalty.segments.v1 import rules_pb2

from services.kit.errors import Violations
from services.kit.validation import validate_id

MAX_DEPTH = 8  # nested groups and NOTs, the top rule being depth 1
MAX_CONDITIONS = 200  # in the whole tree
MAX_GROUP = 20  # rules in one AND / OR
MAX_IN = 100  # values of IN
MAX_DAYS = 3650


class Fact(IntEnum):
    TIER_LEVEL = 1
    POINTS_BALANCE = 2
    JOIN_CHANNEL = 3
    BIRTH_MONTH = 4
    TRADES = 5
    SPEND_FEN = 6
    AVERAGE_ORDER_FEN = 7
    REFUNDS = 8
    LAST_PURCHASE = 9
    LAST_ACTIVITY = 10
    JOINED = 11
    REFERRALS = 12
    TAG = 13
    # Order details, shares and the consented profile (issue 10, second round).
    UNITS = 14
    PROMOTED_SHARE_PERCENT = 15
    CATEGORY = 16
    SHARES = 17
    GENDER = 22
    REGION = 23
    SHARES_AND_REFERRALS = 24
    # RFM (rfm.py): scores 1-5 and the RfmClass at the shop's last recompute.
    RFM_RECENCY = 18
    RFM_FREQUENCY = 19
    RFM_MONETARY = 20
    RFM_CLASS = 21


class Op(IntEnum):
    EQ = 1
    NE = 2
    LT = 3
    LE = 4
    GT = 5
    GE = 6
    BETWEEN = 7
    IN = 8
    HAS_TAG = 9
    WITHIN_DAYS = 10
    NOT_WITHIN_DAYS = 11


DATE_FACTS = frozenset({Fact.LAST_PURCHASE, Fact.LAST_ACTIVITY, Fact.JOINED})
WINDOWED_FACTS = frozenset({Fact.TRADES, Fact.SPEND_FEN, Fact.AVERAGE_ORDER_FEN, Fact.REFUNDS, Fact.UNITS,
                            Fact.PROMOTED_SHARE_PERCENT, Fact.CATEGORY})
COMPARISONS = frozenset({Op.EQ, Op.NE, Op.LT, Op.LE, Op.GT, Op.GE})
NUMBER_OPS = COMPARISONS | {Op.BETWEEN, Op.IN}
DATE_OPS = frozenset({Op.WITHIN_DAYS, Op.NOT_WITHIN_DAYS})

# Order details, shares and the consented profile: facts compared with texts (categories bought,
# the region), and facts taking one of a few values (membership's Gender: 1 female, 2 male).
TEXT_FACTS = frozenset({Fact.CATEGORY, Fact.REGION})
EQUALITY_OPS = frozenset({Op.EQ, Op.NE, Op.IN})
CHOICES = {Fact.GENDER: frozenset({1, 2})}
RESTRICTED_OPS = {Fact.CATEGORY: frozenset({Op.IN}), Fact.REGION: EQUALITY_OPS, Fact.GENDER: EQUALITY_OPS}
MAX_TEXT = 64

NUMBER_FACTS = frozenset(Fact) - DATE_FACTS - {Fact.TAG} - TEXT_FACTS - set(CHOICES)
# RFM facts: members without a score (no purchase, left, or no recompute yet) have none.
RFM_SCORE_FACTS = frozenset({Fact.RFM_RECENCY, Fact.RFM_FREQUENCY, Fact.RFM_MONETARY})
RFM_CLASS_OPS = frozenset({Op.EQ, Op.NE, Op.IN})
RFM_RANGES = {**dict.fromkeys(RFM_SCORE_FACTS, (1, 5)), Fact.RFM_CLASS: (1, 8)}


def _rfm_values(fact: Fact, values: tuple[int, ...], field: str, v: Violations) -> None:
    """Each value of an RFM condition is a score (1-5) or an RfmClass value (1-8)."""
    low, high = RFM_RANGES[fact]
    what = "an RfmClass value" if fact is Fact.RFM_CLASS else "a score"
    v.check(all(low <= x <= high for x in values), field, f"each value {what}, {low}-{high}")


@dataclass(frozen=True)
class Condition:
    fact: Fact
    op: Op
    values: tuple[int, ...] = ()
    window_days: int = 0
    tag_id: str = ""
    texts: tuple[str, ...] = ()


@dataclass(frozen=True)
class All:
    rules: tuple[Rule, ...]


@dataclass(frozen=True)
class AnyOf:
    rules: tuple[Rule, ...]


@dataclass(frozen=True)
class Not:
    rule: Rule


Rule = Condition | All | AnyOf | Not


# ----- checks ------------------------------------------------------------------------------------------


def _ops_of(fact: Fact) -> frozenset[Op]:
    if fact in DATE_FACTS:
        return DATE_OPS
    if fact is Fact.TAG:
        return frozenset({Op.HAS_TAG})
    if fact is Fact.RFM_CLASS:
        return RFM_CLASS_OPS
    return RESTRICTED_OPS.get(fact, NUMBER_OPS)


def _texts_violations(op: Op, texts: tuple[str, ...], field: str, v: Violations) -> None:
    """IN takes 1-MAX_IN texts, EQ and NE one; each 1-MAX_TEXT characters."""
    if op is Op.IN:
        v.check(1 <= len(texts) <= MAX_IN, field, f"IN takes 1-{MAX_IN} texts")
    else:
        v.check(len(texts) == 1, field, f"{op.name} takes 1 text")
    for i, text in enumerate(texts):
        v.check(0 < len(text) <= MAX_TEXT and text.strip() == text, f"{field}[{i}]",
                f"1-{MAX_TEXT} characters, no leading or trailing spaces")


def condition_violations(c: rules_pb2.Condition, path: str, v: Violations) -> Condition | None:
    """The condition as a value, or None with its violations added."""
    before = len(v.items)
    try:
        fact = Fact(c.fact)
    except ValueError:
        v.add(f"{path}.fact", "required" if c.fact == 0 else f"unknown fact {c.fact}")
        fact = None
    try:
        op = Op(c.op)
    except ValueError:
        v.add(f"{path}.op", "required" if c.op == 0 else f"unknown operator {c.op}")
        op = None
    values, texts = tuple(c.values), tuple(c.texts)
    if fact is not None and op is not None and op not in _ops_of(fact):
        v.add(f"{path}.op", f"{op.name} does not apply to {fact.name}; use one of "
              + ", ".join(o.name for o in sorted(_ops_of(fact))))
    if fact is not None and fact not in WINDOWED_FACTS and c.window_days:
        v.add(f"{path}.window_days", "only " + ", ".join(f.name for f in sorted(WINDOWED_FACTS)) + " take a window")
    elif not 0 <= c.window_days <= MAX_DAYS:
        v.add(f"{path}.window_days", f"0 (lifetime) or 1-{MAX_DAYS} days")
    if fact is Fact.TAG:
        validate_id(c.tag_id, f"{path}.tag_id", v)
    elif c.tag_id:
        v.add(f"{path}.tag_id", "only FACT_TAG takes a tag id")
    if fact in TEXT_FACTS:
        v.check(not values, f"{path}.values", f"{fact.name} compares texts, not values")
        if op is not None and op in _ops_of(fact):
            _texts_violations(op, texts, f"{path}.texts", v)
    elif texts:
        v.add(f"{path}.texts", "only " + " and ".join(f.name for f in sorted(TEXT_FACTS)) + " take texts")
    if fact in CHOICES and any(x not in CHOICES[fact] for x in values):
        v.add(f"{path}.values", f"{fact.name} is one of " + ", ".join(str(x) for x in sorted(CHOICES[fact])))
    if op is not None and fact not in TEXT_FACTS:
        field = f"{path}.values"
        if op is Op.HAS_TAG:
            v.check(not values, field, "HAS_TAG takes no values")
        elif op is Op.BETWEEN:
            if v.check(len(values) == 2, field, "BETWEEN takes 2 values, lowest first"):
                v.check(values[0] <= values[1], field, "BETWEEN takes its lowest value first")
        elif op is Op.IN:
            v.check(1 <= len(values) <= MAX_IN, field, f"IN takes 1-{MAX_IN} values")
        elif v.check(len(values) == 1, field, f"{op.name} takes 1 value") and op in DATE_OPS:
            v.check(1 <= values[0] <= MAX_DAYS, field, f"a number of days, 1-{MAX_DAYS}")
        if fact in RFM_RANGES and values and len(v.items) == before:
            _rfm_values(fact, values, field, v)
    if len(v.items) > before:
        return None
    assert fact is not None and op is not None
    return Condition(fact, op, values, c.window_days, c.tag_id, texts)


def from_proto(message: rules_pb2.Rule, path: str, v: Violations) -> Rule | None:
    """The rule tree of a request, or None with every violation added under `path`."""
    counted = [0]
    return _read(message, path, v, 1, counted)


def _read(m: rules_pb2.Rule, path: str, v: Violations, depth: int, counted: list[int]) -> Rule | None:
    if depth > MAX_DEPTH:
        v.add(path, f"rules nest at most {MAX_DEPTH} deep")
        return None
    node = m.WhichOneof("node")
    if node is None:
        v.add(path, "required: one of all, any, not, condition")
        return None
    if node == "condition":
        counted[0] += 1
        if counted[0] > MAX_CONDITIONS:
            if counted[0] == MAX_CONDITIONS + 1:
                v.add(path, f"a rule has at most {MAX_CONDITIONS} conditions in all")
            return None
        return condition_violations(m.condition, f"{path}.condition", v)
    if node == "not":
        inner = _read(getattr(m, "not"), f"{path}.not", v, depth + 1, counted)
        return Not(inner) if inner is not None else None
    group = getattr(m, node).rules
    if not 1 <= len(group) <= MAX_GROUP:
        v.add(f"{path}.{node}.rules", f"a group holds 1-{MAX_GROUP} rules")
        return None
    read = [_read(r, f"{path}.{node}.rules[{i}]", v, depth + 1, counted) for i, r in enumerate(group)]
    if any(r is None for r in read):
        return None
    return (All if node == "all" else AnyOf)(tuple(r for r in read if r is not None))


# ----- to the wire and to JSON ---------------------------------------------------------------------


def to_proto(rule: Rule) -> rules_pb2.Rule:
    if isinstance(rule, Condition):
        return rules_pb2.Rule(condition=rules_pb2.Condition(
            fact=int(rule.fact), op=int(rule.op), values=list(rule.values), window_days=rule.window_days,
            tag_id=rule.tag_id, texts=list(rule.texts)))
    if isinstance(rule, Not):
        message = rules_pb2.Rule()
        getattr(message, "not").CopyFrom(to_proto(rule.rule))
        return message
    group = rules_pb2.RuleGroup(rules=[to_proto(r) for r in rule.rules])
    return rules_pb2.Rule(all=group) if isinstance(rule, All) else rules_pb2.Rule(any=group)


def to_data(rule: Rule) -> dict:
    if isinstance(rule, Condition):
        data: dict = {"fact": rule.fact.name, "op": rule.op.name}
        if rule.values:
            data["values"] = list(rule.values)
        if rule.window_days:
            data["window_days"] = rule.window_days
        if rule.tag_id:
            data["tag_id"] = rule.tag_id
        if rule.texts:
            data["texts"] = list(rule.texts)
        return {"condition": data}
    if isinstance(rule, Not):
        return {"not": to_data(rule.rule)}
    return {"all" if isinstance(rule, All) else "any": [to_data(r) for r in rule.rules]}


def from_data(data: dict) -> Rule:
    if "condition" in data:
        c = data["condition"]
        return Condition(Fact[c["fact"]], Op[c["op"]], tuple(int(x) for x in c.get("values", ())),
                         int(c.get("window_days", 0)), str(c.get("tag_id", "")),
                         tuple(str(x) for x in c.get("texts", ())))
    if "not" in data:
        return Not(from_data(data["not"]))
    if "all" in data:
        return All(tuple(from_data(r) for r in data["all"]))
    return AnyOf(tuple(from_data(r) for r in data["any"]))


def to_json(rule: Rule) -> str:
    """The rule as stored in `segments.rule` (enum names, so the JSON reads without the proto)."""
    return json.dumps(to_data(rule), separators=(",", ":"), ensure_ascii=False)


def from_json(text: str) -> Rule:
    return from_data(json.loads(text))
