#!/usr/bin/env bash
# The lifecycle soak through the real daemons (tests/e2e/soak.sh) for long: STEPS steps per
# seed for SEEDS seeds starting at SEED, or until MINUTES have passed (checked between
# seeds). Each seed brings up its own system in RUN_DIR/seed-S (logs kept). The first failing
# seed prints its seed, step, actions and the daemons' logs, and the script exits 1.
#   bench/lifecycle_soak_daemons.sh [BUILD_DIR] [--steps N] [--seed S] [--seeds K] [--minutes M] [--run DIR] [--strict]
# --strict: drive the triggers of the soak's known bugs too (tests/e2e/soak.py, KNOWN_BUGS).
# Defaults: 1000 steps, seed 1, 5 seeds, 60 minutes, RUN_DIR a fresh directory under /tmp.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
build=$here/build
if [[ $# -gt 0 && $1 != --* ]]; then build=$1; shift; fi
steps=1000 seed=1 seeds=5 minutes=60 run="" strict=()
usage="usage: lifecycle_soak_daemons.sh [BUILD_DIR] [--steps N] [--seed S] [--seeds K] [--minutes M] [--run DIR] [--strict]"
while [ $# -gt 0 ]; do
  case "$1" in
    --steps) steps=${2:?$usage}; shift 2 ;;
    --seed) seed=${2:?$usage}; shift 2 ;;
    --seeds) seeds=${2:?$usage}; shift 2 ;;
    --minutes) minutes=${2:?$usage}; shift 2 ;;
    --run) run=${2:?$usage}; shift 2 ;;
    --strict) strict=(--strict); shift ;;
    *) echo "$usage" >&2; exit 2 ;;
  esac
done
for b in backend/server/otac-backend backend/admin/otac-admin card-applet/otac-card hw/otac-pn532-emu terminal/otac-terminal; do
  [[ -x $build/$b ]] || { echo "lifecycle_soak_daemons: $build/$b not found; build it first" >&2; exit 2; }
done
run=${run:-$(mktemp -d /tmp/otac-soak-daemons.XXXXXX)}
mkdir -p "$run"
start=$(date +%s)
done_seeds=0
for ((s = seed; s < seed + seeds; s++)); do
  if (($(date +%s) - start >= minutes * 60)); then echo "time limit reached after $done_seeds seed(s)"; break; fi
  echo "seed $s: $steps steps (logs in $run/seed-$s)"
  if ! bash "$here/tests/e2e/soak.sh" "$build" "$run/seed-$s" --steps "$steps" --seed "$s" "${strict[@]}" >"$run/seed-$s.out" 2>&1; then
    tail -n 120 "$run/seed-$s.out" >&2
    exit 1
  fi
  tail -n 1 "$run/seed-$s.out"
  done_seeds=$((done_seeds + 1))
done
echo "lifecycle_soak_daemons: $done_seeds seed(s) of $steps steps passed in $(($(date +%s) - start)) s"
