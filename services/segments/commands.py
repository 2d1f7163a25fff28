"""What operators ask of segments and predefined groups, each checking its fields when made (every
violation at once, with its field path). A rule arrives as its message and is read into a
rules.Rule here, so a command that exists holds a valid rule."""

from __future__ import annotations

from dataclasses import dataclass, field

from loyalty.segments.v1 import rules_pb2

from services.kit.errors import Violations
from services.kit.validation import check_ids, validate_id
from services.segments import groups, rules

MAX_NAME = 60
MAX_DESCRIPTION = 500
MAX_SAMPLE = 100
DEFAULT_SAMPLE = 10
UPDATE_PATHS = ("name", "description", "rule")


def _name(name: str, path: str, v: Violations) -> None:
    if not name.strip():
        v.add(path, "required")
    elif len(name) > MAX_NAME:
        v.add(path, f"at most {MAX_NAME} characters")


def _description(description: str, path: str, v: Violations) -> None:
    v.check(len(description) <= MAX_DESCRIPTION, path, f"at most {MAX_DESCRIPTION} characters")


def _rule(message: rules_pb2.Rule, present: bool, path: str, v: Violations) -> rules.Rule | None:
    if not present:
        v.add(path, "required")
        return None
    return rules.from_proto(message, path, v)


@dataclass(frozen=True)
class PreviewSegment:
    shop_id: str
    message: rules_pb2.Rule = field(repr=False)
    has_rule: bool
    sample_size: int
    rule: rules.Rule = field(init=False)

    def __post_init__(self) -> None:
        v = check_ids(self.shop_id)
        rule = _rule(self.message, self.has_rule, "rule", v)
        v.check(0 <= self.sample_size <= MAX_SAMPLE, "sample_size", f"0-{MAX_SAMPLE} (0: {DEFAULT_SAMPLE})")
        v.raise_if_any()
        object.__setattr__(self, "rule", rule)

    @property
    def sample(self) -> int:
        return self.sample_size or DEFAULT_SAMPLE


@dataclass(frozen=True)
class CreateSegment:
    shop_id: str
    name: str
    description: str
    message: rules_pb2.Rule = field(repr=False)
    has_rule: bool
    rule: rules.Rule = field(init=False)

    def __post_init__(self) -> None:
        v = check_ids(self.shop_id)
        _name(self.name, "segment.name", v)
        _description(self.description, "segment.description", v)
        rule = _rule(self.message, self.has_rule, "segment.rule", v)
        v.raise_if_any()
        object.__setattr__(self, "rule", rule)


@dataclass(frozen=True)
class UpdateSegment:
    """Changes the masked fields (UPDATE_PATHS) of a saved segment."""

    shop_id: str
    segment_id: str
    paths: tuple[str, ...]
    name: str
    description: str
    message: rules_pb2.Rule = field(repr=False)
    has_rule: bool
    rule: rules.Rule | None = field(init=False)

    def __post_init__(self) -> None:
        v = check_ids(self.shop_id, **{"segment.segment_id": self.segment_id})
        if "name" in self.paths:
            _name(self.name, "segment.name", v)
        if "description" in self.paths:
            _description(self.description, "segment.description", v)
        rule = _rule(self.message, self.has_rule, "segment.rule", v) if "rule" in self.paths else None
        v.raise_if_any()
        object.__setattr__(self, "rule", rule)


@dataclass(frozen=True)
class SegmentQuery:
    """A segment named by id (saved, or `predefined.<group>`): get, delete, count, list members."""

    shop_id: str
    segment_id: str

    def __post_init__(self) -> None:
        check_ids(self.shop_id, segment_id=self.segment_id).raise_if_any()


@dataclass(frozen=True)
class IsMember:
    shop_id: str
    segment_id: str
    member_id: str

    def __post_init__(self) -> None:
        check_ids(self.shop_id, segment_id=self.segment_id, member_id=self.member_id).raise_if_any()


@dataclass(frozen=True)
class ListSegments:
    shop_id: str
    limit: int
    after: tuple[str, str] | None  # (created_at ISO or "" for a predefined group, segment id)

    def __post_init__(self) -> None:
        v = check_ids(self.shop_id)
        if self.after is not None:
            validate_id(self.after[1], "page_token", v)
        v.raise_if_any()


@dataclass(frozen=True)
class ShopQuery:
    shop_id: str

    def __post_init__(self) -> None:
        check_ids(self.shop_id).raise_if_any()


@dataclass(frozen=True)
class UpdateGroupSettings:
    """Sets the masked settings; each in its range (the result's consistency is checked against the
    stored settings)."""

    shop_id: str
    changes: dict[str, int]

    def __post_init__(self) -> None:
        v = check_ids(self.shop_id)
        for name, value in self.changes.items():
            problem = groups.field_violation(name, value)
            if problem:
                v.add(f"settings.{name}", problem)
        v.raise_if_any()
