"""/healthz (the process answers) and /readyz (every service behind it answers SERVING)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: str
    upstreams: dict[str, bool] = {}


@router.get("/healthz", response_model=Health, summary="Liveness: the gateway process answers")
async def healthz() -> Health:
    return Health(status="ok")


@router.get("/readyz", response_model=Health, summary="Readiness: every service behind the gateway answers",
            responses={503: {"model": Health, "description": "a service does not answer"}})
async def readyz(request: Request) -> JSONResponse:
    upstreams = await request.app.state.upstreams.health()
    ready = all(upstreams.values())
    return JSONResponse(Health(status="ready" if ready else "not ready", upstreams=upstreams).model_dump(),
                        status_code=200 if ready else 503)
