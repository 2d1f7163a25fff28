"""`python -m services.segments seed-bench --members 1000000 --shop bench-shop`: a synthetic shop of N
members with realistic facts, loaded straight into the configured segments database
(LOYALTY_SEGMENTS_DB_URL, else the data folder's SQLite file), for measuring segments at scale.

This is a bench loader, not a projection: it writes segments' tables directly (facts normally
come from the other services' events). The shop's earlier rows are replaced, the migrations are
applied first, and the same seed gives the same shop (dates are relative to the moment it runs).

What a shop looks like: joins spread over three years (more of them recent), nine join channels,
tiers skewed to the bottom of the ladder, about 60 % buyers with long-tailed trades and spend
(one row per trade in member_orders, dated between the member's first and last purchase, a few
refunded in part or in full), the categories each buyer bought, five tags on a share of the
members, about 3 % who left, and the program's time zone. PostgreSQL loads through COPY (then
VACUUM ANALYZE, as a live shop's autovacuum would have), SQLite through batched executemany."""

from __future__ import annotations

import argparse
import io
import random
import sys
import time
from bisect import bisect
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import accumulate

from sqlalchemy import create_engine, delete, text
from sqlalchemy.engine import Engine

from services.kit import migrations
from services.kit.config import service_db_url
from services.kit.timeutil import utcnow
from services.segments.tables import (
    member_categories,
    member_facts,
    member_orders,
    member_tags,
    programs,
    rfm_runs,
    rfm_scores,
    segment_sizes,
    tags,
)

DAY = 86400.0
HISTORY_DAYS = 3 * 365
CHUNK = 20_000  # members generated and written at once
CHANNELS = list(range(1, 10))
CHANNEL_WEIGHTS = [22, 14, 6, 16, 10, 6, 8, 6, 12]
TIER_WEIGHTS = [62, 24, 9, 4, 1]  # levels 0-4
BUYER_SHARE = {0: 0.37, 1: 0.92, 2: 0.96, 3: 0.98, 4: 1.0}  # ~60 % overall
REGIONS = ["浙江", "广东", "江苏", "上海", "北京", "四川", "山东", "湖北", "福建", "河南"]
CATEGORIES = [f"cat-{i:02d}" for i in range(1, 31)]
CATEGORY_WEIGHTS = [1 / (i + 1) for i in range(len(CATEGORIES))]  # Zipf-like
TAGS = [("VIP客户", 0.06), ("直播粉丝", 0.12), ("高退货", 0.02), ("企业采购", 0.01), ("沉睡唤醒", 0.05)]
LEFT_SHARE = 0.03

FACT_COLUMNS = ("shop_id", "member_id", "left_at", "joined_at", "join_channel", "referrer_member_id", "tier_level",
                "birth_month", "points_balance", "first_purchase_at", "last_purchase_at", "last_activity_at",
                "trades", "spend_fen", "refunds", "referrals", "units", "promoted_trades", "updated_at", "shares",
                "gender", "region")
ORDER_COLUMNS = ("shop_id", "order_id", "member_id", "completed_at", "amount_fen", "refunded_fen", "refunds",
                 "fully_refunded", "units", "coupon_applied", "campaign_applied")
CATEGORY_COLUMNS = ("shop_id", "member_id", "category_id", "trades", "last_bought_at")
TAG_COLUMNS = ("shop_id", "tag_id", "member_id", "tagged_at")


@dataclass
class Loaded:
    members: int = 0
    buyers: int = 0
    orders: int = 0
    categories: int = 0
    tagged: int = 0
    seconds: float = 0.0
    tag_ids: list[str] = field(default_factory=list)

    def line(self, shop_id: str, url: str) -> str:
        return (f"seeded shop {shop_id!r} in {self.seconds:.1f} s: {self.members:,} members ({self.buyers:,} buyers), "
                f"{self.orders:,} orders, {self.categories:,} member categories, {self.tagged:,} member tags "
                f"into {_safe(url)}")


