"""The redemptions RPCs of RewardsApi."""

from __future__ import annotations

from services.rewards.service import RewardsService


class RedemptionsApi:
    service: RewardsService
