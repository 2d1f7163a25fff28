"""The member centre's endpoints (/v1/me/...)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/v1/me", tags=["member centre"])
