"""The gRPC servicer of the rewards service, one part per capability (catalogue, redemptions,
wallet, issuance to a segment, packs, reports, lottery, campaigns): requests to commands (which
check their fields), handlers run in the kit's idempotent unit of work, results to responses.
No SQL here."""

from __future__ import annotations

from loyalty.rewards.v1 import rewards_service_pb2_grpc as pb_grpc

from services.rewards.api.campaigns import CampaignsApi
from services.rewards.api.catalogue import CatalogueApi
from services.rewards.api.issuance import IssuanceApi
from services.rewards.api.lottery import LotteryApi
from services.rewards.api.packs import PacksApi
from services.rewards.api.redemptions import RedemptionsApi
from services.rewards.api.reports import ReportsApi
from services.rewards.api.wallet import WalletApi
from services.rewards.service import RewardsService


class RewardsApi(CatalogueApi, RedemptionsApi, WalletApi, IssuanceApi, PacksApi, ReportsApi, LotteryApi,
                 CampaignsApi, pb_grpc.RewardsServiceServicer):
    def __init__(self, service: RewardsService):
        self.service = service
