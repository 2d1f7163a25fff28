"""A small grpcurl for machines without it: the same command lines, answered through server
reflection. Supports -plaintext, -H, -d, -max-time, `list` and calling a method.

    python -m tools.grpcurl -plaintext -H 'authorization: Bearer KEY' -d '{"shop_id":"demo-shop"}' \\
        localhost:50051 loyalty.membership.v1.MembershipService/GetProgram
"""

from __future__ import annotations

import json
import shlex
import sys

import grpc
from google.protobuf import descriptor_pool, json_format, message_factory
from google.rpc import error_details_pb2  # noqa: F401 - registers the detail types for printing
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from grpc_status import rpc_status


class GrpcurlError(Exception):
    def __init__(self, code: grpc.StatusCode, message: str, details: str = ""):
        super().__init__(f"ERROR:\n  Code: {code.name}\n  Message: {message}{details}")
        self.code = code


def run(argv: list[str]) -> str:
    """Runs one grpcurl command line; returns what grpcurl would print."""
    headers: list[tuple[str, str]] = []
    data = "{}"
    timeout = 10.0
    rest: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("-plaintext", "--plaintext"):
            pass
        elif arg in ("-H", "-rpc-header", "-reflect-header"):
            key, _, value = argv[i + 1].partition(":")
            headers.append((key.strip().lower(), value.strip()))
            i += 1
        elif arg == "-d":
            data = argv[i + 1]
            i += 1
        elif arg in ("-max-time", "-connect-timeout"):
            timeout = float(argv[i + 1])
            i += 1
        elif arg.startswith("-"):
            raise SystemExit(f"unsupported flag {arg}")
        else:
            rest.append(arg)
        i += 1
    address, *command = rest
    with grpc.insecure_channel(address) as channel:
        reflection_db = ProtoReflectionDescriptorDatabase(channel)
        if command == ["list"]:
            return "\n".join(sorted(reflection_db.get_services()))
        service_name, _, method_name = command[0].replace("/", ".").rpartition(".")
        pool = descriptor_pool.DescriptorPool(reflection_db)
        method = pool.FindServiceByName(service_name).FindMethodByName(method_name)
        request_cls = message_factory.GetMessageClass(method.input_type)
        response_cls = message_factory.GetMessageClass(method.output_type)
        request = json_format.Parse(data, request_cls())
        path = f"/{service_name}/{method_name}"
        try:
            if method.server_streaming:
                call = channel.unary_stream(path, request_serializer=request_cls.SerializeToString,
                                            response_deserializer=response_cls.FromString)
                responses = list(call(request, metadata=headers, timeout=timeout))
            else:
                call = channel.unary_unary(path, request_serializer=request_cls.SerializeToString,
                                           response_deserializer=response_cls.FromString)
                responses = [call(request, metadata=headers, timeout=timeout)]
        except grpc.RpcError as exc:
            status = rpc_status.from_call(exc)
            details = ""
            if status is not None and status.details:
                details = "\n  Details:\n" + "\n".join(
                    "  " + json.dumps(json_format.MessageToDict(d), ensure_ascii=False) for d in status.details)
            raise GrpcurlError(exc.code(), exc.details(), details) from exc
        return "\n".join(
            json_format.MessageToJson(r, indent=2, ensure_ascii=False) for r in responses
        )


def main() -> None:
    argv = sys.argv[1:]
    if len(argv) == 1 and " " in argv[0]:  # a whole command line in one string
        argv = shlex.split(argv[0])
    try:
        print(run(argv))
    except GrpcurlError as exc:
        print(exc, file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
