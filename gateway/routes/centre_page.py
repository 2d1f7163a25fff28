"""The member centre page (/centre): plain HTML + JS over the /v1/me endpoints."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(include_in_schema=False)
