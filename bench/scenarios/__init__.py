"""One module per scenario, each with `run(ctx) -> list[Row]`; they run in this order.

To add one (rewards' redeem, segments' preview, the gateway's card): a module with its call
factories (`make(channel, params, slot)` returning `call(n)`, named "module:function" so the
client processes can import them), a `run` that starts what it measures with bench.stack and
compares it with its floor through runner.interleave, and a line below."""

from __future__ import annotations

from collections.abc import Callable

from bench.runner import Context, Row
from bench.scenarios import card, earn, embedded, reads, redis_floor, segments, spend

SCENARIOS: dict[str, Callable[[Context], list[Row]]] = {
    "redis": redis_floor.run,
    "reads": reads.run,
    "spend": spend.run,
    "earn": earn.run,
    "embedded": embedded.run,
    "card": card.run,
    "segments": segments.run,
}
