"""Opaque page tokens (AIP-158): the last key seen. A forged token can only move within the
caller's own shop, because every list query filters on shop_id."""

from __future__ import annotations

import base64
import json

from services.kit.errors import InvalidArgument

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500


def page_size(requested: int) -> int:
    if requested < 0:
        raise InvalidArgument([("page_size", "must not be negative")])
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def encode_token(kind: str, after: list) -> str:
    raw = json.dumps({"k": kind, "a": after}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(kind: str, token: str, item: type = str) -> list | None:
    """The position a token stands for (a list of `item`), or None for the first page."""
    if not token:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = json.loads(raw)
        after = data["a"]
        if data["k"] != kind or not isinstance(after, list) or not after:
            raise ValueError
        if not all(isinstance(x, item) and not isinstance(x, bool) for x in after):
            raise ValueError
        return after
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        raise InvalidArgument([("page_token", "not a token this list returned")]) from exc
