"""What operators ask of RFM, each checking its fields when made (every violation at once)."""

from __future__ import annotations

from dataclasses import dataclass

from services.kit.validation import check_ids


@dataclass(frozen=True)
class RecomputeRfm:
    """Scores the shop's buyers now (the schedule does it daily)."""

    shop_id: str

    def __post_init__(self) -> None:
        check_ids(self.shop_id).raise_if_any()


@dataclass(frozen=True)
class RfmSummaryQuery:
    shop_id: str

    def __post_init__(self) -> None:
        check_ids(self.shop_id).raise_if_any()
