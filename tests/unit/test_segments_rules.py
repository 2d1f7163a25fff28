"""The rule tree's own unit tests: field-level validation with paths, the JSON and wire round trips,
and the compiler checked against a plain Python reading of the same rule over the same facts (an
in-memory SQLite database made from segments' table metadata, orders dated in the past, which
the integration tests cannot backdate)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from loyalty.segments.v1 import rules_pb2
from sqlalchemy import Engine, delete, insert

from services.kit.errors import InvalidArgument, Violations
from services.segments import commands, groups, rules
from services.segments.compiler import members_query
from services.segments.rules import All, AnyOf, Condition, Fact, Not, Op
from services.segments.tables import member_categories, member_facts, member_orders, member_tags, metadata, rfm_scores
from tests.support.scratch_db import scratch_engine

NOW = datetime(2026, 6, 15, 12, 0, 0)
SHOP = "shop-1"



def violations_of(message: rules_pb2.Rule) -> list[tuple[str, str]]:
    v = Violations()
    rules.from_proto(message, "segment.rule", v)
    return v.items


def cond(fact: int, op: int, values: list[int] = (), window_days: int = 0, tag_id: str = "") -> rules_pb2.Rule:
    return rules_pb2.Rule(condition=rules_pb2.Condition(fact=fact, op=op, values=list(values),
                                                        window_days=window_days, tag_id=tag_id))


def fields(items: list[tuple[str, str]]) -> list[str]:
    return [f for f, _ in items]


# ----- validation ---------------------------------------------------------------------------------------


def test_a_valid_tree_has_no_violations() -> None:
    rule = rules_pb2.Rule(all=rules_pb2.RuleGroup(rules=[
        cond(rules_pb2.FACT_TRADES, rules_pb2.OPERATOR_GE, [2], window_days=180),
        cond(rules_pb2.FACT_LAST_PURCHASE, rules_pb2.OPERATOR_NOT_WITHIN_DAYS, [30]),
        cond(rules_pb2.FACT_TAG, rules_pb2.OPERATOR_HAS_TAG, tag_id="tag-1"),
        cond(rules_pb2.FACT_BIRTH_MONTH, rules_pb2.OPERATOR_IN, [1, 2, 3])]))
    assert violations_of(rule) == []


def test_each_bad_field_is_named_by_its_path() -> None:
    rule = rules_pb2.Rule(all=rules_pb2.RuleGroup(rules=[
        cond(rules_pb2.FACT_TRADES, rules_pb2.OPERATOR_GE, [1]),
        cond(rules_pb2.FACT_TIER_LEVEL, rules_pb2.OPERATOR_BETWEEN, [3, 1]),
        cond(rules_pb2.FACT_TIER_LEVEL, rules_pb2.OPERATOR_WITHIN_DAYS, [3]),
        cond(rules_pb2.FACT_JOINED, rules_pb2.OPERATOR_WITHIN_DAYS, [0]),
        cond(99, rules_pb2.OPERATOR_EQ, [1]),
        cond(rules_pb2.FACT_TIER_LEVEL, 0, [1]),
        cond(rules_pb2.FACT_BIRTH_MONTH, rules_pb2.OPERATOR_EQ, [1], window_days=30),
        cond(rules_pb2.FACT_SPEND_FEN, rules_pb2.OPERATOR_GE, [1], window_days=3651),
        cond(rules_pb2.FACT_TAG, rules_pb2.OPERATOR_HAS_TAG),
        cond(rules_pb2.FACT_TRADES, rules_pb2.OPERATOR_IN, []),
        cond(rules_pb2.FACT_TRADES, rules_pb2.OPERATOR_EQ, [1, 2]),
        rules_pb2.Rule(),
        rules_pb2.Rule(any=rules_pb2.RuleGroup()),
    ]))
    found = fields(violations_of(rule))
    p = "segment.rule.all.rules"
    assert found == [
        f"{p}[1].condition.values", f"{p}[2].condition.op", f"{p}[3].condition.values",
        f"{p}[4].condition.fact", f"{p}[5].condition.op", f"{p}[6].condition.window_days",
        f"{p}[7].condition.window_days", f"{p}[8].condition.tag_id", f"{p}[9].condition.values",
        f"{p}[10].condition.values", f"{p}[11]", f"{p}[12].any.rules"]


def text_cond(fact: int, op: int, texts: list[str], values: list[int] = (), window_days: int = 0) -> rules_pb2.Rule:
    return rules_pb2.Rule(condition=rules_pb2.Condition(fact=fact, op=op, texts=texts, values=list(values),
                                                        window_days=window_days))


def test_categories_regions_genders_and_order_details_are_checked_field_by_field() -> None:
    good = rules_pb2.Rule(all=rules_pb2.RuleGroup(rules=[
        text_cond(rules_pb2.FACT_CATEGORY, rules_pb2.OPERATOR_IN, ["lace", "socks"], window_days=90),
        text_cond(rules_pb2.FACT_REGION, rules_pb2.OPERATOR_NE, ["浙江"]),
        cond(rules_pb2.FACT_GENDER, rules_pb2.OPERATOR_IN, [1, 2]),
        cond(rules_pb2.FACT_UNITS, rules_pb2.OPERATOR_GE, [3], window_days=30),
        cond(rules_pb2.FACT_PROMOTED_SHARE_PERCENT, rules_pb2.OPERATOR_GE, [50], window_days=365),
        cond(rules_pb2.FACT_SHARES, rules_pb2.OPERATOR_GT, [0]),
        cond(rules_pb2.FACT_SHARES_AND_REFERRALS, rules_pb2.OPERATOR_GE, [5])]))
    assert violations_of(good) == []
    bad = rules_pb2.Rule(all=rules_pb2.RuleGroup(rules=[
        text_cond(rules_pb2.FACT_CATEGORY, rules_pb2.OPERATOR_EQ, ["lace"]),
        text_cond(rules_pb2.FACT_CATEGORY, rules_pb2.OPERATOR_IN, []),
        text_cond(rules_pb2.FACT_REGION, rules_pb2.OPERATOR_EQ, ["浙江", "上海"]),
        text_cond(rules_pb2.FACT_REGION, rules_pb2.OPERATOR_IN, ["x" * 65]),
        text_cond(rules_pb2.FACT_REGION, rules_pb2.OPERATOR_IN, ["浙江"], values=[1]),
        text_cond(rules_pb2.FACT_REGION, rules_pb2.OPERATOR_IN, ["浙江"], window_days=30),
        cond(rules_pb2.FACT_GENDER, rules_pb2.OPERATOR_EQ, [3]),
        cond(rules_pb2.FACT_GENDER, rules_pb2.OPERATOR_GT, [1]),
        text_cond(rules_pb2.FACT_TRADES, rules_pb2.OPERATOR_GE, ["lace"], values=[1]),
        cond(rules_pb2.FACT_SHARES, rules_pb2.OPERATOR_GE, [1], window_days=30)]))
    p = "segment.rule.all.rules"
    assert fields(violations_of(bad)) == [
        f"{p}[0].condition.op", f"{p}[1].condition.texts", f"{p}[2].condition.texts",
        f"{p}[3].condition.texts[0]", f"{p}[4].condition.values", f"{p}[5].condition.window_days",
        f"{p}[6].condition.values", f"{p}[7].condition.op", f"{p}[8].condition.texts",
        f"{p}[9].condition.window_days"]


def test_rfm_conditions_take_scores_and_classes() -> None:
    rule = rules_pb2.Rule(all=rules_pb2.RuleGroup(rules=[
        cond(rules_pb2.FACT_RFM_RECENCY, rules_pb2.OPERATOR_BETWEEN, [1, 5]),
        cond(rules_pb2.FACT_RFM_CLASS, rules_pb2.OPERATOR_IN, [1, 8]),
        cond(rules_pb2.FACT_RFM_MONETARY, rules_pb2.OPERATOR_GE, [6]),
        cond(rules_pb2.FACT_RFM_CLASS, rules_pb2.OPERATOR_GE, [1]),
        cond(rules_pb2.FACT_RFM_CLASS, rules_pb2.OPERATOR_NE, [0]),
        cond(rules_pb2.FACT_RFM_FREQUENCY, rules_pb2.OPERATOR_EQ, [3], window_days=30)]))
    p = "segment.rule.all.rules"
    assert fields(violations_of(rule)) == [f"{p}[2].condition.values", f"{p}[3].condition.op",
                                           f"{p}[4].condition.values", f"{p}[5].condition.window_days"]


def test_limits_of_depth_conditions_and_groups() -> None:
    deep = cond(rules_pb2.FACT_TRADES, rules_pb2.OPERATOR_GE, [1])
    for _ in range(rules.MAX_DEPTH):
        deep = rules_pb2.Rule(**{"not": deep})
    assert fields(violations_of(deep)) == ["segment.rule" + ".not" * rules.MAX_DEPTH]
    one = cond(rules_pb2.FACT_TRADES, rules_pb2.OPERATOR_GE, [1])
    wide = rules_pb2.Rule(all=rules_pb2.RuleGroup(rules=[one] * 21))
    assert fields(violations_of(wide)) == ["segment.rule.all.rules"]
    many = rules_pb2.Rule(any=rules_pb2.RuleGroup(rules=[rules_pb2.Rule(all=rules_pb2.RuleGroup(rules=[one] * 20))
                                                         for _ in range(11)]))
    assert fields(violations_of(many)) == ["segment.rule.any.rules[10].all.rules[0]"]
    assert "200" in violations_of(many)[0][1]


def test_commands_check_names_sample_sizes_and_settings() -> None:
    rule = cond(rules_pb2.FACT_TRADES, rules_pb2.OPERATOR_GE, [1])
    with pytest.raises(InvalidArgument) as caught:
        commands.CreateSegment("shop-1", "x" * 61, "", rules_pb2.Rule(), False)
    assert fields(caught.value.violations) == ["segment.name", "segment.rule"]
    with pytest.raises(InvalidArgument) as caught:
        commands.PreviewSegment("shop-1", rule, True, 101)
    assert fields(caught.value.violations) == ["sample_size"]
    assert commands.PreviewSegment("shop-1", rule, True, 0).sample == 10
    with pytest.raises(InvalidArgument) as caught:
        commands.UpdateGroupSettings("shop-1", {"churn_idle_days": 0, "high_quality_min_trades": 0,
                                                "high_quality_min_average_order_fen": -1})
    assert fields(caught.value.violations) == ["settings.churn_idle_days", "settings.high_quality_min_trades",
                                               "settings.high_quality_min_average_order_fen"]
    v = groups.violations(groups.Settings(high_potential_recent_days=200), Violations())
    assert fields(v.items) == ["settings.high_potential_recent_days"]
    with pytest.raises(InvalidArgument) as caught:
        commands.UpdateGroupSettings("shop-1", {"promotion_sensitive_min_share_percent": 101,
                                                "spreaders_min_actions": 0, "purchasing_power_window_days": 0})
    assert fields(caught.value.violations) == ["settings.promotion_sensitive_min_share_percent",
                                               "settings.spreaders_min_actions",
                                               "settings.purchasing_power_window_days"]
    v = groups.violations(groups.Settings(purchasing_power_low_max_average_order_fen=50000), Violations())
    assert fields(v.items) == ["settings.purchasing_power_low_max_average_order_fen"]


# ----- round trips -----------------------------------------------------------------------------------------

NUMBER_FACTS = sorted(rules.NUMBER_FACTS)
small = st.integers(-1, 25)


CATEGORIES = ["lace", "socks", "shoes"]
REGIONS = ["浙江", "上海", "北京"]


@st.composite
def text_conditions(draw: st.DrawFn) -> Condition:
    """Categories bought (IN, maybe windowed), the region (EQ / NE / IN), the gender (EQ / NE / IN)."""
    fact = draw(st.sampled_from([Fact.CATEGORY, Fact.REGION, Fact.GENDER]))
    op = Op.IN if fact is Fact.CATEGORY else draw(st.sampled_from(sorted(rules.EQUALITY_OPS)))
    size = st.integers(1, 3) if op is Op.IN else st.just(1)
    if fact is Fact.GENDER:
        return Condition(fact, op, tuple(draw(st.lists(st.sampled_from([1, 2]), min_size=1, max_size=2)))
                         if op is Op.IN else (draw(st.sampled_from([1, 2])),))
    texts = tuple(draw(st.lists(st.sampled_from(CATEGORIES if fact is Fact.CATEGORY else REGIONS),
                                min_size=draw(size), max_size=3 if op is Op.IN else 1)))
    window = draw(st.sampled_from([0, 1, 7, 30])) if fact is Fact.CATEGORY else 0
    return Condition(fact, op, (), window, "", texts)


@st.composite
def conditions(draw: st.DrawFn, facts: st.SearchStrategy[Fact] | None = None) -> Condition:
    kind = "number" if facts is not None else draw(st.sampled_from(["number", "date", "tag", "text"]))
    if kind == "text":
        return draw(text_conditions())
    if kind == "tag":
        return Condition(Fact.TAG, Op.HAS_TAG, (), 0, draw(st.sampled_from(["t1", "t2", "t3"])))
    if kind == "date":
        fact = draw(st.sampled_from(sorted(rules.DATE_FACTS)))
        return Condition(fact, draw(st.sampled_from(sorted(rules.DATE_OPS))), (draw(st.sampled_from([1, 7, 30, 90])),))
    fact = draw(facts if facts is not None else st.sampled_from(NUMBER_FACTS))
    if fact in rules.RFM_RANGES:  # scores 1-5, classes 1-8 (EQ / NE / IN)
        low, high = rules.RFM_RANGES[fact]
        scores = st.integers(low, high)
        op = draw(st.sampled_from(sorted(rules.RFM_CLASS_OPS if fact is Fact.RFM_CLASS else rules.NUMBER_OPS)))
        count = 2 if op is Op.BETWEEN else draw(st.integers(1, 3)) if op is Op.IN else 1
        return Condition(fact, op, tuple(sorted(draw(st.lists(scores, min_size=count, max_size=count)))))
    op = draw(st.sampled_from(sorted(rules.NUMBER_OPS)))
    number = st.sampled_from([0, 1, 33, 49, 50, 66, 100]) if fact is Fact.PROMOTED_SHARE_PERCENT else small
    if op is Op.BETWEEN:
        values = tuple(sorted((draw(number), draw(number))))
    elif op is Op.IN:
        values = tuple(draw(st.lists(number, min_size=1, max_size=4)))
    else:
        values = (draw(number),)
    window = draw(st.sampled_from([0, 1, 7, 30])) if fact in rules.WINDOWED_FACTS else 0
    return Condition(fact, op, values, window)


trees = st.recursive(conditions(), lambda children: st.one_of(
    st.lists(children, min_size=1, max_size=3).map(lambda rs: All(tuple(rs))),
    st.lists(children, min_size=1, max_size=3).map(lambda rs: AnyOf(tuple(rs))),
    children.map(Not)), max_leaves=6)

# Trees of RFM conditions only (in `trees` they are a few leaves among many).
rfm_trees = st.recursive(conditions(st.sampled_from(sorted(rules.RFM_RANGES))), lambda children: st.one_of(
    st.lists(children, min_size=1, max_size=3).map(lambda rs: All(tuple(rs))),
    st.lists(children, min_size=1, max_size=3).map(lambda rs: AnyOf(tuple(rs))),
    children.map(Not)), max_leaves=4)


@given(trees)
def test_a_rule_survives_json_and_the_wire(rule: rules.Rule) -> None:
    assert rules.from_json(rules.to_json(rule)) == rule
    v = Violations()
    assert rules.from_proto(rules_pb2.Rule.FromString(rules.to_proto(rule).SerializeToString()), "rule", v) == rule
    assert v.items == []


def test_the_predefined_groups_are_valid_rules() -> None:
    for group in groups.Group:
        rule = groups.rule_of(group, groups.Settings())
        v = Violations()
        assert rules.from_proto(rules.to_proto(rule), "rule", v) == rule and v.items == []


# ----- the compiler against a plain reading -------------------------------------------------------------


def ago(days: int, hours: int = 0) -> datetime:
    return NOW - timedelta(days=days, hours=hours)


@st.composite
def members(draw: st.DrawFn) -> list[dict]:
    found = []
    for i in range(draw(st.integers(0, 10))):
        maybe_date = st.one_of(st.none(), st.builds(ago, st.integers(0, 100), st.integers(0, 23)))
        orders = []
        for j in range(draw(st.integers(0, 4))):
            amount = draw(st.integers(1, 12))
            refunded = draw(st.sampled_from([0, 0, amount // 2, amount]))
            orders.append({"order_id": f"o-{i}-{j}", "completed_at": ago(draw(st.integers(0, 40)),
                                                                       draw(st.integers(0, 23))),
                           "amount_fen": amount, "refunded_fen": refunded, "refunds": 1 if refunded else 0,
                           "fully_refunded": refunded == amount, "units": draw(st.integers(1, 4)),
                           "coupon_applied": draw(st.booleans()), "campaign_applied": draw(st.booleans())})
        trades = draw(st.integers(0, 5))
        found.append({
            "member_id": f"m{i:02d}", "left_at": draw(st.sampled_from([None, None, None, ago(1)])),
            "joined_at": draw(st.builds(ago, st.integers(0, 200))), "join_channel": draw(st.integers(0, 3)),
            "tier_level": draw(st.integers(0, 3)), "birth_month": draw(st.one_of(st.none(), st.integers(1, 12))),
            "points_balance": draw(st.integers(0, 25)), "last_purchase_at": draw(maybe_date),
            "last_activity_at": draw(maybe_date), "trades": trades,
            "spend_fen": draw(st.integers(0, 25)), "refunds": draw(st.integers(0, 3)),
            "referrals": draw(st.integers(0, 3)), "orders": orders,
            "units": draw(st.integers(0, 25)), "promoted_trades": draw(st.integers(0, trades)),
            "shares": draw(st.integers(0, 6)), "gender": draw(st.sampled_from([None, 1, 2])),
            "region": draw(st.sampled_from([None, *REGIONS])),
            "categories": draw(st.dictionaries(st.sampled_from(CATEGORIES), st.builds(ago, st.integers(0, 40)))),
            "rfm": draw(st.one_of(st.none(), st.tuples(*[st.integers(1, 5)] * 3, st.integers(1, 8)))),
            "tags": draw(st.sets(st.sampled_from(["t1", "t2"])))})
    return found


def value_of(c: Condition, m: dict) -> int | datetime | None:
    column = {Fact.TIER_LEVEL: "tier_level", Fact.POINTS_BALANCE: "points_balance", Fact.JOIN_CHANNEL: "join_channel",
              Fact.BIRTH_MONTH: "birth_month", Fact.REFERRALS: "referrals", Fact.LAST_PURCHASE: "last_purchase_at",
              Fact.LAST_ACTIVITY: "last_activity_at", Fact.JOINED: "joined_at", Fact.SHARES: "shares",
              Fact.GENDER: "gender", Fact.REGION: "region"}.get(c.fact)
    if column:
        return m[column]
    if c.fact is Fact.SHARES_AND_REFERRALS:
        return m["shares"] + m["referrals"]
    if c.fact in rules.RFM_RANGES:  # (recency, frequency, monetary, class), or no score
        rfm = m["rfm"]
        return None if rfm is None else rfm[[Fact.RFM_RECENCY, Fact.RFM_FREQUENCY, Fact.RFM_MONETARY,
                                             Fact.RFM_CLASS].index(c.fact)]
    if c.window_days:
        orders = [o for o in m["orders"] if o["completed_at"] >= NOW - timedelta(days=c.window_days)]
        trades = sum(1 for o in orders if not o["fully_refunded"])
        spend = sum(o["amount_fen"] - o["refunded_fen"] for o in orders)
        refunds = sum(o["refunds"] for o in orders)
        units = sum(o["units"] for o in orders if not o["fully_refunded"])
        promoted = sum(1 for o in orders if not o["fully_refunded"] and (o["coupon_applied"] or o["campaign_applied"]))
    else:
        trades, spend, refunds = m["trades"], m["spend_fen"], m["refunds"]
        units, promoted = m["units"], m["promoted_trades"]
    return {Fact.TRADES: trades, Fact.SPEND_FEN: spend, Fact.REFUNDS: refunds,
            Fact.AVERAGE_ORDER_FEN: spend // trades if trades else None, Fact.UNITS: units,
            Fact.PROMOTED_SHARE_PERCENT: promoted * 100 // trades if trades else None}[c.fact]


def holds(rule: rules.Rule, m: dict) -> bool:
    """The rule read plainly: a missing fact satisfies no comparison; NOT is the complement."""
    if isinstance(rule, All):
        return all(holds(r, m) for r in rule.rules)
    if isinstance(rule, AnyOf):
        return any(holds(r, m) for r in rule.rules)
    if isinstance(rule, Not):
        return not holds(rule.rule, m)
    if rule.op is Op.HAS_TAG:
        return rule.tag_id in m["tags"]
    if rule.fact is Fact.CATEGORY:
        since = NOW - timedelta(days=rule.window_days) if rule.window_days else None
        return any(m["categories"].get(t) is not None and (since is None or m["categories"][t] >= since)
                   for t in rule.texts)
    x = value_of(rule, m)
    if rule.op is Op.NOT_WITHIN_DAYS:
        return x is None or x < NOW - timedelta(days=rule.values[0])
    if x is None:
        return False
    if rule.op is Op.WITHIN_DAYS:
        return x >= NOW - timedelta(days=rule.values[0])
    v = rule.texts if rule.fact in rules.TEXT_FACTS else rule.values
    return {Op.EQ: lambda: x == v[0], Op.NE: lambda: x != v[0], Op.LT: lambda: x < v[0], Op.LE: lambda: x <= v[0],
            Op.GT: lambda: x > v[0], Op.GE: lambda: x >= v[0], Op.BETWEEN: lambda: v[0] <= x <= v[1],
            Op.IN: lambda: x in v}[rule.op]()


FACT_TABLES = [member_facts, member_orders, member_tags, member_categories, rfm_scores]


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    """The tables in memory (SQLite), and in a database of their own on PostgreSQL when
    LOYALTY_TEST_PG_URL is set (scripts/test-backends.sh sets it)."""
    yield from scratch_engine(request.param, metadata, FACT_TABLES, "segments_rules")


PREDEFINED = [groups.rule_of(g, groups.Settings()) for g in groups.Group] + [
    groups.rule_of(g, groups.Settings(high_potential_window_days=20, high_potential_recent_days=3,
                                      high_contribution_window_days=10, high_contribution_recent_days=2,
                                      repurchase_window_days=5, high_quality_min_trades=1,
                                      high_quality_min_average_order_fen=5, lost_high_quality_min_trades=1,
                                      lost_high_quality_idle_days=20, churn_idle_days=30,
                                      promotion_sensitive_window_days=20, promotion_sensitive_min_trades=1,
                                      spreaders_min_actions=3, purchasing_power_window_days=20,
                                      purchasing_power_low_max_average_order_fen=4,
                                      purchasing_power_high_min_average_order_fen=8)) for g in groups.Group]


@settings(max_examples=400, deadline=None)
@given(people=members(), rule=st.one_of(trees, st.sampled_from(PREDEFINED), rfm_trees))
# NOT of a comparison compiles to the opposite comparison: with texts too.
@example(people=[], rule=Not(Condition(Fact.REGION, Op.EQ, (), 0, "", ("浙江",))))
@example(people=[], rule=Not(Condition(Fact.REGION, Op.IN, (), 0, "", ("浙江", "上海"))))
def test_the_compiled_query_selects_what_a_plain_reading_selects(engine: Engine, people: list[dict],
                                                                 rule: rules.Rule) -> None:
    with engine.begin() as conn:
        for table in FACT_TABLES:
            conn.execute(delete(table))
        for m in people:
            conn.execute(insert(member_facts).values(
                shop_id=SHOP, referrer_member_id="", first_purchase_at=None, updated_at=NOW,
                **{k: v for k, v in m.items() if k not in ("orders", "tags", "categories", "rfm")}))
            # The same member id in another shop, selected by everything: never in this shop's answer.
            conn.execute(insert(member_facts).values(
                shop_id="shop-2", member_id=m["member_id"] + "x", joined_at=NOW, join_channel=0, tier_level=0,
                referrer_member_id="", points_balance=0, trades=0, spend_fen=0, refunds=0, referrals=0,
                units=0, promoted_trades=0, updated_at=NOW))
            for o in m["orders"]:
                conn.execute(insert(member_orders).values(shop_id=SHOP, member_id=m["member_id"], **o))
            for category, at in m["categories"].items():
                conn.execute(insert(member_categories).values(shop_id=SHOP, member_id=m["member_id"],
                                                              category_id=category, trades=1, last_bought_at=at))
            if m["rfm"] is not None:
                r, f, mo, rfm_class = m["rfm"]
                conn.execute(insert(rfm_scores).values(shop_id=SHOP, member_id=m["member_id"], recency=r,
                                                       frequency=f, monetary=mo, rfm_class=rfm_class))
                conn.execute(insert(rfm_scores).values(shop_id="shop-2", member_id=m["member_id"] + "x",
                                                       recency=r, frequency=f, monetary=mo, rfm_class=rfm_class))
            for tag in m["tags"]:
                conn.execute(insert(member_tags).values(shop_id=SHOP, tag_id=tag, member_id=m["member_id"],
                                                        tagged_at=NOW))
        selected = sorted(conn.execute(members_query(SHOP, rule, NOW)).scalars())
    expected = sorted(m["member_id"] for m in people if m["left_at"] is None and holds(rule, m))
    assert selected == expected
