from services.kit.main import service_main
from services.membership.server import NAME, build_app

service_main(NAME, build_app)
