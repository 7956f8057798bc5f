// ipguard status page: polls the daemon's REST API and renders it. Plain ES2020, no
// dependencies. Every value from the API is rendered as text (textContent, attributes set
// with setAttribute): nothing is ever parsed as HTML. The token lives in sessionStorage
// only and travels in the Authorization header, never in a URL.
"use strict";

(() => {
  const TOKEN_KEY = "ipguard.token";
  const NO_TOKEN_KEY = "ipguard.noToken";
  const WINDOW_MS = 120000; // the charts show the last two minutes
  const PAGE_SIZE = 20;
  // "would_drop": monitor mode's passed packets that enforce mode would drop (the sum of
  // the API's would_drop_graylist, would_drop_blacklist and would_drop_rule).
  const PASS_LISTS = ["unlisted", "whitelist", "non_ip", "would_drop"];
  const WOULD_DROP = ["would_drop_graylist", "would_drop_blacklist", "would_drop_rule"];
  const DROP_LISTS = ["graylist", "blacklist", "rule", "malformed", "syn_budget"];
  const LIST_LABEL = { non_ip: "non-IP", syn_budget: "SYN budget", would_drop: "would drop (monitor)" };
  const CHART_W = 600;
  const CHART_H = 160;
  const SVG_NS = "http://www.w3.org/2000/svg";

  const $ = (id) => document.getElementById(id);

  // ---- DOM helpers: text only ----

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") node.className = v;
      else node.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children) {
      if (c === undefined || c === null) continue;
      node.appendChild(typeof c === "object" ? c : document.createTextNode(String(c)));
    }
    return node;
  }

  function svgEl(tag, attrs) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
    return node;
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
  }

  function setText(id, text) {
    $(id).textContent = text === null || text === undefined ? "—" : String(text);
  }

  function setMsg(id, text, kind) {
    const node = $(id);
    node.textContent = text || "";
    node.classList.toggle("ok", kind === "ok");
    node.classList.toggle("error", kind === "error");
  }

  function badge(text, cls) {
    return el("span", { class: "badge " + (cls || "") }, text);
  }

  // ---- Formatting ----

  const intFmt = new Intl.NumberFormat("en-US");

  function fmtCount(n) {
    return typeof n === "number" ? intFmt.format(n) : "—";
  }

  function fmtRate(n) {
    if (!isFinite(n) || n <= 0) return "0";
    if (n >= 1e6) return (n / 1e6).toFixed(n >= 1e7 ? 0 : 1) + "M";
    if (n >= 1e3) return (n / 1e3).toFixed(n >= 1e4 ? 0 : 1) + "k";
    if (n >= 10) return n.toFixed(0);
    return n.toFixed(1);
  }

  function fmtBytesRate(n) {
    if (!isFinite(n) || n <= 0) return "0 B/s";
    const units = ["B/s", "kB/s", "MB/s", "GB/s"];
    let i = 0;
    while (n >= 1000 && i < units.length - 1) { n /= 1000; i++; }
    return (n >= 100 || i === 0 ? n.toFixed(0) : n.toFixed(1)) + " " + units[i];
  }

  function fmtSpan(seconds) {
    let s = Math.max(0, Math.round(seconds));
    const d = Math.floor(s / 86400); s -= d * 86400;
    const h = Math.floor(s / 3600); s -= h * 3600;
    const m = Math.floor(s / 60); s -= m * 60;
    if (d) return `${d} d ${h} h`;
    if (h) return `${h} h ${m} m`;
    if (m) return `${m} m ${s} s`;
    return `${s} s`;
  }

  // "in 59 m 58 s" / "3 m 2 s ago"; null: `never`.
  function fmtWhen(iso, never) {
    if (!iso) return never === undefined ? "never" : never;
    const t = Date.parse(iso);
    if (isNaN(t)) return String(iso);
    const diff = (t - Date.now()) / 1000;
    if (Math.abs(diff) < 1) return "now";
    return diff > 0 ? `in ${fmtSpan(diff)}` : `${fmtSpan(-diff)} ago`;
  }

  function when(iso, never) {
    return el("span", { title: iso || undefined }, fmtWhen(iso, never));
  }

  const listLabel = (name) => LIST_LABEL[name] || name;

  // ---- Token ----

  const store = {
    get(key) { try { return window.sessionStorage.getItem(key); } catch (_) { return null; } },
    set(key, v) { try { window.sessionStorage.setItem(key, v); } catch (_) { /* private mode */ } },
    del(key) { try { window.sessionStorage.removeItem(key); } catch (_) { /* private mode */ } },
  };
  const token = () => store.get(TOKEN_KEY) || "";

  let ready = false; // false while the token prompt is up: the /v1 pollers wait

  function askToken(message) {
    ready = false;
    setMsg("token-msg", message || "", message ? "error" : "");
    if (!$("token-dialog").hidden) return; // already asking: keep what is being typed
    $("token-dialog").hidden = false;
    $("token-input").value = "";
    $("token-input").focus();
  }

  function tokenChosen() {
    $("token-dialog").hidden = true;
    $("forget-token").hidden = !token();
    ready = true;
    kick();
  }

  // ---- API ----

  class ApiError extends Error {
    constructor(status, error, detail) {
      super(detail ? `${error}: ${detail}` : error);
      this.status = status;
    }
  }

  async function api(path, method, body) {
    const headers = { Accept: "application/json" };
    const t = token();
    if (t) headers.Authorization = "Bearer " + t;
    const init = { method: method || "GET", headers, cache: "no-store", credentials: "omit", redirect: "error" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let resp;
    try {
      resp = await fetch(path, init);
    } catch (_) {
      setConn(false);
      throw new ApiError(0, "unreachable", "the API does not answer");
    }
    setConn(true);
    let data = null;
    try { data = await resp.json(); } catch (_) { data = null; }
    if (resp.status === 401 && path.startsWith("/v1/")) {
      askToken(token() ? "The token was refused." : "This daemon requires a token.");
    }
    if (!resp.ok && !(path === "/healthz" && data && data.status)) {
      const e = data && typeof data.error === "string" ? data.error : `HTTP ${resp.status}`;
      throw new ApiError(resp.status, e, data && typeof data.detail === "string" ? data.detail : "");
    }
    return data;
  }

  function setConn(ok) {
    $("conn").hidden = ok;
    if (!ok) $("conn").textContent = "API unreachable, retrying…";
  }

  // ---- Scheduler: each task runs every `ms`, never twice at once ----

  const tasks = [];

  function every(ms, fn, open) {
    tasks.push({ ms, fn, open: !!open, next: 0, busy: false });
  }

  function kick() {
    for (const t of tasks) t.next = 0;
    tick();
  }

  function tick() {
    const now = performance.now();
    for (const t of tasks) {
      if (t.busy || now < t.next || !(ready || t.open)) continue;
      t.busy = true;
      Promise.resolve()
        .then(t.fn)
        .catch(() => { /* shown where it happened; retried at the next turn */ })
        .finally(() => { t.busy = false; t.next = performance.now() + t.ms; });
    }
  }

  // ---- Status, rates and charts ----

  let lastTotals = null; // { t, lists }
  const points = []; // { t, rates: {list: pps}, bps: {list: bytes/s} }
  const lines = {}; // list -> polyline

  function setupChart(svgId, legendId, names) {
    const svg = $(svgId);
    for (const f of [0.25, 0.5, 0.75]) {
      svg.appendChild(svgEl("line", { class: "gridline", x1: 0, x2: CHART_W, y1: CHART_H * f, y2: CHART_H * f, "vector-effect": "non-scaling-stroke" }));
    }
    const legend = $(legendId);
    for (const name of names) {
      lines[name] = svgEl("polyline", { class: `series c-${name}`, points: "", "vector-effect": "non-scaling-stroke" });
      svg.appendChild(lines[name]);
      legend.appendChild(el("li", {},
        el("span", { class: `swatch c-${name}` }),
        el("span", {}, listLabel(name)),
        el("span", { class: "rate", id: `rate-${name}`, "data-rate": "0" }, "0/s")));
    }
  }

  function niceCeil(v) {
    if (v <= 1) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10]) if (m * p >= v * 1.05) return m * p;
    return 10 * p;
  }

  // The time shown: the data there is, in steps of 10 s, up to the whole window.
  function chartSpan(now) {
    const age = points.length ? now - points[0].t : 0;
    return Math.min(WINDOW_MS, Math.max(10000, Math.ceil(age / 10000) * 10000));
  }

  function fmtAge(ms) {
    const s = Math.round(ms / 1000);
    return s >= 60 && s % 60 === 0 ? `−${s / 60} min` : `−${s} s`;
  }

  function drawAxes(span) {
    for (const n of document.querySelectorAll(".x-start")) n.textContent = fmtAge(span);
    for (const n of document.querySelectorAll(".x-mid")) n.textContent = fmtAge(span / 2);
    setText("span-note", `packets per second, last ${fmtAge(span).slice(1)}`);
  }

  function drawChart(names, maxId, midId, now, span) {
    let max = 0;
    for (const p of points) for (const n of names) max = Math.max(max, p.rates[n] || 0);
    const top = niceCeil(max);
    setText(maxId, fmtRate(top));
    setText(midId, fmtRate(top / 2));
    for (const n of names) {
      const active = points.some((p) => (p.rates[n] || 0) > 0);
      const coords = active ? points.map((p) => {
        const x = CHART_W - ((now - p.t) / span) * CHART_W;
        const y = CHART_H - 2 - ((p.rates[n] || 0) / top) * (CHART_H - 4);
        return `${x.toFixed(1)},${y.toFixed(1)}`;
      }) : [];
      lines[n].setAttribute("points", coords.join(" "));
    }
  }

  function onStatus(s) {
    setText("h-interface", s.interface);
    setText("h-mode", s.xdp_mode);
    setText("h-policy", s.mode);
    $("h-policy").classList.toggle("monitor", s.mode === "monitor");
    setText("h-uptime", fmtSpan(s.uptime_seconds));
    setText("h-tracked", fmtCount(s.tracked_sources));
    for (const l of ["whitelist", "graylist", "blacklist"]) {
      setText(`count-${l}`, s.entries && typeof s.entries[l] === "number" ? fmtCount(s.entries[l]) : "");
    }
    renderProblems(s.problems || []);
    renderMaps(s.maps || {});

    const t = performance.now();
    const lists = Object.assign({}, s.lists || {});
    const would = { packets: 0, bytes: 0 };
    for (const n of WOULD_DROP) {
      if (lists[n]) { would.packets += lists[n].packets; would.bytes += lists[n].bytes; }
    }
    lists.would_drop = would;
    if (lastTotals) {
      const dt = (t - lastTotals.t) / 1000;
      const rates = {};
      const bps = {};
      let restarted = false;
      for (const n of PASS_LISTS.concat(DROP_LISTS)) {
        const cur = lists[n] || { packets: 0, bytes: 0 };
        const prev = lastTotals.lists[n] || { packets: 0, bytes: 0 };
        if (cur.packets < prev.packets) restarted = true;
        rates[n] = Math.max(0, cur.packets - prev.packets) / dt;
        bps[n] = Math.max(0, cur.bytes - prev.bytes) / dt;
      }
      if (restarted) points.length = 0;
      else if (dt > 0.05) points.push({ t, rates, bps });
    }
    lastTotals = { t, lists };
    while (points.length && t - points[0].t > WINDOW_MS) points.shift();

    const latest = points.length ? points[points.length - 1] : null;
    let pass = 0;
    let drop = 0;
    for (const n of PASS_LISTS.concat(DROP_LISTS)) {
      const r = latest ? latest.rates[n] : 0;
      if (PASS_LISTS.includes(n)) pass += r; else drop += r;
      const node = $(`rate-${n}`);
      node.textContent = `${fmtRate(r)}/s`;
      node.setAttribute("data-rate", String(r));
      node.setAttribute("title", latest ? fmtBytesRate(latest.bps[n]) : "");
    }
    for (const [id, v] of [["rate-pass", pass], ["rate-drop", drop]]) {
      $(id).textContent = `${fmtRate(v)}/s`;
      $(id).setAttribute("data-rate", String(v));
    }
    $("charts").setAttribute("data-samples", String(points.length));
    const span = chartSpan(t);
    drawAxes(span);
    drawChart(PASS_LISTS, "chart-pass-max", "chart-pass-mid", t, span);
    drawChart(DROP_LISTS, "chart-drop-max", "chart-drop-mid", t, span);
  }

  function renderProblems(problems) {
    const ul = $("problems-list");
    clear(ul);
    for (const p of problems) {
      ul.appendChild(el("li", {}, `${p.kind}: ${p.detail} (since ${fmtWhen(p.since)}, ${fmtCount(p.count)}×)`));
    }
    $("problems").hidden = problems.length === 0;
  }

  function renderMaps(maps) {
    const box = $("mapfill");
    clear(box);
    const names = { lpm_v4: "IPv4 host table", lpm_v6: "IPv6 table", sources: "source counters" };
    for (const [key, label] of Object.entries(names)) {
      const m = maps[key];
      if (!m) continue;
      box.appendChild(el("span", { class: "meter" }, label,
        el("progress", { max: Math.max(1, m.capacity), value: m.used }),
        `${fmtCount(m.used)} / ${fmtCount(m.capacity)}`));
    }
  }

  async function pollStatus() {
    onStatus(await api("/v1/status"));
  }

  async function pollHealth() {
    const h = await api("/healthz");
    const b = $("h-health");
    b.textContent = h.status;
    b.className = "badge " + (["ok", "degraded", "unavailable"].includes(h.status) ? h.status : "");
    b.setAttribute("title", (h.problems || []).join("\n"));
  }

  // ---- Offenders ----

  async function pollOffenders() {
    let data;
    try {
      data = await api("/v1/offenders?limit=20");
    } catch (e) {
      setText("offenders-note", e.status === 401 ? "" : e.message);
      throw e;
    }
    setText("offenders-note", "");
    const body = $("offenders").tBodies[0];
    clear(body);
    const rows = (data && data.offenders) || [];
    for (const o of rows) {
      const ip = el("button", { type: "button", class: "linkish", title: "explain" }, o.ip);
      ip.addEventListener("click", () => { $("explain-ip").value = o.ip; explain(); });
      const ban = o.list
        ? el("span", {}, badge(o.list, o.list), " ", el("span", { class: "muted", title: o.expires || "" }, o.expires ? fmtWhen(o.expires) : "forever"))
        : "—";
      const c = o.counters || {};
      body.appendChild(el("tr", {},
        el("td", {}, ip),
        el("td", { class: "num" }, fmtCount(o.strikes)),
        el("td", { class: "num" }, fmtCount(o.reports)),
        el("td", {}, ban),
        el("td", { class: "reason" }, o.reason || "—"),
        el("td", { class: "num" }, fmtCount(c.packets)),
        el("td", { class: "num" }, fmtCount(c.dropped)),
        el("td", {}, when(o.last_activity, "—"))));
    }
    $("offenders-empty").hidden = rows.length > 0;
  }

  // ---- Lists: tabs, search, paging, remove ----

  const listView = { name: "blacklist", cursors: [""], q: "", seq: 0 };

  function selectList(name, load) {
    listView.name = name;
    listView.cursors = [""];
    for (const b of document.querySelectorAll(".tab")) {
      const on = b.getAttribute("data-list") === name;
      b.classList.toggle("active", on);
      b.setAttribute("aria-selected", on ? "true" : "false");
    }
    setMsg("list-msg", "");
    return load === false ? Promise.resolve() : loadList();
  }

  async function loadList() {
    const seq = ++listView.seq;
    const cursor = listView.cursors[listView.cursors.length - 1];
    const params = new URLSearchParams({ limit: String(PAGE_SIZE) });
    if (cursor) params.set("cursor", cursor);
    if (listView.q) params.set("q", listView.q);
    let page;
    try {
      page = await api(`/v1/lists/${listView.name}?${params}`);
    } catch (e) {
      if (seq === listView.seq && e.status !== 401) setMsg("list-msg", e.message, "error");
      throw e;
    }
    if (seq !== listView.seq) return; // a newer request is under way
    const body = $("list-table").tBodies[0];
    clear(body);
    const entries = page.entries || [];
    for (const e of entries) {
      body.appendChild(el("tr", {},
        el("td", { class: "mono" }, e.net),
        el("td", { class: "reason" }, e.reason),
        el("td", {}, e.source),
        el("td", {}, when(e.expires)),
        el("td", { class: "act" }, removeButton(listView.name, e.net))));
    }
    $("list-empty").hidden = entries.length > 0;
    $("list-empty").textContent = listView.q ? "No entry matches." : "No entries.";
    listView.next = page.next_cursor || null;
    $("list-next").disabled = !listView.next;
    $("list-prev").disabled = listView.cursors.length <= 1;
    setText("list-page", `page ${listView.cursors.length}`);
    // What the table shows now (list, page, search), for scripts that drive the page.
    $("list-table").setAttribute("data-shown", `${listView.name}|${listView.cursors.length}|${listView.q}`);
  }

  function removeButton(list, net) {
    const b = el("button", { type: "button", class: "btn small danger", "data-net": net }, "Remove");
    let timer = null;
    b.addEventListener("click", async () => {
      if (!b.classList.contains("armed")) {
        b.classList.add("armed");
        b.textContent = "Confirm";
        timer = setTimeout(() => { b.classList.remove("armed"); b.textContent = "Remove"; }, 4000);
        return;
      }
      clearTimeout(timer);
      b.disabled = true;
      try {
        const r = await api(`/v1/lists/${list}/${encodeURIComponent(net)}`, "DELETE");
        setMsg("list-msg", `Removed ${r.removed} from the ${list}.`, "ok");
        await loadList();
      } catch (e) {
        b.disabled = false;
        b.classList.remove("armed");
        b.textContent = "Remove";
        setMsg("list-msg", e.message, "error");
      }
    });
    return b;
  }

  async function refreshList() {
    // Not while an operator is about to confirm a removal.
    if (document.querySelector("#list-table .armed")) return;
    await loadList();
  }

  // ---- Explain ----

  async function explain() {
    const ip = $("explain-ip").value.trim();
    if (!ip) { setMsg("explain-msg", "Type an address.", "error"); return; }
    setMsg("explain-msg", "");
    let r;
    try {
      r = await api(`/v1/ips/${encodeURIComponent(ip)}`);
    } catch (e) {
      $("explain-result").hidden = true;
      setMsg("explain-msg", e.message, "error");
      return;
    }
    const v = $("explain-verdict");
    v.textContent = r.verdict;
    v.className = "badge " + (r.verdict === "drop" ? "drop" : "pass");
    setText("explain-list", r.list || "unlisted");
    setText("explain-prefix", r.prefix);
    setText("explain-reason", r.reason);
    setText("explain-source", r.source);
    setText("explain-strikes", fmtCount(r.strikes));
    setText("explain-expires", r.expires ? `${fmtWhen(r.expires)} (${r.expires})` : (r.list ? "never" : "—"));
    const c = r.counters || {};
    setText("explain-counters", `${fmtCount(c.packets)} packets, ${fmtCount(c.bytes)} bytes, ${fmtCount(c.syns)} SYNs, ${fmtCount(c.dropped)} dropped`);
    const hasNode = typeof r.node === "string";
    $("explain-node-label").hidden = !hasNode;
    $("explain-node").hidden = !hasNode;
    setText("explain-node", hasNode ? r.node : "");
    setText("explain-addr", r.ip);
    $("explain-result").hidden = false;
  }

  // ---- Add ----

  async function addEntry() {
    const list = $("add-list").value;
    const net = $("add-net").value.trim();
    const duration = $("add-duration").value.trim();
    const reason = $("add-reason").value;
    if (!net) { setMsg("add-msg", "Type an address or a network.", "error"); return; }
    const entry = { net, duration: duration || null, reason: reason || null };
    $("add-submit").disabled = true;
    setMsg("add-msg", "Adding…", "");
    try {
      const r = await api(`/v1/lists/${list}`, "POST", { entries: [entry], force: $("add-force").checked });
      const how = r.replaced ? "replaced the entry" : "added";
      setMsg("add-msg", `${net}: ${how} on the ${list}${duration ? ` for ${duration}` : ""}.`, "ok");
      $("add-net").value = "";
      $("add-reason").value = "";
      $("add-force").checked = false;
      if (list === listView.name) loadList().catch(() => {});
    } catch (e) {
      setMsg("add-msg", e.message, "error");
    } finally {
      $("add-submit").disabled = false;
    }
  }

  // ---- Cluster ----

  async function pollCluster() {
    const c = await api("/v1/cluster");
    const card = $("cluster-card");
    card.hidden = !(c && c.enabled);
    if (card.hidden) return;
    const link = $("cluster-link");
    link.textContent = `link ${c.link}`;
    link.className = "badge " + (c.link === "up" ? "up" : "down");
    setText("cluster-node", c.node);
    setText("cluster-since", c.since ? fmtWhen(c.since) : null);
    setText("cluster-shared", fmtCount(c.shared));
    setText("cluster-queued", fmtCount(c.queued));
    setText("cluster-lag", typeof c.last_lag_ms === "number" ? `${fmtCount(c.last_lag_ms)} ms` : null);
    setText("cluster-applied", `${fmtCount(c.applied)} / ${fmtCount(c.rejected)}`);
    setText("cluster-error", c.last_error || "none");
    const body = $("cluster-nodes").tBodies[0];
    clear(body);
    for (const n of c.nodes || []) {
      body.appendChild(el("tr", {}, el("td", { class: "mono" }, n.name), el("td", {}, when(n.last_seen))));
    }
  }

  // ---- Feeds ----

  async function pollFeeds() {
    const f = await api("/v1/feeds");
    const card = $("feeds-card");
    const feeds = (f && f.feeds) || [];
    card.hidden = feeds.length === 0;
    if (card.hidden) return;
    const body = $("feeds-table").tBodies[0];
    clear(body);
    for (const feed of feeds) {
      const rejected = feed.rejected_lines + Object.values(feed.dropped || {}).reduce((a, b) => a + b, 0);
      let state;
      if (feed.held) {
        state = el("span", { class: "badge down" }, `held: ${feed.held.reason} (+${fmtCount(feed.held.added)} -${fmtCount(feed.held.removed)})`);
      } else if (feed.last_error) {
        state = el("span", { class: "badge down" }, `error: ${feed.last_error}`);
      } else {
        state = el("span", { class: "badge up" }, "ok");
      }
      const action = el("td", {});
      if (feed.held) {
        const b = el("button", { type: "button", class: "btn", "data-feed": feed.name }, "Accept");
        b.addEventListener("click", () => acceptFeed(feed.name, b));
        action.appendChild(b);
      }
      body.appendChild(el("tr", { "data-feed": feed.name },
        el("td", { class: "mono" }, feed.name),
        el("td", {}, feed.list),
        el("td", { class: "num" }, fmtCount(feed.entries)),
        el("td", {}, feed.last_fetch ? when(feed.last_fetch) : "never"),
        el("td", {}, feed.last_change ? when(feed.last_change) : "never"),
        el("td", { class: "num" }, fmtCount(rejected)),
        el("td", {}, state),
        action));
    }
  }

  async function acceptFeed(name, button) {
    button.disabled = true;
    try {
      const r = await api(`/v1/feeds/${encodeURIComponent(name)}/accept`, "POST", {});
      setMsg("feeds-msg", `${r.name}: update applied, ${fmtCount(r.entries)} entries in force.`, "ok");
      pollFeeds().catch(() => {});
    } catch (e) {
      setMsg("feeds-msg", e.message, "error");
      button.disabled = false;
    }
  }

  // ---- Wiring ----

  function debounce(fn, ms) {
    let t = null;
    return (...args) => { clearTimeout(t); t = setTimeout(() => fn(...args), ms); };
  }

  function start() {
    setupChart("chart-pass", "legend-pass", PASS_LISTS);
    setupChart("chart-drop", "legend-drop", DROP_LISTS);

    $("token-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const t = $("token-input").value.trim();
      if (!t) { setMsg("token-msg", "Type the token.", "error"); return; }
      store.set(TOKEN_KEY, t);
      store.del(NO_TOKEN_KEY);
      $("token-input").value = "";
      tokenChosen();
    });
    $("token-none").addEventListener("click", () => {
      store.del(TOKEN_KEY);
      store.set(NO_TOKEN_KEY, "1");
      tokenChosen();
    });
    $("forget-token").addEventListener("click", () => {
      store.del(TOKEN_KEY);
      store.del(NO_TOKEN_KEY);
      $("forget-token").hidden = true;
      askToken("");
    });

    for (const b of document.querySelectorAll(".tab")) {
      b.addEventListener("click", () => { selectList(b.getAttribute("data-list")).catch(() => {}); });
    }
    $("list-search").addEventListener("input", debounce(() => {
      listView.q = $("list-search").value.trim();
      listView.cursors = [""];
      setMsg("list-msg", "");
      loadList().catch(() => {});
    }, 250));
    $("list-next").addEventListener("click", () => {
      if (!listView.next) return;
      listView.cursors.push(listView.next);
      loadList().catch(() => {});
    });
    $("list-prev").addEventListener("click", () => {
      if (listView.cursors.length <= 1) return;
      listView.cursors.pop();
      loadList().catch(() => {});
    });
    $("explain-form").addEventListener("submit", (ev) => { ev.preventDefault(); explain(); });
    $("add-form").addEventListener("submit", (ev) => { ev.preventDefault(); addEntry(); });

    every(1000, pollStatus);
    every(2000, pollOffenders);
    every(5000, pollHealth, true);
    every(5000, pollCluster);
    every(5000, pollFeeds);
    every(10000, refreshList);
    selectList("blacklist", false); // loaded by refreshList's first turn
    window.setInterval(tick, 200);

    if (token() || store.get(NO_TOKEN_KEY)) tokenChosen();
    else askToken("");
    tick();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