def _safe(url: str) -> str:
    """The URL without its password, for the log line."""
    scheme, _, rest = url.partition("://")
    if "@" in rest:
        credentials, _, host = rest.rpartition("@")
        rest = credentials.split(":", 1)[0] + "@" + host
    return f"{scheme}://{rest}"


def configured_url() -> str:
    """Where segments' database is (as services.kit.config.Settings.db_url reads it)."""
    return service_db_url("segments")


class _Picker:
    """Weighted choice by bisect over cumulative weights (random.choices' cost without its call)."""

    def __init__(self, values: list, weights: list[float]):
        self.values = values
        self.cumulative = list(accumulate(weights))
        self.total = self.cumulative[-1]

    def __call__(self, rng: random.Random) -> object:
        return self.values[bisect(self.cumulative, rng.random() * self.total)]


class _Rows:
    """One chunk's rows per table, as tuples of SQL-ready values (None: NULL)."""

    def __init__(self) -> None:
        self.facts: list[tuple] = []
        self.orders: list[tuple] = []
        self.categories: list[tuple] = []
        self.tags: list[tuple] = []


def _stamp(base: datetime, seconds_before: float) -> str:
    """`base` less some seconds, in the text form both databases read (and SQLAlchemy writes on SQLite)."""
    return (base - timedelta(seconds=seconds_before)).strftime("%Y-%m-%d %H:%M:%S.%f")


def generate(shop_id: str, members: int, now: datetime, seed: int, tag_ids: list[str],
             referrals: dict[str, int]) -> Iterator[_Rows]:
    """The shop's rows, CHUNK members at a time, deterministic for a seed. A referrer is always an
    earlier member, so referral counts go on growing after their member's chunk was written: they
    are counted into `referrals` (settled by an UPDATE at the end)."""
    rng = random.Random(seed)
    channel, tier, category = _Picker(CHANNELS, CHANNEL_WEIGHTS), _Picker(list(range(5)), TIER_WEIGHTS), \
        _Picker(CATEGORIES, CATEGORY_WEIGHTS)
    updated = now.strftime("%Y-%m-%d %H:%M:%S.%f")
    known: list[str] = []  # earlier members, who may have referred later ones
    order_seq = 0
    rows = _Rows()
    pending: list[tuple] = []
    for index in range(members):
        member_id = f"m_{rng.getrandbits(80):020x}"
        age = HISTORY_DAYS * DAY * rng.random() ** 1.3 + 3600  # days since joining, skewed to recent
        level = tier(rng)
        left = rng.random() < LEFT_SHARE
        referrer = ""
        if known and rng.random() < 0.08:
            referrer = known[rng.randrange(len(known))]
            referrals[referrer] = referrals.get(referrer, 0) + 1
        birth_month = rng.randint(1, 12) if rng.random() < 0.65 and not left else None
        gender = rng.choice((1, 2)) if rng.random() < 0.55 else None
        region = REGIONS[rng.randrange(len(REGIONS))] if rng.random() < 0.5 else None
        first_at = last_at = None
        trades = spend = refunds = units_total = promoted = 0
        buyer = rng.random() < BUYER_SHARE[level]
        if buyer:
            count = min(300, int(rng.paretovariate(1.5)) + level * rng.randint(0, 3))
            first = age * rng.random() ** 0.7  # seconds before now of the first purchase
            last = first * rng.random() ** 0.5 if count > 1 else first  # lapse since the last purchase
            times = sorted([first, last] + [rng.uniform(last, first) for _ in range(count - 2)], reverse=True)
            bought: dict[str, list] = {}
            own = [category(rng) for _ in range(1 + min(4, int(rng.expovariate(1.0))))]
            for at in times[:count]:
                order_seq += 1
                amount = max(100, int(rng.lognormvariate(9.3, 0.8)))  # median about 110 yuan
                units = 1 + min(19, int(rng.expovariate(0.9)))
                coupon, campaign = rng.random() < 0.18, rng.random() < 0.10
                refunded, refund_count, fully = 0, 0, False
                if rng.random() < 0.06:
                    refund_count = 1
                    fully = rng.random() < 0.5
                    refunded = amount if fully else int(amount * rng.uniform(0.1, 0.9))
                stamp = _stamp(now, at)
                rows.orders.append((shop_id, f"bo{order_seq:010d}", member_id, stamp, amount, refunded, refund_count,
                                    fully, units, coupon, campaign))
                trades += 0 if fully else 1
                spend += amount - refunded
                refunds += refund_count
                units_total += units
                promoted += 1 if coupon or campaign else 0
                if not left:
                    slot = bought.setdefault(own[rng.randrange(len(own))], [0, stamp])
                    slot[0] += 1
                    slot[1] = max(slot[1], stamp)
            first_at, last_at = _stamp(now, times[0]), _stamp(now, times[-1])
            rows.categories += [(shop_id, member_id, c, n, at) for c, (n, at) in sorted(bought.items())]
        activity = last_at
        if rng.random() < 0.8:
            seen = _stamp(now, age * rng.random())
            activity = max(activity, seen) if activity else seen
        balance = int(spend / 100 * rng.random()) if buyer else rng.choice((0, 0, 0, 10, 50, 100))
        shares = int(rng.expovariate(0.5)) if rng.random() < 0.1 else 0
        left_at = _stamp(now, age * rng.random()) if left else None
        pending.append((shop_id, member_id, left_at, _stamp(now, age), channel(rng), referrer, level, birth_month,
                        balance, first_at, last_at, activity, trades, spend, refunds, 0, units_total, promoted,
                        updated, shares, gender, region))
        if not left:
            for tag_id, (_, share) in zip(tag_ids, TAGS, strict=True):
                if rng.random() < share:
                    rows.tags.append((shop_id, tag_id, member_id, _stamp(now, age * rng.random())))
        known.append(member_id)
        if len(pending) == CHUNK or index == members - 1:
            rows.facts = pending
            yield rows
            rows, pending = _Rows(), []


