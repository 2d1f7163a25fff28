"""Verified keys are remembered: the answer stays the same on every call, a key that failed is
refused every time, and the memo stays bounded."""

from __future__ import annotations

import pytest

from services.kit.auth import ADMIN, KeyRing, Principal
from services.kit.errors import Unauthenticated

ADMIN_KEY = "admin-key"


def test_a_remembered_key_gives_the_same_principal_on_every_call() -> None:
    keyring = KeyRing(ADMIN_KEY, b"secret")
    key_id, key = keyring.issue("shop-a")
    assert [keyring.authenticate(key) for _ in range(3)] == [Principal("shop-a", key_id)] * 3
    assert keyring.authenticate(ADMIN_KEY) is ADMIN


def test_a_forged_key_is_refused_every_time_even_next_to_a_remembered_one() -> None:
    keyring = KeyRing(ADMIN_KEY, b"secret")
    _, key = keyring.issue("shop-a")
    keyring.authenticate(key)
    forged = key[:-2] + ("AA" if not key.endswith("AA") else "BB")
    for _ in range(2):
        with pytest.raises(Unauthenticated):
            keyring.authenticate(forged)


def test_the_memo_is_bounded_and_keys_still_verify_past_its_bound() -> None:
    keyring = KeyRing(ADMIN_KEY, b"secret", remembered=4)
    keys = [keyring.issue(f"shop-{i}") for i in range(10)]
    for key_id, key in keys * 2:
        assert keyring.authenticate(key).key_id == key_id
    assert len(keyring._verified) <= 4
