#!/usr/bin/env bash
# Runs every test of vnet: unit tests, BPF_PROG_TEST_RUN tests of the XDP
# program, simulation tests on packet bytes, and end-to-end tests with real
# vnetd, network namespaces and real tools. Installs what it needs first.
# Root runs everything; without root the kernel and end-to-end tests say
# they skip.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

bash scripts/bootstrap.sh
echo "[test] building (the XDP program too, with nightly and bpf-linker)"
cargo build --workspace --all-targets
echo "[test] running the tests"
cargo test --workspace --no-fail-fast -- --test-threads 2
