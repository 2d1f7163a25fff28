"""Wiring only: the rewards service's app for the kit to run."""

from __future__ import annotations

from loyalty.points.v1 import points_service_pb2_grpc as points_grpc
from loyalty.rewards.v1 import rewards_service_pb2_grpc as pb_grpc
from loyalty.segments.v1 import segments_service_pb2_grpc as segments_grpc

from services.kit.auth import KeyRing
from services.kit.bus import Bus
from services.kit.cache import Cache
from services.kit.client import ServiceClient
from services.kit.config import Settings
from services.kit.jobs import Periodic
from services.kit.saga import Sagas
from services.kit.server import ServiceApp
from services.kit.storage import Database
from services.membership import client as membership_client
from services.rewards import lottery, redeeming
from services.rewards.api import RewardsApi
from services.rewards.audiences import segments_consumer
from services.rewards.issuance import IssuanceRunner
from services.rewards.jobs import periodic_jobs
from services.rewards.members import membership_consumer
from services.rewards.service import RewardsService
from services.rewards.tables import kit, sagas

NAME = "rewards"
FULL_NAME = "loyalty.rewards.v1.RewardsService"


def build_service(settings: Settings, *, db_url: str | None = None,
                  addresses: dict[str, str] | None = None) -> RewardsService:
    """The service on its database, calling points at `addresses["points"]` and segments at
    `addresses["segments"]` (by default where the settings say: LOYALTY_POINTS_ADDR,
    LOYALTY_SEGMENTS_ADDR)."""
    db = Database(db_url or settings.db_url(NAME), service=NAME, kit=kit, pool_size=settings.threads,
                  retry_seconds=settings.db_retry_seconds)
    points_address = (addresses or {}).get("points") or settings.address("points")
    points = ServiceClient(points_grpc.PointsServiceStub, points_address, key=settings.admin_key,
                           timeout=settings.call_timeout_seconds)
    segments_address = (addresses or {}).get("segments") or settings.address("segments")
    segments = ServiceClient(segments_grpc.SegmentsServiceStub, segments_address, key=settings.admin_key,
                             timeout=settings.call_timeout_seconds)
    service = RewardsService(db, points, segments)
    service.sagas = Sagas(db, sagas, redeeming.saga_definitions(service) + lottery.saga_definitions(service))
    return service


def build_app(settings: Settings, *, cache: Cache, keyring: KeyRing, bus: Bus, db_url: str | None = None,
              addresses: dict[str, str] | None = None) -> ServiceApp:
    service = build_service(settings, db_url=db_url, addresses=addresses)
    membership = membership_client.client(settings, addresses)
    runner = IssuanceRunner(service)
    service.wake_issuance = runner.wake
    return ServiceApp(name=NAME, full_name=FULL_NAME, db=service.db, servicer=RewardsApi(service),
                      add_to_server=pb_grpc.add_RewardsServiceServicer_to_server,
                      consumers=[membership_consumer(service.db, bus, service, membership,
                                                     workers=settings.consumer_workers,
                                                     per_transaction=settings.consumer_per_transaction),
                                 segments_consumer(service.db, bus, workers=settings.consumer_workers,
                                                   per_transaction=settings.consumer_per_transaction)],
                      background=[Periodic(periodic_jobs(service), name="rewards-jobs"), runner])
