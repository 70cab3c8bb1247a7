#!/usr/bin/env bash
# The install test: the five .debs from BUILD_DIR/packages installed for real into a fresh
# minimal Debian 12 root with `apt-get install ./*.deb`, the backend started with the exact
# ExecStart line of its unit as the unit's user, otac-admin run against it, then remove and
# purge, and a check of what is left. Needs root, debootstrap (or a cached base tarball) and
# the machine's Debian mirror; takes one to three minutes, so it is not in the default ctest
# run (configure with -DOTAC_INSTALL_TEST=ON for `ctest -L install`).
#   packaging/install-test.sh BUILD_DIR      (build the packages first: bash setup.sh package)
# OTAC_BASE_TAR names the cached minbase tarball (default: the one ../shared/tools/fresh-machine
# keeps); it is made with debootstrap when missing. OTAC_KEEP_ROOT=1 leaves the root in place.
set -uo pipefail
build=$(cd "${1:?usage: install-test.sh BUILD_DIR}" && pwd)
base=${OTAC_BASE_TAR:-/var/cache/fresh-machine/bookworm-minbase.tar}
pkgs=(otac-backend otac-terminal otac-tools otac-card otac-testbed)
failures=0
fail() { printf 'FAIL: %s\n' "$*"; failures=$((failures + 1)); }
ok() { printf 'ok: %s\n' "$*"; }
die() { printf 'install-test: %s\n' "$*" >&2; exit 2; }

[ "$(id -u)" = 0 ] || die "must run as root (chroot, mounts, a network namespace)"
debs=()
for p in "${pkgs[@]}"; do
  d=$(ls "$build"/packages/"${p}"_*.deb 2>/dev/null | head -1)
  [ -n "$d" ] || die "no $build/packages/${p}_*.deb: run 'bash setup.sh package' first"
  debs+=("$d")
done
command -v unshare >/dev/null && command -v ip >/dev/null || die "needs unshare (util-linux) and ip (iproute2)"

work=$(mktemp -d /tmp/otac-install.XXXXXX)
root=$work/root
mkdir -p "$root"

