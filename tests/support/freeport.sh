#!/usr/bin/env bash
# freeport.sh [N] — prints N (default 1) distinct free TCP ports on 127.0.0.1, one per line.
# The kernel picks them (bind to port 0), so parallel tests do not collide by convention.
exec /usr/bin/python3 - "${1:-1}" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
for s in socks:
    print(s.getsockname()[1])
PY
