"""CORS: each shop lists its storefront origins (membership's program); others are refused."""

from __future__ import annotations

from fastapi import FastAPI


def install(app: FastAPI) -> None:
    """Adds the per-shop CORS decision to the app."""
