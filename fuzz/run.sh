#!/usr/bin/env bash
# fuzz/run.sh [SECONDS] [TARGET...] — build every libFuzzer target with clang + ASan/UBSan
# and run each for SECONDS (default 30). Corpora persist in fuzz-corpus/<target>/ (git-ignored),
# seeded from <layer>/fuzz_corpus/<target without fuzz_>/ and fuzz/corpus/<target>/ where the
# repository has seeds; a crash leaves its input in fuzz-corpus/crashes/ and makes the script
# exit non-zero.
#
# fuzz/run.sh campaign SECONDS [TARGET...] — the same runs, then each target's corpus is
# minimized (-merge=1) into fuzz/corpus/<target>/, which is committed, and one line per target
# (executions, coverage, features, corpus size, result) is printed as a Markdown table for
# docs/operations.md and appended to fuzz-corpus/campaign.tsv.
#
# Every run uses the dictionaries in fuzz/dict/ that fit the target's input (TLV, APDU, HTTP,
# JSON), merged into one file, since libFuzzer takes one -dict.
set -euo pipefail
cd "$(dirname "$0")/.."
campaign=0
if [ "${1:-}" = campaign ]; then campaign=1; shift; fi
secs=${1:-30}; shift || true
build=${OTAC_FUZZ_BUILD_DIR:-build-fuzz}
cmake -S . -B "$build" -G Ninja -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
  -DOTAC_FUZZ=ON -DOTAC_TESTS=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
# Only the fuzz targets (the sanitized build of everything else takes far longer).
cmake --build "$build" -j "${OTAC_FUZZ_JOBS:-$(nproc)}" --target otac_fuzz >/dev/null
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(find "$build/fuzz" -maxdepth 1 -type f -executable -name 'fuzz_*' -printf '%f\n' | sort)
fi
# dicts_for TARGET: the dictionaries (fuzz/dict/*.dict) that fit the target's input.
dicts_for() {
  case "$1" in
    fuzz_tlv|fuzz_hex|fuzz_backend_challenge|fuzz_card_state|fuzz_protocol*) echo tlv ;;
    fuzz_terminal_answer) echo json ;;
    fuzz_terminal_flow) echo apdu tlv ;;
    fuzz_apdu|fuzz_applet_apdu|fuzz_pn532_chip|fuzz_pn532_frame) echo apdu tlv ;;
    fuzz_envelope|fuzz_sms|fuzz_ota_command|fuzz_ota_response|fuzz_backend_mo) echo tlv apdu ;;
    fuzz_backend_http_framing|fuzz_backend_mo_query|fuzz_url) echo http ;;
    fuzz_backend_request) echo http json ;;
    fuzz_console|fuzz_console_api) echo http json console ;;
    fuzz_backend_config_toml|fuzz_terminal_config_toml) echo toml ;;
    *) ;;
  esac
}
mkdir -p fuzz-corpus/crashes
status=0
rows=()
for t in "${targets[@]}"; do
  mkdir -p "fuzz-corpus/$t"
  # Committed seeds (read-only, after the working corpus): <layer>/fuzz_corpus/<target without
  # fuzz_>, and the campaign's minimized corpus fuzz/corpus/<target>.
  seeds=()
  for d in */fuzz_corpus/"${t#fuzz_}" "fuzz/corpus/$t"; do [ -d "$d" ] && seeds+=("$d"); done
  dict_args=()
  dicts=$(dicts_for "$t")
  if [ -n "$dicts" ]; then
    dict_file="fuzz-corpus/$t.dict"
    : >"$dict_file"
    for d in $dicts; do cat "fuzz/dict/$d.dict" >>"$dict_file"; done
    dict_args=(-dict="$dict_file")
  fi
  # A card state blob is about 8 KB (two lists of 200 codes), its state file 28 KB (a header
  # block and two slots of 12 KB); every other input fits in 4 KB.
  max_len=4096
  [ "$t" = fuzz_card_state ] && max_len=9000
  [ "$t" = fuzz_card_state_file ] && max_len=40000
  printf 'fuzz: %-28s %ss ... ' "$t" "$secs"
  result=clean
  if "$build/fuzz/$t" -max_total_time="$secs" -max_len="$max_len" -timeout=10 -print_final_stats=1 -rss_limit_mb=2048 \
       "${dict_args[@]}" -artifact_prefix="fuzz-corpus/crashes/$t-" "fuzz-corpus/$t" "${seeds[@]}" >"fuzz-corpus/$t.log" 2>&1; then
    echo "ok ($(grep -Eo 'stat::number_of_executed_units: [0-9]+' "fuzz-corpus/$t.log" | awk '{print $2}' || true) runs)"
  else
    echo "FAILED — see fuzz-corpus/$t.log"; status=1; result=FAILED
  fi
  [ $campaign = 1 ] || continue
  # Minimize into the committed corpus: -merge=1 keeps the smallest set of inputs that covers
  # everything the working corpus and the previous committed corpus cover.
  mkdir -p "fuzz/corpus/$t"
  fresh=$(mktemp -d)
  "$build/fuzz/$t" -merge=1 -max_len="$max_len" -timeout=10 -rss_limit_mb=2048 "$fresh" "fuzz/corpus/$t" "fuzz-corpus/$t" \
    >"fuzz-corpus/$t.merge.log" 2>&1 || { echo "  merge FAILED — see fuzz-corpus/$t.merge.log"; status=1; }
  rm -rf "fuzz/corpus/$t" && mv "$fresh" "fuzz/corpus/$t" && chmod 755 "fuzz/corpus/$t"
  execs=$(grep -Eo 'stat::number_of_executed_units: [0-9]+' "fuzz-corpus/$t.log" | awk '{print $2}' | tail -1)
  # The last status line libFuzzer printed: "#N ... cov: C ft: F corp: K/..."
  last=$(grep -E '^#[0-9]+' "fuzz-corpus/$t.log" | tail -1)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last"); ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  files=$(find "fuzz/corpus/$t" -type f | wc -l)
  row="| $(date -u +%F) | $t | ${secs} s | ${execs:-?} | ${cov:-?} | ${ft:-?} | $files | $result |"
  rows+=("$row")
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$(date -u +%FT%TZ)" "$t" "$secs" "${execs:-?}" "${cov:-?}" "${ft:-?}" "$files" "$result" \
    >>fuzz-corpus/campaign.tsv
done
if [ $campaign = 1 ]; then
  echo
  echo "| date (UTC) | target | time | executions | coverage (edges) | features | corpus files | result |"
  echo "|---|---|---|---|---|---|---|---|"
  printf '%s\n' "${rows[@]}"
fi
exit $status
