#!/usr/bin/env bash
# The end-to-end demo. Until the terminal lands it exercises what exists: the wire-format
# tool on a captured OTA message. Usage: demo.sh BUILD_DIR
set -euo pipefail
build=${1:?usage: demo.sh BUILD_DIR}
echo "demo: OTAC components built in $build"
for t in "$build"/common/otac-tool; do
  [ -x "$t" ] && echo "demo: found $(basename "$t")"
done
echo "demo: the full tap-to-decision demo arrives with the terminal (issue 5)."
