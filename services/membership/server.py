"""Wiring only: the membership service's app for the kit to run."""

from __future__ import annotations

from loyalty.membership.v1 import membership_service_pb2_grpc as pb_grpc

from services.kit.auth import KeyRing
from services.kit.bus import Bus
from services.kit.cache import Cache
from services.kit.config import Settings
from services.kit.config import keys_db_url as default_keys_db_url
from services.kit.jobs import Periodic, PeriodicJob
from services.kit.server import ServiceApp
from services.kit.storage import Database
from services.membership import data_keys, growth_decay, lifecycle
from services.membership.api import MembershipApi
from services.membership.consumers import points_consumer
from services.membership.context import Membership
from services.membership.key_store import KeyStore
from services.membership.pii import PiiKeys
from services.membership.tables import kit

NAME = "membership"
FULL_NAME = "loyalty.membership.v1.MembershipService"
ADMIN_METHODS = frozenset({f"/{FULL_NAME}/CreateProgram", f"/{FULL_NAME}/IssueApiKey"})


def build_app(
    settings: Settings, *, cache: Cache, keyring: KeyRing, bus: Bus, db_url: str | None = None,
    keys_db_url: str | None = None,
) -> ServiceApp:
    db_url = db_url or settings.db_url(NAME)
    db = Database(db_url, service=NAME, kit=kit, pool_size=settings.threads, retry_seconds=settings.db_retry_seconds)
    # The data keys live apart from the data, so that a backup of the data holds none (key_store.py).
    keys = KeyStore(keys_db_url or default_keys_db_url(NAME, db_url), PiiKeys(settings.pii_key),
                    pool_size=settings.threads, retry_seconds=settings.db_retry_seconds)
    ctx = Membership.build(db, cache, keys, keyring, cache_ttl=settings.cache_ttl_seconds)
    # Growth decay runs by itself in the embedded default; in production a CronJob runs
    # `python -m services.membership decay` unless LOYALTY_MEMBERSHIP_JOBS=1.
    jobs = [PeriodicJob("decay-growth", 3600.0, lambda: growth_decay.decay_all(ctx))] \
        if settings.scheduled_jobs(NAME) else []
    return ServiceApp(name=NAME, full_name=FULL_NAME, db=db, servicer=MembershipApi(ctx),
                      add_to_server=pb_grpc.add_MembershipServiceServicer_to_server, admin_methods=ADMIN_METHODS,
                      consumers=[points_consumer(ctx, bus, workers=settings.consumer_workers,
                                                 per_transaction=settings.consumer_per_transaction)],
                      background=[Periodic([data_keys.sweeper(ctx), *jobs, *lifecycle.periodic_jobs(
                          ctx, batch_jobs=settings.scheduled_jobs(NAME))], name="membership-keys"), keys],
                      also_needs=[keys.db])
