#!/usr/bin/env bash
# Creates .venv with the pinned dependencies, puts the repo and the generated code on its path,
# and generates the protobuf code. Safe to run again: it only redoes what changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=.venv
stamp=$VENV/.installed

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  "$VENV/bin/python" - <<'PY' > "$VENV/requirements.txt"
import tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
print("\n".join(project["dependencies"] + project["optional-dependencies"]["dev"]))
PY
  "$VENV/bin/python" -m pip install --disable-pip-version-check -q -r "$VENV/requirements.txt"
  purelib=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  printf '%s\n%s\n' "$PWD" "$PWD/gen" > "$purelib/loyalty-suite.pth"
  touch "$stamp"
fi
make --no-print-directory protos
