#!/usr/bin/env bash
# fuzz/run.sh [SECONDS] [TARGET...] — build every libFuzzer target with clang + ASan/UBSan
# and run each for SECONDS (default 30). Corpora persist in fuzz-corpus/<target>/ (git-ignored),
# seeded from <layer>/fuzz_corpus/<target without fuzz_>/ where the repository has seeds;
# a crash leaves its input in fuzz-corpus/crashes/ and makes the script exit non-zero.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-30}; shift || true
build=${OTAC_FUZZ_BUILD_DIR:-build-fuzz}
cmake -S . -B "$build" -G Ninja -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
  -DOTAC_FUZZ=ON -DOTAC_TESTS=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" -j "$(nproc)" >/dev/null
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(find "$build/fuzz" -maxdepth 1 -type f -executable -name 'fuzz_*' -printf '%f\n' | sort)
fi
mkdir -p fuzz-corpus/crashes
status=0
for t in "${targets[@]}"; do
  mkdir -p "fuzz-corpus/$t"
  # Committed seeds (read-only, after the working corpus): <layer>/fuzz_corpus/<target without fuzz_>.
  seeds=()
  for d in */fuzz_corpus/"${t#fuzz_}"; do [ -d "$d" ] && seeds+=("$d"); done
  # A card state blob is about 8 KB (two lists of 200 codes); every other input fits in 4 KB.
  max_len=4096
  [ "$t" = fuzz_card_state ] && max_len=9000
  printf 'fuzz: %-28s %ss ... ' "$t" "$secs"
  if "$build/fuzz/$t" -max_total_time="$secs" -max_len="$max_len" -timeout=10 -print_final_stats=1 -rss_limit_mb=2048 \
       -artifact_prefix="fuzz-corpus/crashes/$t-" "fuzz-corpus/$t" "${seeds[@]}" >"fuzz-corpus/$t.log" 2>&1; then
    echo "ok ($(grep -Eo 'stat::number_of_executed_units: [0-9]+' "fuzz-corpus/$t.log" | awk '{print $2}' || true) runs)"
  else
    echo "FAILED — see fuzz-corpus/$t.log"; status=1
  fi
done
exit $status
