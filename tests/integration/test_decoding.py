"""Requests whose bytes are not their message — invalid UTF-8 in a string field, a stray wire
type, a truncated field — are INVALID_ARGUMENT with a BadRequest on every RPC of every service,
never grpcio's INTERNAL 'Exception deserializing request!'."""

from __future__ import annotations

import importlib

import grpc
import pytest
from google.protobuf.descriptor import FieldDescriptor, MethodDescriptor

from services import registry
from tests.conftest import ADMIN_KEY, ServiceUnderTest, failure_of

# Every service of the registry, through its contract (loyalty.<name>.v1.<name>_service).
SERVICES = {entry.name: importlib.import_module(f"loyalty.{entry.name}.v1.{entry.name}_service_pb2")
            for entry in registry.SERVICES}


def methods() -> list[tuple[str, MethodDescriptor]]:
    return [(name, method) for name, module in SERVICES.items()
            for service in module.DESCRIPTOR.services_by_name.values() for method in service.methods]


def undecodable_payloads(method: MethodDescriptor) -> dict[str, bytes]:
    payloads = {
        "truncated": b"\x0a\x05ab",  # field 1 announces 5 bytes and brings 2
        "stray end-group wire type": b"\x0c",  # field 1, wire type 4 with no group open
    }
    strings = [f for f in method.input_type.fields if f.type == FieldDescriptor.TYPE_STRING]
    if strings:
        payloads[f"invalid UTF-8 in {strings[0].name}"] = varint(strings[0].number << 3 | 2) + b"\x02\xff\xfe"
    return payloads


def varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    return bytes([*out, value])


def send(channel: grpc.Channel, method: MethodDescriptor, payload: bytes, key: str | None) -> grpc.RpcError:
    path = f"/{method.containing_service.full_name}/{method.name}"
    metadata = [("authorization", f"Bearer {key}")] if key else []
    try:
        if method.server_streaming:
            list(channel.unary_stream(path)(payload, metadata=metadata, timeout=10))
        else:
            channel.unary_unary(path)(payload, metadata=metadata, timeout=10)
    except grpc.RpcError as exc:
        return exc
    raise AssertionError(f"{path} accepted an undecodable request")


@pytest.mark.parametrize(("service", "method"), methods(), ids=lambda v: v if isinstance(v, str) else v.name)
def test_an_undecodable_request_is_invalid_argument(
    suite: dict[str, ServiceUnderTest], service: str, method: MethodDescriptor
) -> None:
    channel = suite[service].channel
    for what, payload in undecodable_payloads(method).items():
        failure = failure_of(send(channel, method, payload, ADMIN_KEY))
        assert (failure.code, failure.reason, failure.domain) == (
            grpc.StatusCode.INVALID_ARGUMENT, "MALFORMED_REQUEST", f"{service}.loyalty"), what
        assert "request" in failure.fields, what


def test_an_undecodable_request_without_a_key_is_unauthenticated(suite: dict[str, ServiceUnderTest]) -> None:
    method = SERVICES["membership"].DESCRIPTOR.services_by_name["MembershipService"].methods[0]
    assert send(suite["membership"].channel, method, b"\x0c", None).code() == grpc.StatusCode.UNAUTHENTICATED
