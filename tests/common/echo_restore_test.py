#!/usr/bin/env python3
"""A signal at a PIN prompt leaves the user's terminal as it was.

echo_restore_test.py OTAC_CARD: runs `otac-card verify` on a fresh card state with a
pseudo-terminal as its controlling terminal, waits for the PIN prompt, checks that echo is off,
sends the signal, and checks that the program ended by that signal and that echo is on again
(common/sys/src/secret_input.cpp, EchoOff). Once for each of SIGINT, SIGTERM and SIGHUP.
Every wait is bounded.
"""
import os
import pty
import select
import signal
import subprocess
import sys
import tempfile
import termios
import time


def fail(msg):
    print("FAIL: " + msg, file=sys.stderr)
    sys.exit(1)


def echo_on(fd):
    return bool(termios.tcgetattr(fd)[3] & termios.ECHO)


def one(card, state, sig):
    pid, fd = pty.fork()
    if pid == 0:
        try:
            os.execv(card, [card, "verify", "--state", state])
        finally:
            os._exit(127)
    try:
        if not echo_on(fd):
            fail("echo is off before the program asked for anything")
        seen, deadline = b"", time.monotonic() + 15
        while b"PIN: " not in seen:
            if time.monotonic() > deadline:
                fail("no PIN prompt within 15 s; output so far: %r" % seen)
            ready, _, _ = select.select([fd], [], [], 0.5)
            if ready:
                seen += os.read(fd, 256)
        # The prompt is written just before echo goes off: wait (bounded) for the switch.
        for _ in range(100):
            if not echo_on(fd):
                break
            time.sleep(0.02)
        else:
            fail("echo stayed on at the PIN prompt")
        os.kill(pid, sig)
        deadline = time.monotonic() + 10
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                fail("otac-card did not end within 10 s of %s" % signal.Signals(sig).name)
            time.sleep(0.05)
        if not (os.WIFSIGNALED(status) and os.WTERMSIG(status) == sig):
            fail("otac-card should end by %s, status %r" % (signal.Signals(sig).name, status))
        if not echo_on(fd):
            fail("echo is still off after %s at the PIN prompt" % signal.Signals(sig).name)
        print("ok: %s at the PIN prompt, echo restored" % signal.Signals(sig).name)
    finally:
        os.close(fd)


def main():
    card = sys.argv[1]
    with tempfile.TemporaryDirectory() as d:
        state = os.path.join(d, "card.state")
        subprocess.run([card, "init", "--state", state], check=True, capture_output=True, timeout=30)
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            one(card, state, sig)


if __name__ == "__main__":
    main()
