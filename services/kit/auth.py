"""API keys. The admin key comes from the environment; shop keys are signed with the shared
auth secret, so every service verifies them without a database lookup."""

from __future__ import annotations

import base64
import contextvars
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from services.kit import reasons
from services.kit.errors import PermissionDenied, Unauthenticated

SHOP_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_KEY_PREFIX = "lk_"


@dataclass(frozen=True)
class Principal:
    """Who is calling: the admin (any shop) or one shop."""

    shop_id: str | None
    key_id: str

    @property
    def is_admin(self) -> bool:
        return self.shop_id is None


ADMIN = Principal(shop_id=None, key_id="admin")
_caller: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("loyalty_caller", default=None)


def current_principal() -> Principal | None:
    """Who is calling, inside a call the interceptor let through."""
    return _caller.get()


def set_principal(principal: Principal) -> None:
    _caller.set(principal)


class KeyRing:
    """Issues and verifies keys. A verified shop key is remembered (a bounded memo of key →
    Principal), so the HMAC runs once per key and process, not once per call; keys not in the
    memo are still checked in constant time."""

    def __init__(self, admin_key: str, secret: bytes, *, remembered: int = 10_000):
        self._admin_key = admin_key.encode()
        self._secret = secret
        self._verified: dict[str, Principal] = {}
        self._remembered = remembered

    def _signature(self, shop_id: str, key_id: str) -> str:
        digest = hmac.new(self._secret, f"{shop_id}.{key_id}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest[:24]).decode().rstrip("=")

    def issue(self, shop_id: str) -> tuple[str, str]:
        """A new key for one shop: (key_id, key)."""
        key_id = secrets.token_hex(6)
        return key_id, self.key_for(shop_id, key_id)

    def key_for(self, shop_id: str, key_id: str) -> str:
        return f"{_KEY_PREFIX}{shop_id}.{key_id}.{self._signature(shop_id, key_id)}"

    def authenticate(self, key: str) -> Principal:
        if not key:
            raise Unauthenticated(
                "missing API key: send 'authorization: Bearer <key>'", reason=reasons.MISSING_CREDENTIALS
            )
        # Only keys that verified are in the memo, so a lookup reveals nothing about a wrong key
        # (its timing is that of a dict miss, whatever the key).
        principal = self._verified.get(key)
        if principal is not None:
            return principal
        if hmac.compare_digest(key.encode(), self._admin_key):
            principal = ADMIN
        elif key.startswith(_KEY_PREFIX):
            parts = key[len(_KEY_PREFIX) :].split(".")
            if len(parts) == 3:
                shop_id, key_id, signature = parts
                if hmac.compare_digest(signature.encode(), self._signature(shop_id, key_id).encode()):
                    principal = Principal(shop_id=shop_id, key_id=key_id)
        if principal is None:
            raise Unauthenticated("invalid API key", reason=reasons.INVALID_CREDENTIALS)
        if len(self._verified) >= self._remembered:
            self._verified.clear()  # a flood of distinct valid keys costs HMACs again, never memory
        self._verified[key] = principal
        return principal


def authorize(principal: Principal, shop_id: str | None, *, admin_only: bool) -> None:
    """A shop key acts on its own shop only; some calls are the admin's alone. `shop_id` is None
    for a request that names no shop: only the admin may make those."""
    if principal.is_admin:
        return
    if admin_only or shop_id is None:
        raise PermissionDenied("this call needs the admin key", reason=reasons.ADMIN_ONLY)
    if shop_id and shop_id != principal.shop_id:
        raise PermissionDenied(
            "this key belongs to another shop", reason=reasons.SHOP_MISMATCH, metadata={"shop_id": shop_id}
        )


def bearer_token(metadata: tuple[tuple[str, str | bytes], ...] | None) -> str:
    for key, value in metadata or ():
        if key == "authorization" and isinstance(value, str):
            scheme, _, token = value.partition(" ")
            return token.strip() if scheme.lower() == "bearer" else value.strip()
        if key == "x-api-key" and isinstance(value, str):
            return value.strip()
    return ""
