// The Tapline analyst's UI: hash routes over the collector's JSON API.
//   #/alerts?severity=&type=&actor=&since=&status=&offset=   alerts, newest first
//   #/alert/ID                                               one alert, its chart, feedback
//   #/actor/KEY                                              an actor
//   #/endpoints?q=&method=&sort=&offset=                     endpoint inventory
//   #/agents                                                 agents and capture coverage
// Everything is built with DOM calls (textContent), never from HTML strings.
"use strict";

const SEVERITIES = ["info", "low", "medium", "high", "critical"];
const TYPES = ["rate_spike", "impossible_travel", "token_sharing", "bola", "permission_violation",
  "enumeration", "credential_stuffing", "data_exfiltration", "new_endpoint"];
const PAGE = 50;

function h(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") e.className = v;
    else if (k === "dataset") Object.assign(e.dataset, v);
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

const view = () => document.getElementById("view");

async function api(path, options) {
  const r = await fetch(path, Object.assign({ credentials: "same-origin", headers: { Accept: "application/json" } }, options || {}));
  if (r.status === 401) {
    location.href = "/login";
    throw new Error("signed out");
  }
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(body.error || `${r.status} ${r.statusText}`);
  return body;
}

const pad = (n) => String(n).padStart(2, "0");
function time(us) {
  if (us === undefined || us === null) return "–";
  const d = new Date(us / 1000);
  return `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())} ${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())}Z`;
}
function day(us) {
  return time(us).slice(0, 10);
}
function num(n) {
  return n === undefined || n === null ? "–" : Number(n).toLocaleString("en-US");
}
// Up to three significant digits: 0.196, 12, 1,234.
function sig(x) {
  if (typeof x !== "number" || !isFinite(x)) return String(x);
  if (Math.abs(x) >= 100) return num(Math.round(x));
  return String(Number(x.toPrecision(3)));
}
function bytes(n) {
  if (n === undefined || n === null) return "–";
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0, v = n;
  while (v >= 1024 && i < u.length - 1) { v /= 1024; i++; }
  return `${i ? v.toFixed(1) : v} ${u[i]}`;
}
function ago(s) {
  if (s === undefined || s === null) return "–";
  if (s < 120) return `${s} s`;
  if (s < 7200) return `${Math.round(s / 60)} min`;
  if (s < 172800) return `${Math.round(s / 3600)} h`;
  return `${Math.round(s / 86400)} d`;
}
const badge = (sev) => h("span", { class: `badge sev-${sev}` }, sev);
const statusBadge = (st) => h("span", { class: `status st-${st}`, dataset: { status: st } }, st.replace("_", " "));

// The actor page of an alert's actor (population alerts have none).
function actorLink(actor) {
  if (!actor || actor.kind === "endpoint") return h("span", {}, actor ? actor.key : "–");
  const sub = (actor.claims || []).find(([k]) => k === "sub");
  const label = `${actor.kind} ${actor.key}${sub && !actor.key.startsWith("sub:") ? ` (sub=${sub[1]})` : ""}`;
  return h("a", { href: `#/actor/${encodeURIComponent(actor.key)}` }, label);
}

function table(head, rows, attrs) {
  return h("table", attrs || {},
    h("thead", {}, h("tr", {}, head.map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: head.length, class: "muted" }, "Nothing here."))));
}

function failed(e) {
  view().replaceChildren(h("p", { class: "error", role: "alert" }, `Could not load: ${e.message}`));
}

function params(query) {
  return Object.fromEntries(new URLSearchParams(query || ""));
}
function hashWith(base, p) {
  const q = new URLSearchParams(Object.entries(p).filter(([, v]) => v !== "" && v !== undefined && v !== null));
  const s = q.toString();
  return s ? `${base}?${s}` : base;
}

// ---- Alerts -------------------------------------------------------------------------

