"""The domain's IntEnums mirror the proto enums of loyalty.membership.v1 (names and numbers), and
every error reason of the service is declared in reasons.py as UPPER_SNAKE_CASE (AIP-193)."""

from __future__ import annotations

import ast
from enum import IntEnum
from pathlib import Path

import pytest
from google.protobuf.internal.enum_type_wrapper import EnumTypeWrapper
from loyalty.membership.v1 import membership_service_pb2 as pb

from services.membership import domain, reasons

MIRRORS = [
    (domain.QualificationMode, pb.QualificationMode),
    (domain.DowngradePolicy, pb.DowngradePolicy),
    (domain.MemberStatus, pb.MemberStatus),
    (domain.OrderStatus, pb.OrderStatus),
    (domain.TierChangeReason, pb.TierChangeReason),
    (domain.ProfileField, pb.ProfileField),
]
SERVICE_DIR = Path(domain.__file__).parent


def _snake(name: str) -> str:
    return "".join(f"_{c}" if c.isupper() and i else c for i, c in enumerate(name)).upper()


@pytest.mark.parametrize(("domain_enum", "proto_enum"), MIRRORS, ids=lambda e: getattr(e, "__name__", ""))
def test_domain_enum_mirrors_the_proto_enum(domain_enum: type[IntEnum], proto_enum: EnumTypeWrapper) -> None:
    prefix = _snake(domain_enum.__name__) + "_"
    wire = {name.removeprefix(prefix): number for name, number in proto_enum.items() if number != 0}
    assert {member.name: member.value for member in domain_enum} == wire


def test_the_crm_import_channel_is_the_protos() -> None:
    assert domain.JOIN_CHANNEL_CRM_IMPORT == pb.JOIN_CHANNEL_CRM_IMPORT


def test_every_reason_is_declared_once_as_upper_snake_case() -> None:
    declared = {name: value for name, value in vars(reasons).items() if name.isupper()}
    assert declared and all(name == value for name, value in declared.items())


def test_no_reason_is_written_as_a_literal_outside_reasons_py() -> None:
    literals = []
    for path in SERVICE_DIR.rglob("*.py"):
        if path.name == "reasons.py" or "migrations" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.keyword) and node.arg == "reason" and isinstance(node.value, ast.Constant):
                literals.append(f"{path.name}:{node.value.lineno}")
    assert literals == []
