"""Issuing coupons to a segment (定向发券 to a 人群) as a job with progress.

IssueCouponsToSegment checks the reward (an active coupon reward, as IssueCoupons) and, before
its transaction, that the segment exists in segments; it records a RUNNING job and answers at
once. The runner (a background thread of each replica) then:
- claims a RUNNING job nobody holds (a conditional update of its lease: one runner at a time,
  across replicas), at once when woken by a new job, else on its pass every few seconds, which
  is also how a job whose runner crashed is picked up again once its lease ran out;
- streams the segment's members from segments' ListSegmentMembers (server streaming, in member
  id order: memory stays one batch whatever the size), skipping those up to `after_member_id`
  (done before a restart: member ids are "m_" and lowercase hex, so the database's order and
  Python's comparison agree on which came before);
- issues each batch through the wallet's issue_once, the same code as IssueCoupons, with the
  job id as the coupons' source reference, and records the job's progress (members seen,
  issued, skipped, the last member done, a renewed lease) in the same transaction as the
  coupons. A batch is thus done entirely or not at all, and the unique (source, reference,
  member) of coupons makes a member's second coupon of one job impossible however the job is
  resumed or raced;
- ends the job DONE after the stream's last member, or FAILED when the segment is gone
  (SEGMENT_NOT_FOUND) or the reward is no longer an active coupon reward (NOT_ACTIVE, …). While
  segments cannot be reached the job stays RUNNING and is tried again on a later pass.
Members not known to rewards as current members (never joined, or left) are counted as skipped."""

from __future__ import annotations

import contextlib
import logging
import secrets
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta

from loyalty.segments.v1 import segments_service_pb2 as spb
from sqlalchemy import Row, and_, or_, select, update

from services.kit.errors import FailedPrecondition, NotFound, ServiceError
from services.kit.storage import UnitOfWork
from services.kit.timeutil import utcnow
from services.kit.validation import check_ids
from services.rewards import reasons, wallet
from services.rewards.domain import IssuanceJobState as JobState
from services.rewards.service import RewardsService
from services.rewards.tables import issuance_jobs

log = logging.getLogger("loyalty.rewards.issuance")
BATCH = 500  # members per transaction (coupons, events and progress together)
LEASE = timedelta(seconds=30)  # renewed with each batch; a crashed runner's job is free after it
RETRY = timedelta(seconds=5)  # a job that could not reach segments waits this long
STREAM_SECONDS = 6 * 3600.0  # the whole stream's deadline (a million members take minutes)
PASS_SECONDS = 2.0


@dataclass(frozen=True)
class Job:
    shop_id: str
    job_id: str
    reward_id: str
    segment_id: str
    state: JobState
    members_seen: int
    issued: int
    skipped: int
    failure_reason: str
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class IssueToSegment:
    shop_id: str
    reward_id: str
    segment_id: str

    def __post_init__(self) -> None:
        check_ids(self.shop_id, reward_id=self.reward_id, segment_id=self.segment_id).raise_if_any()


@dataclass(frozen=True)
class JobQuery:
    shop_id: str
    job_id: str

    def __post_init__(self) -> None:
        check_ids(self.shop_id, job_id=self.job_id).raise_if_any()


def _to_job(row: Row) -> Job:
    return Job(row.shop_id, row.job_id, row.reward_id, row.segment_id, JobState(row.state), row.members_seen,
               row.issued, row.skipped, row.failure_reason, row.created_at, row.updated_at)


def _key(shop_id: str, job_id: str) -> tuple[object, object]:
    return issuance_jobs.c.shop_id == shop_id, issuance_jobs.c.job_id == job_id


def start_job(service: RewardsService, uow: UnitOfWork, cmd: IssueToSegment, now: datetime) -> Job:
    """A RUNNING job for the runner (the segment was checked before this transaction)."""
    wallet.issuable_reward(uow.conn, cmd.shop_id, cmd.reward_id)
    job = Job(cmd.shop_id, "ij_" + secrets.token_hex(10), cmd.reward_id, cmd.segment_id, JobState.RUNNING, 0, 0, 0,
              "", now, now)
    uow.conn.execute(issuance_jobs.insert().values(
        shop_id=job.shop_id, job_id=job.job_id, reward_id=job.reward_id, segment_id=job.segment_id,
        state=int(job.state), members_seen=0, issued=0, skipped=0, after_member_id="", failure_reason="",
        lease_owner=None, lease_until=None, created_at=now, updated_at=now))
    return job


def get_job(service: RewardsService, query: JobQuery) -> Job:
    row = service.db.read(lambda conn: conn.execute(select(issuance_jobs).where(
        *_key(query.shop_id, query.job_id))).first())
    if row is None:
        raise NotFound(f"no issuance job {query.job_id} in shop {query.shop_id}", reason=reasons.ISSUANCE_JOB_NOT_FOUND,
                       metadata={"job_id": query.job_id})
    return _to_job(row)


# ----- the runner --------------------------------------------------------------------------------------


class _LeaseLost(Exception):
    """Another runner holds the job now (this one was too slow): stop without a trace."""


def _free(now: datetime) -> object:
    return and_(issuance_jobs.c.state == int(JobState.RUNNING),
                or_(issuance_jobs.c.lease_until.is_(None), issuance_jobs.c.lease_until < now))


