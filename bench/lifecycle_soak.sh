#!/usr/bin/env bash
# The lifecycle soak (tests/lifecycle) for long: the same binary as the ctest, its hidden
# [soak] test, for STEPS steps per seed over SEEDS seeds or MINUTES minutes, whichever ends
# first. A failure prints the seed, the step and a shrunk action list (exit 1).
#   bench/lifecycle_soak.sh [BUILD_DIR] [--steps N] [--seed S] [--seeds K] [--minutes M] [--card des3|aes|p256|mixed] [--strict]
# Defaults: 10^7 steps, seed 1, 1 seed, 60 minutes, the card algorithm chosen by seed.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
build=$here/build
if [[ $# -gt 0 && $1 != --* ]]; then build=$1; shift; fi
bin=$build/tests/lifecycle/test_lifecycle
[[ -x $bin ]] || { echo "lifecycle_soak: $bin not found; build with -DOTAC_TESTS=ON (target test_lifecycle)" >&2; exit 2; }
exec "$bin" "[soak]" "$@"
