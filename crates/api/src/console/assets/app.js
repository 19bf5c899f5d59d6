// The Nimbus console: a hash-routed single page over /console/api/.
//
// Everything a function controls (names, payloads, log lines, tags) reaches
// the page as data and is put into the DOM as text nodes (`h` below);
// nothing is ever parsed as HTML, and the Content-Security-Policy allows no
// inline script besides.
"use strict";

const SVG = "http://www.w3.org/2000/svg";

/** Builds an element; string and number children become text nodes. */
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

/** Builds an SVG element the same way. */
function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG, tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

function setAttrs(el, attrs) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

class SignedOut extends Error {}

/** Calls the console API; a JSON body makes it a POST. */
async function call(path, body) {
  const opts = { method: body === undefined ? "GET" : "POST", credentials: "same-origin", headers: {} };
  if (body !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const r = await fetch("/console/api/" + path, opts);
  let data = null;
  try { data = await r.json(); } catch (_) { /* an empty or non-JSON body */ }
  if (r.status === 401 && path !== "login") throw new SignedOut((data && data.message) || "Signed out");
  if (!r.ok) throw new Error((data && (data.message || data.Message)) || r.status + " " + r.statusText);
  return data;
}

const enc = encodeURIComponent;
const main = () => document.getElementById("main");
let session = null;
/** What the current page runs in the background (live logs), stopped when it is left. */
let cleanups = [];
/** Redraws the charts of the function page shown, if it has them. */
let redrawCharts = () => {};

/** Stops what the page being left runs; called before the next page is built. */
function leave() {
  for (const stop of cleanups) stop();
  cleanups = [];
  redrawCharts = () => {};
}

function show(...nodes) {
  main().replaceChildren(...nodes);
}

function when(ms) {
  if (!ms) return "—";
  const d = new Date(ms);
  return d.toISOString().replace("T", " ").slice(0, 19) + " UTC";
}

function ago(ms) {
  if (!ms) return "never";
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 60) return s + " s ago";
  if (s < 3600) return Math.round(s / 60) + " min ago";
  if (s < 86400) return Math.round(s / 3600) + " h ago";
  return Math.round(s / 86400) + " d ago";
}

function stateBadge(state, update) {
  if (state === "Active" && update === "InProgress") return h("span", { class: "badge warn" }, "Updating");
  const cls = state === "Active" ? "ok" : state === "Failed" ? "bad" : "warn";
  return h("span", { class: "badge " + cls }, state || "—");
}

function nav(here) {
  const link = (href, text, id) => h("a", { href, class: here === id ? "here" : null }, text);
  const items = [link("#/", "Functions", "functions")];
  if (session && session.usage) items.push(link("#/usage", "Usage and cost", "usage"));
  items.push(
    h("span", { class: "who" }, "account " + session.account + " · " + session.region),
    h("button", { id: "sign-out", onclick: signOut }, "Sign out"),
  );
  document.getElementById("nav").replaceChildren(...items);
}

async function signOut() {
  try { await call("logout", {}); } catch (_) { /* signed out either way */ }
  session = null;
  showLogin();
}

// ---- sign in ----

function showLogin(message) {
  leave();
  document.getElementById("nav").replaceChildren();
  const id = h("input", { id: "access-key-id", autocomplete: "username", spellcheck: "false" });
  const secret = h("input", { id: "secret-access-key", type: "password", autocomplete: "current-password" });
  const error = h("p", { id: "login-error", class: "error" }, message || "");
  const form = h("form", { class: "panel login", id: "login" },
    h("h1", {}, "Sign in to Nimbus"),
    h("label", { for: "access-key-id" }, "Access key ID"), id,
    h("label", { for: "secret-access-key" }, "Secret access key"), secret,
    h("div", { class: "row" }, h("button", { type: "submit", id: "sign-in" }, "Sign in")),
    error,
    h("p", { class: "muted" }, "The node's key pair is in credentials.json in its data directory. Or run ",
      h("code", {}, "nimbus console"), " on the node for a one-time sign-in link."),
  );
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    error.textContent = "";
    try {
      await call("login", { accessKeyId: id.value.trim(), secretAccessKey: secret.value });
      await enter();
    } catch (e) {
      error.textContent = e.message;
    }
  });
  show(form);
}

