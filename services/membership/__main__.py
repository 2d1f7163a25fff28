from services.kit.auth import KeyRing
from services.kit.bus import make_bus
from services.kit.cache import make_cache
from services.kit.config import Settings
from services.kit.main import service_main
from services.membership import growth_decay, lifecycle
from services.membership.server import NAME, build_app


def expire_tiers(settings: Settings) -> str:
    """The tier expiry job once (a CronJob's command): notices due, then expiries due."""
    app = build_app(settings, cache=make_cache(settings.redis_url), bus=make_bus(settings.redis_url),
                    keyring=KeyRing(settings.admin_key, settings.auth_secret))
    run = lifecycle.expire_all(app.servicer.ctx)
    return f"sent {run.notices} tier expiry notices; {run.moved} members moved and {run.renewed} renewed at expiry"


def decay(settings: Settings) -> str:
    """成长值衰减 for every shop with a decay policy (a CronJob's command)."""
    app = build_app(settings, cache=make_cache(settings.redis_url), bus=make_bus(settings.redis_url),
                    keyring=KeyRing(settings.admin_key, settings.auth_secret))
    done = growth_decay.decay_all(app.servicer.ctx)
    return f"decayed {done.growth} growth of {done.members} members; {done.downgraded} moved down"


service_main(NAME, build_app, commands={"expire-tiers": expire_tiers, "decay": decay})
