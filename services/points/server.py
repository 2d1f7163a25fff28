"""Wiring only: the points service's app for the kit to run."""

from __future__ import annotations

from loyalty.points.v1 import points_service_pb2_grpc as pb_grpc

from services.kit.auth import KeyRing
from services.kit.bus import Bus
from services.kit.cache import Cache
from services.kit.config import Settings
from services.kit.jobs import Periodic
from services.kit.server import ServiceApp
from services.kit.storage import Database
from services.membership import client as membership_client
from services.points.api import PointsApi
from services.points.consumers import membership_consumer
from services.points.jobs import periodic_jobs
from services.points.service import PointsService
from services.points.tables import kit

NAME = "points"
FULL_NAME = "loyalty.points.v1.PointsService"


def build_service(settings: Settings, *, cache: Cache, db_url: str | None = None) -> PointsService:
    db = Database(db_url or settings.db_url(NAME), service=NAME, kit=kit, pool_size=settings.threads,
                  retry_seconds=settings.db_retry_seconds)
    return PointsService(db, cache, cache_ttl=settings.cache_ttl_seconds)


def build_app(
    settings: Settings, *, cache: Cache, keyring: KeyRing, bus: Bus, db_url: str | None = None,
    addresses: dict[str, str] | None = None,
) -> ServiceApp:
    """Points on its database; it asks membership (at `addresses["membership"]`, by default where
    the settings say) for birthdays the events announce."""
    service = build_service(settings, cache=cache, db_url=db_url)
    membership = membership_client.client(settings, addresses)
    # Expiry and pool settlement run by themselves in the embedded default; in production a
    # CronJob runs `python -m services.points expire|settle-pools` unless LOYALTY_POINTS_JOBS=1.
    jobs = settings.scheduled_jobs(NAME)
    return ServiceApp(name=NAME, full_name=FULL_NAME, db=service.db, servicer=PointsApi(service),
                      add_to_server=pb_grpc.add_PointsServiceServicer_to_server,
                      consumers=[membership_consumer(service.db, bus, service, membership,
                                                     workers=settings.consumer_workers,
                                                     per_transaction=settings.consumer_per_transaction)],
                      background=[Periodic(periodic_jobs(service, batch_jobs=jobs), name="points-jobs")])
