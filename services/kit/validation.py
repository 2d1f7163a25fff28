"""Checks of the identifiers every service receives: shops, members, orders, request ids."""

from __future__ import annotations

import re

from services.kit.auth import SHOP_ID_PATTERN
from services.kit.errors import Violations

_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


def validate_shop_id(shop_id: str, v: Violations) -> None:
    if not shop_id:
        v.add("shop_id", "required")
    elif not SHOP_ID_PATTERN.match(shop_id):
        v.add("shop_id", "1-64 characters of A-Z, a-z, 0-9, _ or -")


def validate_id(value: str, field_name: str, v: Violations, *, required: bool = True) -> None:
    if not value:
        if required:
            v.add(field_name, "required")
    elif not _ID.match(value):
        v.add(field_name, "1-64 characters of A-Z, a-z, 0-9, _ . : or -")


def check_ids(shop_id: str, **ids: str) -> Violations:
    """The shop's and the named ids' violations so far: a command's checks start here."""
    v = Violations()
    validate_shop_id(shop_id, v)
    for name, value in ids.items():
        validate_id(value, name, v)
    return v


def require_shop(shop_id: str) -> None:
    """INVALID_ARGUMENT unless `shop_id` is a well-formed shop id."""
    v = Violations()
    validate_shop_id(shop_id, v)
    v.raise_if_any()


def require_id(value: str, field_name: str) -> None:
    v = Violations()
    validate_id(value, field_name, v)
    v.raise_if_any()