async function alertsPage(p) {
  const offset = Number(p.offset || 0) || 0;
  const q = { severity: p.severity || "", type: p.type || "", actor: p.actor || "", since: p.since || "", status: p.status || "" };
  const form = h("form", { class: "filters", onsubmit: (ev) => {
    ev.preventDefault();
    const f = new FormData(ev.target);
    location.hash = hashWith("#/alerts", Object.fromEntries(f.entries()));
  } },
  h("label", {}, "Severity ≥ ", h("select", { name: "severity" }, h("option", { value: "" }, "any"),
    SEVERITIES.map((s) => h("option", { value: s, selected: s === q.severity }, s)))),
  h("label", {}, "Type ", h("select", { name: "type" }, h("option", { value: "" }, "any"),
    TYPES.map((t) => h("option", { value: t, selected: t === q.type }, t)))),
  h("label", {}, "Status ", h("select", { name: "status" }, h("option", { value: "" }, "any"),
    ["open", "resolved", "false_positive"].map((t) => h("option", { value: t, selected: t === q.status }, t.replace("_", " "))))),
  h("label", {}, "Actor ", h("input", { name: "actor", value: q.actor, placeholder: "id, fingerprint, sub:…", size: 18 })),
  h("label", {}, "Since ", h("input", { name: "since", value: q.since, placeholder: "2h, 7d, RFC 3339", size: 14 })),
  h("button", { type: "submit" }, "Filter"));
  view().replaceChildren(h("h1", {}, "Alerts"), form, h("p", { class: "muted" }, "Loading…"));
  const query = new URLSearchParams(Object.entries(q).filter(([, v]) => v));
  query.set("limit", PAGE);
  query.set("offset", offset);
  let page;
  try {
    page = await api(`/api/alerts?${query}`);
  } catch (e) {
    view().replaceChildren(h("h1", {}, "Alerts"), form, h("p", { class: "error", role: "alert" }, e.message));
    return;
  }
  const rows = page.alerts.map((a) => h("tr", { dataset: { alert: a.id, type: a.type } },
    h("td", { class: "nowrap" }, time(a.first_seen_us)),
    h("td", {}, badge(a.severity)),
    h("td", {}, h("a", { href: `#/alert/${encodeURIComponent(a.id)}`, class: "alert-link" }, a.type)),
    h("td", {}, actorLink(a.actor)),
    h("td", { class: "mono" }, a.endpoint || "–"),
    h("td", { class: "num" }, a.score.toFixed(2)),
    h("td", {}, statusBadge(a.status)),
    h("td", { class: "summary" }, a.explanation.summary)));
  const nav = h("div", { class: "pager" },
    h("span", { dataset: { total: page.total } }, `${num(page.total)} alerts` + (page.total ? `, ${offset + 1}–${offset + page.alerts.length} shown, newest first` : "")),
    offset > 0 ? h("a", { href: hashWith("#/alerts", Object.assign({}, q, { offset: Math.max(0, offset - PAGE) })) }, "← newer") : null,
    page.next_offset ? h("a", { href: hashWith("#/alerts", Object.assign({}, q, { offset: page.next_offset })) }, "older →") : null);
  view().replaceChildren(h("h1", {}, "Alerts"), form, nav,
    table(["First seen", "Severity", "Type", "Actor", "Endpoint", "Score", "Status", "Why"], rows, { id: "alerts", class: "list" }));
}

// ---- One alert ----------------------------------------------------------------------

