#!/usr/bin/env python3
"""The driver of tests/e2e/soak.sh, which brings the system up and documents the actions and
the invariants: read its header first. Run by soak.sh only (it exports the paths and ports).

Every action goes through the real programs (otac-terminal, otac-card, otac-admin, the
backend's /metrics, Kannel's start script) and every check reads their own outputs. The
random choices come from one random.Random(seed); the daemons' timing is real, so a seed
gives the same actions but not always the same interleaving with the SMS traffic."""
import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import time

E = os.environ
RUN = E["OTAC_RUN"]
BACKEND_DIR = E["BACKEND_DIR"]
PORT = E["BACKEND_PORT"]
URL = f"https://127.0.0.1:{PORT}"
CA = f"{BACKEND_DIR}/ca.pem"
CARD_N = E["CARD_N"]
PIN, PUK, DOOR_OK = E["CARD_PIN"], E["CARD_PUK"], E["DOOR_OK"]
WRONG_PIN = "1357" if PIN != "1357" else "2468"
KANNEL = ["bash", f"{E['E2E_SUPPORT']}/kannel.sh"]
KANNEL_DIR = f"{RUN}/kannel"

PIN_LIMIT = 30.00      # soak.sh activates the card with --pin-limit 3000
REVIEW = 50.00         # lib.sh enrolls it with --review 5000
HOLD_LIMIT_S = 20      # soak.sh's hold_limit_seconds
SETTLE_S = 200         # a quiet phase waits at most this long for the SMS traffic to end
                       # (a PoR lost while the backend was down: its list goes again at 60 s;
                       # a second packet of it lost: 120 s after that one, list_repair_seconds
                       # doubling per packet)
CMD_TIMEOUT_S = 60     # no single program run may take longer

# Backend reasons for which the code was not consumed (authorization.cpp: checked before the
# code is consumed). A genuine tap or typed code declined card_blocked is consumed.
NOT_CONSUMED = {"unknown_card", "unknown_code", "bad_cryptogram", "bad_code"}

# Bugs this soak found whose fix lies outside tests/e2e (docs/operations.md, "Through the real
# daemons"). While a name is listed, the action mix avoids its trigger, so that the ctest keeps
# checking everything else; --strict drives the trigger anyway. Remove a name with its fix.
# Fixed, so no longer avoided: e2_overtaken (an E2 overtaken by a later packet and refused
# for its counter is sent again), e4_under_retired_key (an unconfirmed E4 goes again under K'
# when the rotation completes) and e3_e4_lost (an E3 or E4 lost on its way goes again,
# Service::repair_key_packets; tests/e2e/lost_sms.sh server-key).
KNOWN_BUGS: set = set()

# name, weight: the mix of actions (see soak.sh).
ACTIONS = [
    ("pos", 24), ("pos_pin", 8), ("pos_held", 6), ("door", 8), ("door_refused", 2), ("display", 10),
    ("user_refresh", 4), ("operator_refresh", 4), ("rotate_key", 3), ("backend_restart", 3),
    ("kannel_outage", 3), ("card_restart", 3), ("block", 2), ("wrong_pin", 3), ("signature_key", 1), ("server_key", 1),
]


class Failure(Exception):
    def __init__(self, invariant, message):
        super().__init__(f"{invariant}: {message}")
        self.invariant = invariant


