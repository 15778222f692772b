// The admin console: plain DOM + hand-drawn SVG charts over the admin API (no framework, no
// chart library). The admin token lives in sessionStorage and travels only in the
// Authorization header. Every value from the API reaches the page through textContent or an
// attribute, never as HTML.
"use strict";
(() => {
  const TOKEN_KEY = "egw-admin-token";
  const DAY_MS = 86400000;
  const COLORS = ["#2563eb", "#16a34a", "#d97706", "#9333ea", "#dc2626", "#0891b2", "#65a30d", "#db2777"];
  const SVG = "http://www.w3.org/2000/svg";
  const $ = (id) => document.getElementById(id);

  // ------------------------------------------------------------------------------------------
  // DOM helpers

  function el(tag, attrs, ...children) {
    const node = tag.startsWith("svg:") ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (name === "text") node.textContent = String(value);
      else if (name === "onclick") node.addEventListener("click", value);
      else if (name === "style") node.style.cssText = value; // CSSOM: allowed by the page's CSP

      else node.setAttribute(name, String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function table(target, headers, rows) {
    const head = el("thead", {}, el("tr", {}, headers.map((h) => el("th", { text: h }))));
    const body = el("tbody", {}, rows);
    target.replaceChildren(head, body);
  }

  const say = (text, bad) => {
    const s = $("status");
    s.textContent = text || "";
    s.className = bad ? "error" : "";
  };

  // ------------------------------------------------------------------------------------------
  // The admin API

  class ApiError extends Error {
    constructor(status, data) {
      const message = (data && data.error && data.error.message) || `HTTP ${status}`;
      super(message);
      this.status = status;
      this.data = data;
    }
  }

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  // A GET is asked again once after a dropped connection, or after a 503's Retry-After (the
  // gateway's answer to a key-value store hiccup; waited at most 5 s): a section the console
  // loads once must not stay empty for one transient failure.
  async function fetchRetrying(method, init, path) {
    for (let attempt = 0; ; attempt++) {
      const again = method === "GET" && attempt === 0;
      let response;
      try {
        response = await fetch(path, init);
      } catch (e) {
        if (!again) throw e;
        await sleep(500);
        continue;
      }
      if (response.status !== 503 || !again) return response;
      const wait = Number(response.headers.get("retry-after"));
      await sleep(1000 * Math.min(Number.isFinite(wait) && wait > 0 ? wait : 1, 5));
    }
  }

  async function api(method, path, body) {
    const token = sessionStorage.getItem(TOKEN_KEY) || "";
    const init = { method, headers: { authorization: "Bearer " + token }, cache: "no-store", credentials: "omit" };
    if (body !== undefined) {
      init.headers["content-type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetchRetrying(method, init, path);
    let data = null;
    try {
      data = await response.json();
    } catch (_) {
      data = null;
    }
    if (response.status === 401) {
      signOut("The admin token was refused.");
    }
    if (!response.ok) throw new ApiError(response.status, data);
    return data;
  }

  // ------------------------------------------------------------------------------------------
  // Sign in / out

  function signOut(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    $("app").hidden = true;
    $("logout").hidden = true;
    $("login").hidden = false;
    $("login-error").textContent = message || "";
    say("");
  }

  async function signIn(token) {
    sessionStorage.setItem(TOKEN_KEY, token);
    try {
      await api("GET", "/admin/config/versions");
    } catch (e) {
      if (e.status === 401 || e.status === 503) {
        signOut(e.status === 401 ? "The admin token was refused." : e.message);
        return;
      }
    }
    $("login").hidden = true;
    $("app").hidden = false;
    $("logout").hidden = false;
    $("login-error").textContent = "";
    await refreshAll();
  }

  async function refreshAll() {
    await Promise.all([loadConfig(), loadKeys(), loadAccess(), loadUsage()].map((p) => p.catch(showError)));
  }

  function showError(e) {
    if (e && e.status === 401) return;
    say(e && e.message ? e.message : String(e), true);
  }

  // ------------------------------------------------------------------------------------------
  // Usage: /admin/usage/series, summed per day and per endpoint or tenant

  const ymd = (ms) => new Date(ms).toISOString().slice(0, 10);
  const fmtInt = (n) => Math.round(n).toLocaleString("en-US");
  const fmtUsd = (n) => "$" + (n >= 1 ? n.toFixed(2) : n.toPrecision(3).replace(/\.?0+$/, ""));
  const pct = (num, den) => (den > 0 ? (100 * num) / den : 0);
  const fmtPct = (p) => (p >= 10 || p === 0 ? p.toFixed(0) : p.toFixed(1)) + "%";

  function emptyTotals() {
    return { requests: 0, errors: 0, input: 0, output: 0, cost: 0, cache_hits: 0, latency_ms: 0 };
  }

  function addSeries(t, s) {
    t.requests += s.requests;
    t.errors += s.status >= 400 ? s.requests : 0;
    t.input += s.prompt_tokens;
    t.output += s.completion_tokens;
    t.cost += s.cost_usd;
    t.cache_hits += s.cache_hits;
    t.latency_ms += s.latency_ms;
  }

  async function loadUsage() {
    const days = Number($("usage-days").value);
    const by = $("usage-group").value;
    const now = Date.now();
    const dates = [];
    for (let i = days - 1; i >= 0; i--) dates.push(ymd(now - i * DAY_MS));
    const data = await api("GET", `/admin/usage/series?from=${dates[0]}&to=${dates[dates.length - 1]}`);
    const perDay = new Map(dates.map((d) => [d, new Map()]));
    const dayTotals = new Map(dates.map((d) => [d, emptyTotals()]));
    const groups = new Map();
    const all = emptyTotals();
    for (const day of data.days || []) {
      if (!perDay.has(day.date)) continue;
      for (const s of day.series || []) {
        const key = (by === "tenant" ? s.tenant : s.endpoint) || "(none)";
        if (!groups.has(key)) groups.set(key, emptyTotals());
        const cell = perDay.get(day.date);
        if (!cell.has(key)) cell.set(key, emptyTotals());
        for (const t of [cell.get(key), groups.get(key), dayTotals.get(day.date), all]) addSeries(t, s);
      }
    }
    const names = [...groups.keys()].sort((a, b) => groups.get(b).requests - groups.get(a).requests || a.localeCompare(b));
    const color = new Map(names.map((n, i) => [n, COLORS[i % COLORS.length]]));

    $("usage-summary").replaceChildren(
      card("Requests", fmtInt(all.requests), "requests", all.requests),
      card("Tokens in / out", `${fmtInt(all.input)} / ${fmtInt(all.output)}`, "tokens", all.input + all.output),
      card("Cost", fmtUsd(all.cost), "cost", all.cost),
      card("Error rate", fmtPct(pct(all.errors, all.requests)), "error-rate", pct(all.errors, all.requests)),
      card("Cache hit ratio", fmtPct(pct(all.cache_hits, all.requests)), "cache-hit-ratio", pct(all.cache_hits, all.requests)),
    );

    const stacked = (metric) => dates.map((d) => names.map((n) => [n, metric(perDay.get(d).get(n) || emptyTotals())]));
    $("charts").replaceChildren(
      barChart("requests", `Requests per day by ${by}`, dates, stacked((t) => t.requests), names, color, fmtInt),
      barChart("tokens", `Tokens (in + out) per day by ${by}`, dates, stacked((t) => t.input + t.output), names, color, fmtInt),
      barChart("cost", `Cost (USD) per day by ${by}`, dates, stacked((t) => t.cost), names, color, fmtUsd),
      lineChart("error-rate", "Error rate per day", dates, dates.map((d) => pct(dayTotals.get(d).errors, dayTotals.get(d).requests))),
      lineChart("cache-hit-ratio", "Cache hit ratio per day", dates, dates.map((d) => pct(dayTotals.get(d).cache_hits, dayTotals.get(d).requests))),
    );

    table($("usage-table"), [by, "requests", "errors", "error rate", "tokens in", "tokens out", "cost", "cache hits", "avg latency"],
      names.map((n) => {
        const t = groups.get(n);
        return el("tr", { "data-group": n, "data-requests": t.requests },
          el("td", {}, el("span", { class: "swatch", style: `background:${color.get(n)}` }), n),
          el("td", { text: fmtInt(t.requests) }), el("td", { text: fmtInt(t.errors) }),
          el("td", { text: fmtPct(pct(t.errors, t.requests)) }), el("td", { text: fmtInt(t.input) }),
          el("td", { text: fmtInt(t.output) }), el("td", { text: fmtUsd(t.cost) }),
          el("td", { text: fmtPct(pct(t.cache_hits, t.requests)) }),
          el("td", { text: t.requests ? `${Math.round(t.latency_ms / t.requests)} ms` : "-" }));
      }));
  }

  function card(label, text, name, value) {
    return el("div", { class: "card", "data-card": name, "data-value": value }, el("span", { text: label }), el("strong", { text }));
  }

  // ------------------------------------------------------------------------------------------
  // Charts: SVG drawn by hand. Every mark carries its number in data-* attributes.

  const W = 560, H = 170, PAD_L = 72, PAD_B = 22, PAD_T = 8;

  function niceMax(v) {
    if (v <= 0) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
    return 10 * p;
  }

  function axes(svg, dates, max, fmt) {
    const plotH = H - PAD_B - PAD_T;
    for (let i = 0; i <= 4; i++) {
      const y = PAD_T + plotH - (plotH * i) / 4;
      svg.append(el("svg:line", { x1: PAD_L, x2: W, y1: y, y2: y, class: "grid" }));
      svg.append(el("svg:text", { x: PAD_L - 4, y: y + 4, class: "tick", "text-anchor": "end", text: fmt((max * i) / 4) }));
    }
    const step = Math.ceil(dates.length / 7);
    const band = (W - PAD_L) / dates.length;
    dates.forEach((d, i) => {
      if (i % step === 0 || i === dates.length - 1) {
        svg.append(el("svg:text", { x: PAD_L + band * (i + 0.5), y: H - 6, class: "tick", "text-anchor": "middle", text: d.slice(5) }));
      }
    });
    return { band, plotH };
  }

  function barChart(name, title, dates, stacks, names, color, fmt) {
    const totals = stacks.map((s) => s.reduce((a, [, v]) => a + v, 0));
    const total = totals.reduce((a, b) => a + b, 0);
    const max = niceMax(Math.max(0, ...totals));
    const svg = el("svg:svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": title });
    const { band, plotH } = axes(svg, dates, max, fmt);
    stacks.forEach((stack, i) => {
      let y = PAD_T + plotH;
      for (const [group, value] of stack) {
        if (value <= 0) continue;
        const h = (plotH * value) / max;
        y -= h;
        svg.append(el("svg:rect", {
          x: PAD_L + band * i + band * 0.15, y, width: band * 0.7, height: Math.max(h, 0.5), fill: color.get(group),
          "data-date": dates[i], "data-group": group, "data-value": value,
        }, el("svg:title", { text: `${dates[i]} · ${group}: ${fmt(value)}` })));
      }
    });
    const legend = el("ul", { class: "legend" }, names.map((n) => {
      const sum = stacks.reduce((a, s) => a + s.filter(([g]) => g === n).reduce((b, [, v]) => b + v, 0), 0);
      return el("li", { "data-group": n, "data-total": sum }, el("span", { class: "swatch", style: `background:${color.get(n)}` }), `${n}: ${fmt(sum)}`);
    }));
    return el("figure", { class: "chart", "data-chart": name, "data-total": total },
      el("figcaption", {}, `${title} · total `, el("strong", { text: fmt(total) })), svg, legend);
  }

  function lineChart(name, title, dates, values) {
    const svg = el("svg:svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": title });
    const max = niceMax(Math.max(1, ...values));
    const { band, plotH } = axes(svg, dates, max, fmtPct);
    const pts = values.map((v, i) => [PAD_L + band * (i + 0.5), PAD_T + plotH - (plotH * v) / max]);
    svg.append(el("svg:polyline", { points: pts.map((p) => p.join(",")).join(" "), class: "line" }));
    pts.forEach(([x, y], i) => svg.append(el("svg:circle", { cx: x, cy: y, r: 3, class: "dot", "data-date": dates[i], "data-value": values[i] },
      el("svg:title", { text: `${dates[i]}: ${fmtPct(values[i])}` }))));
    return el("figure", { class: "chart", "data-chart": name }, el("figcaption", { text: title }), svg);
  }

  // ------------------------------------------------------------------------------------------
  // Config, versions (rollback) and endpoints

  async function loadConfig() {
    const versions = await api("GET", "/admin/config/versions");
    $("config-version").textContent = versions.active || "(none)";
    table($("version-table"), ["version", ""], (versions.versions || []).slice().reverse().map((v) => el("tr", { "data-version": v },
      el("td", { text: v }),
      el("td", {}, v === versions.active ? el("em", { text: "active" })
        : el("button", { type: "button", onclick: () => rollback(v), text: "Roll back to this" })))));
    let config = null;
    try {
      config = await api("GET", "/admin/config");
    } catch (e) {
      if (e.status !== 404 && e.status !== 503) throw e;
    }
    $("config-json").textContent = config ? JSON.stringify(config, null, 2) : "(no active config)";
    renderEndpoints(config || {});
  }

  async function rollback(version) {
    if (!confirm(`Make version ${version} the active config?`)) return;
    try {
      await api("POST", "/admin/config/rollback", { version });
      say(`Rolled back to ${version}.`);
      await loadConfig();
    } catch (e) {
      showError(e);
    }
  }

  function renderEndpoints(config) {
    const endpoints = [];
    const routes = [];
    for (const e of config.endpoints || []) endpoints.push(e);
    for (const r of config.routes || []) (r.destinations ? routes : endpoints).push(r);
    const rows = endpoints.map((e) => {
      const model = e.model || {};
      // Explicit origins, else a base URL from the provider config (e.g. openai_api_base).
      const bases = Object.entries(model.config || {}).filter(([k, v]) => /(^|_)(api_)?base$|_url$/.test(k) && typeof v === "string").map(([, v]) => v);
      const origins = (e.origins || []).map((o) => o.region ? `${o.url} (${o.region})` : o.url).concat(e.origins && e.origins.length ? [] : bases).join(", ");
      return el("tr", { "data-endpoint": e.name },
        el("td", {}, el("strong", { text: e.name })), el("td", { text: e.endpoint_type || e.route_type || "" }),
        el("td", { text: model.provider || "" }), el("td", { text: model.name || "" }),
        el("td", { text: e.public ? "public" : "key" }),
        el("td", { text: (e.cache && (e.cache.mode || "on")) || "auto" }),
        el("td", { text: e.template || (e.prompt_template ? "inline" : "") }),
        el("td", { text: origins || "provider default" }));
    });
    for (const r of routes) {
      const split = (r.destinations || []).map((d) => `${d.name} ${d.traffic_percentage}%`).join(" · ");
      rows.push(el("tr", { "data-route": r.name }, el("td", {}, el("strong", { text: r.name })), el("td", { text: r.task_type || "" }),
        el("td", { text: "traffic route" }), el("td", { colspan: 5, text: split })));
    }
    table($("endpoint-table"), ["name", "type", "provider", "model", "access", "cache", "template", "origins"], rows);
  }

  // ------------------------------------------------------------------------------------------
  // Keys: list, create (shown once), revoke, rotate

  // The API answers in pages ordered by key id (random), and filters by tenant within a page:
  // follow next_cursor, or a new key is missing as soon as there are more than one page.
  const KEY_PAGE = 200, KEY_PAGES_MAX = 50;

  async function loadKeys() {
    const tenant = $("key-tenant").value.trim();
    const all = [];
    let cursor = null;
    for (let page = 0; page < KEY_PAGES_MAX; page++) {
      const query = [`limit=${KEY_PAGE}`];
      if (tenant) query.push(`tenant=${encodeURIComponent(tenant)}`);
      if (cursor) query.push(`cursor=${encodeURIComponent(cursor)}`);
      const data = await api("GET", "/admin/keys?" + query.join("&"));
      all.push(...(data.keys || []));
      cursor = data.next_cursor;
      if (!cursor) break;
    }
    const keys = all.sort((a, b) => (b.created || 0) - (a.created || 0));
    table($("key-table"), ["id", "tenant", "name", "endpoints", "limits", "state", "created", ""], keys.map((k) => {
      const limits = [k.rpm && `${k.rpm} rpm`, k.tpm && `${k.tpm} tpm`, k.budget_usd && `$${k.budget_usd}/${k.budget_period || "month"}`]
        .filter(Boolean).join(", ");
      const actions = k.state === "active" ? [
        el("button", { type: "button", class: "danger", "data-action": "revoke", onclick: () => keyAction(k.id, "revoke"), text: "Revoke" }),
        el("button", { type: "button", "data-action": "rotate", onclick: () => keyAction(k.id, "rotate"), text: "Rotate" }),
      ] : [];
      return el("tr", { "data-key": k.id, "data-state": k.state },
        el("td", {}, el("code", { text: k.id })), el("td", { text: k.tenant }), el("td", { text: k.name || "" }),
        el("td", { text: (k.endpoints || []).join(", ") }), el("td", { text: limits || "-" }),
        el("td", { class: `state-${k.state}`, text: k.state }),
        el("td", { text: k.created ? ymd(k.created * 1000) : "" }), el("td", {}, actions));
    }));
  }

  function showKeyOnce(key) {
    $("new-key-value").textContent = key;
    $("new-key").hidden = false;
  }

  async function keyAction(id, action) {
    const question = action === "revoke" ? `Revoke ${id}? Requests with it are refused from now on.`
      : `Rotate ${id}? The current key stops working; a new one is shown once.`;
    if (!confirm(question)) return;
    try {
      const result = await api("POST", `/admin/keys/${encodeURIComponent(id)}/${action}`);
      if (result.key) showKeyOnce(result.key);
      say(`${id}: ${action === "revoke" ? "revoked" : "rotated"}.`);
      await loadKeys();
    } catch (e) {
      showError(e);
    }
  }

  async function createKey(form) {
    const spec = { tenant: form.tenant.value.trim() };
    if (form.name.value.trim()) spec.name = form.name.value.trim();
    const endpoints = form.endpoints.value.split(",").map((s) => s.trim()).filter(Boolean);
    if (endpoints.length) spec.endpoints = endpoints;
    for (const field of ["rpm", "tpm"]) if (form[field].value !== "") spec[field] = Number(form[field].value);
    if (form.budget_usd.value !== "") spec.budget_usd = Number(form.budget_usd.value);
    try {
      const created = await api("POST", "/admin/keys", spec);
      showKeyOnce(created.key);
      say(`Key ${created.id} created for tenant ${created.tenant}.`);
      form.reset();
      await loadKeys();
    } catch (e) {
      const issues = (e.data && e.data.issues) || [];
      say(issues.length ? issues.map((i) => `${i.path}: ${i.message}`).join("; ") : e.message, true);
    }
  }

  // ------------------------------------------------------------------------------------------
  // Access requests (approval): shown when the gateway has the API (404: not available)

  async function loadAccess() {
    const target = $("access-body");
    let data;
    try {
      data = await api("GET", "/admin/access-requests?state=pending");
    } catch (e) {
      if (e.status === 404 || e.status === 405) {
        target.replaceChildren(el("p", { class: "hint", "data-access": "unavailable", text: "Access approval is not available on this gateway." }));
        return;
      }
      // Said in the section too: the status line is overwritten by the next action.
      target.replaceChildren(el("p", { class: "error", "data-access": "failed", text: `The access requests could not be loaded: ${e.message}` }));
      throw e;
    }
    const list = Array.isArray(data) ? data : data.requests || data.access_requests || [];
    const pending = list.filter((r) => !r.state || r.state === "pending" || r.status === "pending");
    if (!pending.length) {
      target.replaceChildren(el("p", { class: "hint", "data-access": "empty", text: "No pending access requests." }));
      return;
    }
    const t = el("table", {});
    table(t, ["id", "who", "endpoint", "reason", "asked", ""], pending.map((r) => el("tr", { "data-request": r.id },
      el("td", {}, el("code", { text: r.id })), el("td", { text: r.subject || r.key_id || r.sub || r.tenant || "" }),
      el("td", { text: r.endpoint || "" }), el("td", { text: r.reason || "" }),
      el("td", { text: r.created ? new Date((r.created > 1e12 ? r.created : r.created * 1000)).toISOString().slice(0, 16).replace("T", " ") : "" }),
      el("td", {},
        el("button", { type: "button", "data-action": "approve", onclick: () => decide(r.id, "approve"), text: "Approve" }),
        el("button", { type: "button", class: "danger", "data-action": "deny", onclick: () => decide(r.id, "deny"), text: "Deny" })))));
    target.replaceChildren(t);
  }

  async function decide(id, verdict) {
    try {
      await api("POST", `/admin/access-requests/${encodeURIComponent(id)}/${verdict}`, {});
      say(`${id}: ${verdict === "approve" ? "approved" : "denied"}.`);
      await loadAccess();
    } catch (e) {
      showError(e);
    }
  }

  // ------------------------------------------------------------------------------------------
  // Wiring

  $("login-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const input = $("token");
    const token = input.value.trim();
    input.value = "";
    if (token) signIn(token).catch(showError);
  });
  $("logout").addEventListener("click", () => signOut(""));
  $("key-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    createKey(ev.target);
  });
  $("new-key-done").addEventListener("click", () => {
    $("new-key-value").textContent = "";
    $("new-key").hidden = true;
  });
  $("new-key-copy").addEventListener("click", () => navigator.clipboard && navigator.clipboard.writeText($("new-key-value").textContent));
  $("key-tenant").addEventListener("change", () => loadKeys().catch(showError));
  $("usage-days").addEventListener("change", () => loadUsage().catch(showError));
  $("usage-group").addEventListener("change", () => loadUsage().catch(showError));
  $("usage-refresh").addEventListener("click", () => refreshAll());

  if (sessionStorage.getItem(TOKEN_KEY)) signIn(sessionStorage.getItem(TOKEN_KEY)).catch(showError);
})();
