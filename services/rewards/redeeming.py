"""Redemption (兑换) as a durable saga with points."""

from __future__ import annotations

from services.kit.saga import SagaDefinition
from services.rewards.service import RewardsService


def saga_definitions(service: RewardsService) -> list[SagaDefinition]:
    return []