async function enter() {
  session = await call("session");
  if (!location.hash || location.hash === "#") location.hash = "#/";
  await render();
}

// ---- pages ----

async function render() {
  const hash = location.hash.slice(1) || "/";
  const [path, query] = hash.split("?");
  const params = new URLSearchParams(query || "");
  leave();
  try {
    if (path.startsWith("/functions/")) {
      nav("functions");
      await functionPage(decodeURIComponent(path.slice("/functions/".length)));
    } else if (path === "/usage") {
      nav("usage");
      await usagePage();
    } else {
      nav("functions");
      await listPage(params.get("marker"));
    }
  } catch (e) {
    if (e instanceof SignedOut) showLogin("Your session has ended; sign in again.");
    else show(h("p", { class: "error", id: "page-error" }, e.message));
  }
}

async function listPage(marker) {
  const started = performance.now();
  const page = await call("functions" + (marker ? "?marker=" + enc(marker) : ""));
  const rows = page.functions.map((f) => h("tr", { "data-name": f.name },
    h("td", {}, h("a", { href: "#/functions/" + enc(f.name), class: "fn-link" }, f.name)),
    h("td", {}, stateBadge(f.state, f.lastUpdateStatus)),
    h("td", {}, f.packageType === "Image" ? "container image" : (f.runtime || "—")),
    h("td", { class: "num" }, f.memorySize + " MB"),
    h("td", { title: when(f.lastInvokeMs) }, ago(f.lastInvokeMs)),
    h("td", { class: "num" }, f.invocations24h),
    h("td", { class: "num" + (f.errors24h ? " error" : "") }, f.errors24h),
    h("td", {}, f.lastModified.slice(0, 19).replace("T", " ")),
  ));
  const table = h("table", { id: "functions" },
    h("thead", {}, h("tr", {},
      h("th", {}, "Name"), h("th", {}, "State"), h("th", {}, "Runtime"), h("th", { class: "num" }, "Memory"),
      h("th", {}, "Last invoke"), h("th", { class: "num" }, "Invocations (24 h)"),
      h("th", { class: "num" }, "Errors (24 h)"), h("th", {}, "Last modified"))),
    h("tbody", {}, rows));
  const pager = h("div", { class: "row pager" });
  if (marker) pager.append(h("a", { href: "#/" }, "« First page"));
  if (page.nextMarker) pager.append(h("a", { id: "next-page", href: "#/?marker=" + enc(page.nextMarker) }, "Next page »"));
  const empty = rows.length ? null : h("p", { class: "muted" }, "No functions yet. Deploy one with the aws CLI, boto3 or ",
    h("code", {}, "nimbus function deploy"), ".");
  show(h("h1", {}, "Functions"), h("div", { class: "panel" }, table, empty, pager));
  // For the load-time test: this call and its drawing, and everything since navigation.
  main().dataset.loadMs = String(Math.round(performance.now() - started));
  main().dataset.readyAt = String(Math.round(performance.now()));
}

function section(title, ...body) {
  return h("section", { class: "panel" }, h("h2", {}, title), ...body);
}

