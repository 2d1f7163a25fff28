"""Checks of the identifiers every service receives: shops, members, orders, request ids."""

from __future__ import annotations

import re
from collections.abc import Iterable

from google.protobuf.field_mask_pb2 import FieldMask

from services.kit.auth import SHOP_ID_PATTERN
from services.kit.errors import InvalidArgument, Violations

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


def validate_id_list(values: Iterable[str], field_name: str, v: Violations, *, maximum: int,
                     beyond: str = "send more requests") -> tuple[str, ...]:
    """1 to `maximum` valid ids (a bulk request's members): the violations go into `v`; returns
    them without repeats, in the order given."""
    values = tuple(values)
    if not values:
        v.add(field_name, "required")
    elif len(values) > maximum:
        v.add(field_name, f"at most {maximum} per request ({beyond})")
    else:
        for i, value in enumerate(values):
            validate_id(value, f"{field_name}[{i}]", v)
    return tuple(dict.fromkeys(values))


def check_ids(shop_id: str, **ids: str) -> Violations:
    """The shop's and the named ids' violations so far: a command's checks start here."""
    v = Violations()
    validate_shop_id(shop_id, v)
    for name, value in ids.items():
        validate_id(value, name, v)
    return v


def mask_paths(mask: FieldMask, allowed: Iterable[str], *, full: Iterable[str] | None = None,
               empty_is_full: bool = False) -> list[str]:
    """The paths of an AIP-134 update mask, in every service alike: "*" names every field (`full`,
    by default all of `allowed`); an empty mask does too where `empty_is_full` (calls that were
    full replacements before they took a mask), else it is refused; an unknown path is refused."""
    allowed = list(allowed)
    paths = list(mask.paths)
    if "*" in paths or (not paths and empty_is_full):
        return list(full if full is not None else allowed)
    if not paths:
        raise InvalidArgument([("update_mask", "name the fields to change (or \"*\" for all): " + ", ".join(allowed))])
    for path in paths:
        if path not in allowed:
            raise InvalidArgument([("update_mask", f"unknown path {path!r}; use " + ", ".join(allowed))])
    return paths


def require_shop(shop_id: str) -> None:
    """INVALID_ARGUMENT unless `shop_id` is a well-formed shop id."""
    v = Violations()
    validate_shop_id(shop_id, v)
    v.raise_if_any()


def require_id(value: str, field_name: str) -> None:
    v = Violations()
    validate_id(value, field_name, v)
    v.raise_if_any()
