"""What every membership handler and view works with: the service's database, cache, keys and
program memo, built once by server.py."""

from __future__ import annotations

from dataclasses import dataclass

from services.kit.auth import KeyRing
from services.kit.cache import Cache
from services.kit.storage import Database
from services.membership.data_keys import enable_secure_delete
from services.membership.pii import PiiKeys
from services.membership.programs import ProgramMemo


@dataclass(frozen=True)
class Membership:
    db: Database
    cache: Cache
    pii: PiiKeys
    keyring: KeyRing
    programs: ProgramMemo
    cache_ttl: float = 60.0

    @classmethod
    def build(cls, db: Database, cache: Cache, pii: PiiKeys, keyring: KeyRing, *, cache_ttl: float) -> Membership:
        enable_secure_delete(db)
        return cls(db, cache, pii, keyring, ProgramMemo(db), cache_ttl)