def _copy_text(rows: list[tuple]) -> io.StringIO:
    """Rows in COPY's text format (tab-separated, \\N for NULL, t/f for booleans)."""

    def cell(v: object) -> str:
        if v is None:
            return "\\N"
        if v is True:
            return "t"
        if v is False:
            return "f"
        return str(v)

    return io.StringIO("".join("\t".join(cell(v) for v in row) + "\n" for row in rows))


class _Writer:
    """COPY on PostgreSQL, executemany on SQLite, in one transaction."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.postgres = engine.dialect.name == "postgresql"
        self.raw = engine.raw_connection()
        self.cursor = self.raw.cursor()

    def write(self, table: str, columns: tuple[str, ...], rows: list[tuple]) -> None:
        if not rows:
            return
        if self.postgres:
            self.cursor.copy_expert(f"COPY {table} ({', '.join(columns)}) FROM STDIN", _copy_text(rows))
        else:
            marks = ", ".join("?" for _ in columns)
            self.cursor.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})",
                                    [tuple(int(v) if isinstance(v, bool) else v for v in row) for row in rows])

    def referrals(self, shop_id: str, counts: dict[str, int]) -> None:
        """Sets each referrer's referral count (through a temporary table and one UPDATE on PostgreSQL)."""
        rows = sorted(counts.items())
        if not self.postgres:
            self.cursor.executemany("UPDATE member_facts SET referrals = ? WHERE shop_id = ? AND member_id = ?",
                                    [(n, shop_id, m) for m, n in rows])
            return
        self.cursor.execute("CREATE TEMPORARY TABLE seed_referrals (member_id varchar(32), n integer) ON COMMIT DROP")
        self.cursor.copy_expert("COPY seed_referrals (member_id, n) FROM STDIN", _copy_text(rows))
        self.cursor.execute("UPDATE member_facts f SET referrals = r.n FROM seed_referrals r "
                            "WHERE f.shop_id = %s AND f.member_id = r.member_id", (shop_id,))

    def commit(self) -> None:
        self.raw.commit()

    def close(self) -> None:
        self.cursor.close()
        self.raw.close()


