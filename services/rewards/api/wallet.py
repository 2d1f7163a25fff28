"""The wallet RPCs of RewardsApi."""

from __future__ import annotations

from services.rewards.service import RewardsService


class WalletApi:
    service: RewardsService
