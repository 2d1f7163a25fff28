"""Every RPC of every service, sent what a careless or hostile caller sends — an empty request, one
naming only its shop (every other field at its default), or one whose every other text is 3,000
characters and every number -1 or the largest int64 — answers OK or a clear status with a reason,
never INTERNAL or UNKNOWN (a handler that trips over a value is a bug)."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import FieldDescriptor, MethodDescriptor

from tests.conftest import ServiceUnderTest, Shop, failure_of
from tests.integration.test_decoding import methods

BUGS = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
SIGNED = {FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_SINT32,
          FieldDescriptor.TYPE_SINT64, FieldDescriptor.TYPE_SFIXED32, FieldDescriptor.TYPE_SFIXED64}
INTEGERS = SIGNED | {FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_UINT64}
NARROW = {FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_SINT32, FieldDescriptor.TYPE_SFIXED32,
          FieldDescriptor.TYPE_UINT32}


def call(channel: grpc.Channel, method: MethodDescriptor, request: object, key: str) -> grpc.RpcError | None:
    path = f"/{method.containing_service.full_name}/{method.name}"
    stub = channel.unary_stream(path) if method.server_streaming else channel.unary_unary(path)
    metadata = [("authorization", f"Bearer {key}")]
    try:
        answer = stub(request.SerializeToString(), metadata=metadata, timeout=20)
        if method.server_streaming:
            list(answer)
    except grpc.RpcError as exc:
        return exc
    return None


def requests_for(method: MethodDescriptor, shop_id: str) -> dict[str, object]:
    message = message_factory.GetMessageClass(method.input_type)
    shaped = {"empty": message()}
    if "shop_id" in method.input_type.fields_by_name:
        shaped["shop only"] = message(shop_id=shop_id)
        for name, number in (("negative", -1), ("huge", 2**63 - 1)):
            hostile = message(shop_id=shop_id)
            for field in method.input_type.fields:
                if field.name == "shop_id" or field.is_repeated:
                    continue
                if field.type == FieldDescriptor.TYPE_STRING:
                    setattr(hostile, field.name, "x" * 3000)
                elif field.type in INTEGERS:
                    value = min(number, 2**31 - 1) if field.type in NARROW else number
                    setattr(hostile, field.name, value if field.type in SIGNED else abs(value))
            shaped[name] = hostile
    return shaped


@pytest.mark.parametrize(("service", "method"), methods(), ids=lambda v: v if isinstance(v, str) else v.name)
def test_a_minimal_request_is_answered_clearly(suite: dict[str, ServiceUnderTest], shop: Shop, service: str,
                                               method: MethodDescriptor) -> None:
    for shape, request in requests_for(method, shop.shop_id).items():
        error = call(suite[service].channel, method, request, shop.key)
        if error is None:
            continue
        assert error.code() not in BUGS, f"{method.full_name} ({shape}): {error.code()} {error.details()}"
        assert failure_of(error).reason, f"{method.full_name} ({shape}) answered {error.code()} without a reason"
