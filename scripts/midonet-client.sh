#!/usr/bin/env bash
# Installs MidoNet's own Python client, midonetclient 5.2.0 from PyPI (the
# `midonetclient` API and the `midonet-cli` script), into a venv, for
# tests/tests/midonet.rs: vnet's MidoNet REST API is tested with the real
# client, not a copy of its requests.
#
# midonetclient 5.2.0 is Python 2 code. The installed copy is converted with
# the standard library's lib2to3 (`python3 -m lib2to3 -w -n`), which exists up
# to Python 3.12; nothing else of the client is changed. A Python of 3.11 or
# 3.12 is needed (MIDONET_PYTHON overrides which one).
#
# Idempotent: a second run finds the marker and only prints where it is.
# Usage: scripts/midonet-client.sh [DIR]   (default /opt/vnet-midonet-client)
# Afterwards: DIR/bin/midonet-cli, DIR/bin/python (imports midonetclient).
set -euo pipefail

DIR=${1:-${MIDONET_CLIENT_DIR:-/opt/vnet-midonet-client}}
VERSION=5.2.0
MARKER="$DIR/.vnet-midonetclient-$VERSION-converted"

step() { printf '[midonet-client] %s\n' "$*"; }

if [ -f "$MARKER" ]; then
  step "midonetclient $VERSION present in $DIR"
  exit 0
fi

PY=${MIDONET_PYTHON:-}
if [ -z "$PY" ]; then
  for c in python3.11 python3.12 python3; do
    if command -v "$c" >/dev/null && "$c" -c 'import lib2to3, venv' 2>/dev/null; then
      PY=$c
      break
    fi
  done
fi
if [ -z "$PY" ]; then
  echo "[midonet-client] error: no Python with lib2to3 and venv (3.11 or 3.12) found; set MIDONET_PYTHON" >&2
  exit 1
fi

step "creating a venv in $DIR with $PY ($("$PY" --version 2>&1))"
"$PY" -m venv "$DIR"
step "pip: installing midonetclient==$VERSION httplib2 webob"
"$DIR/bin/pip" install -q "midonetclient==$VERSION" httplib2 webob
PKG=$("$DIR/bin/python" -c 'import importlib.util, os; print(os.path.dirname(importlib.util.find_spec("midonetclient").origin))' 2>/dev/null || true)
if [ -z "$PKG" ]; then
  # The Python 2 package may not even import before conversion: find it.
  PKG=$(find "$DIR/lib" -maxdepth 4 -type d -name midonetclient | head -n1)
fi
if [ -z "$PKG" ] || [ ! -f "$DIR/bin/midonet-cli" ]; then
  echo "[midonet-client] error: midonetclient or midonet-cli not found under $DIR after pip install" >&2
  exit 1
fi
step "lib2to3: converting $PKG and $DIR/bin/midonet-cli to Python 3"
"$DIR/bin/python" -m lib2to3 -w -n "$PKG" "$DIR/bin/midonet-cli" >/dev/null 2>&1
"$DIR/bin/python" -c 'import midonetclient.api' || {
  echo "[midonet-client] error: the converted midonetclient does not import" >&2
  exit 1
}
touch "$MARKER"
step "done: $DIR/bin/midonet-cli"
