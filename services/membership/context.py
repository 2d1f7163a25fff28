"""What every membership handler and view works with: the service's database, cache, keys and
program memo, built once by server.py."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from services.kit.auth import KeyRing
from services.kit.cache import Cache
from services.kit.memo import ShopMemo
from services.kit.storage import Database
from services.membership.key_store import KeyStore, enable_secure_delete
from services.membership.pii import PiiKeys
from services.membership.programs import ProgramMemo


@dataclass(frozen=True)
class Membership:
    db: Database
    cache: Cache
    pii: PiiKeys
    keys: KeyStore  # buyers' data keys, in a database of their own
    keyring: KeyRing
    programs: ProgramMemo
    growth_settings: ShopMemo[Any]  # (GrowthSettings, changed at): read by every completed order
    cache_ttl: float = 60.0

    @classmethod
    def build(cls, db: Database, cache: Cache, keys: KeyStore, keyring: KeyRing, *, cache_ttl: float) -> Membership:
        from services.membership.growth import settings_loader  # growth's handlers take this context

        enable_secure_delete(db)
        return cls(db, cache, keys.pii, keys, keyring, ProgramMemo(db), ShopMemo(settings_loader(db)), cache_ttl)
