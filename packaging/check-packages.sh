#!/usr/bin/env bash
# The packages test (ctest label "packages"): builds the .debs from BUILD_DIR, unpacks each with
# dpkg-deb into a temporary folder, and checks file lists, modes, owners, conffiles, man pages,
# maintainer scripts and the systemd units. Installing for real is in docs/operations.md.
#   packaging/check-packages.sh BUILD_DIR
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=$(cd "${1:?usage: check-packages.sh BUILD_DIR}" && pwd)
tmp=$(mktemp -d /tmp/otac-packages.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
failures=0
fail() { printf 'FAIL: %s\n' "$*"; failures=$((failures + 1)); }
ok() { printf 'ok: %s\n' "$*"; }

"$here/build-packages.sh" "$build" >/dev/null || { echo "FAIL: building the packages"; exit 1; }
version=$(dpkg-parsechangelog -l "$here/debian/changelog" -S Version 2>/dev/null ||
          sed -n '1s/.*(\(.*\)).*/\1/p' "$here/debian/changelog")

declare -A bins=([backend]="otac-backend" [terminal]="otac-terminal" [tools]="otac-admin otac-tool"
                 [card]="otac-card" [testbed]="otac-pn532-emu otac-dispenser-emu otac-loadgen")
declare -A mans=([backend]="man8/otac-backend.8" [terminal]="man8/otac-terminal.8"
                 [tools]="man1/otac-admin.1 man1/otac-tool.1" [card]="man1/otac-card.1"
                 [testbed]="man1/otac-pn532-emu.1 man1/otac-dispenser-emu.1 man1/otac-loadgen.1")
declare -A confs=([backend]="/etc/otac/otac-backend.conf" [terminal]="/etc/otac/terminal.conf")
declare -A units=([backend]="otac-backend.service" [terminal]="otac-terminal.service")
declare -A datadirs=([backend]="/var/lib/otac-backend" [terminal]="/var/lib/otac-terminal")

for comp in backend terminal tools card testbed; do
  pkg=otac-$comp
  deb=$(ls "$build"/packages/${pkg}_"${version}"_*.deb 2>/dev/null | head -1)
  [ -n "$deb" ] || { fail "$pkg: no ${pkg}_${version}_*.deb"; continue; }
  root=$tmp/$pkg ctl=$tmp/$pkg.control
  dpkg-deb -x "$deb" "$root" && dpkg-deb -e "$deb" "$ctl" || { fail "$pkg: dpkg-deb cannot unpack it"; continue; }
  listing=$(dpkg-deb -c "$deb")

  # Every file belongs to root, and nothing outside the usual places.
  if awk '$2 != "root/root" {bad=1} END {exit !bad}' <<<"$listing"; then fail "$pkg: a file not owned by root/root"; fi
  stray=$(awk '$1 !~ /^d/ {print $6}' <<<"$listing" | grep -Ev '^\./(usr/(bin|share/(man|doc|bash-completion/completions))|etc/otac|lib/(systemd/system|udev/rules\.d))/' || true)
  [ -z "$stray" ] && ok "$pkg: owners and locations" || fail "$pkg: unexpected paths: $stray"

  for b in ${bins[$comp]}; do
    f=$root/usr/bin/$b
    if [ ! -f "$f" ]; then fail "$pkg: /usr/bin/$b missing"; continue; fi
    [ "$(stat -c %a "$f")" = 755 ] || fail "$pkg: /usr/bin/$b mode $(stat -c %a "$f")"
    readelf -S "$f" | grep -q '\.debug_info' && fail "$pkg: /usr/bin/$b is not stripped"
    readelf -d "$f" | grep -Eq 'RPATH|RUNPATH' && fail "$pkg: /usr/bin/$b carries an RPATH"
    "$f" --help >/dev/null 2>&1 || fail "$pkg: /usr/bin/$b --help fails"
    # Bash completion for every program: a file of its name that defines a completion for it.
    c=$root/usr/share/bash-completion/completions/$b
    if [ ! -f "$c" ]; then fail "$pkg: no bash completion /usr/share/bash-completion/completions/$b"
    else
      [ "$(stat -c %a "$c")" = 644 ] || fail "$pkg: completion $b mode $(stat -c %a "$c")"
      bash -c "source '$c' && complete -p '$b'" >/dev/null 2>&1 || fail "$pkg: completion $b does not register a completion for $b"
    fi
    ok "$pkg: /usr/bin/$b"
  done

  for m in ${mans[$comp]}; do
    f=$root/usr/share/man/$m.gz
    if [ ! -f "$f" ]; then fail "$pkg: /usr/share/man/$m.gz missing"; continue; fi
    [ "$(stat -c %a "$f")" = 644 ] || fail "$pkg: $m.gz mode $(stat -c %a "$f")"
    gzip -t "$f" || fail "$pkg: $m.gz is not gzip"
    page=${m##*/}
    zcat "$f" | grep -q "^\.TH \"${page%.*}\" \"${page##*.}\"" || fail "$pkg: $m has no .TH ${page%.*} ${page##*.}"
    zcat "$f" | grep -q '^\.SH SYNOPSIS' || fail "$pkg: $m has no SYNOPSIS"
    if command -v man >/dev/null; then
      warn=$(MANWIDTH=80 man --warnings -l "$f" 2>&1 >/dev/null)
      [ -z "$warn" ] || fail "$pkg: man $m warns: $warn"
    fi
    ok "$pkg: man page $m"
  done

  for d in copyright changelog.Debian.gz; do
    [ -f "$root/usr/share/doc/$pkg/$d" ] || fail "$pkg: /usr/share/doc/$pkg/$d missing"
  done

  grep -q "^Depends:.*libc6" "$ctl/control" || fail "$pkg: Depends lacks libc6 (dpkg-shlibdeps did not run)"
  grep -q "^Version: $version\$" "$ctl/control" || fail "$pkg: Version is not $version"

  conf=${confs[$comp]:-}
  if [ -n "$conf" ]; then
    [ -f "$root$conf" ] || fail "$pkg: $conf missing"
    [ "$(cat "$ctl/conffiles" 2>/dev/null)" = "$conf" ] || fail "$pkg: conffiles is not exactly $conf"
    grep -q '^# ' "$root$conf" || fail "$pkg: $conf has no comments"
    for s in postinst prerm postrm; do
      f=$ctl/$s
      if [ ! -f "$f" ]; then fail "$pkg: no $s"; continue; fi
      [ "$(stat -c %a "$f")" = 755 ] || fail "$pkg: $s mode $(stat -c %a "$f")"
      sh -n "$f" || fail "$pkg: $s does not parse"
    done
    user=${pkg}
    sed -e ':a' -e '/\\$/N; s/\\\n//; ta' "$ctl/postinst" | grep -q "adduser --system.* $user\$" || fail "$pkg: postinst does not create the user $user"
    grep -Eq 'rm -rf /var/lib/otac-backend|rm -r.* /var/lib/otac-backend' "$ctl/postrm" && fail "$pkg: postrm deletes the backend's data"
    grep -q '^Depends:.*adduser' "$ctl/control" || fail "$pkg: Depends lacks adduser"
    ok "$pkg: conffile $conf and maintainer scripts"
  else
    [ ! -e "$ctl/conffiles" ] || fail "$pkg: unexpected conffiles"
  fi

  unit=${units[$comp]:-}
  if [ -n "$unit" ]; then
    f=$root/lib/systemd/system/$unit
    if [ ! -f "$f" ]; then fail "$pkg: /lib/systemd/system/$unit missing"; else
      for want in "User=$pkg" ProtectSystem=strict ProtectHome=yes PrivateTmp=yes NoNewPrivileges=yes \
                  "ReadWritePaths=${datadirs[$comp]}" CapabilityBoundingSet= SystemCallFilter=@system-service; do
        grep -qx "$want" "$f" || fail "$pkg: $unit lacks the line $want"
      done
      grep -q '^RestrictAddressFamilies=AF_' "$f" || fail "$pkg: $unit lacks RestrictAddressFamilies"
      [ "$(grep -c '^ReadWritePaths=' "$f")" = 1 ] || fail "$pkg: $unit has more than one ReadWritePaths"
      [ "$(grep -c '^CapabilityBoundingSet=' "$f")" = 1 ] || fail "$pkg: $unit sets capabilities"
      exe=$(sed -n 's/^ExecStart=\([^ ]*\).*/\1/p' "$f")
      [ -x "$root$exe" ] || fail "$pkg: $unit runs $exe, which the package does not ship"
      if command -v systemd-analyze >/dev/null; then
        score=$(systemd-analyze security --offline=yes --no-pager "$f" 2>/dev/null | sed -n 's/.*Overall exposure level for .*: \([0-9.]*\).*/\1/p')
        if [ -z "$score" ]; then fail "$pkg: systemd-analyze security gave no score"
        elif awk -v s="$score" 'BEGIN {exit !(s > 2.5)}'; then fail "$pkg: $unit exposure $score (above 2.5)"
        else ok "$pkg: $unit exposure $score"; fi
      fi
    fi
  fi
done

if [ "$failures" -ne 0 ]; then echo "$failures check(s) failed"; exit 1; fi
echo "all package checks passed"
