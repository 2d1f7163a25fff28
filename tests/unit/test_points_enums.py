"""The points domain's IntEnums mirror the proto enums of loyalty.points.v1, names and numbers."""

from __future__ import annotations

import re
from enum import IntEnum

import pytest
from loyalty.points.v1 import points_service_pb2 as pb

from services.points import domain

PROTO_ENUMS = sorted(pb.DESCRIPTOR.enum_types_by_name)


@pytest.mark.parametrize("name", PROTO_ENUMS)
def test_each_proto_enum_has_a_domain_twin_with_the_same_names_and_numbers(name: str) -> None:
    twin = getattr(domain, name, None)
    assert isinstance(twin, type) and issubclass(twin, IntEnum), f"services.points.domain.{name} is missing"
    prefix = re.sub(r"(?<!^)(?=[A-Z])", "_", name).upper() + "_"
    wire = {value.name.removeprefix(prefix): value.number
            for value in pb.DESCRIPTOR.enum_types_by_name[name].values if value.number != 0}
    assert {member.name: member.value for member in twin} == wire

