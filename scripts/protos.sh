#!/usr/bin/env bash
# Regenerates gen/ from protos/ (never edit gen/ by hand). protos/vendor holds copies of googleapis
# files for buf only; protoc takes those from the installed googleapis-common-protos.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
googleapis=$($PY -c 'import os, google.rpc.status_pb2 as m; print(os.path.dirname(os.path.dirname(os.path.dirname(m.__file__))))')
rm -rf gen.tmp && mkdir -p gen.tmp
# shellcheck disable=SC2046
$PY -m grpc_tools.protoc -I protos -I "$googleapis" \
  --python_out=gen.tmp --grpc_python_out=gen.tmp --pyi_out=gen.tmp \
  $(find protos -path protos/vendor -prune -o -name '*.proto' -print | sort)
rm -rf gen && mv gen.tmp gen
