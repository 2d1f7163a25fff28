"""Wiring only: the segments service's app for the kit to run."""

from __future__ import annotations

from loyalty.segments.v1 import segments_service_pb2_grpc as pb_grpc

from services.kit.auth import KeyRing
from services.kit.bus import Bus
from services.kit.cache import Cache
from services.kit.config import Settings
from services.kit.jobs import Periodic
from services.kit.server import ServiceApp
from services.kit.storage import Database
from services.membership import client as membership_client
from services.segments import facts, jobs
from services.segments.api import SegmentsApi
from services.segments.service import SegmentsService
from services.segments.tables import kit

NAME = "segments"
FULL_NAME = "loyalty.segments.v1.SegmentsService"


def build_app(settings: Settings, *, cache: Cache, keyring: KeyRing, bus: Bus, db_url: str | None = None,
              addresses: dict[str, str] | None = None) -> ServiceApp:
    """Segments on its database; it asks membership (at `addresses["membership"]`, by default where
    the settings say) for birth months the events announce, and for its history (RebuildFacts)."""
    service = build_service(settings, cache=cache, db_url=db_url, addresses=addresses)
    db = service.db
    return ServiceApp(name=NAME, full_name=FULL_NAME, db=db, servicer=SegmentsApi(service),
                      add_to_server=pb_grpc.add_SegmentsServiceServicer_to_server,
                      consumers=facts.consumers(db, bus, service.membership,
                                                workers=settings.consumer_workers,
                                                per_transaction=settings.consumer_per_transaction),
                      background=[Periodic(jobs.periodic_jobs(service, batch_jobs=settings.scheduled_jobs(NAME)),
                                           name="segments-jobs")])


def build_service(settings: Settings, *, cache: Cache | None = None, db_url: str | None = None,
                  addresses: dict[str, str] | None = None) -> SegmentsService:
    """The service layer on its database (the server's, or a one-shot command's)."""
    db = Database(db_url or settings.db_url(NAME), service=NAME, kit=kit, pool_size=settings.threads,
                  retry_seconds=settings.db_retry_seconds)
    return SegmentsService(db, cache, membership_client.client(settings, addresses))
