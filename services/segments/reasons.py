"""Every error reason the segments service gives (AIP-193 ErrorInfo.reason), in one place."""

from __future__ import annotations

MEMBER_NOT_FOUND = "MEMBER_NOT_FOUND"  # segments never heard of the member (no MemberJoined yet)
TAG_NOT_FOUND = "TAG_NOT_FOUND"
TAG_NAME_TAKEN = "TAG_NAME_TAKEN"
TAG_IS_RULE_ASSIGNED = "TAG_IS_RULE_ASSIGNED"  # its rule decides who carries it: no hand tagging or merging
TAG_HAS_NO_RULE = "TAG_HAS_NO_RULE"  # ApplyTagRule on a manual tag
SEGMENT_NOT_FOUND = "SEGMENT_NOT_FOUND"
SEGMENT_NAME_TAKEN = "SEGMENT_NAME_TAKEN"
PREDEFINED_READ_ONLY = "PREDEFINED_READ_ONLY"  # a predefined group is changed through its settings
TOO_MANY_TAGS = "TOO_MANY_TAGS"  # a campaign or issuance targets at most 5 tags