function dl(pairs) {
  return h("dl", {}, pairs.filter(([, v]) => v !== undefined && v !== null && v !== "")
    .map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}

function table(id, heads, rows, empty) {
  if (!rows.length) return h("p", { class: "muted" }, empty);
  return h("table", { id }, h("thead", {}, h("tr", {}, heads.map((x) => h("th", {}, x)))),
    h("tbody", {}, rows.map((r) => h("tr", {}, r.map((c) => h("td", {}, c))))));
}

async function functionPage(name) {
  const f = await call("functions/" + enc(name));
  const c = f.configuration;
  const env = (c.Environment && c.Environment.Variables) || {};
  show(
    h("h1", {}, h("span", { id: "function-name" }, c.FunctionName), stateBadge(c.State, c.LastUpdateStatus)),
    h("div", { class: "grid" },
      h("div", {}, invokePanel(c.FunctionName, f.aliases), livePanel(c.FunctionName), chartsPanel(c.FunctionName)),
      h("div", {},
        section("Configuration", dl([
          ["ARN", c.FunctionArn], ["Runtime", c.Runtime || c.PackageType], ["Handler", c.Handler],
          ["Memory", c.MemorySize + " MB"], ["Timeout", c.Timeout + " s"],
          ["Ephemeral storage", c.EphemeralStorage.Size + " MB"], ["Architectures", (c.Architectures || []).join(", ")],
          ["Description", c.Description], ["Role", c.Role], ["Code size", c.CodeSize + " bytes"],
          ["Code SHA-256", c.CodeSha256], ["Last modified", c.LastModified],
          ["Log group", c.LoggingConfig && c.LoggingConfig.LogGroup],
          ["Log format", c.LoggingConfig && c.LoggingConfig.LogFormat],
          ["Layers", (c.Layers || []).map((l) => l.Arn).join("\n")],
          ["Environment", Object.entries(env).map(([k, v]) => k + "=" + v).join("\n")],
          ["Tags", Object.entries(f.tags || {}).map(([k, v]) => k + "=" + v).join("\n")],
        ]),
        c.PackageType === "Zip" ? h("div", { class: "row" },
          h("a", { id: "download-code", href: "/console/api/functions/" + enc(c.FunctionName) + "/code", download: c.FunctionName + ".zip" },
            "Download the deployment package")) : null),
        section("Versions and aliases",
          table("versions", ["Version", "Description", "Last modified"],
            f.versions.map((v) => [v.Version, v.Description || "", v.LastModified.slice(0, 19)]), "No versions."),
          h("div", { class: "row" }),
          table("aliases", ["Alias", "Version", "Routing"],
            f.aliases.map((a) => [a.Name, a.FunctionVersion,
              Object.entries((a.RoutingConfig && a.RoutingConfig.AdditionalVersionWeights) || {})
                .map(([v, w]) => v + ": " + Math.round(w * 100) + "%").join(", ")]), "No aliases.")),
        section("Concurrency", dl([
          ["Reserved", f.reservedConcurrency === null || f.reservedConcurrency === undefined
            ? "unreserved (account pool)" : String(f.reservedConcurrency)],
        ]), table("provisioned", ["Qualifier", "Requested", "Available", "Status"],
          f.provisioned.map((p) => [p.FunctionArn.split(":").pop(), p.RequestedProvisionedConcurrentExecutions,
            p.AvailableProvisionedConcurrentExecutions, p.Status]), "No provisioned concurrency.")),
        section("Triggers",
          table("urls", ["Function URL", "Auth", "Invoke mode"],
            f.urls.map((u) => [h("a", { href: u.FunctionUrl, rel: "noopener noreferrer", target: "_blank" }, u.FunctionUrl),
              u.AuthType, u.InvokeMode || "BUFFERED"]), "No function URL."),
          h("div", { class: "row" }),
          table("mappings", ["Event source", "State", "Batch size"],
            f.eventSourceMappings.map((m) => [m.EventSourceArn, m.State, m.BatchSize]), "No event source mappings.")),
        section("Recent invocations",
          table("recent", ["Time", "Request ID", "Version", "Outcome", "Duration", "Memory", "Cold start"],
            f.recentInvocations.map((r) => [when(r.timestamp), h("span", { class: "mono" }, r.requestId), r.version,
              h("span", { class: "badge " + (r.outcome === "success" ? "ok" : "bad") }, r.outcome),
              r.durationMs.toFixed(2) + " ms", r.maxMemoryMb + " MB",
              r.cold ? "yes (" + (r.initMs || 0).toFixed(1) + " ms init)" : "no"]), "Not invoked yet.")),
      ),
    ),
  );
}

function invokePanel(name, aliases) {
  const event = h("textarea", { id: "event", spellcheck: "false" }, '{\n  "key": "value"\n}');
  const qualifier = h("select", { id: "qualifier" }, h("option", { value: "" }, "$LATEST"),
    aliases.map((a) => h("option", { value: a.Name }, a.Name)));
  const status = h("span", { id: "invoke-status", class: "muted" });
  const result = h("pre", { id: "result" });
  const log = h("pre", { id: "invoke-log" });
  const report = h("div", { id: "report", class: "report" });
  const out = h("div", { hidden: true }, h("h2", {}, "Result"), result, h("div", { class: "row" }), h("h2", {}, "Log"), log, report);
  const button = h("button", { id: "invoke" }, "Invoke");
  button.addEventListener("click", async () => {
    try { JSON.parse(event.value || "{}"); } catch (e) {
      status.textContent = "The event is not valid JSON: " + e.message;
      status.className = "error";
      return;
    }
    button.disabled = true;
    status.className = "muted";
    status.textContent = "Invoking…";
    try {
      const r = await call("functions/" + enc(name) + "/invoke", { payload: event.value, qualifier: qualifier.value });
      status.textContent = (r.functionError ? "Failed (" + r.functionError + ")" : "Succeeded") + " · version " + r.executedVersion;
      status.className = r.functionError ? "error" : "muted";
      let text = r.payload;
      try { text = JSON.stringify(JSON.parse(r.payload), null, 2); } catch (_) { /* not JSON: shown as it is */ }
      result.textContent = text;
      log.textContent = (r.logTruncated ? "… (the last 4 KB; every line: nimbus logs " + name + ")\n" : "") + r.log.join("\n");
      report.textContent = r.report || "";
      out.hidden = false;
      redrawCharts();
    } catch (e) {
      if (e instanceof SignedOut) return showLogin("Your session has ended; sign in again.");
      status.textContent = e.message;
      status.className = "error";
    } finally {
      button.disabled = false;
    }
  });
  return section("Test", h("p", { class: "muted" }, "Event JSON"), event,
    h("div", { class: "row" }, button, h("label", {}, "Qualifier "), qualifier, status), out);
}

// Lines the live log keeps.
const LIVE_MAX = 1000;

function livePanel(name) {
  const list = h("ul", { id: "live-log", class: "live" });
  const status = h("span", { id: "live-status", class: "muted" }, "connecting…");
  let source = null, queued = [], frame = 0, redraw = null;
  // Lines go in once a frame, with one look at the scroll position: a look
  // after each line made the browser lay the list out per line, and a
  // function logging thousands of lines a second froze the tab.
  const flush = () => {
    frame = 0;
    const atBottom = list.scrollTop + list.clientHeight >= list.scrollHeight - 4;
    list.append(...queued.splice(0).map((e) =>
      h("li", {}, h("time", {}, when(e.timestamp).slice(11, 19)), e.message.replace(/\n$/, ""))));
    while (list.childElementCount > LIVE_MAX) list.firstElementChild.remove();
    if (atBottom) list.scrollTop = list.scrollHeight;
  };
  const open = () => {
    source = new EventSource("/console/api/functions/" + enc(name) + "/logs");
    source.addEventListener("ready", () => {
      status.textContent = "following";
      status.dataset.ready = "1";
    });
    source.addEventListener("log", (ev) => {
      const e = JSON.parse(ev.data);
      queued.push(e);
      if (queued.length > LIVE_MAX) queued.splice(0, queued.length - LIVE_MAX);
      if (!frame) frame = requestAnimationFrame(flush);
      // A REPORT line is stored with its invocation's record: the charts
      // have news. At most once a second: a wait begun again at each REPORT
      // never ended while the function stayed busy.
      if (/^REPORT |"platform\.report"/.test(e.message) && redraw === null) {
        redraw = setTimeout(() => { redraw = null; redrawCharts(); }, 1000);
      }
    });
    source.onerror = () => {
      status.textContent = source.readyState === EventSource.CLOSED ? "stopped" : "reconnecting…";
      delete status.dataset.ready;
    };
  };
  // A hidden tab gives its stream up, and follows again once shown: a
  // browser opens six connections to a host at most, and six open function
  // pages held them all, so that the seventh, and every call, waited.
  const visibility = () => {
    if (document.hidden && source) {
      source.close();
      source = null;
      status.textContent = "paused while the tab is hidden";
      delete status.dataset.ready;
    } else if (!document.hidden && !source) {
      status.textContent = "connecting…";
      open();
    }
  };
  document.addEventListener("visibilitychange", visibility);
  visibility();
  cleanups.push(() => {
    document.removeEventListener("visibilitychange", visibility);
    if (source) source.close();
    clearTimeout(redraw);
    cancelAnimationFrame(frame);
  });
  return section("Live logs", h("div", { class: "row" }, status), list);
}

// ---- charts (drawn by hand in SVG) ----

const CHARTS = [
  { id: "invocations", title: "Invocations", series: ["Invocations"], kind: "bar" },
  { id: "errors", title: "Errors", series: ["Errors"], kind: "bar", bad: true },
  { id: "throttles", title: "Throttles", series: ["Throttles"], kind: "bar", bad: true },
  { id: "duration", title: "Duration p50 / p99 (ms)", series: ["DurationP50", "DurationP99"], kind: "line" },
  { id: "cold-starts", title: "Cold starts", series: ["ColdStarts"], kind: "bar" },
  { id: "concurrency", title: "Concurrent executions (max)", series: ["ConcurrentExecutions"], kind: "line" },
];

function chartsPanel(name) {
  if (!session.charts) return null;
  const box = h("div", { class: "charts", id: "charts" });
  const hours = h("select", { id: "chart-hours" },
    [1, 3, 12, 24, 72].map((n) => h("option", { value: n, selected: n === 1 }, "last " + n + " h")));
  const refresh = h("button", { class: "plain", id: "chart-refresh" }, "Refresh");
  const draw = async () => {
    try {
      const m = await call("metrics?function=" + enc(name) + "&hours=" + hours.value);
      box.replaceChildren(...CHARTS.map((c) => chart(c, m)));
    } catch (e) {
      if (e instanceof SignedOut) return showLogin("Your session has ended; sign in again.");
      box.replaceChildren(h("p", { class: "error" }, e.message));
    }
  };
  hours.addEventListener("change", draw);
  refresh.addEventListener("click", draw);
  redrawCharts = draw;
  draw();
  return section("Metrics", h("div", { class: "row" }, hours, refresh), box);
}

function chart(c, m) {
  const W = 300, H = 120, L = 34, B = 16, T = 6;
  const lines = c.series.map((k) => m.series[k] || []);
  const max = Math.max(1, ...lines.flat().map((p) => p[1]));
  const x = (t) => L + ((t - m.start) / Math.max(1, m.end - m.start)) * (W - L - 4);
  const y = (v) => H - B - (v / max) * (H - B - T);
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none", role: "img", "aria-label": c.title },
    s("line", { class: "axis", x1: L, y1: H - B, x2: W, y2: H - B }),
    s("line", { class: "axis", x1: L, y1: T, x2: L, y2: H - B }),
    s("text", { x: L - 4, y: T + 8, "text-anchor": "end" }, fmt(max)),
    s("text", { x: L - 4, y: H - B, "text-anchor": "end" }, "0"),
    s("text", { x: L, y: H - 3 }, when(m.start).slice(11, 16)),
    s("text", { x: W - 2, y: H - 3, "text-anchor": "end" }, when(m.end).slice(11, 16) + " UTC"));
  const step = (m.period || 60) * 1000;
  const width = Math.max(1, x(m.start + step) - x(m.start) - 1);
  lines.forEach((points, i) => {
    if (c.kind === "bar") {
      for (const [t, v] of points) {
        if (v > 0) svg.append(s("rect", { class: "bar" + (c.bad ? " bad" : ""), x: x(t), y: y(v), width, height: H - B - y(v) },
          s("title", {}, when(t).slice(11, 16) + " UTC: " + fmt(v))));
      }
    } else if (points.length) {
      const d = points.map(([t, v], j) => (j ? "L" : "M") + x(t + step / 2).toFixed(1) + " " + y(v).toFixed(1)).join(" ");
      svg.append(s("path", { class: i ? "line2" : "line", d }));
      // A lone period has no line to draw: mark it.
      if (points.length === 1) svg.append(s("circle", { class: i ? "dot2" : "dot", cx: x(points[0][0] + step / 2), cy: y(points[0][1]), r: 2.5 }));
    }
  });
  const total = lines[0].reduce((a, p) => a + p[1], 0);
  const note = c.kind === "bar" ? "total " + fmt(total) : "max " + fmt(Math.max(0, ...lines.flat().map((p) => p[1])));
  return h("div", { class: "chart", id: "chart-" + c.id, "data-total": total },
    h("h3", {}, c.title, " ", h("span", { class: "muted" }, note)), svg);
}

