#!/usr/bin/env python3
"""perf_breakdown.py PERF_DATA BINARY: where the backend's CPU samples go, by the questions of
docs/operations.md (TLS, HTTP, JSON, MAC, each SQL statement, fsync, thread hand-overs,
allocations, logging). Reads `perf script` (record with --call-graph dwarf), resolves the
program's own frames with addr2line (this perf cannot read its symbols), and files each
sample under the first category found from the leaf up. Prints percent of samples."""
import collections
import subprocess
import sys

data, binary = sys.argv[1], sys.argv[2]
script = subprocess.run(["perf", "script", "-i", data, "-F", "ip,sym,dso"], capture_output=True, text=True).stdout
samples, cur = [], []
for line in script.splitlines():
    line = line.strip()
    if not line:
        if cur:
            samples.append(cur)
        cur = []
        continue
    parts = line.split(None, 1)
    if len(parts) < 2:
        continue
    ip, rest = parts
    cur.append((ip, rest))
if cur:
    samples.append(cur)

own = sorted({ip for s in samples for ip, rest in s if binary in rest})
names = {}
for i in range(0, len(own), 500):
    chunk = own[i:i + 500]
    out = subprocess.run(["addr2line", "-C", "-f", "-e", binary] + ["0x" + a for a in chunk],
                         capture_output=True, text=True).stdout.splitlines()
    for j, a in enumerate(chunk):
        names[a] = out[2 * j] if 2 * j < len(out) else "?"

def frames(s):
    """(function name without its parameters, shared object) for each frame, leaf first."""
    for ip, rest in s:
        if binary in rest:
            name, dso = names.get(ip, "?"), "otac-backend"
        else:
            name, _, dso = rest.rpartition(" (")
        name = name.replace("(anonymous namespace)::", "").replace("otac::backend::", "")
        if not name.startswith("("):
            name = name.split("(")[0]
        yield name, dso


def find(fs, keys, dso=None):
    for i, (name, d) in enumerate(fs):
        # std::function wrappers name their target's signature (Beast types); not a match.
        if name.startswith("std::_Function_handler") or name.startswith("std::function<"):
            continue
        if (dso and dso in d) or any(k in name for k in keys):
            return i
    return None


# Leaf to root, the first rule whose frame is found nearest the leaf wins; waits (fsync, futex)
# claim the whole sample wherever they are in the stack.
count = collections.Counter()
for s in samples:
    fs = list(frames(s))
    cat = None
    if find(fs, ["fdatasync", "do_fsync"]) is not None:
        cat = "fsync (fdatasync of the WAL, on CPU)"
    elif find(fs, ["futex", "pthread_cond_", "__lll_lock_wait"]) is not None:
        cat = "thread hand-overs (futex wait/wake, scheduler)"
    elif find(fs[:3], ["finish_task_switch", "irqentry_exit", "__schedule", "_raw_spin_unlock_irq"]) is not None:
        cat = "scheduler, preemption (kernel)"
    elif find(fs[:4], ["malloc", "free", "operator new", "operator delete", "malloc_consolidate", "unlink_chunk"]) is not None:
        cat = "allocations (malloc/free/new)"
    else:
        hits = []
        for label, keys, dso in [
            ("SQL", ["sqlite3_"], "libsqlite3"),
            ("MAC (3DES retail MAC / AES-CMAC)", ["mac_alg3", "aes_cmac", "mac8", "DES_"], None),
            ("audit HMAC", ["audit_mac"], None),
            ("KEK unseal/seal", ["Kek::", "FileKek", "unseal"], None),
            ("JSON (Boost.JSON)", ["boost::json", "parse_object", "answer_json"], None),
            ("logging (log::write)", ["log::write"], None),
            ("TLS (OpenSSL record layer)", ["SSL_read", "SSL_write", "ssl3_", "tls_", "SSL_do_handshake", "ossl_statem"], None),
            ("TCP send/receive (kernel)", ["sendmsg", "recvmsg", "tcp_", "sock_", "__libc_send", "__libc_recv"], None),
            ("HTTP parsing/serializing (Beast)", ["basic_parser", "basic_fields", "serializer", "http::detail", "http::parser", "http::message"], None),
            ("event loop (epoll, asio)", ["epoll", "scheduler::", "io_context", "executor"], None),
        ]:
            i = find(fs, keys, dso)
            if i is not None:
                hits.append((i, label))
        if hits:
            cat = min(hits)[1]
            if cat == "SQL":
                j = find(fs, ["SqliteTx::", "Connection::", "CommitGroup", "SqliteStore"])
                cat = "SQL: " + (fs[j][0] if j is not None else "?")
    count[cat or "other (request handling: strings, hex, copies, service logic)"] += 1
total = sum(count.values())
print(f"{total} samples")
for k, v in count.most_common():
    print(f"{100.0 * v / total:6.1f}%  {k}")
