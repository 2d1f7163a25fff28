from services.kit.main import service_main
from services.segments.server import NAME, build_app

service_main(NAME, build_app)
