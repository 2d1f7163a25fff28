#!/usr/bin/env bash
# Starts throwaway PostgreSQL and Redis servers on free loopback ports (installing the Debian
# packages if they are missing, and Chromium with a CJK font for the browser tests), runs the
# given command with their URLs in the environment, and stops them again, whatever its outcome.
set -euo pipefail

need_apt=()
ls -d /usr/lib/postgresql/*/bin >/dev/null 2>&1 || need_apt+=(postgresql)
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)  # the README test replays its curl lines
# A CJK font, or the screenshots of the Chinese pages show boxes for every character.
(fc-list :lang=zh 2>/dev/null | grep -q .) || need_apt+=(fonts-wqy-zenhei)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing ${need_apt[*]} (Debian packages)"
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi
pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
workdir=$(mktemp -d /tmp/loyalty-test-servers.XXXXXX)
chmod 755 "$workdir"
pg_port=$(free_port)
redis_port=$(free_port)

# PostgreSQL refuses to run as root: run it as the packaged postgres user then.
as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
mkdir -p "$workdir/pg" "$workdir/redis"
[ "$(id -u)" -eq 0 ] && chown postgres "$workdir/pg"

cleanup() {
  local status=$?
  as_pg "$pgbin/pg_ctl" -D "$workdir/pg/data" -m immediate stop >/dev/null 2>&1 || true
  if [ -f "$workdir/redis/redis.pid" ]; then
    pid=$(cat "$workdir/redis/redis.pid")
    kill "$pid" 2>/dev/null || true
    # Redis rewrites its append-only file while it exits: wait, or the folder is not empty yet.
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -rf "$workdir" 2>/dev/null || { sleep 1; rm -rf "$workdir" || true; }
  exit "$status"  # the command's outcome, whatever the clean-up met
}
trap cleanup EXIT

as_pg "$pgbin/initdb" -D "$workdir/pg/data" -U loyalty --auth=trust -E UTF8 >/dev/null
as_pg "$pgbin/pg_ctl" -D "$workdir/pg/data" -l "$workdir/pg/log" -w start \
  -o "-p $pg_port -k $workdir/pg -c listen_addresses=127.0.0.1 -c max_connections=300 -c fsync=off -c synchronous_commit=off" >/dev/null
as_pg "$pgbin/createdb" -h 127.0.0.1 -p "$pg_port" -U loyalty loyalty_test

redis-server --port "$redis_port" --bind 127.0.0.1 --daemonize yes --dir "$workdir/redis" \
  --pidfile "$workdir/redis/redis.pid" --appendonly yes --save "" --logfile "$workdir/redis/log" >/dev/null
for _ in $(seq 50); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.1; done

export LOYALTY_TEST_PG_URL="postgresql+psycopg2://loyalty@127.0.0.1:$pg_port/loyalty_test"
export LOYALTY_TEST_REDIS_URL="redis://127.0.0.1:$redis_port/0"
export LOYALTY_TEST_REDIS_SERVER="$(command -v redis-server)"
echo "test backends: PostgreSQL on 127.0.0.1:$pg_port, Redis on 127.0.0.1:$redis_port"
"$@"
