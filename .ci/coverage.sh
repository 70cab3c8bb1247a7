#!/usr/bin/env bash
# .ci/coverage.sh [BUILD_DIR] — line coverage of the ctest suite, per folder (gcovr, Debian's
# package gcovr). Builds the project with GCC's --coverage into BUILD_DIR (default
# build-coverage), runs ctest there, and
# prints a Markdown table of line coverage per top-level folder and per layer folder of the
# project's own sources (tests/, fuzz/, bench/ and generated files are left out), the form in
# which docs/operations.md records it. Also writes BUILD_DIR/coverage/summary.json and a
# per-file text report BUILD_DIR/coverage/files.txt.
#
# Environment:
#   OTAC_COVERAGE_JOBS     build and ctest parallelism (default 1: other work shares the cores)
#   OTAC_COVERAGE_EXCLUDE  ctest -E regex of tests to leave out (default: none). The daemons'
#                          suites (pcsc, e2e, console browser) bind fixed resources such as
#                          pcscd's socket, so leave them out while another run uses them, and
#                          say so next to the figures.
# Failed tests do not stop the report (their coverage counts as far as they ran); the script
# prints how many failed and exits 1 if any did.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build-coverage}
jobs=${OTAC_COVERAGE_JOBS:-1}
launcher=()
command -v ccache >/dev/null && launcher=(-DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Debug -DOTAC_TESTS=ON "${launcher[@]}" \
  -DCMAKE_C_COMPILER=gcc -DCMAKE_CXX_COMPILER=g++ \
  -DCMAKE_C_FLAGS=--coverage -DCMAKE_CXX_FLAGS=--coverage \
  -DCMAKE_EXE_LINKER_FLAGS=--coverage -DCMAKE_SHARED_LINKER_FLAGS=--coverage >/dev/null
nice -n 19 cmake --build "$build" -j "$jobs" >/dev/null
# Counters from an earlier run would add up with this one.
find "$build" -name '*.gcda' -delete
failed=0
ctest_args=(--test-dir "$build" -j "$jobs" --output-on-failure)
[ -n "${OTAC_COVERAGE_EXCLUDE:-}" ] && ctest_args+=(-E "$OTAC_COVERAGE_EXCLUDE")
nice -n 19 ctest "${ctest_args[@]}" >"$build/coverage-ctest.log" 2>&1 || failed=1
mkdir -p "$build/coverage"
# Only the project's own code: the layers, without tests, fuzz targets and benchmarks.
gcovr_args=(--root . --object-directory "$build" --exclude-unreachable-branches
  --filter 'common/' --filter 'card-applet/' --filter 'terminal/' --filter 'backend/' --filter 'hw/'
  --exclude '.*/fuzz_[^/]*\.cpp' --exclude 'tests/' --exclude 'fuzz/' --exclude 'bench/' --exclude "$build/")
gcovr "${gcovr_args[@]}" --json-summary "$build/coverage/summary.json" --txt "$build/coverage/files.txt" >/dev/null
/usr/bin/python3 - "$build/coverage/summary.json" <<'EOF'
import json, sys
files = json.load(open(sys.argv[1]))["files"]
def table(depth):
    agg = {}
    for f in files:
        parts = f["filename"].split("/")
        key = "/".join(parts[:depth]) if len(parts) > depth else "/".join(parts[:-1]) or parts[0]
        a = agg.setdefault(key, [0, 0])
        a[0] += f["line_covered"]; a[1] += f["line_total"]
    for k in sorted(agg):
        c, t = agg[k]
        print(f"| {k}/ | {c} | {t} | {100.0 * c / t if t else 0:.1f} % |")
print("| folder | lines covered | lines | coverage |")
print("|---|---|---|---|")
table(1)
c = sum(f["line_covered"] for f in files); t = sum(f["line_total"] for f in files)
print(f"| all | {c} | {t} | {100.0 * c / t:.1f} % |")
print()
print("| layer folder | lines covered | lines | coverage |")
print("|---|---|---|---|")
table(2)
EOF
if [ $failed = 1 ]; then
  echo "coverage: some tests failed; see $build/coverage-ctest.log" >&2
  exit 1
fi