def _clear(engine: Engine, shop_id: str) -> None:
    """The shop's earlier rows in every table the loader (or a run over its rows) writes."""
    with engine.begin() as conn:
        for table in (member_tags, tags, member_categories, member_orders, member_facts, rfm_scores, rfm_runs,
                      segment_sizes, programs):
            conn.execute(delete(table).where(table.c.shop_id == shop_id))


def seed(url: str, shop_id: str, members: int, *, seed: int = 20261126, now: datetime | None = None,
         time_zone: str = "Asia/Shanghai", migrate: bool = True) -> Loaded:
    """Loads the synthetic shop into the database at `url` (replacing the shop's earlier rows)."""
    began = time.monotonic()
    if migrate:
        migrations.upgrade("segments", url)
    now = now or utcnow()
    engine = create_engine(url)
    loaded = Loaded()
    try:
        _clear(engine, shop_id)
        tag_rng = random.Random(seed + 1)
        loaded.tag_ids = [f"tg_{tag_rng.getrandbits(96):024x}" for _ in TAGS]
        writer = _Writer(engine)
        try:
            writer.write(programs.name, ("shop_id", "time_zone", "updated_at"),
                         [(shop_id, time_zone, now.strftime("%Y-%m-%d %H:%M:%S.%f"))])
            writer.write(tags.name, ("shop_id", "tag_id", "name", "description", "created_at", "updated_at"),
                         [(shop_id, tag_id, name, "bench", now.strftime("%Y-%m-%d %H:%M:%S.%f"),
                           now.strftime("%Y-%m-%d %H:%M:%S.%f")) for tag_id, (name, _) in zip(loaded.tag_ids, TAGS,
                                                                                              strict=True)])
            referrals: dict[str, int] = {}
            for rows in generate(shop_id, members, now, seed, loaded.tag_ids, referrals):
                writer.write(member_facts.name, FACT_COLUMNS, rows.facts)
                writer.write(member_orders.name, ORDER_COLUMNS, rows.orders)
                writer.write(member_categories.name, CATEGORY_COLUMNS, rows.categories)
                writer.write(member_tags.name, TAG_COLUMNS, rows.tags)
                loaded.members += len(rows.facts)
                loaded.buyers += sum(1 for r in rows.facts if r[9] is not None)
                loaded.orders += len(rows.orders)
                loaded.categories += len(rows.categories)
                loaded.tagged += len(rows.tags)
            writer.referrals(shop_id, referrals)
            writer.commit()
        finally:
            writer.close()
        _analyze(engine)
    finally:
        engine.dispose()
    loaded.seconds = time.monotonic() - began
    return loaded


def _analyze(engine: Engine) -> None:
    """Fresh statistics (and, on PostgreSQL, the visibility map index-only scans rely on)."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        if engine.dialect.name == "postgresql":
            for table in (member_facts, member_orders, member_categories, member_tags):
                conn.execute(text(f"VACUUM ANALYZE {table.name}"))
        else:
            conn.execute(text("ANALYZE"))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m services.segments seed-bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", type=int, default=1_000_000, help="members to load (default 1,000,000)")
    parser.add_argument("--shop", default="bench-shop", help="the shop id (default bench-shop); its rows are replaced")
    parser.add_argument("--seed", type=int, default=20261126, help="the random generator's seed")
    parser.add_argument("--time-zone", default="Asia/Shanghai", help="the program's time zone")
    parser.add_argument("--db-url", default="", help="default: LOYALTY_SEGMENTS_DB_URL, else data/segments.db")
    args = parser.parse_args(argv)
    if args.members < 1:
        sys.exit("seed-bench: --members must be at least 1")
    url = args.db_url or configured_url()
    loaded = seed(url, args.shop, args.members, seed=args.seed, time_zone=args.time_zone)
    print(loaded.line(args.shop, url), flush=True)


if __name__ == "__main__":
    main()