async function alertPage(id) {
  let a;
  try {
    a = await api(`/api/alerts/${encodeURIComponent(id)}`);
  } catch (e) {
    return failed(e);
  }
  const ex = a.explanation;
  const status = h("span", { id: "alert-status" }, statusBadge(a.status));
  const message = h("span", { class: "muted", id: "feedback-message" });
  async function decide(falsePositive) {
    for (const b of buttons.querySelectorAll("button")) b.disabled = true;
    message.textContent = "Saving…";
    try {
      const r = await api(`/api/alerts/${encodeURIComponent(a.id)}/resolve`, {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "application/json" },
        body: JSON.stringify({ false_positive: falsePositive }),
      });
      status.replaceChildren(statusBadge(r.alert.status));
      message.textContent = r.suppression
        ? `Marked false positive: ${r.suppression.type} alerts on this actor${r.suppression.endpoint ? ` at ${r.suppression.endpoint}` : ""} are suppressed until ${day(r.suppression.expires_us)}.`
        : "Resolved.";
    } catch (e) {
      message.textContent = `Not saved: ${e.message}`;
      for (const b of buttons.querySelectorAll("button")) b.disabled = false;
    }
  }
  const open = a.status === "open";
  const buttons = h("div", { class: "feedback" },
    h("button", { type: "button", id: "resolve", onclick: () => decide(false), disabled: !open }, "Resolve"),
    h("button", { type: "button", id: "false-positive", class: "secondary", onclick: () => decide(true), disabled: !open }, "False positive"),
    message);
  const chart = h("div", { id: "activity-chart", class: "chart-slot" }, h("p", { class: "muted" }, "Loading activity…"));
  const stepSel = h("select", { id: "chart-step", onchange: () => loadChart() },
    h("option", { value: "hour" }, "per hour, 48 h"), h("option", { value: "minute" }, "per minute, 2 h"));
  const population = !a.actor || a.actor.kind === "endpoint";
  async function loadChart() {
    if (population) {
      chart.replaceChildren(h("p", { class: "muted" }, "A population alert (an endpoint, not one actor): no actor chart."));
      return;
    }
    const step = stepSel.value;
    try {
      const d = await api(`/api/actors/${encodeURIComponent(a.actor.key)}/activity?around=${Math.floor(a.first_seen_us / 1e6)}&step=${step}`);
      TaplineChart.band(chart, d, { from_us: a.first_seen_us, to_us: a.last_seen_us });
    } catch (e) {
      chart.replaceChildren(h("p", { class: "error" }, `No chart: ${e.message}`));
    }
  }
  const factors = table(["Factor", "Weight", "Detail"], ex.factors.map((f) => h("tr", {},
    h("td", {}, f.name), h("td", { class: "num" }, `×${f.weight.toFixed(2)}`), h("td", {}, f.detail))));
  const evidence = table(["Time", "Request", "Status", "Client", "Place", "Entity", "Response"], a.evidence.map((e) => h("tr", {},
    h("td", { class: "nowrap" }, time(e.ts_us)), h("td", { class: "mono" }, `${e.method} ${e.endpoint}`),
    h("td", {}, e.status ?? "–"), h("td", { class: "mono nowrap" }, e.client_ip), h("td", {}, e.place || "–"),
    h("td", { class: "mono" }, e.entity || "–"), h("td", { class: "num" }, bytes(e.response_bytes)))), { id: "evidence" });
  view().replaceChildren(
    h("p", {}, h("a", { href: "#/alerts" }, "← Alerts")),
    h("h1", {}, badge(a.severity), ` ${a.type} `, h("small", { class: "mono" }, a.id)),
    h("dl", { class: "facts" },
      h("dt", {}, "Status"), h("dd", {}, status),
      h("dt", {}, "Actor"), h("dd", {}, actorLink(a.actor), a.actor.hint ? ` (…${a.actor.hint})` : ""),
      (a.actor.claims || []).length ? [h("dt", {}, "Claims"), h("dd", { class: "mono" }, a.actor.claims.map(([k, v]) => `${k}=${v}`).join(", "))] : null,
      a.tenant ? [h("dt", {}, "Tenant"), h("dd", {}, a.tenant)] : null,
      h("dt", {}, "Endpoint"), h("dd", { class: "mono" }, a.endpoint || "–"),
      h("dt", {}, "When"), h("dd", {}, `${time(a.first_seen_us)} – ${time(a.last_seen_us)} (${a.count} finding${a.count === 1 ? "" : "s"})`),
      h("dt", {}, "Score"), h("dd", {}, a.score.toFixed(2)),
      h("dt", {}, "Sources"), h("dd", { class: "mono" }, a.source_ips.join(", ") || "–")),
    buttons,
    h("h2", {}, "Why"),
    h("p", { class: "explanation" }, ex.summary),
    h("p", {}, `Observed ${sig(ex.observed)} ${ex.unit} against a baseline of ${sig(ex.baseline)} ${ex.unit}, over ${ex.window}.`),
    factors,
    h("h2", {}, "Activity around the alert ", stepSel),
    chart,
    h("h2", {}, "Evidence"),
    evidence);
  loadChart();
}

