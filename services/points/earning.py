"""Earning points (赚积分): actions the shop rewards under their caps, purchases at the tier
rate with multipliers, the referral reward, the join bonus, direct grants, and the clawback
when an order is refunded (退换货扣除)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from loyalty.points.v1 import events_pb2
from sqlalchemy import Connection, and_, insert, select, update

from services.kit.errors import NotFound
from services.kit.storage import UnitOfWork, ignoring_returning
from services.kit.timeutil import to_timestamp, utcnow
from services.points import commands, domain, ledger, reasons
from services.points.domain import Account, Action, EarnRule, EntryKind, Program, Source
from services.points.program import earn_rules_of, ensure_program, load_program, multipliers_of
from services.points.service import PointsService
from services.points.tables import action_counts, action_subjects, order_earnings
from services.points.views import BalanceView, balance_after


class EventOutOfOrder(Exception):
    """An event that depends on one not yet applied; the bus delivers it again later."""


@dataclass(frozen=True)
class ActionOutcome:
    points: int
    not_earned_reason: str
    multiplier_milli: int
    streak_days: int
    balance: BalanceView


def earn(svc: PointsService, uow: UnitOfWork, cmd: commands.Earn) -> ledger.Posted:
    """A direct grant from another system (a lottery win, a campaign's gift)."""
    program = load_program(svc, cmd.shop_id, uow.conn)
    acct = ledger.lock(uow, cmd.shop_id, cmd.member_id)
    acct.refuse_if_closed()
    now = utcnow()
    made = ledger.earn_points(uow, program, acct, cmd.points, cmd.source, now)
    ledger.save(svc, uow, acct)
    return ledger.posted(uow, acct, made, now)


def record_action(svc: PointsService, uow: UnitOfWork, cmd: commands.RecordAction) -> ActionOutcome:
    """An action the shop rewards (sign-in, review, share…), under its rule's caps. Every action
    reported is announced (ActionRecorded), earning or not: membership counts growth value from
    it, so a storefront reports an action once, here."""
    outcome = _judge_action(svc, uow, cmd)
    uow.emit(cmd.shop_id, events_pb2.ActionRecorded(
        shop_id=cmd.shop_id, member_id=cmd.member_id, action=int(cmd.action), subject=cmd.subject,
        occurred_at=to_timestamp(cmd.at), points=outcome.points))
    return outcome


def _judge_action(svc: PointsService, uow: UnitOfWork, cmd: commands.RecordAction) -> ActionOutcome:
    program = load_program(svc, cmd.shop_id, uow.conn)
    acct = ledger.lock(uow, cmd.shop_id, cmd.member_id)

    def nothing(reason: str, streak_days: int = 0, multiplier_milli: int = domain.MILLI) -> ActionOutcome:
        return ActionOutcome(0, reason, multiplier_milli, streak_days, balance_after(uow.conn, acct, utcnow()))

    if acct.closed:
        return nothing(reasons.ACCOUNT_CLOSED)
    rule = earn_rules_of(svc, cmd.shop_id, uow.conn).get(cmd.action)
    if rule is None or not rule.enabled:
        return nothing(reasons.RULE_DISABLED)
    day = domain.local_date(cmd.at, program.zone)
    streak = 0
    if cmd.action is Action.DAILY_SIGN_IN:
        refusal, streak = acct.judge_sign_in(day)
        if refusal:
            return nothing(refusal, streak)
    refusal = _cap_refusal(uow.conn, acct, rule, cmd.subject, day)
    if refusal:
        return nothing(refusal, streak)
    points, multiplier, multiplier_id = rule.points, domain.MILLI, ""
    if rule.multipliers_apply:
        multiplier, multiplier_id = domain.best_multiplier(multipliers_of(svc, cmd.shop_id, uow.conn), cmd.action,
                                                           cmd.at, program.zone, acct.birthday)
        points = points * multiplier // domain.MILLI
    if cmd.action is Action.DAILY_SIGN_IN:
        acct.sign_in(day, streak)
        if rule.streak_days and streak % rule.streak_days == 0:
            points += rule.streak_bonus  # the bonus is never multiplied
    _count(uow, acct, cmd.action, cmd.subject, day)
    if points > 0:
        ledger.earn_points(uow, program, acct, points, Source(action=int(cmd.action), rule_id=rule.rule_id,
                                                              multiplier_id=multiplier_id, reference=cmd.subject),
                           cmd.at)
    ledger.save(svc, uow, acct)
    return ActionOutcome(points, "", multiplier, streak, balance_after(uow.conn, acct, utcnow()))


def _cap_refusal(conn: Connection, acct: Account, rule: EarnRule, subject: str, day: date) -> str:
    """The domain's judgement on the member's earlier occurrences of the rule's action."""
    action = int(rule.action)
    subject_earned = bool(subject) and rule.action in domain.SUBJECT_ACTIONS | {Action.REFERRAL} and conn.execute(
        select(action_subjects.c.subject).where(
            action_subjects.c.shop_id == acct.shop_id, action_subjects.c.member_id == acct.member_id,
            action_subjects.c.action == action, action_subjects.c.subject == subject)).first() is not None
    counts = dict(conn.execute(select(action_counts.c.period, action_counts.c.count).where(
        action_counts.c.shop_id == acct.shop_id, action_counts.c.member_id == acct.member_id,
        action_counts.c.action == action, action_counts.c.period.in_(domain.cap_periods(day)))).all())
    return domain.cap_refusal(rule, counts, day, subject_earned=subject_earned)


def _count(uow: UnitOfWork, acct: Account, action: Action, subject: str, day: date) -> None:
    """Counts one occurrence against the caps, and its subject against earning twice."""
    for period in domain.cap_periods(day):
        key = and_(action_counts.c.shop_id == acct.shop_id, action_counts.c.member_id == acct.member_id,
                   action_counts.c.action == int(action), action_counts.c.period == period)
        if uow.conn.execute(update(action_counts).where(key).values(count=action_counts.c.count + 1)).rowcount == 0:
            uow.conn.execute(insert(action_counts), {"shop_id": acct.shop_id, "member_id": acct.member_id,
                                                     "action": int(action), "period": period, "count": 1})
    if subject and action in domain.SUBJECT_ACTIONS | {Action.REFERRAL}:
        uow.conn.execute(insert(action_subjects), {"shop_id": acct.shop_id, "member_id": acct.member_id,
                                                   "action": int(action), "subject": subject,
                                                   "created_at": utcnow()})


def welcome(svc: PointsService, uow: UnitOfWork, cmd: commands.OpenAccount) -> None:
    """A member joined: opens the account; one who joined (not one imported) earns the join bonus."""
    program = ensure_program(svc, uow, cmd.shop_id)
    ledger.open_account(uow, cmd.shop_id, cmd.member_id, birth_month=cmd.birth_month, birth_day=cmd.birth_day,
                        referrer_member_id=cmd.referrer_member_id)
    rule = earn_rules_of(svc, cmd.shop_id, uow.conn).get(Action.JOIN)
    if cmd.imported or rule is None or not rule.enabled or rule.points <= 0:
        return
    acct = ledger.lock(uow, cmd.shop_id, cmd.member_id)
    day = domain.local_date(cmd.at, program.zone)
    if _cap_refusal(uow.conn, acct, rule, "", day):
        return
    _count(uow, acct, Action.JOIN, "", day)
    ledger.earn_points(uow, program, acct, rule.points, Source(action=int(Action.JOIN), rule_id=rule.rule_id), cmd.at)
    ledger.save(svc, uow, acct)


def credit_purchase(svc: PointsService, uow: UnitOfWork, cmd: commands.CreditPurchase) -> None:
    """Purchase points at the tier rate held when the trade succeeded; on a first purchase, the
    referral reward for both sides. Once per order."""
    program = ensure_program(svc, uow, cmd.shop_id)
    ledger.open_account(uow, cmd.shop_id, cmd.member_id, birth_month=cmd.birth_month, birth_day=cmd.birth_day,
                        referrer_member_id=cmd.referrer_member_id)
    if uow.conn.execute(select(order_earnings.c.order_id).where(
            order_earnings.c.shop_id == cmd.shop_id, order_earnings.c.order_id == cmd.order_id)).first():
        return
    acct = ledger.lock(uow, cmd.shop_id, cmd.member_id)
    rule, multiplier, multiplier_id, per_yuan, points = _purchase_earning(svc, uow.conn, program, acct, cmd)
    # Recorded even when nothing is earned: a refund of the order then knows the completion was seen.
    uow.conn.execute(insert(order_earnings), {
        "shop_id": cmd.shop_id, "order_id": cmd.order_id, "member_id": cmd.member_id, "amount_fen": cmd.amount_fen,
        "points_per_yuan": per_yuan, "rate_milli": cmd.rate_milli, "multiplier_milli": multiplier,
        "earned": points, "clawed_back": 0})
    if rule is None:
        return
    if points > 0:
        ledger.earn_points(uow, program, acct, points, Source(order_id=cmd.order_id, action=int(Action.PURCHASE),
                                                              rule_id=rule.rule_id, multiplier_id=multiplier_id),
                           cmd.completed_at)
    ledger.save(svc, uow, acct)
    referral = earn_rules_of(svc, cmd.shop_id, uow.conn).get(Action.REFERRAL)
    reward = domain.referral_points(referral, first_order=cmd.first_order, has_referrer=bool(cmd.referrer_member_id),
                                    amount_fen=cmd.amount_fen)
    if referral is not None and reward is not None:
        for beneficiary in (cmd.member_id, cmd.referrer_member_id):
            _reward_referral(svc, uow, program, referral, beneficiary, cmd, reward)


def credit_purchases(svc: PointsService, uow: UnitOfWork, cmds: list[commands.CreditPurchase]) -> None:
    """credit_purchase() for many completed orders, with the same effects as one by one in their
    order. Plain purchases are applied together with a few set-wise statements; a referred
    member's first purchase (which may reward a referral) goes alone, between them."""
    run: list[commands.CreditPurchase] = []
    for cmd in cmds:
        if cmd.first_order and cmd.referrer_member_id:
            _credit_plain_purchases(svc, uow, run)
            run = []
            credit_purchase(svc, uow, cmd)
        else:
            run.append(cmd)
    _credit_plain_purchases(svc, uow, run)


def _credit_plain_purchases(svc: PointsService, uow: UnitOfWork, cmds: list[commands.CreditPurchase]) -> None:
    """Purchases that reward no referral, of any shops and members, in their order."""
    if not cmds:
        return
    conn = uow.conn
    shops = list(dict.fromkeys(cmd.shop_id for cmd in cmds))
    programs = {shop_id: ensure_program(svc, uow, shop_id) for shop_id in shops}
    accts: dict[tuple[str, str], Account] = {}
    done: set[tuple[str, str]] = set()
    for shop_id in shops:
        mine = [cmd for cmd in cmds if cmd.shop_id == shop_id]
        found = ledger.lock_many(uow, shop_id, [cmd.member_id for cmd in mine])
        for cmd in mine:  # a member points has not heard of yet (the join is still on its way)
            if cmd.member_id not in found:
                ledger.open_account(uow, shop_id, cmd.member_id, birth_month=cmd.birth_month,
                                    birth_day=cmd.birth_day, referrer_member_id=cmd.referrer_member_id)
                found[cmd.member_id] = ledger.lock(uow, shop_id, cmd.member_id)
        accts.update(((shop_id, member_id), acct) for member_id, acct in found.items())
    rows: list[dict] = []
    earnings: list[tuple[tuple[str, str], ledger.Earning]] = []
    for cmd in cmds:
        if (cmd.shop_id, cmd.order_id) in done:
            continue  # once per order (a repeat within the batch)
        done.add((cmd.shop_id, cmd.order_id))
        program, acct = programs[cmd.shop_id], accts[(cmd.shop_id, cmd.member_id)]
        rule, multiplier, multiplier_id, per_yuan, points = _purchase_earning(svc, conn, program, acct, cmd)
        rows.append({"shop_id": cmd.shop_id, "order_id": cmd.order_id, "member_id": cmd.member_id,
                     "amount_fen": cmd.amount_fen, "points_per_yuan": per_yuan, "rate_milli": cmd.rate_milli,
                     "multiplier_milli": multiplier, "earned": points, "clawed_back": 0})
        if rule is not None and points > 0:
            earnings.append(((cmd.shop_id, cmd.order_id), ledger.Earning(program, acct, points, Source(
                order_id=cmd.order_id, action=int(Action.PURCHASE), rule_id=rule.rule_id,
                multiplier_id=multiplier_id), cmd.completed_at)))
    # Recorded even when nothing is earned (a refund of the order then knows the completion was
    # seen); an order recorded before (an earlier delivery) is left out and earns nothing again.
    recorded = ignoring_returning(conn, order_earnings, ["shop_id", "order_id"],
                                  [order_earnings.c.shop_id, order_earnings.c.order_id])
    new = set(map(tuple, conn.execute(recorded, rows).all())) if rows else set()
    fresh = [earning for order, earning in earnings if order in new]
    ledger.earn_many(uow, fresh)
    ledger.save_many(svc, uow, list({(e.acct.shop_id, e.acct.member_id): e.acct for e in fresh}.values()))


def _purchase_earning(svc: PointsService, conn: Connection, program: Program, acct: Account,
                      cmd: commands.CreditPurchase) -> tuple[EarnRule | None, int, str, int, int]:
    """What the purchase earns: its rule (None when nothing is earned), multiplier, its id, points
    per yuan, and points."""
    rule = earn_rules_of(svc, cmd.shop_id, conn).get(Action.PURCHASE)
    if acct.closed or rule is None or not rule.enabled:
        return None, domain.MILLI, "", 0, 0
    multiplier, multiplier_id = domain.MILLI, ""
    if rule.multipliers_apply:
        birthday = (cmd.birth_month, cmd.birth_day) if cmd.birth_month and cmd.birth_day else acct.birthday
        multiplier, multiplier_id = domain.best_multiplier(
            multipliers_of(svc, cmd.shop_id, conn), Action.PURCHASE, cmd.completed_at, program.zone, birthday)
    return rule, multiplier, multiplier_id, rule.points, domain.purchase_points(
        cmd.amount_fen, rule.points, cmd.rate_milli, multiplier)


def _reward_referral(svc: PointsService, uow: UnitOfWork, program: Program, rule: EarnRule, beneficiary: str,
                     purchase: commands.CreditPurchase, points: int) -> None:
    try:
        acct = ledger.lock(uow, program.shop_id, beneficiary)
    except NotFound:
        return  # the referrer has no account here (left before points knew them)
    referee = purchase.member_id
    day = domain.local_date(purchase.completed_at, program.zone)
    if acct.closed or _cap_refusal(uow.conn, acct, rule, referee, day):
        return
    _count(uow, acct, Action.REFERRAL, referee, day)
    if points > 0:
        ledger.earn_points(uow, program, acct, points, Source(order_id=purchase.order_id, action=int(Action.REFERRAL),
                                                              rule_id=rule.rule_id, reference=referee),
                           purchase.completed_at)
    ledger.save(svc, uow, acct)


def claw_back(svc: PointsService, uow: UnitOfWork, cmd: commands.ClawBack) -> None:
    """退换货扣除: takes back what the refunded part of the order earned, from the order's own lot
    first; what was spent already becomes a debt that later earnings pay first."""
    key = (order_earnings.c.shop_id == cmd.shop_id) & (order_earnings.c.order_id == cmd.order_id)
    earning = uow.conn.execute(select(order_earnings).where(key).with_for_update()).first()
    if earning is None:
        # The completion this refund follows has not been applied yet (another worker holds
        # it, or it is being retried): leave the event to be delivered again.
        raise EventOutOfOrder(f"refund of {cmd.shop_id}/{cmd.order_id} arrived before its completion")
    # What was refunded before the completion never counted (amount_fen is net of it).
    refunded_since = cmd.total_refunded_fen - (cmd.order_amount_fen - earning.amount_fen)
    points = domain.clawback_points(earning.earned, earning.amount_fen, refunded_since, earning.points_per_yuan,
                                    earning.rate_milli, earning.multiplier_milli, earning.clawed_back)
    if points <= 0:
        return
    uow.conn.execute(update(order_earnings).where(key).values(clawed_back=earning.clawed_back + points))
    acct = ledger.lock(uow, cmd.shop_id, earning.member_id)
    if acct.closed:
        return
    live = ledger.sweep_expired(uow, acct, cmd.at)
    _, uncovered = ledger.take(uow, acct, points, cmd.at, live, prefer_order=cmd.order_id)
    acct.owe(uncovered)
    reason = "order refunded"
    ledger.post(uow, acct, EntryKind.CLAWBACK, -points, 0,
                Source(order_id=cmd.order_id, action=int(Action.PURCHASE), reason=reason), cmd.at)
    ledger.save(svc, uow, acct)
    uow.emit(cmd.shop_id, events_pb2.PointsAdjusted(
        shop_id=cmd.shop_id, member_id=acct.member_id, points=-points, kind=int(EntryKind.CLAWBACK),
        order_id=cmd.order_id, reason=reason, balance_after=acct.available, occurred_at=to_timestamp(cmd.at)))
