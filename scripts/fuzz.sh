#!/usr/bin/env bash
# Long fuzzing run of the property-based harnesses (the same ones `cargo test` runs briefly).
#   scripts/fuzz.sh [seconds-per-harness]      (default 60)
# Environment: FUZZ_SEED=<n> picks the seed (default: a fresh one, printed so a failure can be
# replayed); FUZZ_ITERS=<n> runs a fixed number of iterations instead of a time budget.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-60}"
export FUZZ_SECS="$secs"
export FUZZ_SEED="${FUZZ_SEED:-$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}"
echo "fuzz: ${FUZZ_ITERS:+$FUZZ_ITERS iterations, }${secs}s per harness, FUZZ_SEED=$FUZZ_SEED" >&2
cargo test --release -p virtiofsd-passthrough --test fuzz_requests -- --nocapture --test-threads=2
cargo test --release -p virtiofsd-device --test fuzz_chains -- --nocapture
echo "fuzz: no failure (FUZZ_SEED=$FUZZ_SEED)" >&2