def claim(service: RewardsService, owner: str) -> Row | None:
    """A RUNNING job nobody holds, now held by `owner` until its lease runs out (None: none)."""
    now = utcnow()
    candidates = service.db.read(lambda conn: conn.execute(
        select(issuance_jobs.c.shop_id, issuance_jobs.c.job_id).where(_free(now))
        .order_by(issuance_jobs.c.created_at).limit(10)).all())
    for shop_id, job_id in candidates:
        def take(uow: UnitOfWork, shop_id: str = shop_id, job_id: str = job_id) -> Row | None:
            won = uow.conn.execute(update(issuance_jobs).where(*_key(shop_id, job_id), _free(now))
                                   .values(lease_owner=owner, lease_until=now + LEASE)).rowcount
            return uow.conn.execute(select(issuance_jobs).where(*_key(shop_id, job_id))).first() if won else None

        row = service.db.transact(take)
        if row is not None:
            return row
    return None


def _record(service: RewardsService, job: Row, owner: str, batch: list[str], *, done: bool) -> None:
    """Issues the batch and records the progress, in one transaction, if `owner` still holds the job."""

    def work(uow: UnitOfWork) -> None:
        held = uow.conn.execute(select(issuance_jobs.c.job_id).where(
            *_key(job.shop_id, job.job_id), issuance_jobs.c.lease_owner == owner,
            issuance_jobs.c.state == int(JobState.RUNNING)).with_for_update()).first()
        if held is None:
            raise _LeaseLost
        now = utcnow()
        issued = 0
        if batch:
            reward = wallet.issuable_reward(uow.conn, job.shop_id, job.reward_id)
            issued = len(wallet.issue_once(service, uow, reward, batch, job.job_id, now).coupons)
        values: dict[str, object] = {
            "members_seen": issuance_jobs.c.members_seen + len(batch),
            "issued": issuance_jobs.c.issued + issued,
            "skipped": issuance_jobs.c.skipped + len(batch) - issued,
            "updated_at": now, "lease_until": now + LEASE}
        if batch:
            values["after_member_id"] = batch[-1]
        if done:
            values.update(state=int(JobState.DONE), lease_owner=None, lease_until=None)
        uow.conn.execute(update(issuance_jobs).where(*_key(job.shop_id, job.job_id)).values(values))

    service.db.transact(work)


def _end(service: RewardsService, job: Row, owner: str, *, failure: str = "", retry: bool = False) -> None:
    """Lets go of the job: FAILED with `failure`, or free again (at once, or after RETRY)."""
    now = utcnow()
    if failure:
        values: dict[str, object] = {"state": int(JobState.FAILED), "failure_reason": failure, "lease_owner": None,
                                     "lease_until": None, "updated_at": now}
    else:
        values = {"lease_owner": None, "lease_until": now + RETRY if retry else None}
    service.db.transact(lambda uow: uow.conn.execute(update(issuance_jobs).where(
        *_key(job.shop_id, job.job_id), issuance_jobs.c.lease_owner == owner,
        issuance_jobs.c.state == int(JobState.RUNNING)).values(values)))


def run_job(service: RewardsService, job: Row, owner: str, stopped: threading.Event) -> None:
    """Streams the job's segment and issues batch by batch until the stream ends (DONE), the job
    fails for good (FAILED), segments cannot be reached (tried again later) or the runner stops."""
    if service.segments is None:
        _end(service, job, owner, retry=True)
        return
    after, batch = job.after_member_id, []
    request = spb.ListSegmentMembersRequest(shop_id=job.shop_id, segment_id=job.segment_id)
    try:
        for member in service.segments.stream("ListSegmentMembers", request, timeout=STREAM_SECONDS):
            if after and member.member_id <= after:  # done before a restart (the stream is in id order)
                continue
            batch.append(member.member_id)
            if len(batch) >= BATCH:
                _record(service, job, owner, batch, done=False)
                batch = []
                if stopped.is_set():
                    _end(service, job, owner)
                    return
        _record(service, job, owner, batch, done=True)
    except _LeaseLost:
        log.info("issuance job %s is held by another runner now", job.job_id, extra={"job_id": job.job_id})
    except (NotFound, FailedPrecondition) as exc:  # the segment or the reward is gone, or not issuable now
        log.warning("issuance job %s failed: %s", job.job_id, exc, extra={"job_id": job.job_id, "reason": exc.reason})
        _end(service, job, owner, failure=exc.reason)
    except ServiceError as exc:  # segments (or the database) cannot be reached now: a later pass goes on
        log.warning("issuance job %s waits: %s", job.job_id, exc, extra={"job_id": job.job_id})
        with contextlib.suppress(ServiceError):  # else the lease runs out by itself
            _end(service, job, owner, retry=True)


class IssuanceRunner(threading.Thread):
    """The background worker running issuance jobs, one at a time per replica (a Worker of the
    kit's server: start() once serving, stop()). wake() starts a new job at once."""

    def __init__(self, service: RewardsService, *, interval: float = PASS_SECONDS):
        super().__init__(name="rewards-issuance", daemon=True)
        self.service, self.interval = service, interval
        self.owner = "run_" + secrets.token_hex(8)
        self._stopped, self._woken = threading.Event(), threading.Event()

    def wake(self) -> None:
        self._woken.set()

    def stop(self, timeout: float = 10.0) -> None:
        self._stopped.set()
        self._woken.set()
        if self.is_alive():
            self.join(timeout=timeout)

    def run(self) -> None:
        while not self._stopped.is_set():
            self._woken.clear()
            try:
                job = claim(self.service, self.owner)
            except ServiceError as exc:
                log.warning("issuance runner waits: %s", exc)
                job = None
            except Exception:
                log.exception("issuance runner failed to look for jobs")
                job = None
            if job is not None:
                try:
                    run_job(self.service, job, self.owner, self._stopped)
                except Exception:
                    log.exception("issuance job %s failed unexpectedly; tried again later", job.job_id)
                continue
            self._woken.wait(self.interval)
