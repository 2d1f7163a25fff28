"""The pages and the script the gateway serves: /widget.js, the member centre, the demo storefront."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(include_in_schema=False)
