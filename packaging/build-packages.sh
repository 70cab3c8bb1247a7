#!/usr/bin/env bash
# Builds the Debian packages from a configured build tree: builds what is stale, then runs CPack.
#   packaging/build-packages.sh [BUILD_DIR]     (default ./build); the .debs land in BUILD_DIR/packages
# Needs scdoc (man pages) and dpkg-dev (dpkg-shlibdeps); `bash setup.sh package` installs both.
set -euo pipefail
build=$(cd "${1:-$(dirname "$0")/../build}" && pwd)
jobs=${OTAC_JOBS:-$(nproc)}
[ -f "$build/CMakeCache.txt" ] || { echo "build-packages: $build is not a configured build tree" >&2; exit 2; }
[ -f "$build/CPackConfig.cmake" ] || { echo "build-packages: $build has no CPack configuration (is scdoc installed? re-run cmake)" >&2; exit 2; }
cmake --build "$build" -j "$jobs" >"$build/packages-build.log" 2>&1 || {
  tail -30 "$build/packages-build.log" >&2; exit 1; }
rm -f "$build"/packages/*.deb
# The files in a .deb belong to root whoever builds it: CPack writes the tar headers itself.
(cd "$build" && cpack -G DEB -B "$build/packages" >"$build/packages.log" 2>&1) || {
  tail -30 "$build/packages.log" >&2; exit 1; }
ls "$build"/packages/*.deb
