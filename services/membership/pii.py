"""Personal data at rest, by crypto-shredding: every personal field is encrypted (AES-GCM) with
the data key of the buyer it belongs to; data keys are stored wrapped by LOYALTY_PII_KEY, one row
each. Destroying a buyer's key makes every copy of their fields unreadable at once (WAL, free
pages, dead tuples, backups). Buyer ids are looked up by a keyed hash, never by their value."""

from __future__ import annotations

import hashlib
import hmac
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_NONCE = 12


def _derive(master: bytes, purpose: bytes) -> bytes:
    """A key for one purpose only, so the wrapping key and the hashing key are independent."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(master)


def _seal(aead: AESGCM, plain: bytes, context: str) -> bytes:
    nonce = os.urandom(_NONCE)
    return nonce + aead.encrypt(nonce, plain, context.encode())


def _open(aead: AESGCM, sealed: bytes, context: str) -> bytes | None:
    try:
        return aead.decrypt(sealed[:_NONCE], sealed[_NONCE:], context.encode())
    except (InvalidTag, ValueError):
        return None


class DataKey:
    """One buyer's data key. `context` binds a ciphertext to its place (shop, row, field), so a
    ciphertext copied elsewhere does not decrypt."""

    def __init__(self, key_id: str, key: bytes):
        self.key_id = key_id
        self._aead = AESGCM(key)

    def seal(self, value: str, context: str) -> bytes:
        return _seal(self._aead, value.encode(), context)

    def open(self, sealed: bytes | None, context: str) -> str | None:
        """The value, or None when there is none or it cannot be decrypted."""
        if not sealed:
            return None
        plain = _open(self._aead, sealed, context)
        return plain.decode() if plain is not None else None

    def seal_bytes(self, value: bytes, context: str) -> bytes:
        return _seal(self._aead, value, context)

    def open_bytes(self, sealed: bytes, context: str) -> bytes | None:
        return _open(self._aead, sealed, context)


class PiiKeys:
    """What LOYALTY_PII_KEY gives: wrapping of data keys and the keyed hash of buyer ids."""

    def __init__(self, master: bytes):
        self._kek = AESGCM(_derive(master, b"loyalty.membership/data-key-wrapping"))
        self._hash_key = _derive(master, b"loyalty.membership/buyer-id-hash")

    def buyer_hash(self, shop_id: str, buyer_id: str) -> str:
        """HMAC-SHA256 of the buyer id within its shop (hex): stable for lookups, unlinkable across
        shops, and of no use to anyone without the PII key."""
        message = shop_id.encode() + b"\x00" + buyer_id.encode()
        return hmac.new(self._hash_key, message, hashlib.sha256).hexdigest()

    def new_key(self, shop_id: str, key_id: str) -> tuple[DataKey, bytes]:
        """A fresh data key and its wrapped form (to store)."""
        key = AESGCM.generate_key(bit_length=256)
        return DataKey(key_id, key), _seal(self._kek, key, f"{shop_id}/{key_id}")

    def unwrap(self, shop_id: str, key_id: str, wrapped: bytes | None) -> DataKey | None:
        """The data key, or None when it was destroyed or does not unwrap."""
        if not wrapped:
            return None
        key = _open(self._kek, wrapped, f"{shop_id}/{key_id}")
        return DataKey(key_id, key) if key is not None else None
