"""Opaque page tokens (AIP-158): the last key seen, the list it belongs to, and the shop it was
minted for. A token is checked completely before any query sees it: its kind, its shop, the type
and range of every cursor value (int64 for integers, short NUL-free text for strings)."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Sequence
from typing import TypeVar

from services.kit.errors import InvalidArgument

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
MAX_TOKEN_CHARS = 1024
MAX_CURSOR_TEXT = 128
T = TypeVar("T")
INT64_MAX = 2**63 - 1


def page_size(requested: int) -> int:
    if requested < 0:
        raise InvalidArgument([("page_size", "must not be negative")])
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def encode_token(kind: str, shop: str, after: list) -> str:
    """A token for the page after `after` in the list `kind` of `shop`."""
    data: dict[str, object] = {"k": kind, "s": shop, "a": after}
    raw = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def next_page_token(kind: str, shop: str, found: Sequence[T], limit: int, cursor: Callable[[T], list]) -> str:
    """The token of the page after `found[:limit]`; empty when `found` (read with limit + 1)
    shows there is no further page."""
    return encode_token(kind, shop, cursor(found[limit - 1])) if len(found) > limit else ""


def _valid_cursor(value: object, item: type) -> bool:
    if isinstance(value, bool) or not isinstance(value, item):
        return False
    if isinstance(value, int):
        return 0 <= value <= INT64_MAX  # ids and offsets are never negative
    if isinstance(value, str):
        return len(value) <= MAX_CURSOR_TEXT and "\x00" not in value
    return False


def decode_token(kind: str, shop: str, token: str, item: type = str, size: int = 1) -> list | None:
    """The position a token stands for (a list of `item`), or None for the first page. A token of
    another list, another shop, or with a value out of range is INVALID_ARGUMENT on page_token."""
    if not token:
        return None
    try:
        if len(token) > MAX_TOKEN_CHARS:
            raise ValueError("too long")
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("not an object")
        after = data["a"]
        if data["k"] != kind or not isinstance(after, list) or len(after) != size:
            raise ValueError("another list")
        if data.get("s") != shop:
            raise ValueError("another shop")
        if not all(_valid_cursor(x, item) for x in after):
            raise ValueError("cursor out of range")
        return after
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        raise InvalidArgument([("page_token", "not a token this list returned")]) from exc
