from services.kit.cache import make_cache
from services.kit.config import Settings
from services.kit.main import service_main
from services.points import jobs
from services.points.server import NAME, build_app, build_service


def expire(settings: Settings) -> str:
    members, lots, points = jobs.expire_all(build_service(settings, cache=make_cache(settings.redis_url)))
    return f"expired {points} points in {lots} lots of {members} members"


def settle_pools(settings: Settings) -> str:
    return f"settled {jobs.settle_pools(build_service(settings, cache=make_cache(settings.redis_url)))} daily pools"


service_main(NAME, build_app, commands={"expire": expire, "settle-pools": settle_pools})
