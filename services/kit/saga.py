"""Durable sagas: a multi-step operation across services (rewards' redeem: points Hold, reserve
stock, CaptureHold — or Release) that ends consistent after a crash.

Every step's progress is committed in the caller's own database before and after the step runs;
a failure that is an answer (a kit ServiceError such as FailedPrecondition) compensates the steps
already taken, newest first; an accident (UNAVAILABLE, a deadline, a crash) leaves the saga to be
resumed. A step without a compensation is a pivot (points captured): once one is done the saga
only goes forward — accidents are retried without limit and a refusal ends it FAILED for an
operator, never undoing what came before. A saga is driven by whoever holds its lease: the
runner that started it, or — once that lease has passed — the recovery job (Sagas.recovery_job)
of any replica. Steps and compensations must therefore be idempotent: they pass
SagaContext.request_id(), the same on every attempt.

Services that run sagas add saga_tables(metadata) to their own metadata, create_saga_tables(op)
to their migration, and Sagas.recovery_job() to their periodic worker."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from services.kit.client import CallFailed
from services.kit.errors import ServiceError
from services.kit.jobs import PeriodicJob
from services.kit.storage import Database, UnitOfWork
from services.kit.timeutil import utcnow

log = logging.getLogger("loyalty.saga")

# Saga states.
RUNNING, COMPENSATING, COMPLETED, COMPENSATED, FAILED = "RUNNING", "COMPENSATING", "COMPLETED", "COMPENSATED", "FAILED"
IN_FLIGHT = (RUNNING, COMPENSATING)
# Step states: STARTED means sent but its outcome not recorded (a crash, or an accident).
PENDING, STARTED, DONE, REFUSED = "PENDING", "STARTED", "DONE", "REFUSED"


@dataclass(frozen=True)
class SagaTables:
    sagas: Table
    saga_steps: Table


def saga_tables(metadata: MetaData) -> SagaTables:
    """The saga record, for the metadata (and a migration) of a service that runs sagas."""
    sagas = Table(
        "sagas",
        metadata,
        Column("saga_id", String(36), primary_key=True),
        Column("kind", String(64), nullable=False),
        Column("shop_id", String(64), nullable=False),
        Column("state", String(16), nullable=False),
        Column("data", Text, nullable=False),  # JSON: the input, and each step's results
        Column("error", Text, nullable=False, default=""),
        Column("attempts", Integer, nullable=False, default=0),  # accidents since the last progress
        Column("owner", String(36), nullable=False),  # the runner holding the lease
        Column("lease_until", DateTime, nullable=False),
        Column("created_at", DateTime, nullable=False),
        Column("updated_at", DateTime, nullable=False),
        Index("ix_sagas_in_flight", "state", "lease_until"),
    )
    saga_steps = Table(
        "saga_steps",
        metadata,
        Column("saga_id", String(36), primary_key=True),
        Column("step", Integer, primary_key=True),
        Column("name", String(64), nullable=False),
        Column("state", String(16), nullable=False),
        Column("compensated", Boolean, nullable=False, default=False),
        Column("updated_at", DateTime, nullable=False),
    )
    return SagaTables(sagas=sagas, saga_steps=saga_steps)


def create_saga_tables(op: Any) -> None:
    """The saga tables as saga_tables() defines them today, for a service's migration (Alembic
    `op`); frozen like the kit's tables: a later change to saga_tables() comes with a migration."""
    import sqlalchemy as sa

    op.create_table(
        "sagas",
        sa.Column("saga_id", sa.String(36), primary_key=True),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("shop_id", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("data", sa.Text, nullable=False),
        sa.Column("error", sa.Text, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("owner", sa.String(36), nullable=False),
        sa.Column("lease_until", sa.DateTime, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_sagas_in_flight", "sagas", ["state", "lease_until"])
    op.create_table(
        "saga_steps",
        sa.Column("saga_id", sa.String(36), primary_key=True),
        sa.Column("step", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("compensated", sa.Boolean, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
    )


@dataclass
class SagaContext:
    """What a step sees: the saga's id, shop and data (its input plus earlier steps' results)."""

    saga_id: str
    shop_id: str
    step: str
    data: dict[str, Any]

    def request_id(self, purpose: str = "") -> str:
        """The request_id of this step's call (or of its compensation, with `purpose`): the
        same on every attempt, so a retried call is answered, not repeated."""
        return uuid.uuid5(uuid.UUID(self.saga_id), f"{self.step}/{purpose}").hex


@dataclass(frozen=True)
class Step:
    """`action` does the step and returns results to add to the saga's data (or None);
    `compensation` undoes it, and must succeed even when the action never took effect."""

    name: str
    action: Callable[[SagaContext], dict[str, Any] | None]
    compensation: Callable[[SagaContext], None] | None = None


@dataclass(frozen=True)
class SagaDefinition:
    kind: str
    steps: Sequence[Step]


@dataclass(frozen=True)
class SagaOutcome:
    saga_id: str
    state: str
    data: dict[str, Any] = field(default_factory=dict)
    error: str = ""

    @property
    def finished(self) -> bool:
        return self.state not in IN_FLIGHT


class _LeaseLost(Exception):
    """Another runner took the saga over (this one outlived its lease)."""


REFUSAL = "refusal"  # the key of SagaOutcome.data holding the refusal that ended a saga


def refusal_of(step: str, exc: ServiceError) -> dict[str, str]:
    """What a refusal said, as saga data: its step, status code, reason, message and subject."""
    return {"step": step, "code": exc.code, "reason": exc.reason, "message": exc.message,
            "subject": getattr(exc, "subject", "")}


def _pivot_passed(definition: SagaDefinition, step_state: dict[int, str]) -> str | None:
    """The name of the last step done that has no compensation (the saga's pivot: what it did
    cannot be undone, e.g. points captured), or None while everything done can still be undone."""
    done = [step.name for i, step in enumerate(definition.steps)
            if step.compensation is None and step_state.get(i) == DONE]
    return done[-1] if done else None


def _is_answer(exc: Exception) -> bool:
    """A refusal the callee decided (retrying gets the same answer), not an accident."""
    return isinstance(exc, ServiceError) and not isinstance(exc, CallFailed)


class Sagas:
    """Starts, drives and recovers the sagas of one service, recorded in its database."""

    def __init__(self, db: Database, tables: SagaTables, definitions: Iterable[SagaDefinition], *,
                 lease_seconds: float = 30.0, max_attempts: int = 10, retry_seconds: float = 1.0):
        self.db, self.t = db, tables
        self.definitions = {d.kind: d for d in definitions}
        self.lease = timedelta(seconds=lease_seconds)
        self.max_attempts, self.retry_seconds = max_attempts, retry_seconds
        self.owner = str(uuid.uuid4())

    # ----- starting and running -----

    def start(self, kind: str, shop_id: str, data: dict[str, Any], *, saga_id: str | None = None) -> str:
        """Records a new saga (with this runner's lease) in a transaction of its own and returns
        its id; run() drives it. A `saga_id` already recorded (a retried request) starts nothing:
        run() then reports that saga's outcome."""
        saga_id = saga_id or str(uuid.uuid4())
        try:
            self.db.transact(lambda uow: self.record(uow, kind, shop_id, data, saga_id=saga_id))
        except IntegrityError:
            log.info("saga %s already recorded", saga_id)
        return saga_id

    def record(self, uow: UnitOfWork, kind: str, shop_id: str, data: dict[str, Any], *, saga_id: str) -> None:
        """Records a new saga in the caller's unit of work, so that it commits together with the
        caller's own change (a redemption row and its saga: both or neither); run() it after the
        commit. Raises IntegrityError (rolling the caller back) if `saga_id` is recorded already."""
        definition = self.definitions[kind]
        now = utcnow()
        uow.conn.execute(insert(self.t.sagas), {
            "saga_id": saga_id, "kind": kind, "shop_id": shop_id, "state": RUNNING,
            "data": json.dumps(data, sort_keys=True), "error": "", "attempts": 0, "owner": self.owner,
            "lease_until": now + self.lease, "created_at": now, "updated_at": now})
        uow.conn.execute(insert(self.t.saga_steps), [
            {"saga_id": saga_id, "step": i, "name": step.name, "state": PENDING, "compensated": False,
             "updated_at": now} for i, step in enumerate(definition.steps)])

    def execute(self, kind: str, shop_id: str, data: dict[str, Any]) -> SagaOutcome:
        """start() and run() in one: the outcome is final unless an accident left it in flight."""
        return self.run(self.start(kind, shop_id, data))

    def run(self, saga_id: str) -> SagaOutcome:
        """Drives a saga this runner holds as far as it goes now."""
        try:
            return self._drive(saga_id)
        except _LeaseLost:
            log.warning("saga %s was taken over by another runner", saga_id)
            return self.outcome(saga_id)

    def outcome(self, saga_id: str) -> SagaOutcome:
        row = self.db.read(lambda c: c.execute(select(self.t.sagas).where(self.t.sagas.c.saga_id == saga_id)).one())
        return SagaOutcome(saga_id, row.state, json.loads(row.data), row.error)

    def step_states(self, saga_id: str) -> dict[str, str]:
        """Each step's state (COMPENSATED once undone), for tests and operators."""
        steps = self.t.saga_steps
        rows = self.db.read(lambda c: c.execute(select(steps).where(steps.c.saga_id == saga_id)
                                                .order_by(steps.c.step)).all())
        return {r.name: "COMPENSATED" if r.compensated else r.state for r in rows}

    # ----- recovery -----

    def recover(self, limit: int = 100) -> list[SagaOutcome]:
        """Takes over the sagas in flight whose lease passed (their runner crashed, or is
        waiting to retry) and drives each as far as it goes."""
        sagas = self.t.sagas
        ids = self.db.read(lambda c: c.execute(
            select(sagas.c.saga_id).where(sagas.c.state.in_(IN_FLIGHT), sagas.c.lease_until < utcnow())
            .order_by(sagas.c.lease_until).limit(limit)).scalars().all())
        return [self.run(saga_id) for saga_id in ids if self._claim(saga_id)]

    def recovery_job(self, interval: float = 5.0) -> PeriodicJob:
        """The recovery as a periodic job, for the service's services.kit.jobs.Periodic worker."""
        return PeriodicJob("saga-recovery", interval, self.recover)

    def _claim(self, saga_id: str) -> bool:
        sagas, now = self.t.sagas, utcnow()
        claimed = self.db.transact(lambda uow: uow.conn.execute(
            update(sagas).where(sagas.c.saga_id == saga_id, sagas.c.state.in_(IN_FLIGHT), sagas.c.lease_until < now)
            .values(owner=self.owner, lease_until=now + self.lease)).rowcount)
        return claimed == 1

    # ----- the engine -----

    def _save(self, saga_id: str, *, step: int | None = None, step_values: dict[str, Any] | None = None,
              **saga_values: Any) -> None:
        """Commits progress, renewing the lease; refuses if another runner holds it now."""
        sagas, steps, now = self.t.sagas, self.t.saga_steps, utcnow()
        saga_values.setdefault("lease_until", now + self.lease)

        def save(uow: UnitOfWork) -> None:
            held = uow.conn.execute(update(sagas).where(sagas.c.saga_id == saga_id, sagas.c.owner == self.owner)
                                    .values(updated_at=now, **saga_values)).rowcount
            if held != 1:
                raise _LeaseLost(saga_id)
            if step is not None and step_values:
                uow.conn.execute(update(steps).where(steps.c.saga_id == saga_id, steps.c.step == step)
                                 .values(updated_at=now, **step_values))

        self.db.transact(save)

    def _drive(self, saga_id: str) -> SagaOutcome:
        sagas, steps = self.t.sagas, self.t.saga_steps

        def load(conn: Any) -> tuple[Any, list[Any]]:
            row = conn.execute(select(sagas).where(sagas.c.saga_id == saga_id)).one()
            return row, conn.execute(select(steps).where(steps.c.saga_id == saga_id).order_by(steps.c.step)).all()

        row, step_rows = self.db.read(load)
        definition = self.definitions[row.kind]
        state, data, attempts, error = row.state, json.loads(row.data), row.attempts, row.error
        step_state = {r.step: r.state for r in step_rows}
        compensated = {r.step for r in step_rows if r.compensated}
        while state == RUNNING:
            pending = [i for i in range(len(definition.steps)) if step_state[i] != DONE]
            if not pending:
                self._save(saga_id, state=COMPLETED, error="", attempts=0)
                return SagaOutcome(saga_id, COMPLETED, data)
            i = pending[0]
            step = definition.steps[i]
            self._save(saga_id, step=i, step_values={"state": STARTED})
            step_state[i] = STARTED
            try:
                result = step.action(SagaContext(saga_id, row.shop_id, step.name, dict(data)))
            except Exception as exc:
                pivot = _pivot_passed(definition, step_state)
                if _is_answer(exc) and pivot is not None:
                    # Past a step that cannot be undone, the saga only goes forward: a refusal
                    # now is an operator's case, never a reason to undo what came before.
                    error = f"{step.name}: {exc} (after {pivot}, which cannot be undone)"
                    log.error("saga %s: step %s refused after %s; FAILED for an operator", saga_id, step.name, pivot)
                    data[REFUSAL] = refusal_of(step.name, exc)
                    self._save(saga_id, step=i, step_values={"state": REFUSED}, state=FAILED, error=error,
                               attempts=0, data=json.dumps(data, sort_keys=True))
                    return SagaOutcome(saga_id, FAILED, data, error)
                if _is_answer(exc):
                    log.info("saga %s: step %s refused (%s); compensating", saga_id, step.name, exc)
                    step_state[i], state, error = REFUSED, COMPENSATING, f"{step.name}: {exc}"
                    # The refusal itself, for compensations and for the caller to answer with.
                    data[REFUSAL] = refusal_of(step.name, exc)
                    self._save(saga_id, step=i, step_values={"state": REFUSED}, state=state, error=error, attempts=0,
                               data=json.dumps(data, sort_keys=True))
                    continue
                attempts += 1
                return self._accident(saga_id, state, data, step.name, exc, attempts,
                                      then=COMPENSATING if pivot is None else RUNNING)
            data.update(result or {})
            step_state[i] = DONE
            attempts = 0
            self._save(saga_id, step=i, step_values={"state": DONE}, data=json.dumps(data, sort_keys=True),
                       attempts=0)
        if state == COMPENSATING:
            # Newest first; a STARTED step may have taken effect, so it is undone too.
            for i in reversed(range(len(definition.steps))):
                step = definition.steps[i]
                if i in compensated or step_state[i] not in (DONE, STARTED):
                    continue
                if step.compensation is not None:
                    try:
                        step.compensation(SagaContext(saga_id, row.shop_id, step.name, dict(data)))
                    except Exception as exc:
                        attempts += 1
                        return self._accident(saga_id, state, data, f"undoing {step.name}", exc, attempts,
                                              then=FAILED)
                compensated.add(i)
                self._save(saga_id, step=i, step_values={"compensated": True}, attempts=0)
                attempts = 0
            self._save(saga_id, state=COMPENSATED)
            return SagaOutcome(saga_id, COMPENSATED, data, error)
        return SagaOutcome(saga_id, state, data, error)

    def _accident(self, saga_id: str, state: str, data: dict[str, Any], what: str, exc: Exception, attempts: int,
                  *, then: str) -> SagaOutcome:
        """Leaves the saga for a later attempt (the lease set to the backoff), or after too many
        attempts moves it on to `then`: compensation of a step that never succeeds, or FAILED
        (an operator's case) for a compensation that never does."""
        error = f"{what}: {type(exc).__name__}: {exc}"
        if attempts >= self.max_attempts and then == RUNNING:
            # Past a pivot: retried as long as it takes (every few minutes), said loudly once.
            if attempts == self.max_attempts:
                log.error("saga %s: %s failed %d times past a step that cannot be undone; still retrying",
                          saga_id, what, attempts)
        elif attempts >= self.max_attempts:
            log.error("saga %s: %s failed %d times; now %s", saga_id, what, attempts, then)
            self._save(saga_id, state=then, error=error, attempts=0)
            return self.run(saga_id) if then == COMPENSATING else SagaOutcome(saga_id, then, data, error)
        retry = timedelta(seconds=min(self.retry_seconds * 2 ** (attempts - 1), 300))
        log.warning("saga %s: %s failed (%s); retrying in %ss", saga_id, what, exc, retry.total_seconds())
        self._save(saga_id, error=error, attempts=attempts, lease_until=utcnow() + retry)
        return SagaOutcome(saga_id, state, data, error)
