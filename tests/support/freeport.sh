#!/usr/bin/env bash
# freeport.sh [N] — prints N (default 1) distinct free TCP ports on 127.0.0.1, one per line,
# each reserved for this test run.
#
# A port handed out here is written into another process's config and bound later, so it must
# stay free in between. Two things could take it:
#   - the kernel, which gives ports from net.ipv4.ip_local_port_range to every bind to port 0
#     (our own backends listen on 127.0.0.1:0) and to every outgoing connection. So the ports
#     come from below that range, where the kernel never picks on its own.
#   - another test that runs in parallel. So each port is reserved by creating a file named after
#     it, with O_EXCL, in a directory shared by all tests on this machine. A reservation lapses
#     after RESERVE_SECONDS (longer than ctest's per-test timeout), and stale ones are removed.
# Every port is also bound once before it is handed out, so a port some daemon already holds is
# skipped. The search is bounded: at most 400 tries per port.
exec /usr/bin/python3 - "${1:-1}" <<'PY'
import errno, os, random, socket, sys, time

RESERVE_SECONDS = 1800
want = int(sys.argv[1])
state = os.environ.get("OTAC_PORT_DIR") or os.path.join(os.environ.get("TMPDIR", "/tmp"), "otac-ports")
os.makedirs(state, mode=0o1777, exist_ok=True)

try:
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        eph_lo = int(f.read().split()[0])
except OSError:
    eph_lo = 32768
lo, hi = 20000, min(eph_lo, 32768) - 1
if hi - lo < 1000:  # an unusually wide ephemeral range: use what is left below it
    lo, hi = 1024 + (hi - 1024) // 2, hi

now = time.time()
for name in os.listdir(state):
    p = os.path.join(state, name)
    try:
        if now - os.stat(p).st_mtime > RESERVE_SECONDS:
            os.unlink(p)
    except OSError:
        pass

def bindable(port):
    for fam, addr in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET, "0.0.0.0")):
        s = socket.socket(fam, socket.SOCK_STREAM)
        try:
            s.bind((addr, port))
        except OSError:
            return False
        finally:
            s.close()
    return True

ports = []
for _ in range(want):
    for _ in range(400):
        port = random.randint(lo, hi)
        if port in ports or not bindable(port):
            continue
        try:
            fd = os.open(os.path.join(state, str(port)), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except OSError as e:
            if e.errno == errno.EEXIST:
                continue
            raise
        os.write(fd, b"%d\n" % os.getppid())
        os.close(fd)
        ports.append(port)
        break
    else:
        sys.exit("freeport.sh: no free port in %d..%d after 400 tries (reservations in %s)" % (lo, hi, state))
print("\n".join(map(str, ports)))
PY
