"""The catalogue RPCs of RewardsApi."""

from __future__ import annotations

from services.rewards.service import RewardsService


class CatalogueApi:
    service: RewardsService
