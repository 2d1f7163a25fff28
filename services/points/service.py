"""What the points handlers share: the service's database, the balance cache and short
per-process memos of each shop's program, earn rules and multipliers (read by nearly every call
and every event). The use cases live in the capability modules (program, ledger, accounts,
earning, spending, expiry, pool) and the reads in views and reports."""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial

from services.kit.cache import Cache
from services.kit.memo import ShopMemo
from services.kit.storage import Database
from services.points import program
from services.points.domain import Action, EarnRule, Multiplier, Program


class PointsService:
    def __init__(self, db: Database, cache: Cache, *, cache_ttl: float = 60.0):
        self.db = db
        self.cache = cache
        self.cache_ttl = cache_ttl
        self.programs: ShopMemo[Program] = ShopMemo(partial(program.read_program, db))
        self.earn_rules: ShopMemo[Mapping[Action, EarnRule]] = ShopMemo(partial(program.read_rules, db))
        self.multipliers: ShopMemo[tuple[Multiplier, ...]] = ShopMemo(partial(program.read_multipliers, db))
