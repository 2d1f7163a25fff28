"""`python -m bench [--quick | --selftest] [--only reads,spend]`: runs the scenarios against the
PostgreSQL and Redis that scripts/test-backends.sh started, prints the table, writes the JSON
and (full runs) README.md's benchmark table. `make bench` is the way in."""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

from bench import report
from bench.load import LoadPool
from bench.runner import PROFILES, Context, Row
from bench.scenarios import SCENARIOS
from bench.stack import Backends, Processes


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="shorter windows and fewer pairs (a few minutes)")
    mode.add_argument("--selftest", action="store_true",
                      help="every scenario for about a second; fails if one breaks (no README update)")
    parser.add_argument("--only", default="", help=f"comma-separated scenarios among {', '.join(SCENARIOS)}")
    parser.add_argument("--clients", type=int, default=2, help="load client processes (default 2)")
    parser.add_argument("--threads", type=int, default=8,
                        help="calls in flight per client process in the read scenarios (default 8)")
    parser.add_argument("--client", choices=["threads", "aio"], default="threads",
                        help="closed-loop client: sync stubs on threads (default) or one asyncio loop per process")
    readme = parser.add_mutually_exclusive_group()
    readme.add_argument("--readme", dest="readme", action="store_true", default=None,
                        help="update README.md's table (the default for full runs)")
    readme.add_argument("--no-readme", dest="readme", action="store_false")
    parser.add_argument("--keep-logs", action="store_true", help="keep the servers' logs and data after the run")
    return parser.parse_args(argv)


def _interrupt(_signum: int, _frame: object) -> None:
    """SIGTERM takes the same way out as Ctrl-C, so every server started is stopped."""
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    profile = PROFILES["selftest" if args.selftest else "quick" if args.quick else "full"]
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        sys.exit(f"bench: unknown scenario {', '.join(unknown)}; there are {', '.join(SCENARIOS)}")
    signal.signal(signal.SIGTERM, _interrupt)

    began, when, info, sha = time.monotonic(), datetime.now(UTC), report.machine(), report.commit()
    workdir = Path(tempfile.mkdtemp(prefix="loyalty-bench."))
    processes, backends = Processes(workdir), Backends.from_env()
    pool = LoadPool(args.clients)
    rows: list[Row] = []
    failed: list[str] = []

    def log(message: str) -> None:
        print(f"[{time.monotonic() - began:6.0f} s] {message}", flush=True)

    ctx = Context(profile=profile, backends=backends, pool=pool, processes=processes, workdir=workdir,
                  client_threads=args.threads, client=args.client, log=log)
    log(f"profile {profile.name}; scenarios {', '.join(names)}; logs in {workdir}")
    try:
        for name in names:
            log(f"scenario {name}")
            try:
                new = SCENARIOS[name](ctx)
            except Exception as exc:
                traceback.print_exc()
                failed.append(name)
                first_line = (str(exc).splitlines() or [""])[0][:160]
                new = [Row(name, name, f"failed: {type(exc).__name__}: {first_line}", "—", None, "—", False)]
            finally:
                processes.stop_all()
                # Its databases go with it: vacuuming what it left does not run under the next one.
                backends.drop_databases()
            rows += new
            for row in new:
                log(f"{row.what}: {row.measured} | {row.floor} | {report.fmt_ratio(row.ratio)}")
    except KeyboardInterrupt:
        print("bench: interrupted; stopping what it started", file=sys.stderr, flush=True)
        return 130
    finally:
        pool.close()
        processes.stop_all()
        backends.drop_databases()
        if args.keep_logs or failed:
            print(f"servers' logs kept in {workdir}", flush=True)
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    text = report.header(info, profile.name, when, sha) + "\n\n" + report.table(rows)
    print("\n" + text + "\n", flush=True)
    path = report.RESULTS / ("selftest.json" if args.selftest else "latest.json")
    report.write_json(path, rows, info, profile.name, when, sha, vars(args))
    log(f"results in {path.relative_to(report.ROOT)}")
    if args.readme if args.readme is not None else profile.name == "full" and not args.only:
        if report.update_readme(text):
            log("README.md's benchmark table updated")
        else:
            log(f"README.md has no {report.START} … {report.END} markers: not updated")
    if args.selftest:
        failed += [r.what for r in rows if r.ratio is not None and not r.ratio > 0]
    if failed:
        print(f"bench: failed scenarios: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
