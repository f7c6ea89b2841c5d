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
# A one-shot build: incremental state would only take disk (CI's is small).
export CARGO_INCREMENTAL=0
need_gb=6
free_gb=$(df -Pk . | awk 'NR==2 {print int($4 / 1048576)}')
echo "[test] disk: ${free_gb} GB free here; the build and tests need about ${need_gb} GB"
if [ "$free_gb" -lt "$need_gb" ]; then
  echo "[test] warning: less than ${need_gb} GB free; the build may fail with 'No space left on device' (cargo clean, or free space)" >&2
fi
echo "[test] building vnetd, vnetctl and the tests (the XDP program too, with nightly and bpf-linker)"
cargo build --workspace --bins  # the end-to-end tests run target/debug/vnetd and vnetctl
cargo test --workspace --no-run
echo "[test] checking that the benchmarks compile"
cargo check --workspace --benches
echo "[test] running the tests"
cargo test --workspace --no-fail-fast -- --test-threads 2