function fmt(v) {
  if (v >= 1e6) return (v / 1e6).toFixed(1) + "M";
  if (v >= 1e3) return (v / 1e3).toFixed(1) + "k";
  return Number.isInteger(v) ? String(v) : v.toFixed(1);
}

// ---- usage and cost ----

async function usagePage() {
  const days = new URLSearchParams(location.hash.split("?")[1] || "").get("days") || "30";
  const u = await call("usage?days=" + enc(days));
  // Cents, or the first significant digits of the fractions of a cent a test node runs up.
  // Below a cent, to the millionth of a cent; less than that is nothing.
  const money = (v) => "$" + (v < 1e-8 || v >= 0.01 ? v.toFixed(2) : v.toFixed(8).replace(/0+$/, ""));
  // The report has a row per function, day and architecture; sum them both ways.
  const sum = (key) => {
    const out = new Map();
    for (const r of u.functions) {
      const t = out.get(r[key]) || { requests: 0, billedMs: 0, gbSeconds: 0, cost: 0 };
      t.requests += r.requests; t.billedMs += r.billedMs; t.gbSeconds += r.gbSeconds; t.cost += r.cost;
      out.set(r[key], t);
    }
    return [...out.entries()];
  };
  const rows = (pairs) => pairs.map(([k, t]) => [k, t.requests, t.billedMs + " ms", t.gbSeconds.toFixed(3), money(t.cost)]);
  // The price table names x86_64 as serde's camelCase spells it.
  const x86 = u.prices.x86_64;
  const perFunction = sum("function").sort((a, b) => b[1].cost - a[1].cost);
  const perDay = sum("day").sort((a, b) => (a[0] < b[0] ? 1 : -1));
  show(
    h("h1", {}, "Usage and cost"),
    h("div", { class: "panel" },
      h("div", { class: "row" }, ["7", "30", "90"].map((d) =>
        h("a", { href: "#/usage?days=" + d, class: d === days ? "badge" : null }, "last " + d + " days"))),
      h("div", { class: "kpis", id: "usage-totals" },
        h("div", { class: "kpi" }, h("b", { id: "usage-requests" }, u.requests), "requests"),
        h("div", { class: "kpi" }, h("b", {}, u.billedMs + " ms"), "billed duration"),
        h("div", { class: "kpi" }, h("b", {}, u.gbSeconds.toFixed(3)), "GB-seconds"),
        h("div", { class: "kpi" }, h("b", {}, money(u.grossCost)), "at AWS list prices"),
        h("div", { class: "kpi" }, h("b", {}, money(u.cost)), "after the free tier (" + money(u.freeTierCredit) + " off)")),
      h("p", { class: "muted" }, "From the invocation records: billed duration (rounded up to 1 ms) times memory, ",
        "so the figures add up to the REPORT lines. Prices per million requests and per GB-second: x86_64 $",
        x86.perMillionRequests, " / $", x86.perGbSecond, ", arm64 $",
        u.prices.arm64.perMillionRequests, " / $", u.prices.arm64.perGbSecond, ".")),
    section("Per function", table("usage", ["Function", "Requests", "Billed duration", "GB-seconds", "Cost"],
      rows(perFunction), "No invocations in this period.")),
    section("Per day (UTC)", table("usage-days", ["Day", "Requests", "Billed duration", "GB-seconds", "Cost"],
      rows(perDay), "No invocations in this period.")),
  );
}

// ---- start ----

/** Signs in with the one-time link in the address, if there is one. */
async function useLink() {
  const link = location.hash.slice("#link=".length);
  // The link is spent: keep it out of the history and the address bar.
  history.replaceState(null, "", "/console/#/");
  try {
    await call("login", { link });
  } catch (e) {
    return showLogin(e.message);
  }
  await enter();
}

async function start() {
  window.addEventListener("hashchange", () => {
    // A link opened in a tab already showing the console changes only the hash.
    if (location.hash.startsWith("#link=")) useLink();
    else if (session) render();
  });
  if (location.hash.startsWith("#link=")) return useLink();
  try {
    await enter();
  } catch (e) {
    showLogin(e instanceof SignedOut ? "" : e.message);
  }
}

start();