// ---- Actor --------------------------------------------------------------------------

async function actorPage(key) {
  let d;
  try {
    d = await api(`/api/actors/${encodeURIComponent(key)}`);
  } catch (e) {
    return failed(e);
  }
  const v = d.activity;
  const disp = d.display;
  const risk = h("div", { id: "risk-chart", class: "chart-slot" });
  const parts = [
    h("p", {}, h("a", { href: "#/alerts" }, "← Alerts")),
    h("h1", {}, "Actor ", h("span", { class: "mono" }, key)),
    h("dl", { class: "facts" },
      disp ? [h("dt", {}, "Kind"), h("dd", {}, disp.kind)] : null,
      disp && disp.claims.length ? [h("dt", {}, "Claims"), h("dd", { class: "mono" }, disp.claims.map(([k, x]) => `${k}=${x}`).join(", "))] : null,
      v ? [h("dt", {}, "Seen"), h("dd", {}, `${time(v.first_us)} – ${time(v.last_us)}`),
        h("dt", {}, "Requests"), h("dd", {}, num(v.events) + (v.truncated ? " (more: the first ones are shown)" : ""))] : null,
      h("dt", {}, "Alerts"), h("dd", {}, h("a", { href: hashWith("#/alerts", { actor: key }) }, num(d.alerts_total))))];
  parts.push(h("h2", {}, "Risk score history"), risk);
  if (v) {
    parts.push(
      h("h2", {}, "Identities and claims"),
      table(["Kind", "Key", "Claims", "Requests", "First seen", "Last seen"], v.identities.map((i) => h("tr", {},
        h("td", {}, i.kind), h("td", { class: "mono" }, i.key + (i.hint ? ` (…${i.hint})` : "")),
        h("td", { class: "mono" }, i.claims.map(([k, x]) => `${k}=${x}`).join(", ") || "–"),
        h("td", { class: "num" }, num(i.events)), h("td", { class: "nowrap" }, time(i.first_us)), h("td", { class: "nowrap" }, time(i.last_us)))), { id: "identities" }),
      h("h2", {}, "Addresses and countries per day"),
      table(["Day (UTC)", "Requests", "Addresses", "Countries"], v.days.map((x) => h("tr", {},
        h("td", {}, day(x.day_us)), h("td", { class: "num" }, num(x.events)), h("td", { class: "num" }, num(x.addresses)),
        h("td", {}, x.countries.join(", ") || "–"))), { id: "days" }),
      table(["Address", "Country", "Place", "Requests", "First seen", "Last seen"], v.addresses.map((x) => h("tr", {},
        h("td", { class: "mono" }, x.ip), h("td", {}, x.country || "–"), h("td", {}, x.place),
        h("td", { class: "num" }, num(x.events)), h("td", { class: "nowrap" }, time(x.first_us)), h("td", { class: "nowrap" }, time(x.last_us)))), { id: "addresses" }),
      h("h2", {}, "Endpoints used"),
      table(["Request", "Requests", "Errors (4xx/5xx)", "First seen", "Last seen"], v.endpoints.map((x) => h("tr", {},
        h("td", { class: "mono" }, `${x.method} ${x.endpoint}`), h("td", { class: "num" }, num(x.events)),
        h("td", { class: "num" }, num(x.errors)), h("td", { class: "nowrap" }, time(x.first_us)), h("td", { class: "nowrap" }, time(x.last_us)))), { id: "actor-endpoints" }));
  } else {
    parts.push(h("p", { class: "muted" }, "No stored events of this actor (retention may have removed them)."));
  }
  parts.push(h("h2", {}, "Alerts"),
    table(["First seen", "Severity", "Type", "Endpoint", "Score", "Status"], d.alerts.map((a) => h("tr", {},
      h("td", { class: "nowrap" }, time(a.first_seen_us)), h("td", {}, badge(a.severity)),
      h("td", {}, h("a", { href: `#/alert/${encodeURIComponent(a.id)}` }, a.type)), h("td", { class: "mono" }, a.endpoint || "–"),
      h("td", { class: "num" }, a.score.toFixed(2)), h("td", {}, statusBadge(a.status))))));
  view().replaceChildren(...parts);
  if (d.risk.length) {
    TaplineChart.scatter(risk, d.risk, [[0.25, "low"], [0.45, "medium"], [0.7, "high"], [1.0, "critical"]],
      v ? [v.first_us, v.last_us] : null);
  } else {
    risk.replaceChildren(h("p", { class: "muted" }, "No alerts: no risk raised."));
  }
}