def run(args, stdin_text=None, timeout=CMD_TIMEOUT_S):
    """Runs a program to its end: (exit status, stdout, stderr); logged to steps.log."""
    try:
        p = subprocess.run(args, input=stdin_text if stdin_text is not None else "", capture_output=True,
                           text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise Failure("timeout", f"{' '.join(args[:4])} ... did not finish within {timeout}s")
    with open(f"{RUN}/steps.log", "a") as log:
        log.write(f"$ {' '.join(args)}\n[exit {p.returncode}]\n{p.stdout}{p.stderr}")
    return p.returncode, p.stdout, p.stderr


def admin(*args):
    return run([E["BIN_ADMIN"], "--url", URL, "--ca", CA, "--token-file", f"{BACKEND_DIR}/admin.token",
                "--timeout", "10", *args])


def admin_json(*args):
    rc, out, err = admin("--json", *args)
    if rc != 0:
        raise Failure("admin", f"otac-admin {' '.join(args)} exited {rc}: {err.strip()}")
    return json.loads(out)


def card(sub, *args, secrets=()):
    """otac-card SUB; PINs and the PUK go on its standard input, one line each, never as arguments."""
    return run([E["BIN_CARD"], sub, "--state", E["CARD_STATE"], *args],
               stdin_text="".join(f"{s}\n" for s in secrets))


def card_status():
    rc, out, err = card("status", "--json")
    if rc != 0:
        raise Failure("card", f"otac-card status exited {rc}: {err.strip()}")
    return json.loads(out)


def sms_queue_depth():
    rc, out, err = run(["curl", "-sS", "--max-time", "5", "--cacert", CA, f"{URL}/metrics"])
    m = re.search(r"^otac_sms_queue_depth (\d+)", out, re.M)
    if rc != 0 or not m:
        raise Failure("metrics", f"no otac_sms_queue_depth from {URL}/metrics (curl exit {rc}): {err.strip()}")
    return int(m.group(1))


def pid_alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[-1][:1] != "Z"
    except OSError:
        return False


def kill9(pid, invariant, name):
    """kill -9, then waits (5 s at most) until the process is gone."""
    os.kill(pid, signal.SIGKILL)
    for _ in range(100):
        if not pid_alive(pid):
            return
        time.sleep(0.05)
    raise Failure(invariant, f"{name} (PID {pid}) survived kill -9")


def socket_bytes_waiting(pid):
    """Bytes received but not yet read on the TCP sockets of process PID (/proc/net/tcp*)."""
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
    except OSError:
        return 0
    waiting = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                cols = line.split()
                if cols[9] in inodes:
                    waiting += int(cols[4].split(":")[1], 16)
    return waiting


class Terminal:
    """One otac-terminal run in the background: its two output lines and its display."""

    def __init__(self, name, args, pin_lines):
        self.out, self.err = f"{RUN}/t/{name}.out", f"{RUN}/t/{name}.err"
        self.args = [E["BIN_TERM"], "--config", E["TERM_CONF"], *args]
        with open(self.out, "w") as o, open(self.err, "w") as e:
            self.p = subprocess.Popen(self.args, stdin=subprocess.PIPE, stdout=o, stderr=e, text=True)
        try:
            self.p.stdin.write("".join(x + "\n" for x in pin_lines))
            self.p.stdin.close()
        except BrokenPipeError:
            pass  # it ended without asking for a PIN

    def display(self):
        with open(self.err) as f:
            return f.read()

    def finish(self):
        try:
            rc = self.p.wait(timeout=CMD_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.p.kill()
            raise Failure("timeout", f"otac-terminal {' '.join(self.args[3:])} did not finish")
        with open(self.out) as f:
            lines = f.read().splitlines()
        with open(f"{RUN}/steps.log", "a") as log:
            log.write(f"$ {' '.join(self.args)}\n[exit {rc}]\n" + "\n".join(lines) + "\n" + self.display())
        if len(lines) < 2:
            raise Failure("terminal", f"otac-terminal printed no decision (exit {rc}): {self.display()[-400:]}")
        return rc, json.loads(lines[1])


class Soak:
    def __init__(self, seed, strict):
        self.avoid = set() if strict else KNOWN_BUGS
        self.rng = random.Random(seed)
        self.seed = seed
        self.step = 0
        self.actions = []            # "step: action detail -> outcome"
        self.kannel_down = 0         # steps until Kannel is started again (0: it runs)
        self.blocked = 0             # steps until the operator unblocks (0: active)
        self.pin_tries = 3           # the card's PIN tries left, as the holder's actions imply
        self.spent = {}              # (list, index) spent on the card -> its txn id
        self.lost = {}               # (list, index) spent on the card, never consumed by the backend
        self.term = {}               # txn -> what the terminal printed (+ when, and spent code)
        self.backend = {}            # txn -> the backend's record (otac-admin transactions)
        self.since = 0               # where the next transaction listing starts
        self.server_key_sent = False  # an E4 went out: the backend must see it confirmed
        self.status = card_status()
        self.counts = {"quiet phases": 0, "approvals": 0, "held approved": 0, "late decisions refused": 0,
                       "lost answers": 0, "backend restarts": 0, "card daemon restarts": 0, "kannel outages": 0, "lists seen": 0,
                       "key rotations": 0}
        os.makedirs(f"{RUN}/t", exist_ok=True)

    # ---- helpers ---------------------------------------------------------------------------
    def note(self, text):
        self.actions.append(f"{self.step}: {text}")
        with open(f"{RUN}/soak.log", "a") as f:
            f.write(self.actions[-1] + "\n")

    def txn(self, kind):
        return f"S{self.seed}-{self.step}-{kind}"

    def pin_blocked(self):
        return self.pin_tries == 0

    def enter_pins(self, lines):
        """The card's PIN counter after a terminal or phone PIN entry of LINES (stops at the
        first correct one, or when blocked)."""
        for pin in lines:
            if self.pin_blocked():
                return
            if pin == PIN:
                self.pin_tries = 3
                return
            self.pin_tries -= 1

    def spend(self, code, owner):
        if code in self.spent:
            raise Failure("card", f"the card spent list {code[0]} index {code[1]} twice ({self.spent[code]}, {owner})")
        self.spent[code] = owner

    def genuine_possible(self):
        return self.blocked == 0 and not self.pin_blocked() and self.status["unused"] > 0

    # ---- taps -------------------------------------------------------------------------------
    def tap(self, kind, args, pin_lines=(), amount=0.0, operator=None, backend_down=False):
        """One tap through the emulated reader; returns the terminal's JSON line. OPERATOR:
        None, or (verb, late) for a held purchase: decide while the terminal waits, or after."""
        txn = self.txn(kind)
        req = f"{RUN}/t/{txn}.request.json"
        possible = self.genuine_possible()
        t0 = time.time()
        t = Terminal(txn, [*args, "--txn-id", txn, "--save-request", req], list(pin_lines))
        op_rc = None
        op_delay = self.rng.uniform(0, 1.5)  # drawn always: the random stream does not follow outcomes
        if operator and not operator[1]:
            for _ in range(150):  # until the terminal waits for an operator (bounded: 15 s)
                if "Waiting for operator" in t.display() or t.p.poll() is not None:
                    break
                time.sleep(0.1)
            if "Waiting for operator" in t.display():
                time.sleep(op_delay)
                op_rc, _, _ = admin(operator[0], txn)
        rc, line = t.finish()
        self.enter_pins(pin_lines if amount >= PIN_LIMIT else ())
        code = None
        if os.path.exists(req):
            with open(req) as f:
                body = json.load(f)
            code = (body["list"], body["index"])
            self.spend(code, txn)
        d, reason = line["decision"], line["reason"]
        self.term[txn] = {"decision": d, "reason": reason, "t0": t0, "code": code, "kind": "tap", "t1": time.time()}
        outcome = f"{d} ({reason})" + (f" list {code[0]} index {code[1]}" if code else "")
        if op_rc is not None:
            outcome += f"; operator {operator[0]} exit {op_rc}"
            if op_rc == 0 and d != ("approved" if operator[0] == "approve" else "declined"):
                raise Failure("terminal_agrees", f"{txn}: the operator's {operator[0]} succeeded while the terminal "
                                                 f"waited, yet the terminal shows {d} ({reason})")
            if op_rc == 0 and operator[0] == "approve":
                self.counts["held approved"] += 1
        if operator and operator[1]:
            late_rc, _, _ = admin(operator[0], txn)
            outcome += f"; late operator {operator[0]} exit {late_rc}"
            if reason == "held_timeout":
                if late_rc == 0:
                    raise Failure("terminal_agrees", f"{txn}: the terminal showed DECLINED (held_timeout), yet a later "
                                                     f"otac-admin {operator[0]} succeeded")
                self.counts["late decisions refused"] += 1
        if code and reason in ("backend_unreachable", "backend_timeout"):
            self.lost[code] = txn
            self.counts["lost answers"] += 1
        self.note(f"{kind} {' '.join(args)}" + (f" pin {'/'.join('ok' if p == PIN else 'wrong' for p in pin_lines)}"
                                                if pin_lines and amount >= PIN_LIMIT else "") + f" -> {outcome}")
        self.expect_tap(txn, kind, amount, pin_lines, possible, backend_down, line, operator, op_rc)
        return line

    def expect_tap(self, txn, kind, amount, pin_lines, possible, backend_down, line, operator, op_rc):
        """genuine: what the terminal must show, given what the script knows of the card."""
        d, reason = line["decision"], line["reason"]
        if backend_down:
            if d != "declined":
                raise Failure("genuine", f"{txn}: {d} ({reason}) while the backend was down")
            return
        if self.blocked and self.status["unused"] > 0 and d != "declined":
            raise Failure("genuine", f"{txn}: {d} ({reason}) while the card is blocked")
        wrong_only = amount >= PIN_LIMIT and PIN not in pin_lines
        if not possible or self.pin_blocked() or kind == "door_refused" or wrong_only:
            if kind == "door_refused" and d == "approved":
                raise Failure("genuine", f"{txn}: a door not on the card's list opened")
            return
        if amount > REVIEW:
            if operator and not operator[1] and op_rc == 0:
                return  # checked in tap()
            if (d, reason) != ("declined", "held_timeout"):
                raise Failure("genuine", f"{txn}: a held purchase nobody decided in time ended {d} ({reason}), "
                                         f"expected declined (held_timeout)")
            return
        if d != "approved":
            raise Failure("genuine", f"{txn}: a genuine {kind} with {self.status['unused']} codes on the card, "
                                     f"active and PIN not blocked, was {d} ({reason})")

    def amount(self, lo, hi):
        return round(self.rng.uniform(lo, hi), 2)

    def do_pos(self):
        self.tap("pos", ["pos", "--amount", f"{self.amount(0.5, 25):.2f}"])

    def do_pos_pin(self):
        pins = [WRONG_PIN, PIN] if self.rng.random() < 0.25 else [PIN]
        if self.rng.random() < 0.1:
            pins = [WRONG_PIN] * 3
        a = self.amount(35, 49)
        self.tap("pos_pin", ["pos", "--amount", f"{a:.2f}"], pins, a)

    def do_pos_held(self):
        verb = self.rng.choice(["approve", "approve", "decline"])
        late = self.rng.random() < 0.4
        a = self.amount(55, 99)
        self.tap("pos_held", ["pos", "--amount", f"{a:.2f}"], [PIN], a, operator=(verb, late))

    def do_door(self):
        self.tap("door", ["door"])

    def do_door_refused(self):
        self.tap("door_refused", ["door", "--door", "VAULT09"])

    def do_display(self):
        possible = self.genuine_possible()
        typed = self.rng.random() >= 0.05
        rc, out, err = card("code", secrets=(PIN,))
        self.enter_pins([PIN])
        m = re.search(r"\b(\d{8})\b", out)
        where = re.search(r"display code used list (\d+) index (\d+)", err)
        if rc != 0 or not m or not where:
            self.note(f"display: the card showed no code (exit {rc}: {err.strip()[-120:]})")
            if possible:
                raise Failure("genuine", f"the card showed no display code with {self.status['unused']} codes, "
                                         f"PIN not blocked: {err.strip()}")
            return
        code = (int(where.group(1)), int(where.group(2)))
        txn = self.txn("display")
        self.spend(code, txn)
        if not typed:
            self.lost[code] = txn
            self.note(f"display list {code[0]} index {code[1]}: shown, never typed")
            return
        t0 = time.time()
        rc, line = Terminal(txn, ["code", m.group(1), "--card", CARD_N, "--door", DOOR_OK, "--txn-id", txn], []).finish()
        self.term[txn] = {"decision": line["decision"], "reason": line["reason"], "t0": t0, "code": code,
                          "kind": "display", "t1": time.time()}
        self.note(f"display list {code[0]} index {code[1]} typed at {DOOR_OK} -> {line['decision']} ({line['reason']})")
        want = "declined" if self.blocked else "approved"
        if line["decision"] != want:
            raise Failure("genuine", f"{txn}: a displayed code typed at the keypad was {line['decision']} "
                                     f"({line['reason']}), expected {want}")

    # ---- the holder, the operator, the network ------------------------------------------------
    def do_user_refresh(self):
        rc, out, err = card("refresh", secrets=(PIN,))
        self.enter_pins([PIN])
        self.note(f"otac-card refresh -> exit {rc} {(out + err).strip()[:100]}")
        if rc != 0 and not self.pin_blocked() and "no room" not in err:
            raise Failure("card", f"otac-card refresh failed: {err.strip()}")

    def do_operator_refresh(self):
        rc, out, err = admin("refresh", CARD_N)
        self.note(f"otac-admin refresh -> exit {rc} {(out + err).strip()[:100]}")
        if rc not in (0, 1):
            raise Failure("admin", f"otac-admin refresh exited {rc}: {err.strip()}")

    def do_rotate_key(self):
        if "e2_overtaken" in self.avoid and self.kannel_down:
            return self.note("otac-admin rotate-key skipped: Kannel is down (known bug e2_overtaken)")
        rc, out, err = admin("rotate-key", CARD_N)
        self.note(f"otac-admin rotate-key -> exit {rc} {err.strip()[:100]}")
        if rc == 0:
            self.counts["key rotations"] += 1
        elif rc != 1:
            raise Failure("admin", f"otac-admin rotate-key exited {rc}: {err.strip()}")

    def do_signature_key(self):
        """E3: a new signature key S; once the card's PoR confirms it, packets carry CF."""
        rc, out, err = admin("set-signature-key", CARD_N)
        self.note(f"otac-admin set-signature-key -> exit {rc} {err.strip()[:100]}")
        if rc != 0:
            raise Failure("admin", f"otac-admin set-signature-key exited {rc}: {err.strip()}")

    def do_server_key(self):
        """E4: the server's signing key, signed by the card CA of the letter."""
        if "e4_under_retired_key" in self.avoid and self.backend_card()["key_rotation_pending"]:
            return self.note("otac-admin install-server-key skipped: a rotation is pending (known bug e4_under_retired_key)")
        rc, out, err = admin("install-server-key", CARD_N)
        self.note(f"otac-admin install-server-key -> exit {rc} {err.strip()[:100]}")
        if rc != 0:
            raise Failure("admin", f"otac-admin install-server-key exited {rc}: {err.strip()}")
        self.server_key_sent = True

    def do_wrong_pin(self):
        if self.pin_blocked():
            return self.do_puk_unblock()
        rc, out, err = card("verify", secrets=(WRONG_PIN,))
        self.enter_pins([WRONG_PIN])
        self.note(f"otac-card verify (wrong PIN) -> exit {rc} {err.strip()[-60:]}")
        m = re.search(r"(\d+) tr(?:y|ies) left", err)
        if rc == 0 or (m and int(m.group(1)) != self.pin_tries):
            raise Failure("card", f"a wrong PIN: exit {rc}, '{err.strip()}', expected {self.pin_tries} tries left")

    def do_puk_unblock(self):
        rc, out, err = card("unblock", secrets=(PUK, PIN))
        self.note(f"otac-card unblock (PUK) -> exit {rc}")
        if rc != 0:
            raise Failure("card", f"otac-card unblock with the PUK failed: {err.strip()}")
        self.pin_tries = 3

    def do_block(self):
        if self.blocked:
            return
        rc, out, err = admin("block", CARD_N)
        if rc != 0:
            raise Failure("admin", f"otac-admin block failed: {err.strip()}")
        self.blocked = self.rng.randint(2, 6)
        self.note(f"otac-admin block (unblock in {self.blocked} steps)")

    def unblock(self):
        rc, out, err = admin("unblock", CARD_N)
        if rc != 0:
            raise Failure("admin", f"otac-admin unblock failed: {err.strip()}")
        self.blocked = 0
        self.note("otac-admin unblock")

    def do_kannel_outage(self):
        if self.kannel_down:
            return
        if "e2_overtaken" in self.avoid:
            for _ in range(100):  # 20 s
                if sms_queue_depth() == 0:
                    break
                time.sleep(0.2)
        rc, out, err = run([*KANNEL, "stop-keep", KANNEL_DIR])
        if rc != 0:
            raise Failure("kannel", f"kannel.sh stop-keep failed: {err.strip()}")
        self.kannel_down = self.rng.randint(2, 8)
        self.counts["kannel outages"] += 1
        self.note(f"Kannel stopped (started again in {self.kannel_down} steps)")

    def kannel_up(self):
        rc, out, err = run([*KANNEL, "restart", KANNEL_DIR])
        if rc != 0:
            raise Failure("kannel", f"kannel.sh restart failed: {err.strip()} {out.strip()}")
        self.kannel_down = 0
        self.note("Kannel started again")

    def do_backend_restart(self):
        pidfile = f"{RUN}/pids/backend"
        with open(pidfile) as f:
            pid = int(f.read())
        kill9(pid, "backend", "the backend")
        self.counts["backend restarts"] += 1
        self.note(f"backend killed (kill -9 {pid})")
        if self.rng.random() < 0.5:
            self.tap("pos_down", ["pos", "--amount", f"{self.amount(0.5, 25):.2f}"], backend_down=True)
        with open(f"{RUN}/backend.log", "a") as log:
            p = subprocess.Popen([E["BIN_BACKEND"], "--data-dir", BACKEND_DIR, "--listen", f"127.0.0.1:{PORT}"],
                                 stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        with open(pidfile, "w") as f:
            f.write(f"{p.pid}\n")
        for _ in range(150):  # 15 s
            if run(["curl", "-s", "--max-time", "1", "--cacert", CA, f"{URL}/healthz"])[0] == 0:
                break
            if p.poll() is not None:
                raise Failure("backend", f"the backend exited {p.returncode} on restart")
            time.sleep(0.1)
        else:
            raise Failure("backend", "the restarted backend did not answer /healthz within 15 s")
        self.note(f"backend started again (PID {p.pid})")

    def card_log_since(self, offset):
        with open(f"{RUN}/card.log", errors="replace") as f:
            f.seek(offset)
            return f.read()

    def send_to_card(self, moment):
        """An SMS for the card: a list if it has room for one, else a key change. True if sent."""
        rc, out, err = admin("refresh", CARD_N)
        what = "otac-admin refresh"
        if rc == 1:
            rc, out, err = admin("rotate-key", CARD_N)
            what = "otac-admin rotate-key"
            if rc == 0:
                self.counts["key rotations"] += 1
        self.note(f"card daemon {moment}: {what} -> exit {rc} {(out + err).strip()[:100]}")
        if rc not in (0, 1):
            raise Failure("admin", f"{what} exited {rc}: {err.strip()}")
        return rc == 0

    def do_card_restart(self):
        """kill -9 of otac-card run, the card and the phone in one process, then the same
        command again on the same state file. Three moments, drawn from the seed:
        - frozen: the daemon is stopped (SIGSTOP) before the backend sends it a list (an
          operator refresh) or, when the card has no room for one, a key change (rotate-key),
          and killed once Kannel has written the SMS into its socket. The fake SMSC has no
          acknowledgement, so Kannel counts them delivered: they are lost, and the backend must
          send them again (a list after list_repair_seconds);
        - mid-list: the same, but the daemon goes on (SIGCONT) and is killed as soon as its log
          shows that the card took the first SMS, with the rest read from the gateway and
          waiting in the daemon's queue, or still in the socket;
        - idle: killed with nothing in flight (the card's outbox, if any, is on its state)."""
        pidfile = f"{RUN}/pids/card"
        with open(pidfile) as f:
            pid = int(f.read())
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = [a.decode() for a in f.read().split(b"\0") if a]
        offset = os.path.getsize(f"{RUN}/card.log")
        moment = self.rng.choice(["frozen", "mid-list", "idle"])
        if moment != "idle":
            # At most two packets of one list or E2 lost in a row, so that its repair comes
            # within SETTLE_S: nothing more is lost while one waits for its repair.
            be = self.backend_card()
            if be["key_rotation_pending"] or any(l["state"] == "sent" for l in be["lists"]):
                moment = "idle"
        if moment != "idle":
            os.kill(pid, signal.SIGSTOP)
            try:
                sent = self.send_to_card(moment)
                if sent and not self.kannel_down:
                    for _ in range(200):  # 20 s: until Kannel has written to the daemon's socket
                        if socket_bytes_waiting(pid):
                            break
                        time.sleep(0.1)
                    time.sleep(0.3)  # the other parts of the list
            finally:
                if moment == "mid-list":
                    os.kill(pid, signal.SIGCONT)
            if moment == "mid-list":
                deadline = time.time() + 5
                while time.time() < deadline and "sms: MT from" not in self.card_log_since(offset):
                    pass  # polled without a pause: the next part is handed to the card within a millisecond
        unread = socket_bytes_waiting(pid)
        kill9(pid, "card", "otac-card run")
        parts = self.card_log_since(offset).count("sms: MT from")
        self.counts["card daemon restarts"] += 1
        self.note(f"card daemon killed (kill -9 {pid}, {moment}, {parts} SMS part(s) handled before, "
                  f"{unread} bytes unread in its sockets)")
        offset = os.path.getsize(f"{RUN}/card.log")
        with open(f"{RUN}/card.log", "a") as log:
            p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                 start_new_session=True)
        with open(pidfile, "w") as f:
            f.write(f"{p.pid}\n")
        for _ in range(150):  # 15 s: back in the reader's field (and at the gateway unless it is down)
            text = self.card_log_since(offset)
            if "vicc: connected" in text and (self.kannel_down or "smsc: connected" in text):
                break
            if p.poll() is not None:
                raise Failure("card", f"otac-card run exited {p.returncode} on restart: {text.strip()[-300:]}")
            time.sleep(0.1)
        else:
            raise Failure("card", f"the restarted otac-card run did not reconnect within 15 s: {text.strip()[-300:]}")
        self.note(f"card daemon started again (PID {p.pid})")

    # ---- invariants --------------------------------------------------------------------------
    def fetch_transactions(self):
        """Merges the backend's records since the oldest one that may still change."""
        since = self.since
        until = 0
        for _ in range(100):  # pages of 1000, newest first
            args = ["transactions", "--card", CARD_N, "--since", str(since), "--limit", "1000"]
            if until:
                args += ["--until", str(until)]
            rows = admin_json(*args)["transactions"]
            for r in rows:
                self.backend[r["txn_id"]] = r
            if len(rows) < 1000:
                break
            until = min(r["created_at"] for r in rows) + 1
        open_held = [r["created_at"] for r in self.backend.values() if r["decision"] == "held"]
        self.since = max(0, min([int(time.time()) - 5, *open_held]))

    def check_double_approval(self):
        seen = {}
        for r in self.backend.values():
            if r["decision"] != "approved":
                continue
            code = (r["list"], r["index"])
            if code in seen:
                raise Failure("double_approval", f"list {code[0]} index {code[1]} approved by {seen[code]} and {r['txn_id']}")
            seen[code] = r["txn_id"]
        self.counts["approvals"] = len(seen)
        mine = {}
        for txn, t in self.term.items():
            if t["decision"] == "approved" and t["code"]:
                if t["code"] in mine:
                    raise Failure("double_approval", f"the terminal approved list {t['code'][0]} index {t['code'][1]} "
                                                     f"twice: {mine[t['code']]} and {txn}")
                mine[t["code"]] = txn

    def check_terminal_agrees(self, final=False):
        now = time.time()
        for txn, t in self.term.items():
            r = self.backend.get(txn)
            if r is None:
                if t["decision"] == "approved":
                    raise Failure("terminal_agrees", f"{txn}: the terminal approved, the backend has no record")
                continue
            if r["decision"] == "held":
                # The terminal stopped waiting: its cancel, or the backend's deadline, ends it.
                if now - t["t1"] > HOLD_LIMIT_S + 3 or (final and t["reason"] == "held_timeout" and now - t["t1"] > 3):
                    raise Failure("terminal_agrees", f"{txn}: still held at the backend {now - t['t1']:.0f}s after the "
                                                     f"terminal showed {t['decision']} ({t['reason']})")
                continue
            if r["decision"] != t["decision"]:
                raise Failure("terminal_agrees", f"{txn}: the terminal showed {t['decision']} ({t['reason']}), the "
                                                 f"backend keeps {r['decision']} ({r['reason']}, by {r.get('decided_by', '?')})")

    def after_step(self):
        self.fetch_transactions()
        self.check_double_approval()
        self.check_terminal_agrees()
        self.status = card_status()

    def backend_card(self):
        return admin_json("card", CARD_N)

    def settle(self):
        """Waits (bounded) until no SMS is queued or in flight and both sides are still."""
        last = None
        deadline = time.time() + SETTLE_S
        while time.time() < deadline:
            depth = sms_queue_depth()
            st = card_status()
            be = self.backend_card()
            busy = []
            if depth:
                busy.append(f"{depth} SMS queued at the backend")
            if st["refresh_pending"] and be["status"] != "blocked":  # a blocked card gets no list
                busy.append("the card's refresh is pending")
            if be["list_push_in_flight"]:
                busy.append("a list push is in flight")
            if be["key_rotation_pending"]:
                busy.append("a key rotation is pending")
            if be["signature_key"] == "pending":
                busy.append("a signature key (E3) is not confirmed")
            if self.server_key_sent and not be["server_key_confirmed"]:
                busy.append("the server key (E4) is not confirmed")
            sent = [l["id"] for l in be["lists"] if l["state"] == "sent"]
            if sent:
                busy.append(f"lists {sent} sent, not loaded")
            snap = (json.dumps(st, sort_keys=True), json.dumps(be, sort_keys=True))
            if not busy and snap == last:
                return st, be
            last = snap if not busy else None
            time.sleep(0.5)
        raise Failure("settled", f"after {SETTLE_S}s with Kannel up: {'; '.join(busy) or 'still changing'}; card "
                                 f"{json.dumps(st)}; backend lists {json.dumps(be['lists'])}")

    def quiet(self):
        if self.kannel_down:
            self.kannel_up()
        self.counts["quiet phases"] += 1
        st, be = self.settle()
        self.fetch_transactions()
        self.check_double_approval()
        self.check_terminal_agrees(final=True)
        self.status = st
        loaded = {l["id"]: l for l in be["lists"] if l["state"] == "loaded"}
        self.counts["lists seen"] = max(self.counts["lists seen"], max([l["id"] for l in be["lists"]], default=0))
        if st["unused"] < 1 and be["status"] != "blocked":
            raise Failure("liveness", f"after a quiet phase the unblocked card holds no unused code; backend lists "
                                      f"{json.dumps(be['lists'])}")
        # The spent codes the backend's records do not show consumed are the ones tracked as lost.
        consumed = set()
        for txn, r in self.backend.items():
            t = self.term.get(txn, {})
            if r["reason"] in NOT_CONSUMED:
                continue
            consumed.add((r["list"], r["index"]))
        unseen = {c for c in self.spent if c not in consumed}
        if unseen != set(self.lost):
            raise Failure("agreement", f"spent on the card, not consumed at the backend: {sorted(unseen)}; tracked as "
                                       f"lost: {sorted(self.lost)}")
        lost_counted = sum(1 for c in self.lost if c[0] in loaded)
        backend_unused = sum(l["unused"] for l in loaded.values())
        if backend_unused != st["unused"] + lost_counted:
            raise Failure("agreement", f"the backend counts {backend_unused} unused codes in loaded lists, the card "
                                       f"holds {st['unused']}, {lost_counted} lost codes are in those lists; lists "
                                       f"{json.dumps(be['lists'])}")
        if st["key_version"] != be["key_version"]:
            raise Failure("keys", f"the card is on key version {st['key_version']}, the backend on {be['key_version']}")
        self.note(f"quiet phase: card {st['unused']} codes in {st['lists']} list(s), backend {backend_unused} unused "
                  f"({lost_counted} lost), key version {st['key_version']}, {self.counts['approvals']} approvals so far")

    # ---- the run -----------------------------------------------------------------------------
    def one_step(self):
        if self.kannel_down == 1:
            return self.kannel_up()
        self.kannel_down = max(0, self.kannel_down - 1)
        if self.blocked == 1:
            return self.unblock()
        self.blocked = max(0, self.blocked - 1)
        if self.pin_blocked() and self.rng.random() < 0.3:
            return self.do_puk_unblock()
        names, weights = zip(*ACTIONS)
        getattr(self, "do_" + self.rng.choices(names, weights)[0])()

    def run(self, steps):
        start = time.time()
        next_quiet = self.rng.randint(15, 35)
        for self.step in range(1, steps + 1):
            self.one_step()
            self.after_step()
            if self.step == next_quiet or self.step == steps:
                self.quiet()
                print(f"step {self.step}: {self.actions[-1].split(': ', 1)[1]}", flush=True)
                next_quiet = self.step + self.rng.randint(15, 35)
        took = time.time() - start
        taps = sum(1 for t in self.term.values() if t["kind"] == "tap")
        print(f"OK: seed {self.seed}, {steps} steps in {took:.0f}s: {taps} taps, "
              f"{sum(1 for t in self.term.values() if t['kind'] == 'display')} typed display codes, "
              + ", ".join(f"{v} {k}" for k, v in self.counts.items()))


def tail(path, n=12):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError as e:
        return f"({e})\n"


def main():
    ap = argparse.ArgumentParser(description="tests/e2e/soak.sh's driver")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--strict", action="store_true", help="drive the triggers of KNOWN_BUGS too")
    a = ap.parse_args()
    soak = Soak(a.seed, a.strict)
    try:
        soak.run(a.steps)
    except Failure as f:
        print(f"\nFAIL {f} (seed {a.seed}, step {soak.step})", file=sys.stderr)
        print(f"reproduce: tests/e2e/soak.sh BUILD_DIR RUN_DIR --seed {a.seed} --steps {soak.step}"
              + (" --strict" if a.strict else ""), file=sys.stderr)
        print("actions so far:\n  " + "\n  ".join(soak.actions), file=sys.stderr)
        for name in ("backend.log", "card.log", "emu.log", "kannel/bearerbox.log", "kannel/smsbox.log"):
            print(f"--- last lines of {name}\n{tail(f'{RUN}/{name}')}", file=sys.stderr, end="")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
