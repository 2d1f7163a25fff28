"""What the points handlers share: the service's database, the balance cache and a short
per-process memo of programs. The use cases live in the capability modules (program, ledger,
accounts, earning, spending, expiry, pool) and the reads in views and reports."""

from __future__ import annotations

from services.kit.cache import Cache, LocalCache
from services.kit.storage import Database


class PointsService:
    def __init__(self, db: Database, cache: Cache, *, cache_ttl: float = 60.0):
        self.db = db
        self.cache = cache
        self.cache_ttl = cache_ttl
        self.programs = LocalCache(max_entries=10_000)