// ---- Endpoints ----------------------------------------------------------------------

async function endpointsPage(p) {
  const offset = Number(p.offset || 0) || 0;
  const q = { q: p.q || "", method: p.method || "", sort: p.sort || "events" };
  const form = h("form", { class: "filters", onsubmit: (ev) => {
    ev.preventDefault();
    location.hash = hashWith("#/endpoints", Object.fromEntries(new FormData(ev.target).entries()));
  } },
  h("label", {}, "Template contains ", h("input", { name: "q", value: q.q, size: 20 })),
  h("label", {}, "Method ", h("select", { name: "method" }, h("option", { value: "" }, "any"),
    ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"].map((m) => h("option", { value: m, selected: m === q.method }, m)))),
  h("label", {}, "Sort ", h("select", { name: "sort" },
    [["events", "busiest"], ["first_seen", "newest"], ["template", "template"]].map(([v, l]) => h("option", { value: v, selected: v === q.sort }, l)))),
  h("button", { type: "submit" }, "Filter"));
  let page;
  try {
    const query = new URLSearchParams(Object.entries(q).filter(([, v]) => v));
    query.set("limit", 100);
    query.set("offset", offset);
    page = await api(`/api/endpoints?${query}`);
  } catch (e) {
    return failed(e);
  }
  const rows = page.endpoints.map((e) => h("tr", {},
    h("td", {}, h("span", { class: `method m-${e.method}` }, e.method)),
    h("td", { class: "mono" }, e.template),
    h("td", {}, h("meter", { min: 0, max: 1, low: 0.45, high: 0.7, optimum: 0, value: e.sensitivity }), ` ${e.sensitivity.toFixed(2)}`,
      e.sensitivity_reasons.length ? h("span", { class: "muted" }, ` ${e.sensitivity_reasons.join(", ")}`) : null),
    h("td", { class: "nowrap" }, time(e.first_us)), h("td", { class: "nowrap" }, time(e.last_us)),
    h("td", { class: "num" }, num(e.events)), h("td", { class: "num" }, num(e.events_per_day))));
  view().replaceChildren(h("h1", {}, "Endpoint inventory"), form,
    h("div", { class: "pager" }, h("span", {}, `${num(page.total)} endpoints`),
      offset > 0 ? h("a", { href: hashWith("#/endpoints", Object.assign({}, q, { offset: Math.max(0, offset - 100) })) }, "← previous") : null,
      page.next_offset ? h("a", { href: hashWith("#/endpoints", Object.assign({}, q, { offset: page.next_offset })) }, "next →") : null),
    table(["Method", "Template", "Sensitivity", "First seen", "Last seen", "Requests", "Per day"], rows, { id: "endpoints", class: "list" }));
}

// ---- Agents -------------------------------------------------------------------------

async function agentsPage() {
  let d;
  try {
    d = await api("/api/agents");
  } catch (e) {
    return failed(e);
  }
  const rows = d.agents.map((a) => {
    const c = a.coverage;
    const lost = c ? c.drops.filter(([, n]) => n > 0) : [];
    const drops = c ? (lost.length ? lost.map(([k, n]) => `${k} ${num(n)}`).join(", ") : "none") : "–";
    return h("tr", { dataset: { agent: a.name } },
      h("td", { class: "nowrap" }, a.name, h("div", { class: "muted mono" }, a.address || "")),
      h("td", {}, h("span", { class: a.connected ? "state up" : "state down" }, a.connected ? "connected" : "away"),
        h("div", { class: "muted" }, `seen ${ago(a.last_seen_ago_s)} ago`)),
      h("td", {}, c ? c.source : h("span", { class: "muted", title: "this agent sends no coverage (older version, or reading files)" }, "not reported")),
      h("td", { class: "num" }, c ? num(c.packets) : "–", c ? h("div", { class: "muted" }, bytes(c.bytes)) : null),
      h("td", { class: a.dropped_frames ? "warn" : "" }, drops),
      h("td", { class: "num" + (c && c.stream_gap_bytes ? " warn" : "") }, c ? bytes(c.stream_gap_bytes) : "–",
        c ? h("div", { class: "muted" }, `${num(c.stream_gaps)} gaps`) : null),
      h("td", { class: "num" }, c ? num(c.flows) : "–"),
      h("td", { class: "num" }, c ? num(c.http_parse_errors) : "–"),
      h("td", { class: "num" }, num(a.events), h("div", { class: "muted" }, `${num(a.batches)} batches`)),
      h("td", { class: "num" }, ago(a.lag_s)),
      h("td", { class: "num" + (a.pending_batches ? " warn" : "") }, num(a.pending_batches), h("div", { class: "muted" }, bytes(a.pending_bytes))),
      h("td", { class: "num" + (a.dropped_events ? " warn" : "") }, num(a.dropped_events)));
  });
  view().replaceChildren(h("h1", {}, "Agents and coverage"),
    h("p", { class: "muted" }, "Capture counters are since each agent started. Lag: how far the newest stored event is behind now. Spool: batches the agent holds until the collector acks them; spool drops are events lost because it was full."),
    table(["Agent", "State", "Capture", "Packets", "Drops by cause", "Bytes lost (gaps)", "Flows", "HTTP parse errors", "Events stored", "Lag", "Spool pending", "Spool drops"], rows, { id: "agents", class: "list" }));
}

// ---- Routing ------------------------------------------------------------------------

function route() {
  const hash = location.hash.replace(/^#/, "") || "/alerts";
  const [path, query] = hash.split("?");
  const parts = path.split("/").filter(Boolean);
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.nav === parts[0] || (parts[0] === "alert" && a.dataset.nav === "alerts"));
  view().replaceChildren(h("p", { class: "muted" }, "Loading…"));
  const arg = parts.slice(1).map(decodeURIComponent).join("/");
  const done = (() => {
    switch (parts[0]) {
      case "alert": return alertPage(arg);
      case "actor": return actorPage(arg);
      case "endpoints": return endpointsPage(params(query));
      case "agents": return agentsPage();
      default: return alertsPage(params(query));
    }
  })();
  Promise.resolve(done).catch(failed).finally(() => { document.body.dataset.ready = hash; });
}

window.addEventListener("hashchange", () => { delete document.body.dataset.ready; route(); });
route();
