"""Personal fields at rest: phones are encrypted with AES-GCM, bound to their shop and member
so a ciphertext copied onto another row does not decrypt."""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM


class PhoneVault:
    def __init__(self, key: bytes):
        self._aead = AESGCM(key)

    def seal(self, shop_id: str, member_id: str, phone: str) -> bytes:
        nonce = os.urandom(12)
        return nonce + self._aead.encrypt(nonce, phone.encode(), f"{shop_id}/{member_id}".encode())

    def open(self, shop_id: str, member_id: str, sealed: bytes) -> str | None:
        """The phone, or None when it cannot be decrypted (a rotated key, a tampered row)."""
        try:
            return self._aead.decrypt(sealed[:12], sealed[12:], f"{shop_id}/{member_id}".encode()).decode()
        except (InvalidTag, ValueError):
            return None
