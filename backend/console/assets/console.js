// OTAC operator console. Plain DOM, no framework; data only ever enters the page as text
// (textContent), never as markup. Every state-changing call carries the session's CSRF token.
"use strict";

(function () {
  const api = "/console/api/";
  let csrf = "";
  let role = "";
  let heldTimer = 0;
  let overviewTimer = 0;
  const smsSamples = [];  // [unix seconds, depth], sampled by the server while consoles poll

  const $ = (id) => document.getElementById(id);

  // Builds an element; children are nodes or strings (strings become text nodes).
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") e.className = v;
      else if (k.startsWith("data-")) e.setAttribute(k, v);
      else if (k === "onclick") e.addEventListener("click", v);
      else e[k] = v;
    }
    for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    return e;
  }

  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); }

  function flash(text, isError) {
    const f = $("flash");
    f.textContent = text;
    f.classList.toggle("error", !!isError);
    f.classList.remove("hidden");
    clearTimeout(flash.timer);
    flash.timer = setTimeout(() => f.classList.add("hidden"), isError ? 8000 : 4000);
  }

  class ApiError extends Error {
    constructor(status, body) { super((body && body.message) || ("HTTP " + status)); this.status = status; }
  }

  // background: a timed refresh, which must not keep an unattended session alive.
  async function call(method, path, body, background) {
    const headers = { "Accept": "application/json" };
    if (background) headers["X-Console-Background"] = "1";
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (method !== "GET" && csrf) headers["X-CSRF-Token"] = csrf;
    const r = await fetch(api + path, {
      method, headers, credentials: "same-origin", cache: "no-store",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    let data = null;
    try { data = await r.json(); } catch (e) { data = null; }
    if (r.status === 401 && path !== "session") { signedOut("Your session has ended. Sign in again."); }
    if (!r.ok) throw new ApiError(r.status, data);
    return data;
  }

  // ---- formatting ----
  function money(minor, currency) {
    const cur = { 978: "EUR", 840: "USD", 826: "GBP", 756: "CHF" }[currency] || (currency ? String(currency) : "");
    const v = Number(minor);
    return (v / 100).toFixed(2) + (cur ? " " + cur : "");
  }
  function when(t) {
    if (!t) return "never";
    const d = new Date(t * 1000);
    return d.toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
  }
  function age(s) {
    if (s < 60) return s + " s";
    if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s";
    return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
  }
  function decisionCell(d) { return el("td", { class: "d-" + d }, d); }
  const can = {
    decide: () => role === "operator" || role === "admin",
    admin: () => role === "admin",
  };

  // ---- session ----
  function signedIn(s) {
    csrf = s.csrf;
    role = s.role;
    $("who-name").textContent = s.name;
    $("who-role").textContent = s.role;
    $("who").classList.remove("hidden");
    $("signin").classList.add("hidden");
    $("app").classList.remove("hidden");
    document.body.dataset.role = s.role;
    $("term-register").disabled = !can.admin();
    for (const id of ["enroll-btn", "card-block", "card-unblock", "card-refresh", "card-rotate", "set-save"]) $(id).disabled = !can.decide();
    show("queue");
  }

  function signedOut(message) {
    csrf = "";
    role = "";
    clearInterval(heldTimer);
    clearInterval(overviewTimer);
    $("who").classList.add("hidden");
    $("app").classList.add("hidden");
    $("signin").classList.remove("hidden");
    $("letter-box").classList.add("hidden");
    clear($("letter"));
    if (message) flash(message, true);
  }

  $("signin-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const token = $("token").value.trim();
    $("token").value = "";
    try {
      signedIn(await call("POST", "session", { token }));
      flash("Signed in.");
    } catch (e) {
      flash("Sign-in failed: " + e.message, true);
    }
  });

  $("signout").addEventListener("click", async () => {
    try { await call("DELETE", "session"); } catch (e) { /* the session may be gone already */ }
    signedOut();
    flash("Signed out.");
  });

  // ---- views ----
  function show(view) {
    for (const b of document.querySelectorAll(".tabs button")) b.classList.toggle("active", b.dataset.view === view);
    for (const s of document.querySelectorAll(".view")) s.classList.toggle("hidden", s.id !== "view-" + view);
    clearInterval(heldTimer);
    clearInterval(overviewTimer);
    document.body.dataset.view = view;
    if (view === "queue") { loadHeld(); heldTimer = setInterval(() => loadHeld(null, true), 2000); }
    if (view === "transactions") loadTransactions();
    if (view === "cards") loadCards();
    if (view === "terminals") loadTerminals();
    if (view === "audit") loadAudit();
    if (view === "overview") { loadOverview(); overviewTimer = setInterval(() => loadOverview(true), 5000); }
  }
  for (const b of document.querySelectorAll(".tabs button")) b.addEventListener("click", () => show(b.dataset.view));

  // ---- held queue ----
  // Approve and decline buttons (attribute ATTR = id) for those who may decide; a hint for viewers.
  function decisionButtons(attr, id, decideFn, what) {
    const actions = el("div", { class: "actions" });
    if (!can.decide()) {
      actions.append(el("span", { class: "hint" }, "operators decide"));
      return actions;
    }
    actions.append(
      el("button", { type: "button", class: "approve", [attr]: id, onclick: () => decideFn(id, true) }, "Approve" + what),
      el("button", { type: "button", class: "decline", [attr]: id, onclick: () => decideFn(id, false) }, "Decline" + what));
    return actions;
  }

  async function loadHeld(ev, background) {
    let data;
    try { data = await call("GET", "held", undefined, background); } catch (e) { return; }
    const body = $("held-table").tBodies[0];
    clear(body);
    for (const t of data.held) {
      const actions = decisionButtons("data-txn", t.txn_id, decide, "");
      body.append(el("tr", { "data-txn": t.txn_id },
        el("td", {}, t.txn_id), el("td", { class: "num" }, money(t.amount_minor, t.currency)),
        el("td", {}, t.terminal + (t.door ? " / " + t.door : "")), el("td", {}, el("code", {}, t.card_masked)),
        el("td", {}, t.reason), el("td", { class: "num" }, age(t.age_s)), el("td", {}, actions)));
    }
    $("held-count").textContent = String(data.held.length);
    $("held-empty").classList.toggle("hidden", data.held.length > 0);
    loadRefunds(background);
  }

  // ---- refunds asked by terminals (otac-admin refunds, refund-approve, refund-decline) ----
  async function loadRefunds(background) {
    let data;
    try { data = await call("GET", "refunds", undefined, background); } catch (e) { return; }
    const body = $("refund-table").tBodies[0];
    clear(body);
    for (const r of data.refunds) {
      const actions = decisionButtons("data-refund", r.txn_id, decideRefund, " refund");
      body.append(el("tr", { "data-refund": r.txn_id },
        el("td", {}, r.txn_id), el("td", { class: "num" }, money(r.amount_minor)), el("td", {}, r.terminal),
        el("td", {}, when(r.requested_at)), el("td", {}, actions)));
    }
    $("refund-count").textContent = String(data.refunds.length);
    $("refund-empty").classList.toggle("hidden", data.refunds.length > 0);
  }

  async function decideRefund(txn, approve) {
    try {
      const r = await call("POST", "refunds/" + encodeURIComponent(txn) + "/" + (approve ? "approve" : "decline"));
      flash("Refund of " + txn + ": " + r.state + ".");
    } catch (e) {
      flash("Could not decide the refund of " + txn + ": " + e.message, true);
    }
    loadRefunds();
  }

  async function decide(txn, approve) {
    try {
      const a = await call("POST", "held/" + encodeURIComponent(txn) + "/" + (approve ? "approve" : "decline"));
      flash("Transaction " + txn + ": " + a.decision + (a.auth_code ? " (auth code " + a.auth_code + ")" : "") + ".");
    } catch (e) {
      flash("Could not decide " + txn + ": " + e.message, true);
    }
    loadHeld();
  }

  // ---- transactions ----
  function toUnix(v) { return v ? Math.floor(new Date(v + "Z").getTime() / 1000) : ""; }
  async function loadTransactions() {
    const q = new URLSearchParams();
    const card = $("f-card").value.trim(), term = $("f-terminal").value.trim(), dec = $("f-decision").value;
    if (card) q.set("card", card);
    if (term) q.set("terminal", term);
    if (dec) q.set("decision", dec);
    const since = toUnix($("f-since").value), until = toUnix($("f-until").value);
    if (since) q.set("since", since);
    if (until) q.set("until", until);
    q.set("limit", "200");
    let data;
    try { data = await call("GET", "transactions?" + q.toString()); } catch (e) { flash(e.message, true); return; }
    const body = $("txn-table").tBodies[0];
    clear(body);
    for (const t of data.transactions) {
      body.append(el("tr", { class: "clickable", "data-txn": t.txn_id, onclick: () => showTransaction(t.txn_id) },
        el("td", {}, when(t.created_at)), el("td", {}, t.txn_id), el("td", { class: "num" }, money(t.amount_minor, t.currency)),
        el("td", {}, t.terminal), el("td", {}, el("code", {}, t.card)), decisionCell(t.decision), el("td", {}, t.reason),
        el("td", {}, t.outcome || "")));
    }
    if (!data.transactions.length) body.append(el("tr", {}, el("td", { colSpan: 8, class: "empty" }, "No transactions match.")));
  }
  $("txn-filter").addEventListener("submit", (ev) => { ev.preventDefault(); loadTransactions(); });

  function fill(dl, pairs, append) {
    if (!append) clear(dl);
    for (const [k, v] of pairs) dl.append(el("dt", {}, k), el("dd", {}, v === undefined || v === "" ? "—" : String(v)));
  }

  // The two ASCII characters of an ARC, which the API gives in hex ("3030" is "00").
  function arcText(hex) {
    if (!hex || !/^([0-9a-f]{2})+$/i.test(hex)) return hex;
    return hex.match(/../g).map((b) => String.fromCharCode(parseInt(b, 16))).join("");
  }

  async function showTransaction(id) {
    let t;
    try { t = await call("GET", "transactions/" + encodeURIComponent(id)); } catch (e) { flash(e.message, true); return; }
    $("d-txn").textContent = t.txn_id;
    fill($("d-fields"), [
      ["Decision", t.decision], ["Reason", t.reason], ["Amount", money(t.amount_minor, t.currency)],
      ["Terminal", t.terminal], ["Door", t.door], ["Card", t.card], ["List / index", t.list + " / " + t.index],
      ["Auth code", t.auth_code], ["Response code (ARC)", arcText(t.arc)], ["Received", when(t.created_at)],
      ["Decided", t.decided_at ? when(t.decided_at) : "pending"], ["Decided by", t.decided_by],
      ["Outcome", t.outcome], ["Refund", t.refund],
    ]);
    $("txn-detail").classList.remove("hidden");
  }

  // ---- cards ----
  let currentCard = "";
  $("enroll-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const req = {
      msisdn: $("enroll-msisdn").value.trim(),
      algorithm: $("enroll-alg").value,
      limit_minor: Number($("enroll-limit").value || 0),
      review_minor: Number($("enroll-review").value || 0),
    };
    if ($("enroll-cash").value !== "") req.cash_daily_minor = Number($("enroll-cash").value);
    try {
      const e = await call("POST", "cards", req);
      $("letter").textContent = e.letter;
      $("letter-box").dataset.card = e.n;
      $("letter-box").classList.remove("hidden");
      $("enroll-form").reset();
      flash("Card " + e.n + " enrolled. Hand over the letter now: it is not shown again.");
      loadCards();
      await lookupCard(e.n);
      $("letter-box").scrollIntoView({ block: "start" });
    } catch (err) {
      flash("Enrollment failed: " + err.message, true);
    }
  });
  $("print-letter").addEventListener("click", () => window.print());
  $("close-letter").addEventListener("click", () => { clear($("letter")); $("letter-box").classList.add("hidden"); });

  async function lookupCard(n) {
    let c;
    try { c = await call("GET", "cards/" + encodeURIComponent(n)); } catch (e) { flash(e.message, true); return; }
    currentCard = n;
    $("card-id").value = n;
    fill($("card-fields"), [
      ["Card", c.n], ["Status", c.status], ["Phone", c.msisdn], ["Algorithm", c.algorithm],
      ["Codes left", c.unused], ["Current list", c.lists.length ? c.lists[c.lists.length - 1].id : 0],
      ["Key version", c.key_version + (c.key_rotation_pending ? " (rotation pending)" : "")],
      ["List in flight", c.list_push_in_flight ? "yes" : "no"],
      ["SMS waiting for the gateway", c.sms_queued === undefined ? undefined : c.sms_queued +
        (c.sms_last ? " (last: " + c.sms_last.attempts + " attempts" + (c.sms_last.gateway_reply ? ", gateway said: " + c.sms_last.gateway_reply : "") + ")" : "")], ["Bad cryptograms", c.fail_count + " of " + c.fail_limit],
      ["Refresh threshold", c.threshold], ["Limit", c.limit_minor ? money(c.limit_minor) : "none"],
      ["Review above", c.review_minor ? money(c.review_minor) : "never"],
      ["Cash per day", (c.cash_daily_effective_minor ? money(c.cash_daily_effective_minor) : "none") +
        (c.cash_daily_minor === null ? " (the backend's default)" : "")], ["Enrolled", when(c.created_at)],
    ]);
    const hhmm = (m) => String(Math.floor(m / 60)).padStart(2, "0") + ":" + String(m % 60).padStart(2, "0");
    const doors = (c.doors || []).map((d) => d.door + " " + hhmm(d.from_minute) + "-" + hhmm(d.to_minute) + " " + d.tz);
    fill($("card-fields"), [["Currency", c.currency], ["Doors", doors.length ? doors.join(", ") : "none"]], true);
    // defaultValue remembers what the card has, so that saving sends only the changes.
    for (const [id, v] of [["set-limit", c.limit_minor], ["set-review", c.review_minor], ["set-threshold", c.threshold],
                           ["set-currency", c.currency], ["set-doors", doors.join("\n")],
                           ["set-cash", c.cash_daily_minor === null ? "" : c.cash_daily_minor]]) {
      $(id).defaultValue = String(v);
      $(id).value = String(v);
    }
    $("card-detail").dataset.status = c.status;
    const body = $("card-events").tBodies[0];
    clear(body);
    for (const e of c.events) body.append(el("tr", {}, el("td", {}, when(e.at)), el("td", {}, e.actor), el("td", {}, e.action), el("td", {}, e.detail)));
    $("card-detail").classList.remove("hidden");
  }
  $("card-lookup").addEventListener("submit", (ev) => { ev.preventDefault(); lookupCard($("card-id").value.trim()); });

  async function cardAction(verb, label) {
    if (!currentCard) return;
    try {
      await call("POST", "cards/" + encodeURIComponent(currentCard) + "/" + verb);
      flash(label + ": done for card " + currentCard + ".");
    } catch (e) {
      flash(label + " failed: " + e.message, true);
    }
    lookupCard(currentCard);
    loadCards();
  }
  // Sends only what differs from the card as shown; the backend checks and audits it.
  $("card-settings").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    if (!currentCard) return;
    const body = {};
    for (const [id, key] of [["set-limit", "limit_minor"], ["set-review", "review_minor"], ["set-threshold", "threshold"]]) {
      if ($(id).value !== "" && $(id).value !== $(id).defaultValue) body[key] = Number($(id).value);
    }
    if ($("set-currency").value.trim() !== $("set-currency").defaultValue) body.currency = $("set-currency").value.trim();
    // Emptied: the backend's cash_card_daily_minor applies again.
    if ($("set-cash").value !== $("set-cash").defaultValue) body.cash_daily_minor = $("set-cash").value === "" ? null : Number($("set-cash").value);
    if ($("set-doors").value !== $("set-doors").defaultValue) {
      body.doors = [];
      for (const line of $("set-doors").value.split("\n").map((l) => l.trim()).filter((l) => l)) {
        const [door, window, tz] = line.split(/\s+/);
        const d = { door };
        if (window) {
          const m = /^(\d\d):(\d\d)-(\d\d):(\d\d)$/.exec(window);
          if (!m) { flash("Door line \"" + line + "\": the window must be HH:MM-HH:MM.", true); return; }
          d.from_minute = Number(m[1]) * 60 + Number(m[2]);
          d.to_minute = Number(m[3]) * 60 + Number(m[4]);
        }
        if (tz) d.tz = tz;
        body.doors.push(d);
      }
    }
    if (Object.keys(body).length === 0) { flash("Nothing changed."); return; }
    try {
      await call("POST", "cards/" + encodeURIComponent(currentCard) + "/settings", body);
      flash("Settings saved for card " + currentCard + ".");
    } catch (e) {
      flash("Settings not saved: " + e.message, true);
    }
    lookupCard(currentCard);
  });
  $("card-block").addEventListener("click", () => cardAction("block", "Block"));
  $("card-unblock").addEventListener("click", () => cardAction("unblock", "Unblock"));
  $("card-refresh").addEventListener("click", () => cardAction("refresh", "New list"));
  $("card-rotate").addEventListener("click", () => cardAction("rotate-key", "Key rotation"));

  async function loadCards() {
    let data;
    try { data = await call("GET", "cards"); } catch (e) { return; }
    const body = $("cards-table").tBodies[0];
    clear(body);
    for (const c of data.cards) {
      const masked = c.n.includes("*");  // viewers get masked ids: nothing to look up
      body.append(el("tr", masked ? { "data-card": c.n } : { class: "clickable", "data-card": c.n, onclick: () => lookupCard(c.n) },
        el("td", {}, el("code", {}, c.n)), el("td", { class: c.status === "blocked" ? "d-declined" : "d-approved" }, c.status),
        el("td", {}, c.msisdn), el("td", {}, "v" + c.key_version), el("td", {}, when(c.created_at))));
    }
  }

  // ---- terminals ----
  $("term-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const id = $("term-id").value.trim();
    try {
      showCert(id, await call("POST", "terminals", { id, limit_minor: Number($("term-limit").value || 0) }));
      flash("Terminal " + id + " registered with a new client certificate.");
      $("term-form").reset();
    } catch (e) {
      flash("Registration failed: " + e.message, true);
    }
    loadTerminals();
  });
  $("close-cert").addEventListener("click", () => { clear($("cert-key")); clear($("cert-pem")); $("cert-box").classList.add("hidden"); });

  function showCert(id, r) {
    $("cert-id").textContent = id;
    $("cert-pem").textContent = r.cert;
    $("cert-key").textContent = r.key;
    $("cert-box").classList.remove("hidden");
  }

  async function terminalAction(id, verb) {
    try {
      const r = await call("POST", "terminals/" + encodeURIComponent(id) + "/" + verb);
      if (verb === "cert") {
        showCert(id, r);
      } else {
        flash("Terminal " + id + ": certificate revoked, terminal disabled.");
      }
    } catch (e) {
      flash("Terminal " + id + ": " + e.message, true);
    }
    loadTerminals();
  }

  async function loadTerminals() {
    let data;
    try { data = await call("GET", "terminals"); } catch (e) { return; }
    const body = $("term-table").tBodies[0];
    clear(body);
    for (const t of data.terminals) {
      const actions = el("div", { class: "actions" });
      if (can.admin()) {
        actions.append(el("button", { type: "button", class: "plain", "data-terminal": t.id, onclick: () => terminalAction(t.id, "cert") }, t.fingerprint ? "New certificate" : "Issue certificate"));
        if (t.enabled) actions.append(el("button", { type: "button", class: "danger revoke", "data-terminal": t.id, onclick: () => terminalAction(t.id, "revoke") }, "Revoke"));
      }
      body.append(el("tr", { "data-terminal": t.id },
        el("td", {}, t.id), el("td", {}, t.enabled === false ? "no" : "yes"),
        el("td", {}, t.fingerprint ? el("code", {}, String(t.fingerprint).slice(0, 16) + "…") : "none"),
        el("td", { class: "num" }, t.limit_minor ? money(t.limit_minor) : "none"), el("td", {}, when(t.last_seen)), el("td", {}, actions)));
    }
    if (!data.terminals.length) body.append(el("tr", {}, el("td", { colSpan: 6, class: "empty" }, "No terminals registered yet.")));
  }

  // ---- audit ----
  async function loadAudit() {
    let data;
    try { data = await call("GET", "audit?limit=300"); } catch (e) { return; }
    const body = $("audit-table").tBodies[0];
    clear(body);
    for (const e of data.entries)
      body.append(el("tr", {}, el("td", { class: "num" }, e.seq), el("td", {}, when(e.at)), el("td", {}, e.actor), el("td", {}, e.action), el("td", {}, e.detail)));
  }

  // ---- overview charts (plain canvas) ----
  const colors = { approved: "#1a7f37", declined: "#c62828", held: "#b26a00", line: "#1f5fbf", grid: "#d9dde3", ink: "#667085" };

  function axes(ctx, w, h, pad, maxY) {
    ctx.clearRect(0, 0, w, h);
    ctx.strokeStyle = colors.grid;
    ctx.fillStyle = colors.ink;
    ctx.font = "11px sans-serif";
    ctx.lineWidth = 1;
    for (let i = 0; i <= 4; i++) {
      const y = pad + (h - 2 * pad) * (1 - i / 4);
      ctx.beginPath(); ctx.moveTo(pad, y); ctx.lineTo(w - 8, y); ctx.stroke();
      ctx.fillText(String(Math.round(maxY * i / 4)), 4, y + 4);
    }
  }

  function drawDecisions(buckets) {
    const c = $("chart-decisions"), ctx = c.getContext("2d"), w = c.width, h = c.height, pad = 28;
    let maxY = 1;
    for (const b of buckets) maxY = Math.max(maxY, b.approved + b.declined + b.held);
    maxY = Math.ceil(maxY / 4) * 4;
    axes(ctx, w, h, pad, maxY);
    const bw = (w - pad - 8) / buckets.length;
    buckets.forEach((b, i) => {
      let y = h - pad;
      for (const k of ["approved", "declined", "held"]) {
        const bh = (h - 2 * pad) * b[k] / maxY;
        ctx.fillStyle = colors[k];
        ctx.fillRect(pad + i * bw + 1, y - bh, Math.max(1, bw - 2), bh);
        y -= bh;
      }
    });
    ctx.fillStyle = colors.ink;
    ctx.fillText("-60 min", pad, h - 8);
    ctx.fillText("now", w - 30, h - 8);
  }

  function drawSms() {
    const c = $("chart-sms"), ctx = c.getContext("2d"), w = c.width, h = c.height, pad = 28;
    let maxY = 4;
    for (const [, d] of smsSamples) maxY = Math.max(maxY, d);
    maxY = Math.ceil(maxY / 4) * 4;
    axes(ctx, w, h, pad, maxY);
    if (!smsSamples.length) return;
    const t0 = smsSamples[0][0], t1 = Math.max(t0 + 1, smsSamples[smsSamples.length - 1][0]);
    ctx.strokeStyle = colors.line;
    ctx.lineWidth = 2;
    ctx.beginPath();
    smsSamples.forEach(([t, d], i) => {
      const x = pad + (w - pad - 8) * (t - t0) / (t1 - t0), y = h - pad - (h - 2 * pad) * d / maxY;
      if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
    });
    ctx.stroke();
    const [tl, dl] = smsSamples[smsSamples.length - 1];
    ctx.fillStyle = colors.line;
    ctx.beginPath();
    ctx.arc(pad + (w - pad - 8) * (tl - t0) / (t1 - t0), h - pad - (h - 2 * pad) * dl / maxY, 4, 0, 2 * Math.PI);
    ctx.fill();
    ctx.fillStyle = colors.ink;
    ctx.fillText(when(t0).slice(11, 16), pad, h - 8);
    ctx.fillText("now", w - 30, h - 8);
  }

  async function loadOverview(background) {
    let s;
    try { s = await call("GET", "stats", undefined, background); } catch (e) { return; }
    smsSamples.length = 0;
    for (const sample of s.outbox_history) smsSamples.push(sample);
    $("sms-depth").textContent = String(s.outbox_depth);
    drawDecisions(s.per_minute);
    drawSms();
    fill($("decision-totals"), Object.entries(s.decisions).map(([k, v]) => [k, v]));
  }

  // ---- start: resume a session if the cookie is still good ----
  call("GET", "session").then(signedIn, () => signedOut());
})();
