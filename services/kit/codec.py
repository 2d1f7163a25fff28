"""Typed cache values: a dataclass as compact bytes and back, instead of hand-built `a|b|c`
strings. The bytes are a JSON array of the field values in declaration order, led by a short
fingerprint of the class's shape, so a value written by another version of the class (during a
rolling deploy) reads as a miss rather than as wrong data.

    balances = TypedCache(cache, DataclassCodec(BalanceView))
    view = balances.get(key)            # a BalanceView, or None
    balances.add(key, view, ttl)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import types
import typing
from collections.abc import Callable
from datetime import date, datetime
from enum import Enum
from typing import Any, Generic, TypeVar

from services.kit.cache import Cache

T = TypeVar("T")
log = logging.getLogger("loyalty.cache")


class CodecError(ValueError):
    """Bytes that are not a value of this codec's class (another version, or corrupt)."""


def _same(value: Any) -> Any:
    return value


def _converters(hint: Any) -> tuple[Callable[[Any], Any], Callable[[Any], Any]]:
    """(to JSON, from JSON) for one field type; `_same` for types JSON keeps as they are."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        (inner,) = [a for a in args if a is not type(None)]
        dump, load = _converters(inner)
        return (lambda v: None if v is None else dump(v)), (lambda v: None if v is None else load(v))
    if origin in (list, tuple, frozenset, set):
        item = args[0] if args else Any
        dump, load = _converters(item)
        return (lambda v: [dump(x) for x in v]), (lambda v: origin(load(x) for x in v))
    if hint is datetime:
        return datetime.isoformat, datetime.fromisoformat
    if hint is date:
        return date.isoformat, date.fromisoformat
    if isinstance(hint, type) and issubclass(hint, Enum):
        return (lambda v: v.value), hint
    if dataclasses.is_dataclass(hint):
        codec = DataclassCodec(hint)
        return codec.to_list, codec.from_list
    if hint in (int, str, float, bool, Any):
        return _same, _same
    raise TypeError(f"no cache encoding for fields of type {hint!r}")


class DataclassCodec(Generic[T]):
    """A dataclass (fields of int, str, float, bool, datetime, date, Enum, nested dataclasses,
    lists/tuples of those, or Optional of any) as compact bytes and back. Values of a frozen
    class are decoded once per distinct bytes and shared (`decoded` of them are remembered):
    a near-cache hands out the same bytes again and again."""

    def __init__(self, cls: type[T], *, decoded: int = 10_000):
        if not dataclasses.is_dataclass(cls):
            raise TypeError(f"{cls!r} is not a dataclass")
        self.cls = cls
        hints = typing.get_type_hints(cls)
        fields = [f for f in dataclasses.fields(cls) if f.init]
        self._names = [f.name for f in fields]
        self._convert = [_converters(hints[f.name]) for f in fields]
        # Decoding is on the hot path of every cached read: convert only the fields JSON does not
        # keep as they are, and pass the values by position where the class allows it.
        self._loads = [(i, load) for i, (_, load) in enumerate(self._convert) if load is not _same]
        self._positional = not any(f.kw_only for f in fields)
        self._shared = cls.__dataclass_params__.frozen and not any(
            typing.get_origin(hints[f.name]) in (list, set) for f in fields)
        self._decoded: dict[bytes, T] = {}
        self._max_decoded = decoded
        shape = f"{cls.__qualname__}:" + ",".join(f"{f.name}={hints[f.name]!r}" for f in fields)
        self.fingerprint = hashlib.sha256(shape.encode()).hexdigest()[:8]

    def to_list(self, value: T) -> list[Any]:
        return [dump(getattr(value, name)) for name, (dump, _) in zip(self._names, self._convert, strict=True)]

    def from_list(self, values: list[Any]) -> T:
        if not isinstance(values, list) or len(values) != len(self._names):
            raise CodecError(f"not a {self.cls.__qualname__}")
        if self._loads:
            values = list(values)
            for i, load in self._loads:
                values[i] = load(values[i])
        if self._positional:
            return self.cls(*values)
        return self.cls(**dict(zip(self._names, values, strict=True)))

    def encode(self, value: T) -> bytes:
        return json.dumps([self.fingerprint, *self.to_list(value)], separators=(",", ":"),
                          ensure_ascii=False).encode()

    def decode(self, raw: bytes) -> T:
        """The value, or CodecError for bytes of another shape."""
        value = self._decoded.get(raw)
        if value is not None:
            return value
        value = self._decode(raw)
        if self._shared:
            if len(self._decoded) >= self._max_decoded:
                self._decoded.clear()
            self._decoded[raw] = value
        return value

    def _decode(self, raw: bytes) -> T:
        try:
            data = json.loads(raw)
            if type(data) is not list or not data or data[0] != self.fingerprint:
                raise CodecError(f"not a {self.cls.__qualname__} of this version")
            return self.from_list(data[1:])
        except (ValueError, TypeError) as exc:
            raise CodecError(str(exc)) from exc


class TypedCache(Generic[T]):
    """A Cache holding values of one dataclass: get() gives the value or None (a value of
    another shape is a miss); add() fills where nothing is, like Cache.add."""

    def __init__(self, cache: Cache, codec: DataclassCodec[T]):
        self.cache, self.codec = cache, codec

    def get(self, key: str) -> T | None:
        raw = self.cache.get(key)
        if raw is None:
            return None
        try:
            return self.codec.decode(raw)
        except CodecError:
            # Left for its TTL (deleting it could lift a writer's fence); debug, as every read of
            # it comes here during a rolling deploy.
            log.debug("cache value of another shape at %s; reading through", key)
            return None

    def add(self, key: str, value: T, ttl: float) -> None:
        self.cache.add(key, self.codec.encode(value), ttl)
