"""What operators ask of tags (标签), as plain data the servicer builds from requests. Constructing
one checks its ids and fields, so every handler receives a well-formed request."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from loyalty.segments.v1 import rules_pb2

from services.kit.errors import Violations
from services.kit.validation import check_ids, validate_id, validate_id_list
from services.segments import rules

MAX_NAME = 30
MAX_DESCRIPTION = 200
# One request's tagging stays one short transaction; more members go in more requests (or a segment).
MAX_TAG_MEMBERS = 1_000
UPDATE_PATHS = ("name", "description", "rule")


def check_name(name: str, field: str, v: Violations) -> None:
    v.check(name.strip() != "" and len(name) <= MAX_NAME, field, f"1 to {MAX_NAME} characters")


def check_description(description: str, field: str, v: Violations) -> None:
    v.check(len(description) <= MAX_DESCRIPTION, field, f"at most {MAX_DESCRIPTION} characters")


def read_rule(message: rules_pb2.Rule, v: Violations) -> rules.Rule | None:
    """A rule-assigned tag's rule (validated like a segment's, under tag.rule); an empty rule
    makes a manual tag."""
    if message.WhichOneof("node") is None:
        return None
    return rules.from_proto(message, "tag.rule", v)


@dataclass(frozen=True)
class CreateTag:
    """A manual tag, or a rule-assigned one when `message` holds a rule."""

    shop_id: str
    name: str
    description: str
    message: rules_pb2.Rule = field(default_factory=rules_pb2.Rule, repr=False)
    rule: rules.Rule | None = field(init=False)

    def __post_init__(self) -> None:
        v = check_ids(self.shop_id)
        check_name(self.name, "tag.name", v)
        check_description(self.description, "tag.description", v)
        rule = read_rule(self.message, v)
        v.raise_if_any()
        object.__setattr__(self, "rule", rule)


@dataclass(frozen=True)
class TagQuery:
    """One tag of the shop (GetTag)."""

    shop_id: str
    tag_id: str

    def __post_init__(self) -> None:
        check_ids(self.shop_id, tag_id=self.tag_id).raise_if_any()


@dataclass(frozen=True)
class UpdateTag:
    """Changes the masked fields (UPDATE_PATHS) to `changes`' values; with `set_rule` the rule too
    (an empty one makes the tag manual again)."""

    shop_id: str
    tag_id: str
    changes: dict[str, str]
    set_rule: bool = False
    message: rules_pb2.Rule = field(default_factory=rules_pb2.Rule, repr=False)
    rule: rules.Rule | None = field(init=False)

    def __post_init__(self) -> None:
        v = check_ids(self.shop_id, **{"tag.tag_id": self.tag_id})
        if "name" in self.changes:
            check_name(self.changes["name"], "tag.name", v)
        if "description" in self.changes:
            check_description(self.changes["description"], "tag.description", v)
        rule = read_rule(self.message, v) if self.set_rule else None
        v.raise_if_any()
        object.__setattr__(self, "rule", rule)


@dataclass(frozen=True)
class DeleteTag:
    shop_id: str
    tag_id: str

    def __post_init__(self) -> None:
        check_ids(self.shop_id, tag_id=self.tag_id).raise_if_any()


@dataclass(frozen=True)
class ListTags:
    """One page of the shop's tags by name; `after` is the (name, tag_id) the previous page ended with."""

    shop_id: str
    limit: int
    after: tuple[str, str] | None = None

    def __post_init__(self) -> None:
        check_ids(self.shop_id).raise_if_any()


@dataclass(frozen=True)
class ChangeMembers:
    """Tags (or untags) either the listed members (1-1,000, deduplicated in the caller's order)
    or every member of a saved or predefined segment now: exactly one of the two."""

    shop_id: str
    tag_id: str
    member_ids: tuple[str, ...]
    segment_id: str
    now: datetime

    def __post_init__(self) -> None:
        v = check_ids(self.shop_id, tag_id=self.tag_id)
        if self.member_ids and self.segment_id:
            v.add("segment_id", "give either member_ids or segment_id, not both")
        elif self.segment_id:
            validate_id(self.segment_id, "segment_id", v)
        else:  # 1 to 1,000 members, or a segment_id instead
            members = validate_id_list(self.member_ids, "member_ids", v, maximum=MAX_TAG_MEMBERS,
                                       beyond="send more requests, or a segment_id")
            object.__setattr__(self, "member_ids", members)
        v.raise_if_any()


@dataclass(frozen=True)
class MergeTags:
    """Every member of the source carries the target afterwards; the source is deleted."""

    shop_id: str
    source_tag_id: str
    target_tag_id: str

    def __post_init__(self) -> None:
        v = check_ids(self.shop_id, source_tag_id=self.source_tag_id, target_tag_id=self.target_tag_id)
        if self.source_tag_id and self.source_tag_id == self.target_tag_id:
            v.add("target_tag_id", "must differ from source_tag_id")
        v.raise_if_any()


@dataclass(frozen=True)
class MemberTagsQuery:
    shop_id: str
    member_id: str

    def __post_init__(self) -> None:
        check_ids(self.shop_id, member_id=self.member_id).raise_if_any()


@dataclass(frozen=True)
class ApplyTagRule:
    """Re-evaluates a rule-assigned tag now."""

    shop_id: str
    tag_id: str

    def __post_init__(self) -> None:
        check_ids(self.shop_id, tag_id=self.tag_id).raise_if_any()
