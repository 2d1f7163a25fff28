"""The services behind the gateway, through `grpc.aio`: one channel per service, made in the
running event loop, every call with a deadline, the trace context, and the key of the shop it
acts for. The gateway holds no shop keys: it derives the one a shop's calls carry from the
suite's auth secret (key id `gateway`), so each call is authorised for that shop alone, by the
services' own checks: nothing a buyer sends can make it act on another shop."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from loyalty.membership.v1 import membership_service_pb2_grpc as mgrpc
from loyalty.points.v1 import points_service_pb2_grpc as pgrpc
from loyalty.rewards.v1 import rewards_service_pb2_grpc as rgrpc
from opentelemetry import propagate

from gateway.problems import from_rpc_error
from services.kit.auth import KeyRing

R = TypeVar("R", bound=Message)
GATEWAY_KEY_ID = "gateway"
_CHANNEL_OPTIONS = [("grpc.keepalive_time_ms", 30_000), ("grpc.max_receive_message_length", 16 << 20)]


class Upstreams:
    """Stubs of every service, and `call` to run one for a shop."""

    def __init__(self, addresses: dict[str, str], auth_secret: bytes, *, timeout: float):
        self.addresses = dict(addresses)
        self._channels = {name: grpc.aio.insecure_channel(address, options=_CHANNEL_OPTIONS)
                          for name, address in addresses.items()}
        self.membership = mgrpc.MembershipServiceStub(self._channels["membership"])
        self.points = pgrpc.PointsServiceStub(self._channels["points"])
        self.rewards = rgrpc.RewardsServiceStub(self._channels["rewards"])
        self._keyring = KeyRing("", auth_secret)
        self._shop_metadata: dict[str, tuple[str, str]] = {}
        self.timeout = timeout

    def _authorization(self, shop_id: str) -> tuple[str, str]:
        header = self._shop_metadata.get(shop_id)
        if header is None:
            if len(self._shop_metadata) > 100_000:
                self._shop_metadata.clear()
            header = ("authorization", "Bearer " + self._keyring.key_for(shop_id, GATEWAY_KEY_ID))
            self._shop_metadata[shop_id] = header
        return header

    async def call(self, method: Callable[..., Awaitable[R]], request: Message, shop_id: str, *,
                   timeout: float | None = None) -> R:
        """Runs one RPC for `shop_id`; a failure is raised as the problem the buyer gets."""
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        metadata = (self._authorization(shop_id), *carrier.items())
        try:
            return await method(request, metadata=metadata, timeout=timeout or self.timeout)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from exc

    async def gather(self, *calls: Awaitable[Any]) -> list[Any]:
        """Runs calls in parallel; the first failure is raised once all are done (none left running)."""
        results = await asyncio.gather(*calls, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return list(results)

    async def health(self, timeout: float = 1.0) -> dict[str, bool]:
        """Whether each service answers SERVING to its health check, asked in parallel."""

        async def one(name: str) -> bool:
            stub = health_pb2_grpc.HealthStub(self._channels[name])
            try:
                answer = await stub.Check(health_pb2.HealthCheckRequest(), timeout=timeout)
            except grpc.RpcError:
                return False
            return answer.status == health_pb2.HealthCheckResponse.SERVING

        names = list(self._channels)
        return dict(zip(names, await asyncio.gather(*(one(n) for n in names)), strict=True))

    async def close(self) -> None:
        await asyncio.gather(*(channel.close() for channel in self._channels.values()))