# Every process whose root is inside our chroot was started by this script: end those by PID.
cleanup() {
  for p in /proc/[0-9]*; do
    r=$(readlink "$p/root" 2>/dev/null || true)
    case "$r" in "$root"|"$root"/*) kill -9 "${p#/proc/}" 2>/dev/null || true ;; esac
  done
  sleep 0.3
  for m in dev/pts dev proc sys run tmp; do umount -l "$root/$m" 2>/dev/null || true; done
  if [ "${OTAC_KEEP_ROOT:-0}" = 1 ]; then echo "install-test: root kept at $root"; return; fi
  grep -q " $root/" /proc/mounts && { echo "install-test: mounts busy, leaving $work" >&2; return; }
  rm -rf --one-file-system "$work"
}
trap cleanup EXIT

if [ ! -f "$base" ]; then
  command -v debootstrap >/dev/null || die "no base tarball $base and no debootstrap (apt-get install debootstrap)"
  mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
  [ -n "$mirror" ] || mirror=$(awk '/^deb /{print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
  [ -n "$mirror" ] || die "no Debian mirror in the apt sources"
  echo "install-test: making a minimal Debian 12 base with debootstrap (cached in $base)"
  debootstrap --variant=minbase bookworm "$root" "$mirror" >"$work/debootstrap.log" 2>&1 ||
    { tail -20 "$work/debootstrap.log"; die "debootstrap failed"; }
  mkdir -p "$(dirname "$base")" && tar -C "$root" -cf "$base" .
else
  tar -C "$root" -xf "$base" || die "cannot unpack $base"
fi
cp /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true
mount -t proc proc "$root/proc" && mount -t sysfs sys "$root/sys" &&
  mount --bind /dev "$root/dev" && mount --bind /dev/pts "$root/dev/pts" &&
  mount -t tmpfs tmpfs "$root/run" && mount -t tmpfs tmpfs "$root/tmp" || die "cannot mount into $root"
mkdir -p "$root/root/debs" && cp "${debs[@]}" "$root/root/debs/"

# Runs a command in the root, as a fresh login would, with nothing of this machine's environment.
in_root() {
  chroot "$root" /usr/bin/env -i HOME=/root LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin /bin/bash -c "$1"
}
# Paths in the root, for comparing before install and after purge (apt's and dpkg's own
# bookkeeping, caches and logs excluded).
snapshot() {
  (cd "$root" && find . -xdev \( -path ./proc -o -path ./sys -o -path ./dev -o -path ./run -o -path ./tmp \
     -o -path ./var/lib/apt -o -path ./var/cache -o -path ./var/log -o -path ./var/lib/dpkg \
     -o -path ./root/debs \) -prune -o -print | sort)
}

echo "install-test: apt-get update"
in_root 'apt-get update -q' >"$work/apt-update.log" 2>&1 || { tail -20 "$work/apt-update.log"; die "apt-get update failed in the root"; }
snapshot >"$work/before"

# --- install -------------------------------------------------------------------------------------
# No policy-rc.d: the maintainer scripts themselves must start nothing where systemd does not
# run. --no-install-recommends keeps Kannel (recommended by otac-backend) out of the root.
SECONDS=0
if in_root 'cd /root/debs && apt-get install -y -q --no-install-recommends ./*.deb' >"$work/install.log" 2>&1; then
  ok "apt-get install ./*.deb (${SECONDS}s, $(grep -c '^Setting up' "$work/install.log") packages set up)"
else
  tail -30 "$work/install.log"; fail "apt-get install ./*.deb"; exit 1
fi
grep -iE '^(E:|W:)|warning' "$work/install.log" | grep -v 'apt does not have a stable CLI' && fail "apt-get install printed warnings or errors"

for p in "${pkgs[@]}"; do
  st=$(in_root "dpkg-query -W -f='\${Status}' $p" 2>/dev/null)
  [ "$st" = "install ok installed" ] && ok "$p installed" || fail "$p status '$st'"
done
for b in otac-backend otac-terminal otac-admin otac-tool otac-card otac-pn532-emu otac-dispenser-emu otac-loadgen; do
  in_root "$b --help >/dev/null 2>&1" || fail "/usr/bin/$b --help fails in the fresh root (missing library?)"
done
ok "every program answers --help"
for b in otac-backend otac-terminal otac-admin otac-tool otac-card otac-pn532-emu otac-dispenser-emu otac-loadgen; do
  in_root "test -f /usr/share/bash-completion/completions/$b" || fail "no bash completion for $b"
done
ok "every program has its bash completion"

expect_stat() {  # PATH "MODE USER:GROUP"
  local got; got=$(in_root "stat -c '%a %U:%G' $1" 2>/dev/null)
  [ "$got" = "$2" ] && ok "$1 is $2" || fail "$1 is '$got', not $2"
}
in_root 'getent passwd otac-backend >/dev/null' && ok "system user otac-backend" || fail "no user otac-backend"
in_root 'getent passwd otac-terminal >/dev/null && id -nG otac-terminal | grep -qw otac' && ok "system user otac-terminal in group otac" || fail "no user otac-terminal in group otac"
for u in otac-backend otac-terminal; do
  uid=$(in_root "id -u $u" 2>/dev/null)
  [ -n "$uid" ] && [ "$uid" -lt 1000 ] || fail "$u is not a system user (uid '$uid')"
done
expect_stat /etc/otac/otac-backend.conf "640 root:otac-backend"
expect_stat /etc/otac/terminal.conf "640 root:otac"
expect_stat /var/lib/otac-backend "700 otac-backend:otac-backend"
in_root 'test -L /etc/systemd/system/multi-user.target.wants/otac-backend.service' && ok "otac-backend.service enabled" || fail "otac-backend.service not enabled"
in_root 'test ! -e /etc/systemd/system/multi-user.target.wants/otac-terminal.service' && ok "otac-terminal.service not enabled" || fail "otac-terminal.service enabled before it is configured"
for m in man8/otac-backend.8 man8/otac-terminal.8 man1/otac-admin.1 man1/otac-tool.1 man1/otac-card.1; do
  in_root "test -f /usr/share/man/$m.gz" || fail "/usr/share/man/$m.gz missing"
done

# --- the backend as its unit runs it ------------------------------------------------------------
unit=$root/lib/systemd/system/otac-backend.service
exec_start=$(sed -n 's/^ExecStart=//p' "$unit")
user=$(sed -n 's/^User=//p' "$unit")
group=$(sed -n 's/^Group=//p' "$unit")
umask_unit=$(sed -n 's/^UMask=//p' "$unit")
[ -n "$exec_start" ] && [ -n "$user" ] || die "cannot read ExecStart and User from the unit"
echo "install-test: ExecStart=$exec_start (as $user:$group, umask ${umask_unit:-0022})"
# A network namespace of its own with only loopback up: the unit's 0.0.0.0 listener reaches
# nothing outside, and the fixed port cannot collide with anything on this machine.
admin='otac-admin --url https://127.0.0.1:8443 --ca /var/lib/otac-backend/ca.pem --token-file /var/lib/otac-backend/admin.token'
cat >"$root/root/run-backend.sh" <<EOF
set -u
umask ${umask_unit:-0022}
setpriv --reuid=$user --regid=${group:-$user} --init-groups -- $exec_start >/root/backend.log 2>&1 &
pid=\$!
echo "backend pid \$pid"
for _ in \$(seq 100); do
  [ -s /var/lib/otac-backend/backend.port ] && break
  kill -0 \$pid 2>/dev/null || break
  sleep 0.1
done
port=\$(cat /var/lib/otac-backend/backend.port 2>/dev/null)
echo "backend.port \$port"
stat -c 'backend user %U' /proc/\$pid
status=0
$admin whoami || status=1
$admin --json enroll --alg aes --msisdn +15550100 >/root/enroll.json || status=1
n=\$(sed -n 's/.*"n":"\\{0,1\\}\\([0-9A-Fa-f]*\\).*/\\1/p' /root/enroll.json)
echo "enrolled card \$n"
$admin card "\$n" || status=1
$admin audit --verify || status=1
kill -TERM \$pid
for _ in \$(seq 150); do kill -0 \$pid 2>/dev/null || break; sleep 0.1; done
if kill -0 \$pid 2>/dev/null; then echo "backend did not stop on SIGTERM"; kill -KILL \$pid; status=1; fi
wait \$pid; echo "backend exit \$?"
exit \$status
EOF
if unshare --net bash -c "ip link set lo up && chroot '$root' /usr/bin/env -i HOME=/root LANG=C.UTF-8 PATH=/usr/sbin:/usr/bin:/sbin:/bin /bin/bash /root/run-backend.sh" >"$work/run.log" 2>&1; then
  ok "backend started by its ExecStart; otac-admin whoami, enroll, card and audit --verify answered"
else
  fail "backend run (log below)"
fi
sed 's/^/  | /' "$work/run.log" | grep -v '"k"'
grep -q '^backend user otac-backend$' "$work/run.log" || fail "the backend did not run as otac-backend"
grep -q '^backend exit 0$' "$work/run.log" || fail "the backend did not exit 0 on SIGTERM"
grep -q '^backend.port 8443$' "$work/run.log" || fail "the backend did not listen on the unit's port 8443"
sed 's/^/  backend.log | /' "$root/root/backend.log" | tail -5
expect_stat /var/lib/otac-backend/otac.db "600 otac-backend:otac-backend"

# --- remove: programs gone, config and data kept --------------------------------------------------
in_root "apt-get remove -y -q ${pkgs[*]}" >"$work/remove.log" 2>&1 && ok "apt-get remove" || { tail -20 "$work/remove.log"; fail "apt-get remove"; }
for b in otac-backend otac-admin otac-terminal; do in_root "test ! -e /usr/bin/$b" || fail "/usr/bin/$b left after remove"; done
in_root 'test -f /etc/otac/otac-backend.conf && test -f /etc/otac/terminal.conf' && ok "remove keeps the conffiles" || fail "remove deleted a conffile"
in_root 'test -s /var/lib/otac-backend/otac.db && test -s /var/lib/otac-backend/ca.key' && ok "remove keeps /var/lib/otac-backend" || fail "remove deleted the backend's data"

# --- purge: conffiles and enablement gone, the backend's keys and database kept (policy) -----------
# After remove, only the packages with conffiles are known to dpkg ("rc"); the others are gone.
rc=$(in_root "dpkg -l 'otac-*' 2>/dev/null | awk '/^rc /{print \$2}' | sort | tr '\n' ' '")
[ "$rc" = "otac-backend otac-terminal " ] && ok "after remove only the packages with conffiles are left (rc): $rc" ||
  fail "after remove dpkg lists as rc: '$rc' (expected otac-backend otac-terminal)"
in_root "apt-get purge -y -q $rc" >"$work/purge.log" 2>&1 && ok "apt-get purge" || { tail -20 "$work/purge.log"; fail "apt-get purge"; }
grep -q 'kept /var/lib/otac-backend' "$work/purge.log" && ok "purge says it kept /var/lib/otac-backend" || fail "purge does not say that it kept the data"
in_root 'test ! -e /etc/otac' && ok "purge removed /etc/otac" || fail "/etc/otac left after purge: $(in_root 'ls -A /etc/otac')"
in_root 'test -s /var/lib/otac-backend/otac.db' && ok "purge keeps the backend's database and keys" || fail "purge deleted the backend's data"
in_root 'test ! -e /var/lib/otac-terminal' || fail "/var/lib/otac-terminal left after purge"
left=$(in_root "dpkg -l 'otac-*' 2>/dev/null | awk '/^[a-z][a-z] /{print \$1, \$2}'")
[ -z "$left" ] && ok "dpkg knows no otac package" || fail "dpkg still lists: $left"
in_root 'apt-get autoremove --purge -y -q' >"$work/autoremove.log" 2>&1 || fail "apt-get autoremove"

# What is left against the root before the install: only the backend's data (kept on purpose) and
# the state that deb-systemd-helper and the user database keep.
snapshot >"$work/after"
extra=$(comm -13 "$work/before" "$work/after" | grep -Ev '^\./var/lib/otac-backend(/|$)|^\./etc/(passwd|group|shadow|gshadow)-$|^\./var/lib/systemd/deb-systemd-helper-(enabled|masked)$|^\./root/(run-backend\.sh|backend\.log|enroll\.json)$' || true)
gone=$(comm -23 "$work/before" "$work/after" || true)
[ -z "$extra" ] && ok "nothing else left after purge and autoremove" || fail "left after purge and autoremove: $(echo $extra)"
[ -z "$gone" ] || fail "missing after purge (was there before the install): $(echo $gone)"
in_root 'getent passwd otac-backend >/dev/null' && ok "the user otac-backend stays (it owns the kept data)" || fail "the user otac-backend was removed but its data kept"

if [ "$failures" -ne 0 ]; then echo "$failures check(s) failed"; exit 1; fi
echo "install test passed"
