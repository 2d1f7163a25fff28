import sys

from services.kit.main import service_main
from services.segments import jobs
from services.segments.server import NAME, build_app, build_service

if sys.argv[1:2] == ["seed-bench"]:  # a bench loader with its own options (seed_bench.py), not a service command
    from services.segments import seed_bench

    seed_bench.main(sys.argv[2:])
else:
    service_main(NAME, build_app, commands=jobs.commands(build_service))
