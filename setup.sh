#!/usr/bin/env bash
# setup.sh — one entry point for a newcomer on a fresh Debian 12 machine (run as root).
#
#   bash setup.sh demo    install dependencies, build, run the end-to-end demo
#   bash setup.sh demo --postgres   the same demo on two backend nodes sharing one PostgreSQL
#   bash setup.sh test    install dependencies, build, run the whole test suite (ctest)
#   bash setup.sh deps    only install the Debian packages the project needs
#   bash setup.sh build   install dependencies and build into ./build
#   bash setup.sh package build, then the Debian packages into ./build/packages, and lintian
#                         ("packages" is the same)
#
# Every step is idempotent: packages already present are not reinstalled, and the build
# directory is reused. Set OTAC_BUILD_DIR to build elsewhere, OTAC_JOBS to limit parallelism.
set -euo pipefail
cd "$(dirname "$0")"
root=$PWD
build=${OTAC_BUILD_DIR:-$root/build}
jobs=${OTAC_JOBS:-$(nproc)}

# The packages each part needs; keep this list the single source of truth (docs/operations.md
# refers here).
packages=(
  # toolchain
  build-essential cmake ninja-build pkg-config clang libclang-rt-14-dev
  # common/: crypto; backend: TLS, HTTP, JSON, store
  libssl-dev openssl libboost1.81-dev libboost-json1.81-dev libsqlite3-dev sqlite3
  # every program's command line; the backend's and the terminal's config files (TOML)
  libcli11-dev libtomlplusplus-dev
  # the PostgreSQL store (libpq) and the throw-away clusters of its tests (initdb, pg_ctl)
  libpq-dev postgresql postgresql-client
  # backend policy: IANA time zones for door windows, the ISO 4217 currency list
  libhowardhinnant-date-dev tzdata iso-codes
  # readers and virtual card
  libnfc-dev libnfc-bin libpcsclite-dev pcscd pcsc-tools opensc vsmartcard-vpcd
  # keys in a PKCS#11 token: p11-kit headers and URI parser, SoftHSM2 for tests (opensc: pkcs11-tool)
  libp11-kit-dev softhsm2
  # SMS gateway
  kannel kannel-extras
  # door relay
  libgpiod-dev
  # operator console browser tests (headless)
  chromium chromium-driver
  # Debian packages: man pages, the package checker, a fresh root for the install test
  scdoc lintian debootstrap
  # tests
  catch2 procps psmisc curl ca-certificates iproute2 python3 util-linux
  # line coverage of the test suite (.ci/coverage.sh)
  gcovr
  # benchmarks: nginx as the HTTPS reference (bench/ratio.sh), the profiler, and
  # instruction counts that do not depend on the machine's load (bench/instructions.sh)
  nginx linux-perf valgrind
)

log() { printf 'setup: %s\n' "$*"; }

deps() {
  if [ "$(id -u)" != 0 ]; then
    log "not root: skipping package installation (run as root on a fresh machine)"
    return 0
  fi
  local missing=()
  for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -eq 0 ]; then
    return 0
  fi
  log "installing ${#missing[@]} Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Package scripts try to start services; on machines without systemd that fails harmlessly,
  # and the tests start their own daemons anyway. policy-rc.d keeps them from starting at all.
  local policy=/usr/sbin/policy-rc.d created_policy=0
  if [ ! -e $policy ]; then
    printf '#!/bin/sh\nexit 101\n' >$policy && chmod +x $policy && created_policy=1
  fi
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends "${missing[@]}" >/tmp/otac-apt.log 2>&1 || {
    tail -30 /tmp/otac-apt.log; [ $created_policy = 1 ] && rm -f $policy; exit 1; }
  [ $created_policy = 1 ] && rm -f $policy
  log "packages installed"
}

# chromedriver reaches Chromium's DevTools at "localhost", and the daemons' examples use the
# name too. Installed Debian systems list it in /etc/hosts; minimal images and chroots may have
# no /etc/hosts at all, and then the browser tests fail with "unable to connect to renderer".
localhost_resolves() {
  getent hosts localhost >/dev/null && return 0
  if [ "$(id -u)" != 0 ]; then
    log "warning: the name localhost does not resolve; add '127.0.0.1 localhost' to /etc/hosts"
    return 0
  fi
  log "the name localhost does not resolve: adding it to /etc/hosts"
  printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' >>/etc/hosts
}

configure_and_build() {
  if [ ! -f "$build/CMakeCache.txt" ]; then
    cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DOTAC_TESTS=ON >/dev/null
  fi
  log "building in $build ($jobs jobs)"
  cmake --build "$build" -j "$jobs"
}

case "${1:-}" in
  deps) deps; localhost_resolves ;;
  build) deps; localhost_resolves; configure_and_build ;;
  demo) shift; deps; localhost_resolves; configure_and_build; exec "$root/tests/e2e/demo.sh" "$build" "$@" ;;
  test)
    deps; localhost_resolves; configure_and_build
    log "running the test suite"
    cd "$build" && ctest --output-on-failure -j "${OTAC_TEST_JOBS:-2}" --timeout 600
    ;;
  package|packages)
    deps; localhost_resolves; configure_and_build
    "$root/packaging/build-packages.sh" "$build"
    log "lintian (errors fail this step)"
    lintian --fail-on error "$build"/packages/*.deb
    ;;
  -h|--help|help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//' ;;
  "") sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
  *) printf 'setup.sh: unknown command %s (one of: demo, test, deps, build, package)\n' "'$1'" >&2; exit 2 ;;
esac
