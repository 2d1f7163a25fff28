"""The embedded default (`python -m services.suite run`, SQLite and in-process cache and bus):
cached GetTier and GetBalance against the no-op RPC with one worker."""

from __future__ import annotations

from bench.fixtures import make_shop
from bench.runner import Context, Row
from bench.scenarios.reads import measure_reads
from bench.stack import start_embedded, start_noop


def run(ctx: Context) -> list[Row]:
    noop = start_noop(ctx.processes, workers=1, label="noop-embedded")
    try:
        stack = start_embedded(ctx.processes, label="embedded")
        try:
            shop = make_shop(stack.targets["membership"], stack.targets["points"], ctx.profile.read_members)
            return measure_reads(ctx, noop=noop.targets["noop"], stack=stack, shop=shop,
                                 label="embedded {method} (SQLite, in-process cache)", scenario="embedded")
        finally:
            stack.stop()
    finally:
        noop.stop()
