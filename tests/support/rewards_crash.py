"""The rewards service as `python -m services.rewards serve` runs it, with a test-only fault hook
for the crash tests (nothing of it is in the service's own code):

    LOYALTY_TEST_CRASH_FILE=/tmp/crash python -m tests.support.rewards_crash serve

When the file names a saga step as "kind:step" (or "kind:undo step" for its compensation), the
process SIGKILLs itself right after that step took effect and before the saga recorded it — the
worst moment — and removes the file first, so the restarted process runs on. Sagas lease for one
second here (30 in production), so that the restarted process's recovery job takes over soon."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from services.kit.main import service_main
from services.kit.saga import SagaContext, SagaDefinition, Step
from services.kit.server import ServiceApp
from services.rewards import redeeming, server

CRASH_FILE = Path(os.environ.get("LOYALTY_TEST_CRASH_FILE", "/nonexistent"))
_definitions = redeeming.saga_definitions


def _crash_after(point: str) -> None:
    try:
        armed = CRASH_FILE.read_text().strip()
    except FileNotFoundError:
        return
    if armed == point:
        CRASH_FILE.unlink()
        os.kill(os.getpid(), signal.SIGKILL)


def _then_crash(point: str, work: Callable[[SagaContext], Any]) -> Callable[[SagaContext], Any]:
    def run(ctx: SagaContext) -> Any:
        result = work(ctx)
        _crash_after(point)
        return result

    return run


def crashing_definitions(service: Any) -> list[SagaDefinition]:
    return [SagaDefinition(d.kind, [
        Step(s.name, _then_crash(f"{d.kind}:{s.name}", s.action),
             _then_crash(f"{d.kind}:undo {s.name}", s.compensation) if s.compensation else None)
        for s in d.steps]) for d in _definitions(service)]


def build_app(settings: Any, **kwargs: Any) -> ServiceApp:
    app = server.build_app(settings, **kwargs)
    sagas = app.servicer.service.sagas  # type: ignore[attr-defined]
    sagas.lease, sagas.retry_seconds = timedelta(seconds=1), 0.1
    return app


if __name__ == "__main__":
    redeeming.saga_definitions = crashing_definitions  # type: ignore[assignment]
    service_main(server.NAME, build_app)
