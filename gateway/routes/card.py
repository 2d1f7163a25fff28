"""GET /v1/storefront/card: the storefront member module (店铺首页会员模块)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/v1/storefront", tags=["storefront"])
