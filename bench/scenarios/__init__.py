"""One module per scenario, each with `run(ctx) -> list[Row]`; they run in this order. A later
issue adds its own (rewards' redeem, segments' preview, the gateway's card) here."""

from __future__ import annotations

from collections.abc import Callable

from bench.runner import Context, Row
from bench.scenarios import earn, embedded, reads, redis_floor, spend

SCENARIOS: dict[str, Callable[[Context], list[Row]]] = {
    "redis": redis_floor.run,
    "reads": reads.run,
    "spend": spend.run,
    "earn": earn.run,
    "embedded": embedded.run,
}
