"""Domain errors. Plain Python: the gRPC status mapping lives in the interceptor."""

from __future__ import annotations

import re
from collections.abc import Iterable
from enum import IntEnum
from typing import TypeVar

from services.kit import reasons

E = TypeVar("E", bound=IntEnum)


class ServiceError(Exception):
    """An expected failure the caller can act on; `reason` is UPPER_SNAKE_CASE (AIP-193)."""

    code = "UNKNOWN"

    def __init__(self, message: str, *, reason: str, metadata: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.reason = reason
        self.metadata = {k: str(v) for k, v in (metadata or {}).items()}


class InvalidArgument(ServiceError):
    """Bad fields, each a (field path, description) violation. Unless a reason is given, it names
    the first violation's field (AIP-193: a caller tells "no shop" from "bad page token" without
    parsing text): SHOP_ID_REQUIRED for a missing field, INVALID_PROFILE_PHONE otherwise."""

    code = "INVALID_ARGUMENT"

    def __init__(self, violations: Iterable[tuple[str, str]], *, reason: str | None = None):
        self.violations = list(violations)
        message = "; ".join(f"{field}: {description}" for field, description in self.violations)
        super().__init__(message or "invalid argument", reason=reason or reason_for(self.violations))


def reason_for(violations: list[tuple[str, str]]) -> str:
    """The specific reason of a set of violations, from the first: <FIELD>_REQUIRED or INVALID_<FIELD>
    (indices dropped, at most 63 characters), or INVALID_ARGUMENT when there is none."""
    if not violations:
        return reasons.INVALID_ARGUMENT
    field, description = violations[0]
    name = "_".join(re.findall(r"[A-Za-z0-9]+", re.sub(r"\[\d*\]", "", field))).upper()
    if not name or not name[0].isalpha():
        return reasons.INVALID_ARGUMENT
    reason = f"{name}_REQUIRED" if description == "required" else f"INVALID_{name}"
    return reason[:63].rstrip("_")


class NotFound(ServiceError):
    code = "NOT_FOUND"


class AlreadyExists(ServiceError):
    code = "ALREADY_EXISTS"


class FailedPrecondition(ServiceError):
    """The system is not in a state for this request (insufficient points, threshold not met)."""

    code = "FAILED_PRECONDITION"

    def __init__(self, message: str, *, reason: str, subject: str = "", metadata: dict[str, str] | None = None):
        super().__init__(message, reason=reason, metadata=metadata)
        self.subject = subject


class PermissionDenied(ServiceError):
    code = "PERMISSION_DENIED"


class Unauthenticated(ServiceError):
    code = "UNAUTHENTICATED"


class ResourceExhausted(ServiceError):
    code = "RESOURCE_EXHAUSTED"


class Unavailable(ServiceError):
    """A dependency (the database) cannot be reached or the server sheds load: retry after
    `retry_after` seconds (sent as a google.rpc RetryInfo)."""

    code = "UNAVAILABLE"

    def __init__(self, message: str, *, reason: str, retry_after: float = 1.0,
                 metadata: dict[str, str] | None = None):
        super().__init__(message, reason=reason, metadata=metadata)
        self.retry_after = retry_after


class Violations:
    """Collects field violations so a request reports all of its problems at once."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []

    def add(self, field: str, description: str) -> None:
        self.items.append((field, description))

    def check(self, ok: bool, field: str, description: str) -> bool:
        if not ok:
            self.add(field, description)
        return ok

    def raise_if_any(self) -> None:
        if self.items:
            raise InvalidArgument(self.items)


def enum_value(enum: type[E], value: int, field: str, default: E | None = None) -> E:
    """A wire enum as the domain's IntEnum: 0 (unspecified) gives `default` or is refused."""
    if value == 0 and default is not None:
        return default
    try:
        return enum(value)
    except ValueError as exc:
        raise InvalidArgument([(field, "required" if value == 0 else f"unknown value {value}")]) from exc
