"""Rate limits per shop and per buyer (429 with Retry-After)."""

from __future__ import annotations

from services.kit.config import GatewaySettings


def build(settings: GatewaySettings) -> None:
    """The limiter every request checks (app.state.limiter); None: no limits yet."""
    return None
