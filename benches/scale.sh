#!/usr/bin/env bash
# The scale runs: 1 000 000 kernel flows (memory per flow, lookups with
# a full table) and a 10 000-port topology (load, and one change to its effect
# in process and through vnetd's API); prints the table of benches/RESULTS.md.
#
# Root (namespaces, XDP, BPF_PROG_TEST_RUN). A manual command, never part of
# CI or of `cargo test`. Arguments go to the harness (--help lists them).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
if [ "$(id -u)" -ne 0 ]; then
  echo "scale.sh: needs root (network namespaces, XDP): sudo benches/scale.sh $*" >&2
  exit 1
fi
bash scripts/bootstrap.sh
echo "[scale.sh] building vnetd and the harness (release)"
cargo build --release -p vnetd -p vnet-benches --bin vnetd --bin scale
exec "${CARGO_TARGET_DIR:-target}/release/scale" "$@"
