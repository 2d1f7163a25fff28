"""A campaign or an issuance targets at most 5 tags (标签): more is refused with TOO_MANY_TAGS, each
id must be well formed, and the violations found before are kept."""

from __future__ import annotations

import pytest

from services.kit.errors import InvalidArgument, Violations
from services.segments.tags import MAX_TARGET_TAGS, check_target_tags


def test_up_to_five_well_formed_tags_pass() -> None:
    v = Violations()
    check_target_tags([f"tg_{i}" for i in range(MAX_TARGET_TAGS)], v, "tag_ids")
    check_target_tags(["tg_1"] * 8, v, "tag_ids")  # the same tag named twice is one tag
    assert v.items == []


def test_a_sixth_tag_is_refused_with_its_reason() -> None:
    v = Violations()
    v.add("name", "required")
    with pytest.raises(InvalidArgument) as caught:
        check_target_tags([f"tg_{i}" for i in range(MAX_TARGET_TAGS + 1)], v, "campaign.tag_ids")
    assert caught.value.reason == "TOO_MANY_TAGS"
    assert [field for field, _ in caught.value.violations] == ["name", "campaign.tag_ids"]


def test_a_malformed_tag_id_is_a_violation_of_its_index() -> None:
    v = Violations()
    check_target_tags(["tg_1", "", "bad id"], v, "tag_ids")
    assert [field for field, _ in v.items] == ["tag_ids[1]", "tag_ids[2]"]
