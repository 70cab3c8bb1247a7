#!/usr/bin/python3
"""Browser test of the operator console: headless Chromium driven over the WebDriver protocol
(plain HTTP to chromedriver, Python standard library only) against a real otac-backend on
loopback, with a terminal-like HTTPS client that presents its client certificate.

Covers: sign-in; approve a held transaction while the terminal long-polls for it and sees the
outcome; enroll a card (letter shown once); block it and see its next authorization declined;
a viewer cannot approve (403); a request without the CSRF token is refused (403); sign-out.
Screenshots of the main views go to --out.

Exit 0 pass, 1 fail, 77 skip (Chromium or chromedriver not installed).
"""
import argparse
import base64
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ELEMENT = "element-6066-11e4-a52e-4f735466cecf"


class Failure(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Failure(what)
    print("ok:", what, flush=True)


def wait_for(fn, what, timeout=15.0, interval=0.1):
    """Polls fn until it returns a truthy value; bounded in time."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = fn()
            if last:
                return last
        except Failure:
            raise
        except Exception as e:  # a transient WebDriver or HTTP error while the page settles
            last = e
        time.sleep(interval)
    raise Failure("timed out waiting for %s (last: %r)" % (what, last))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class WebDriver:
    """The few W3C WebDriver commands this test needs."""

    def __init__(self, port):
        self.base = "http://127.0.0.1:%d" % port
        self.sid = None

    def _req(self, method, path, body=None, timeout=30):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return json.loads(r.read() or b"{}").get("value")
        except urllib.error.HTTPError as e:
            raise RuntimeError("WebDriver %s %s: %s" % (method, path, e.read()[:500])) from None

    def start(self, user_data_dir):
        caps = {"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "acceptInsecureCerts": True,  # the backend's private CA is not in Chromium's store
            "goog:loggingPrefs": {"browser": "ALL"},
            "goog:chromeOptions": {"binary": CHROMIUM, "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1280,900", "--user-data-dir=" + user_data_dir]},
        }}}
        v = self._req("POST", "/session", caps, timeout=60)
        self.sid = v["sessionId"]

    def quit(self):
        if self.sid:
            try:
                self._req("DELETE", "/session/" + self.sid, timeout=15)
            except Exception:
                pass
            self.sid = None

    def s(self, method, path, body=None):
        return self._req(method, "/session/%s%s" % (self.sid, path), body)

    def get(self, url):
        self.s("POST", "/url", {"url": url})

    def find(self, css):
        return self.s("POST", "/element", {"using": "css selector", "value": css})[ELEMENT]

    def find_all(self, css):
        return [e[ELEMENT] for e in self.s("POST", "/elements", {"using": "css selector", "value": css})]

    def click(self, css):
        # The queue re-renders its rows every 2 s: an element found just before a refresh is
        # stale by the click, so find it again (a bounded number of times).
        for attempt in range(5):
            try:
                self.s("POST", "/element/%s/click" % self.find(css), {})
                return
            except RuntimeError as e:
                if "stale element" not in str(e) or attempt == 4:
                    raise

    def type(self, css, text, clear=True):
        e = self.find(css)
        if clear:
            self.s("POST", "/element/%s/clear" % e, {})
        self.s("POST", "/element/%s/value" % e, {"text": text})

    def text(self, css):
        return self.s("GET", "/element/%s/text" % self.find(css))

    def js(self, script, *args):
        return self.s("POST", "/execute/sync", {"script": script, "args": list(args)})

    def js_async(self, script, *args):
        return self.s("POST", "/execute/async", {"script": script, "args": list(args)})

    def visible(self, css):
        return self.js("const e = document.querySelector(arguments[0]);"
                       "return !!e && e.getClientRects().length > 0;", css)

    def cookies(self):
        return self.s("GET", "/cookie")

    def browser_log(self):
        """Console messages of the page since the last call (chromedriver's log endpoint)."""
        return self.s("POST", "/se/log", {"type": "browser"})

    def print_pdf(self, path):
        pdf = base64.b64decode(self.s("POST", "/print", {"orientation": "portrait"}))
        with open(path, "wb") as f:
            f.write(pdf)
        print("printed:", path, flush=True)
        return pdf

    def screenshot(self, path):
        png = base64.b64decode(self.s("GET", "/screenshot"))
        with open(path, "wb") as f:
            f.write(png)
        print("screenshot:", path, flush=True)


class Backend:
    """A real otac-backend in a temporary data directory."""

    def __init__(self, exe, data_dir):
        self.dir = data_dir
        self.log = open(os.path.join(data_dir, "backend.log"), "wb")
        self.proc = subprocess.Popen([exe, "--data-dir", data_dir, "--listen", "127.0.0.1:0"],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        port_file = os.path.join(data_dir, "backend.port")

        def ready():
            if self.proc.poll() is not None:
                raise Failure("otac-backend exited with %d; see %s" % (self.proc.returncode, self.log.name))
            if os.path.exists(port_file):
                with open(port_file) as f:
                    t = f.read().strip()
                return t if t else None
            return None
        self.port = int(wait_for(ready, "otac-backend to listen", timeout=60))
        with open(os.path.join(data_dir, "admin.token")) as f:
            self.admin_token = f.read().strip()
        self.ca = os.path.join(data_dir, "ca.pem")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.log.close()

    def https(self, method, path, body=None, headers=None, cert=None, timeout=40):
        """One HTTPS request verifying the server against the backend's CA; optional client cert."""
        ctx = ssl.create_default_context(cafile=self.ca)
        ctx.check_hostname = False  # the server certificate names the host; we pin the private CA instead
        if cert:
            ctx.load_cert_chain(cert[0], cert[1])
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=ctx, timeout=timeout)
        try:
            h = dict(headers or {})
            data = None
            if body is not None:
                data = body if isinstance(body, (bytes, str)) else json.dumps(body)
                h.setdefault("Content-Type", "application/json")
            conn.request(method, path, body=data, headers=h)
            r = conn.getresponse()
            raw = r.read()
            try:
                parsed = json.loads(raw) if raw else None
            except ValueError:
                parsed = raw
            return r.status, parsed
        finally:
            conn.close()

    def admin(self, method, path, body=None):
        st, b = self.https(method, path, body, {"Authorization": "Bearer " + self.admin_token})
        if st >= 300:
            raise Failure("%s %s -> %d %r" % (method, path, st, b))
        return b


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", required=True)
    ap.add_argument("--card-sim", required=True)
    ap.add_argument("--admin", help="otac-admin (unused; operator setup goes through the JSON API)")
    ap.add_argument("--out", required=True, help="folder for screenshots")
    args = ap.parse_args()

    if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
        print("SKIP: %s or %s missing (Debian packages chromium, chromium-driver)" % (CHROMIUM, CHROMEDRIVER))
        return 77
    os.makedirs(args.out, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="otac-console-")
    backend = None
    driver_proc = None
    wd = None
    ok = False
    try:
        data = os.path.join(tmp, "data")
        os.mkdir(data)
        backend = Backend(args.backend, data)
        base = "https://127.0.0.1:%d" % backend.port
        print("backend on", base, flush=True)

        # Operators and a terminal through the operator API, as otac-admin would.
        viewer = backend.admin("POST", "/v1/admin/operators", {"name": "vera", "role": "viewer"})["token"]
        operator = backend.admin("POST", "/v1/admin/operators", {"name": "olga", "role": "operator"})["token"]
        term = backend.admin("POST", "/v1/admin/terminals", {"id": "TERM0001"})
        cert = (os.path.join(tmp, "TERM0001.pem"), os.path.join(tmp, "TERM0001.key"))
        with open(cert[0], "w") as f:
            f.write(term["cert"])
        fd = os.open(cert[1], os.O_WRONLY | os.O_CREAT, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(term["key"])

        def terminal_authorize(card, txn, amount):
            out = subprocess.run([args.card_sim, data, card, "TERM0001", txn, str(amount)],
                                 capture_output=True, text=True, timeout=30)
            if out.returncode != 0:
                raise Failure("console_card_sim failed: " + out.stderr)
            st, b = backend.https("POST", "/v1/authorizations", out.stdout.strip(), cert=cert)
            if st != 200:
                raise Failure("POST /v1/authorizations %s -> %d %r" % (txn, st, b))
            return b

        # Chromium through chromedriver.
        dport = free_port()
        driver_proc = subprocess.Popen([CHROMEDRIVER, "--port=%d" % dport, "--allowed-ips=127.0.0.1"],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wd = WebDriver(dport)
        wait_for(lambda: wd._req("GET", "/status", timeout=2).get("ready"), "chromedriver", timeout=30)
        wd.start(os.path.join(tmp, "chromium-profile"))

        def sign_in(token):
            wd.get(base + "/console/")
            wait_for(lambda: wd.visible("#signin"), "the sign-in form")
            wd.type("#token", token)
            wd.click("#signin-btn")
            wait_for(lambda: wd.visible("#app"), "the console after sign-in")

        def sign_out():
            wd.click("#signout")
            wait_for(lambda: wd.visible("#signin"), "the sign-in form after sign-out")

        def tab(view):
            wd.click('.tabs button[data-view="%s"]' % view)
            wait_for(lambda: wd.visible("#view-" + view), "the %s view" % view)

        def session_cookie():
            for c in wd.cookies():
                if c["name"] == "__Host-otac-console":
                    return c
            return None

        # ---- a wrong token is refused ----
        wd.get(base + "/console/")
        wait_for(lambda: wd.visible("#signin"), "the sign-in form")
        wd.screenshot(os.path.join(args.out, "01-sign-in.png"))
        wd.type("#token", "not-a-token")
        wd.click("#signin-btn")
        wait_for(lambda: "Sign-in failed" in wd.text("#flash"), "the sign-in error")
        check(not wd.visible("#app"), "a wrong token does not sign in")

        # ---- operator signs in; the cookie is HttpOnly, Secure, SameSite=Strict ----
        sign_in(operator)
        check(wd.text("#who-role") == "operator", "signed in as an operator")
        c = session_cookie()
        check(c is not None and c.get("httpOnly") and c.get("secure") and c.get("sameSite") == "Strict",
              "session cookie is HttpOnly, Secure, SameSite=Strict")
        check(wd.js("return document.cookie.indexOf('otac-console') < 0"), "page script cannot read the session cookie")

        # ---- enroll a card; the letter is shown once ----
        tab("cards")
        wd.type("#enroll-msisdn", "+4915550001")
        wd.type("#enroll-review", "1000")
        wd.click("#enroll-btn")
        wait_for(lambda: wd.visible("#letter-box") and wd.text("#letter"), "the initialization letter")
        card = wd.js("return document.getElementById('letter-box').dataset.card")
        check(len(card) == 16 and card.upper() in wd.text("#letter").upper().replace(" ", ""),
              "the letter names the new card " + card)
        wait_for(lambda: wd.visible("#card-detail"), "the card's status")
        wd.screenshot(os.path.join(args.out, "02-card-enrolled-letter.png"))
        # Printing the page prints the letter alone (print style sheet).
        pdf_path = os.path.join(args.out, "02-letter-printed.pdf")
        check(wd.print_pdf(pdf_path).startswith(b"%PDF"), "the page prints to PDF")
        if shutil.which("pdftotext"):
            printed = subprocess.run(["pdftotext", "-layout", pdf_path, "-"], capture_output=True, text=True,
                                     timeout=30).stdout
            check(card in printed.replace(" ", "").lower() and "Enroll a card" not in printed
                  and "Sign out" not in printed, "the printout holds the letter and nothing else of the page")
        else:
            print("note: pdftotext (poppler-utils) absent; printout content not checked")
        cookie_hdr = "%s=%s" % (c["name"], c["value"])
        st, detail = backend.https("GET", "/console/api/cards/" + card, headers={"Cookie": cookie_hdr})
        check(st == 200 and "letter" not in json.dumps(detail), "the card's status does not show the letter again")

        # A list for the card (the operator's "send a new list").
        wd.click("#card-refresh")
        wait_for(lambda: "New list: done" in wd.text("#flash"), "the new list")

        # ---- a held transaction, approved in the queue while the terminal waits ----
        held = terminal_authorize(card, "TXN-C1", 1234)
        check(held["decision"] == "held", "12.34 EUR above the card's review amount is held")
        waited = {}

        def terminal_wait():
            t0 = time.monotonic()
            waited["started"] = t0
            waited["answer"] = backend.https("GET", "/v1/authorizations/TXN-C1?wait=25", cert=cert)
            waited["elapsed"] = time.monotonic() - t0
        waiter = threading.Thread(target=terminal_wait, daemon=True)
        waiter.start()

        tab("queue")
        row = 'tr[data-txn="TXN-C1"]'
        wait_for(lambda: wd.visible(row), "the held transaction in the queue")
        row_text = wd.js("return document.querySelector(arguments[0]).innerText", row)
        check("12.34" in row_text and "TERM0001" in row_text and card[-4:] in row_text and card[:8] not in row_text,
              "queue row shows amount, terminal and the masked card")
        wd.screenshot(os.path.join(args.out, "03-held-queue.png"))
        time.sleep(1.0)  # the terminal is parked on its long-poll by now
        check(waiter.is_alive(), "the terminal is still waiting before the operator decides")
        clicked = time.monotonic()
        wd.click('button.approve[data-txn="TXN-C1"]')
        waiter.join(timeout=30)
        check(not waiter.is_alive(), "the terminal's long-poll returned")
        st, ans = waited["answer"]
        check(st == 200 and ans["decision"] == "approved" and ans.get("auth_code"),
              "the waiting terminal sees the approval: %r" % (ans,))
        check(waited["started"] + waited["elapsed"] >= clicked, "the answer came after the click, not before")
        wait_for(lambda: not wd.find_all(row), "the approved transaction to leave the queue")

        # ---- block the card; its next authorization is declined ----
        tab("cards")
        wd.type("#card-id", card)
        wd.click("#card-lookup button")
        wait_for(lambda: wd.visible("#card-detail"), "the card's status")
        wd.click("#card-block")
        wait_for(lambda: wd.js("return document.getElementById('card-detail').dataset.status") == "blocked",
                 "the card to show as blocked")
        wd.screenshot(os.path.join(args.out, "04-card-blocked.png"))
        declined = terminal_authorize(card, "TXN-C2", 500)
        check(declined["decision"] == "declined", "a blocked card's tap is declined (%s)" % declined.get("reason"))

        # ---- forged requests without the CSRF token are refused ----
        res = wd.js_async("""
            const done = arguments[arguments.length - 1];
            fetch('/console/api/cards/' + arguments[0] + '/unblock',
                  {method: 'POST', credentials: 'same-origin'}).then(r => done(r.status), e => done(String(e)));""",
                          card)
        check(res == 403, "same-page fetch without X-CSRF-Token is refused (%r)" % res)
        st, _ = backend.https("POST", "/console/api/cards/%s/unblock" % card, headers={"Cookie": cookie_hdr})
        check(st == 403, "request with the stolen cookie but no CSRF token is refused")
        st, _ = backend.https("POST", "/console/api/cards/%s/unblock" % card,
                              headers={"Cookie": cookie_hdr, "X-CSRF-Token": "0" * 64})
        check(st == 403, "request with a made-up CSRF token is refused")
        st, d = backend.https("GET", "/console/api/cards/" + card, headers={"Cookie": cookie_hdr})
        check(st == 200 and d["status"] == "blocked", "the card is still blocked after the forged requests")

        # Unblock through the page, and hold one more transaction for the viewer.
        wd.click("#card-unblock")
        wait_for(lambda: wd.js("return document.getElementById('card-detail').dataset.status") == "active",
                 "the card to show as active")
        check(terminal_authorize(card, "TXN-C3", 2500)["decision"] == "held", "a second transaction is held")

        # ---- transaction search and detail, audit, overview ----
        tab("transactions")
        wd.type("#f-card", card)
        wd.click("#txn-filter button")
        wait_for(lambda: len(wd.find_all("#txn-table tbody tr[data-txn]")) == 3, "three transactions of the card")
        wd.click('#txn-table tr[data-txn="TXN-C1"]')
        wait_for(lambda: wd.visible("#txn-detail") and "olga" in wd.text("#d-fields"), "the detail naming the approver")
        wd.screenshot(os.path.join(args.out, "05-transactions.png"))
        tab("audit")
        wait_for(lambda: "approve_held" in wd.text("#audit-table"), "the approval in the audit log")
        wd.screenshot(os.path.join(args.out, "06-audit.png"))
        tab("overview")
        wait_for(lambda: wd.text("#decision-totals"), "the overview")
        time.sleep(0.5)
        wd.screenshot(os.path.join(args.out, "07-overview.png"))

        # ---- sign-out ends the session server-side ----
        sign_out()
        st, _ = backend.https("GET", "/console/api/session", headers={"Cookie": cookie_hdr})
        check(st == 401, "the old session cookie no longer works after sign-out")

        # ---- a viewer sees the queue but cannot approve ----
        sign_in(viewer)
        check(wd.text("#who-role") == "viewer", "signed in as a viewer")
        wait_for(lambda: wd.visible('tr[data-txn="TXN-C3"]'), "the held transaction in the viewer's queue")
        check(not wd.find_all('button.approve[data-txn="TXN-C3"]'), "the viewer's queue has no approve button")
        wd.screenshot(os.path.join(args.out, "08-queue-viewer.png"))
        res = wd.js_async("""
            const done = arguments[arguments.length - 1];
            fetch('/console/api/session', {credentials: 'same-origin'}).then(r => r.json()).then(s =>
              fetch('/console/api/held/TXN-C3/approve',
                    {method: 'POST', credentials: 'same-origin', headers: {'X-CSRF-Token': s.csrf}}))
              .then(r => done(r.status), e => done(String(e)));""")
        check(res == 403, "a viewer's approve (with a valid CSRF token) is refused (%r)" % res)
        st, ans = backend.https("GET", "/v1/authorizations/TXN-C3?wait=0", cert=cert)
        check(st == 200 and ans["decision"] == "held", "the transaction is still held")
        sign_out()

        # ---- an admin registers a terminal: its certificate works; revoked, it stops working ----
        sign_in(backend.admin_token)
        tab("terminals")
        wd.type("#term-id", "TERM0002")
        wd.click("#term-register")
        wait_for(lambda: wd.visible("#cert-box") and "BEGIN CERTIFICATE" in wd.text("#cert-pem"),
                 "the new terminal's client certificate")
        wait_for(lambda: wd.find_all('tr[data-terminal="TERM0002"]'), "the new terminal in the list")
        wd.screenshot(os.path.join(args.out, "09-terminals.png"))
        cert2 = (os.path.join(tmp, "TERM0002.pem"), os.path.join(tmp, "TERM0002.key"))
        with open(cert2[0], "w") as f:
            f.write(wd.js("return document.getElementById('cert-pem').textContent"))
        fd = os.open(cert2[1], os.O_WRONLY | os.O_CREAT, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(wd.js("return document.getElementById('cert-key').textContent"))
        st, b = backend.https("GET", "/v1/authorizations/NO-SUCH-TXN?wait=0", cert=cert2)
        check(st == 404, "the certificate issued in the console is accepted by the terminal API (%d %r)" % (st, b))
        wd.click('button.revoke[data-terminal="TERM0002"]')
        wait_for(lambda: "revoked" in wd.text("#flash"), "the revocation")
        st, b = backend.https("GET", "/v1/authorizations/NO-SUCH-TXN?wait=0", cert=cert2)
        check(st == 403, "after revocation in the console the certificate is refused at once (%d %r)" % (st, b))
        sign_out()
        # The page never tripped its own Content-Security-Policy and threw no script error.
        log = wd.browser_log()
        bad = [e["message"] for e in log
               if "Content Security Policy" in e["message"] or "Refused to" in e["message"] or "Uncaught" in e["message"]]
        check(not bad, "no CSP violation or script error in the browser log (%d messages): %r" % (len(log), bad[:3]))
        ok = True
        print("console browser test: all checks passed", flush=True)
    except Failure as e:
        print("FAIL:", e, flush=True)
    except Exception as e:  # pragma: no cover - reported, never hidden
        print("ERROR: %s: %s" % (type(e).__name__, e), flush=True)
    finally:
        if wd is not None and wd.sid and not ok:
            try:
                wd.screenshot(os.path.join(args.out, "failure.png"))
            except Exception:
                pass
        if wd is not None:
            wd.quit()
        if driver_proc is not None:
            driver_proc.terminate()
            try:
                driver_proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                driver_proc.kill()
        if backend is not None:
            backend.stop()
            if not ok:
                with open(os.path.join(backend.dir, "backend.log"), "rb") as f:
                    sys.stdout.write("---- backend log (tail) ----\n" + f.read()[-4000:].decode(errors="replace"))
        shutil.rmtree(tmp, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
