#!/usr/bin/env bash
# Lints the code (ruff) and the contract (buf lint), and checks that the protos break no caller of
# the last released ones (buf breaking against the commit named in protos/RELEASED).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
BUF=$(dirname "$PY")/buf
"$PY" -m ruff check services gateway tests tools bench
(cd protos && "../$BUF" lint)
released=$(tr -d '[:space:]' < protos/RELEASED)
if ! git cat-file -e "$released^{commit}" 2>/dev/null; then
  echo "buf breaking: commit $released (protos/RELEASED) is not in this clone's history" >&2
  exit 1
fi
"$BUF" breaking protos --against ".git#ref=$released,subdir=protos"
echo "lint: ruff and buf clean; protos compatible with $released"
