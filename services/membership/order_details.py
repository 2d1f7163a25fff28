"""An order's optional details (lines with SKU, category and quantity; whether a coupon or a
campaign applied), kept with the order as JSON and carried by OrderCompleted to the services
that count them (segments: units per trade, categories bought, promotion share). Pure Python."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from services.kit.errors import Violations

MAX_LINES = 200
MAX_QUANTITY = 100_000
MAX_LINE_FEN = 10**13
_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


@dataclass(frozen=True)
class OrderLine:
    sku_id: str
    category_id: str
    quantity: int
    amount_fen: int


@dataclass(frozen=True)
class OrderDetails:
    lines: tuple[OrderLine, ...] = ()
    coupon_applied: bool = False
    campaign_applied: bool = False

    @property
    def units(self) -> int:
        return sum(line.quantity for line in self.lines)


NONE = OrderDetails()


def validate(details: OrderDetails, v: Violations) -> None:
    v.check(len(details.lines) <= MAX_LINES, "lines", f"at most {MAX_LINES} lines")
    for i, line in enumerate(details.lines[:MAX_LINES]):
        for name in ("sku_id", "category_id"):
            value = getattr(line, name)
            v.check(not value or bool(_ID.fullmatch(value)), f"lines[{i}].{name}",
                    "1-64 characters of A-Z, a-z, 0-9, _ . : -")
        v.check(1 <= line.quantity <= MAX_QUANTITY, f"lines[{i}].quantity", f"must be 1..{MAX_QUANTITY}")
        v.check(0 <= line.amount_fen <= MAX_LINE_FEN, f"lines[{i}].amount_fen", f"must be 0..{MAX_LINE_FEN} fen")


def to_json(details: OrderDetails) -> str | None:
    if details == NONE:
        return None
    return json.dumps({"lines": [[x.sku_id, x.category_id, x.quantity, x.amount_fen] for x in details.lines],
                       "coupon": details.coupon_applied, "campaign": details.campaign_applied},
                      separators=(",", ":"))


def from_json(raw: str | None) -> OrderDetails:
    if not raw:
        return NONE
    data = json.loads(raw)
    return OrderDetails(tuple(OrderLine(*line) for line in data.get("lines", [])), bool(data.get("coupon")),
                        bool(data.get("campaign")))
