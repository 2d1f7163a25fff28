from services.kit.main import service_main
from services.segments import jobs
from services.segments.server import NAME, build_app, build_service

service_main(NAME, build_app, commands=jobs.commands(build_service))
