#!/usr/bin/env python3
"""callgrind_count.py DUMP...: instructions per authorization in callgrind dumps of
otac-backend (bench/instructions.sh). An authorization is a call of
Service::authorize_async; each dump's instructions are split into the committing thread
(CommitGroup::commit_loop), the TLS handshakes (SSL_do_handshake: 32 connections' worth,
paid once per connection, so left out of the per-authorization figure), and the rest
(network threads, syncer). The committer's share is the inclusive cost of its batches
(Connection::execute: the thread itself started before the counting did). Also prints calls per authorization of what the store and
crypto do most: malloc, Kek::open (unsealing), HMAC, 3DES blocks, SQLite statements."""
import re
import sys


def read(path):
    names, cur, calls, incl, total = {}, None, {}, {}, 0
    for line in open(path, errors="replace"):
        if line.startswith(("summary:", "totals:")):
            total = int(line.split()[1])
            continue
        m = re.match(r"(c?fn)=\((\d+)\)(?: (.*))?", line)
        if m:
            kind, ident, name = m.groups()
            if name:
                names[ident] = name.strip()
            cur = names.get(ident, "") if kind == "cfn" else None
            continue
        if line.startswith("calls=") and cur is not None:
            calls[cur] = calls.get(cur, 0) + int(line.split()[0][6:])
            continue
        # The cost line after a calls= line is the inclusive cost of that call.
        if cur is not None and line[:1] in "0123456789+-*":
            parts = line.split()
            if len(parts) >= 2:
                incl[cur] = incl.get(cur, 0) + int(parts[1])
            cur = None
    return total, calls, incl


def starting(d, prefix):
    return sum(v for k, v in d.items() if k.startswith(prefix))


counted = 0
for path in sys.argv[1:]:
    total, calls, incl = read(path)
    n = starting(calls, "otac::backend::Service::authorize_async(")
    if n == 0:
        print(f"{path}: no authorization in this dump")
        continue
    counted += 1
    hs = starting(incl, "SSL_do_handshake")
    commit = starting(incl, "otac::backend::sqlite::Connection::execute(")
    k = 1000.0 * n
    print(f"{path}: {n} authorizations; per authorization {(total - hs) / k:.0f}k instructions without the "
          f"TLS handshakes (committer's batches {commit / k:.0f}k, the rest {(total - hs - commit) / k:.0f}k; "
          f"handshakes {hs / 1e6:.0f}M in all)")
    print("  calls per authorization: " + ", ".join(
        f"{label} {starting(calls, prefix) / n:.2f}" for label, prefix in [
            ("malloc", "malloc"), ("Kek::open", "otac::backend::Kek::open"),
            ("HMAC", "otac::crypto::hmac_sha256"), ("keyed HMAC", "otac::crypto::HmacSha256Key::mac"),
            ("TDEA block", "DES_encrypt3"), ("sqlite3_step", "sqlite3_step"),
            ("batch", "otac::backend::sqlite::Connection::execute(")]))
sys.exit(0 if counted else 1)
