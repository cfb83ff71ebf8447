// The dashboard's pages. Each mounts into <main> and returns { refresh },
// which the poller calls every few seconds; a refresh re-renders only the
// regions whose data changed, so focus and scroll stay where they were.

import { api, h, fmt, empty, table, badge, go } from "./app.js";
import { chart, legend } from "./charts.js";

const EVENT_KINDS = [
  "failover", "retry", "resume", "failover_alert", "circuit_open", "circuit_closed",
  "health_down", "health_up", "rate_limit_warning", "rate_limit_reached",
  "budget_alert", "degradation_alert", "key_revoked",
];
const PAGE_SIZE = 25;

/// Replaces `region`'s content with `render(data)` when `data` changed.
function update(region, data, render) {
  const key = JSON.stringify(data);
  if (region.dataset.key === key) return;
  region.dataset.key = key;
  region.replaceChildren(...[render(data)].flat().filter(Boolean));
}

/// An API error shown in place of the data (e.g. the store is off).
function problem(region, e) {
  region.dataset.key = "";
  region.replaceChildren(empty(e.message));
}

function dayStartMs() {
  const d = new Date();
  return Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate());
}

function tone(state) {
  return {
    active: "ok", closed: "ok", healthy: "ok", success: "ok", ok: "ok", available: "ok",
    quarantined: "warn", half_open: "warn", rate_limited: "warn", cooling_down: "warn", cooling: "warn",
    rejected: "bad", open: "bad", down: "bad", failed: "bad", unhealthy: "bad", revoked: "bad", unset: "bad",
  }[state] || "";
}

function dl(pairs) {
  return h("dl", { class: "facts" }, pairs.filter(Boolean).map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}

// ---- overview ---------------------------------------------------------------

function stat(id, label, value, raw, sub, extra) {
  return h(
    "div",
    { class: "card stat", "data-stat": id, "data-raw": raw === null || raw === undefined ? "" : String(raw) },
    h("p", { class: "label" }, label),
    h("p", { class: "value" }, value),
    sub ? h("p", { class: "sub" }, sub) : null,
    extra,
  );
}

function budgetLine(budgets, period, spent) {
  const gw = budgets.filter((b) => b.period === period && !b.scope.route && !b.scope.deployment && !b.scope.caller && !b.scope.tag);
  if (!gw.length) return { sub: `no ${period === "day" ? "daily" : "monthly"} gateway budget set`, bar: null };
  const limit = gw.reduce((a, b) => Math.min(a, b.limit_usd), Infinity);
  const frac = limit > 0 ? spent / limit : 0;
  return {
    sub: `of ${fmt.usd(limit)} budget (${fmt.pct(frac)})`,
    bar: h("progress", { max: "1", value: String(Math.min(1, frac)), "aria-label": `${fmt.pct(frac)} of the ${period} budget`, class: frac >= 1 ? "over" : "" }),
  };
}

/// A chart's width in CSS pixels: one column on a phone, two from 900 px.
function chartWidth(container) {
  const total = container.clientWidth || 600;
  const columns = total >= 860 ? 2 : 1;
  return Math.max(260, Math.round((total - (columns - 1) * 12) / columns - 34));
}

const WINDOW_NAMES = { "1h": "last hour", "24h": "last day", "7d": "last week" };

function overview(root, { params }) {
  const win = WINDOW_NAMES[params.get("window")] ? params.get("window") : "1h";
  const picker = h(
    "nav",
    { class: "segmented", "aria-label": "Time range" },
    Object.entries(WINDOW_NAMES).map(([w, name]) =>
      h("a", { href: `#/overview?window=${w}`, "aria-current": w === win ? "true" : null, title: `The ${name}` }, w),
    ),
  );
  const note = h("div", { "aria-live": "polite" });
  const cards = h("div", { class: "cards", id: "overview-cards" });
  const charts = h("div", { class: "charts" });
  const budgets = h("section", { "aria-labelledby": "budgets-h" });
  root.append(h("div", { class: "title-row" }, h("h1", {}, "Overview"), picker), note, cards, charts, budgets);

  return {
    async refresh() {
      let s, b;
      try {
        [s, b] = await Promise.all([api(`/admin/series?window=${win}`), api("/admin/budgets")]);
      } catch (e) {
        problem(cards, e);
        throw e;
      }
      const t = s.totals;
      const spanName = WINDOW_NAMES[win];
      update(note, t.requests, (n) =>
        n ? null : empty(`No requests recorded in the ${spanName} yet — send one to /v1/chat/completions (the README's curl example) and it appears here within seconds.`),
      );
      update(cards, { t, spend: s.spend, b: b.data }, ({ t, spend, b }) => {
        const today = budgetLine(b, "day", spend.today_usd);
        const month = budgetLine(b, "month", spend.month_usd);
        return [
          stat("requests", `Requests (${spanName})`, fmt.count(t.requests, t.requests === 1 ? "request" : "requests"), t.requests, `${fmt.int(t.failed_over)} failed over`),
          stat("requests_per_s", "Throughput", fmt.rate(t.requests_per_s), t.requests_per_s, `average over the ${spanName}`),
          stat("error_rate", "Error rate", fmt.pct(t.error_rate), t.error_rate, `${fmt.int(t.errors)} failed`),
          stat("latency_p50_ms", "Latency p50", fmt.ms(t.latency_p50_ms), t.latency_p50_ms, "whole request, every attempt"),
          stat("latency_p95_ms", "Latency p95", fmt.ms(t.latency_p95_ms), t.latency_p95_ms, null),
          stat("overhead_p50_ms", "Gateway overhead p50", fmt.ms(t.overhead_p50_ms), t.overhead_p50_ms, `p95 ${fmt.ms(t.overhead_p95_ms)}`),
          stat("today_usd", "Spend today (UTC)", fmt.usd(spend.today_usd), spend.today_usd, today.sub, today.bar),
          stat("month_usd", "Spend this month", fmt.usd(spend.month_usd), spend.month_usd, month.sub, month.bar),
          stat("cache_hit_rate", "Cache hit rate", fmt.pct(t.cache_hit_rate), t.cache_hit_rate,
            t.cache_lookups ? `${fmt.int(t.cache_hits)} hits of ${fmt.int(t.cache_lookups)} lookups` : "no cache lookups: enable routes.<name>.cache"),
        ];
      });
      // Drawn at the size they are shown, so their text is not stretched.
      const width = chartWidth(charts);
      update(charts, { buckets: s.buckets, width }, ({ buckets }) => {
        const xs = buckets.map((x) => x.ts_ms);
        const col = (k) => buckets.map((x) => x[k]);
        const fig = (title, series, format) =>
          h("figure", { class: "card" }, h("figcaption", {}, title), chart({ title, xs, bucketMs: s.bucket_ms, series, format, width }), legend(series));
        const per = s.bucket_ms >= 3600000 ? "hour" : s.bucket_ms >= 900000 ? "15 min" : "min";
        return [
          fig(`Requests per ${per}`, [
            { name: "requests", values: col("requests"), kind: "bar", cls: "s1" },
            { name: "errors", values: col("errors"), kind: "bar", cls: "s3" },
          ], (v) => fmt.count(v, "req")),
          fig("Latency", [
            { name: "p50", values: col("latency_p50_ms"), kind: "line", cls: "s1" },
            { name: "p95", values: col("latency_p95_ms"), kind: "line", cls: "s2" },
          ], fmt.ms),
          fig("Gateway overhead (p50)", [{ name: "overhead p50", values: col("overhead_p50_ms"), kind: "line", cls: "s4" }], fmt.ms),
          fig(`Spend per ${per}`, [{ name: "spend", values: col("cost_usd"), kind: "bar", cls: "s2" }], fmt.usd),
        ];
      });
      update(budgets, b.data, (data) => [
        h("h2", { id: "budgets-h" }, "Budgets"),
        data.length
          ? table("Budgets", ["Budget", "Scope", "Period", "Spent", "Limit", "Used", "Action"], data.map((x) => {
            const scope = Object.entries(x.scope).filter(([, v]) => v).map(([k, v]) => `${k} ${v}`).join(", ") || "whole gateway";
            return h("tr", {},
              h("th", { scope: "row" }, x.name), h("td", {}, scope), h("td", {}, x.period),
              h("td", { class: "num" }, fmt.usd(x.spent_usd)), h("td", { class: "num" }, fmt.usd(x.limit_usd)),
              h("td", {}, h("progress", { max: "1", value: String(Math.min(1, x.fraction)), "aria-label": `${x.name}: ${fmt.pct(x.fraction)} used` }), " ", fmt.pct(x.fraction)),
              h("td", {}, x.action));
          }))
          : empty("No budgets configured — add one under budgets in the config file (e.g. a daily limit_usd) to see spend against it here."),
      ]);
    },
  };
}

// ---- deployments -----------------------------------------------------------

function limitsTable(name, limits) {
  const rows = Object.entries(limits || {});
  if (!rows.length) return h("p", { class: "muted" }, "No rate limits (rpm, rps, tpm) set.");
  return table(`${name}: limits`, ["Limit", "Used", "Max", "Headroom"], rows.map(([k, v]) =>
    h("tr", {}, h("th", { scope: "row" }, k), h("td", { class: "num" }, fmt.int(v.used)), h("td", { class: "num" }, fmt.int(v.max)),
      h("td", { class: "num" }, fmt.pct(v.max ? Math.max(0, 1 - v.used / v.max) : 1)))));
}

function deploymentCard(d, spend) {
  const r = (d.stats && d.stats.recent) || {};
  const lat = r.latency_ms || {};
  const ttft = r.ttft_ms || {};
  const classes = Object.entries(r.errors_by_class || {}).filter(([, n]) => n);
  const healthy = d.health.healthy;
  return h(
    "article",
    { class: "card deployment", "data-deployment": d.name, "aria-labelledby": `dep-${d.name}` },
    h("header", {},
      h("h2", { id: `dep-${d.name}` }, d.name),
      badge(healthy ? "healthy" : "unhealthy", healthy ? "ok" : "bad"),
      h("span", { class: "circuit", "data-circuit": d.health.circuit }, badge(`circuit ${d.health.circuit.replace("_", "-")}`, tone(d.health.circuit)))),
    dl([
      ["Model", `${d.model} via ${d.adapter}`],
      ["Routes", (d.routes || []).join(", ") || "none"],
      ["In flight", `${fmt.int(d.in_flight)}${d.max_in_flight ? ` of ${fmt.int(d.max_in_flight)}` : ""} requests`],
      ["Latency p50 / p95", `${fmt.ms(lat.p50)} / ${fmt.ms(lat.p95)}`],
      ["Time to first token p50 / p95", `${fmt.ms(ttft.p50)} / ${fmt.ms(ttft.p95)}`],
      ["Recent attempts", r.attempts ? `${fmt.int(r.attempts)} (${fmt.pct(r.error_rate)} errors)` : "none in the recent window"],
      ["Error classes", classes.length ? classes.map(([c, n]) => `${c} ${fmt.int(n)}`).join(", ") : "none"],
      ["Spend today", fmt.usd(spend || 0)],
      ["Keys", (d.keys || []).length
        ? h("ul", { class: "plain" }, d.keys.map((k) => h("li", {}, h("code", {}, k.env), " ", badge(k.state, tone(k.state)))))
        : (d.api_key_env || []).length ? (d.api_key_env || []).join(", ") : "none (no key sent)"],
    ]),
    limitsTable(d.name, d.limits),
  );
}

function deployments(root) {
  const list = h("div", { class: "grid", id: "deployments" });
  root.append(h("h1", {}, "Deployments"), h("p", { class: "muted" }, "Health, circuit and limits are live; latency and errors cover the monitor's recent window."), list);
  return {
    async refresh() {
      let d, costs;
      try {
        [d, costs] = await Promise.all([
          api("/admin/deployments"),
          api(`/admin/costs?group_by=deployment&since=${dayStartMs()}`).catch(() => ({ data: [] })),
        ]);
      } catch (e) {
        problem(list, e);
        throw e;
      }
      const spend = Object.fromEntries(costs.data.map((c) => [c.key, c.cost]));
      update(list, { d: d.data, spend }, ({ d, spend }) =>
        d.length ? d.map((x) => deploymentCard(x, spend[x.name])) : empty("No deployments configured — add one under deployments in the config file; the gateway reloads it by itself."),
      );
    },
  };
}

// ---- routes ------------------------------------------------------------------

/// One shadow strategy: how often it agreed with the live one, and what
/// its choices would have cost and taken against the live choices.
function shadowLine(s) {
  const w = s.what_if || {};
  const l = s.live_stats || {};
  const vs = (a, b, f) => (a === undefined || a === null ? "" : `${f(a)} vs ${f(b)}`);
  const cost = vs(w.cost_usd, l.cost_usd, fmt.usd);
  const p50 = vs(w.latency_p50_ms, l.latency_p50_ms, fmt.ms);
  return [
    h("strong", {}, s.strategy), `: ${fmt.pct(s.agreement)} agreement over ${fmt.count(s.decisions, "decisions")}`,
    cost || p50 ? h("span", { class: "muted" }, ` · would cost ${cost || "–"}, p50 ${p50 || "–"} (live)`) : null,
  ];
}

function routes(root) {
  const list = h("div", { id: "routes" });
  root.append(h("h1", {}, "Routes"), list);
  // Shadow strategies: a gateway without them answers 404; asked once.
  let shadow;
  return {
    async refresh() {
      if (shadow === undefined) {
        shadow = await api("/admin/shadow").catch((e) => (e.status === 404 ? null : Promise.reject(e)));
      }
      let r;
      try {
        r = await api("/admin/routes");
      } catch (e) {
        problem(list, e);
        throw e;
      }
      const shadows = Object.fromEntries(((shadow && shadow.routes) || []).map((x) => [x.route, x.shadows || []]));
      update(list, { r: r.data, shadows }, ({ r, shadows }) =>
        r.length
          ? table("Routes", ["Route", "Strategy", "Evaluator", "Deployments in order", "Fallbacks", "Shadow strategies"], r.map((x) =>
            h("tr", { "data-route": x.name },
              h("th", { scope: "row" }, h("a", { href: `#/requests?route=${encodeURIComponent(x.name)}`, title: `Requests of ${x.name}` }, x.name)),
              h("td", {}, x.strategy || "configured order"),
              h("td", {}, x.evaluator ? `${x.evaluator}${x.evaluate_sample < 1 ? ` (${fmt.pct(x.evaluate_sample)} sampled)` : ""}` : "none"),
              h("td", {}, h("ol", { class: "plain-ol" }, x.deployments.map((d) => h("li", {}, d.name, h("span", { class: "muted" }, ` priority ${d.priority}, weight ${d.weight}`))))),
              h("td", {}, x.fallbacks.length ? x.fallbacks.join(" → ") : "none"),
              h("td", {}, (shadows[x.name] || []).length
                ? h("ul", { class: "plain" }, shadows[x.name].map((s) => h("li", { "data-shadow": s.strategy }, shadowLine(s))))
                : "none"),
            )))
          : empty("No routes configured — add one under routes in the config file, naming its deployments."),
      );
    },
  };
}

// ---- requests ------------------------------------------------------------------

const SINCE = { "": "any time", "15m": "last 15 min", "1h": "last hour", "24h": "last day", "7d": "last week" };

function field(label, control) {
  return h("label", { class: "field" }, h("span", {}, label), control);
}

function select(name, options, value) {
  return h("select", { name, id: `f-${name}` }, options.map(([v, text]) => h("option", { value: v, selected: v === value }, text)));
}

function statusBadge(status) {
  return badge(String(status), status < 300 ? "ok" : status < 500 ? "warn" : "bad");
}

function requests(root, { params }) {
  const form = h("form", { class: "filters", "aria-label": "Filter requests" });
  const results = h("div", { id: "requests" });
  const pager = h("nav", { class: "pager", "aria-label": "Pages" });
  root.append(h("h1", {}, "Requests"), form, results, pager);
  const offset = Number(params.get("offset") || 0);
  const filters = ["route", "deployment", "caller", "status", "outcome", "since", "from", "to"];

  const fill = async () => {
    const [r, d] = await Promise.all([api("/admin/routes").catch(() => ({ data: [] })), api("/admin/deployments").catch(() => ({ data: [] }))]);
    form.replaceChildren(
      field("Route", select("route", [["", "all routes"], ...r.data.map((x) => [x.name, x.name])], params.get("route") || "")),
      field("Deployment", select("deployment", [["", "all deployments"], ...d.data.map((x) => [x.name, x.name])], params.get("deployment") || "")),
      field("Caller", h("input", { name: "caller", id: "f-caller", value: params.get("caller") || "", placeholder: "client key name", autocomplete: "off" })),
      field("Status", h("input", { name: "status", id: "f-status", type: "number", min: "100", max: "599", inputmode: "numeric", value: params.get("status") || "", placeholder: "e.g. 502" })),
      field("Outcome", select("outcome", [["", "any"], ["success", "success"], ["failed", "failed"]], params.get("outcome") || "")),
      field("Time", select("since", Object.entries(SINCE), params.get("since") || "")),
      field("From (local time)", h("input", { name: "from", id: "f-from", type: "datetime-local", value: params.get("from") || "" })),
      field("To", h("input", { name: "to", id: "f-to", type: "datetime-local", value: params.get("to") || "" })),
      h("div", { class: "actions" }, h("button", { type: "submit" }, "Apply filters"), h("a", { href: "#/requests", class: "button secondary" }, "Clear")),
    );
  };
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const q = new URLSearchParams();
    for (const [k, v] of new FormData(form)) if (String(v).trim()) q.set(k, String(v).trim());
    go("requests", q);
  });
  const filled = fill();

  return {
    async refresh() {
      await filled;
      const q = new URLSearchParams();
      for (const k of filters.slice(0, 6)) if (params.get(k)) q.set(k, params.get(k));
      // An explicit range (local time in the form) goes to the API in ms.
      const ms = (k) => (params.get(k) ? new Date(params.get(k)).getTime() : NaN);
      if (!Number.isNaN(ms("from"))) q.set("since", String(ms("from")));
      if (!Number.isNaN(ms("to"))) q.set("until", String(ms("to")));
      q.set("limit", String(PAGE_SIZE));
      q.set("offset", String(offset));
      let r;
      try {
        r = await api(`/admin/requests?${q}`);
      } catch (e) {
        problem(results, e);
        throw e;
      }
      const filtered = filters.some((k) => params.get(k));
      update(results, r.data, (rows) =>
        rows.length
          ? table("Requests, newest first", ["Time", "Request", "Route", "Deployment", "Caller", "Status", "Attempts", "Latency", "Cost", "Cache"], rows.map((x) =>
            h("tr", { "data-request": x.id },
              h("td", {}, fmt.time(x.ts_ms)),
              h("td", {}, h("a", { href: `#/request/${encodeURIComponent(x.id)}`, title: "Every attempt of this request" }, h("code", {}, x.id.slice(0, 18)))),
              h("td", {}, x.route), h("td", {}, x.deployment || "none"), h("td", {}, x.caller || "–"),
              h("td", {}, statusBadge(x.status)), h("td", { class: "num" }, fmt.int(x.attempts)),
              h("td", { class: "num" }, fmt.ms(x.latency_ms)), h("td", { class: "num" }, fmt.usd(x.cost)), h("td", {}, x.cache || "–"))))
          : filtered
            ? empty("No requests match these filters — widen the time range or clear the filters.", h("a", { href: "#/requests" }, "Clear filters"))
            : empty("No requests recorded yet — send one to /v1/chat/completions and it appears here."),
      );
      update(pager, { offset, next: r.next_offset, n: r.data.length }, ({ offset, next, n }) => {
        const link = (o, text) => {
          const p = new URLSearchParams(params);
          if (o) p.set("offset", String(o));
          else p.delete("offset");
          return h("a", { href: `#/requests${[...p].length ? `?${p}` : ""}`, class: "button secondary" }, text);
        };
        return [
          offset > 0 ? link(Math.max(0, offset - PAGE_SIZE), "← Newer") : null,
          h("span", { class: "muted" }, n ? `Requests ${fmt.int(offset + 1)}–${fmt.int(offset + n)}` : ""),
          next ? link(next, "Older →") : null,
        ];
      });
    },
  };
}

function request(root, { rest }) {
  const id = rest[0] || "";
  const body = h("div", { id: "request" });
  root.append(h("p", {}, h("a", { href: "#/requests" }, "← All requests")), h("h1", {}, "Request ", h("code", {}, id)), body);
  return {
    async refresh() {
      let r;
      try {
        r = await api(`/admin/requests/${encodeURIComponent(id)}`);
      } catch (e) {
        problem(body, e);
        throw e;
      }
      update(body, r, (r) => [
        dl([
          ["Time", fmt.time(r.ts_ms)], ["Route", r.route], ["Caller", r.caller || "–"],
          ["Outcome", h("span", {}, badge(r.outcome, tone(r.outcome)), " ", statusBadge(r.status))],
          ["Served by", r.deployment || "none"], ["Latency", fmt.ms(r.latency_ms)], ["Gateway overhead", fmt.ms(r.overhead_ms)],
          r.ttft_ms !== null ? ["Time to first token", fmt.ms(r.ttft_ms)] : null,
          ["Tokens", `${fmt.int(r.prompt_tokens)} in, ${fmt.int(r.completion_tokens)} out${r.estimated ? " (estimated)" : ""}`],
          ["Cost", fmt.usd(r.cost)], ["Stream", r.stream ? "yes" : "no"], ["Cache", r.cache || "–"],
        ]),
        h("h2", {}, `Attempts (${r.attempts_detail.length})`),
        table("Attempts in order", ["#", "Time", "Deployment", "Adapter", "Result", "Status", "Latency", "First token", "Tokens in / out", "Cost", "Evaluation"], r.attempts_detail.map((a) =>
          h("tr", { "data-attempt": a.n },
            h("td", { class: "num" }, String(a.n)), h("td", {}, fmt.time(a.ts_ms)), h("td", {}, a.deployment), h("td", {}, a.adapter),
            h("td", {}, a.class ? badge(a.class, "bad") : badge("success", "ok")), h("td", {}, a.status ? statusBadge(a.status) : "–"),
            h("td", { class: "num" }, fmt.ms(a.latency_ms)), h("td", { class: "num" }, fmt.ms(a.ttft_ms)),
            h("td", { class: "num" }, `${fmt.int(a.prompt_tokens)} / ${fmt.int(a.completion_tokens)}`),
            h("td", { class: "num" }, `${fmt.usd(a.cost)}${a.billed ? "" : " (not billed)"}`),
            h("td", {}, a.evaluator ? `${a.evaluator}: ${a.score === null ? "no score" : fmt.pct(a.score)}${a.pass === false ? " (failed)" : ""}` : "–")))),
      ]);
    },
  };
}

// ---- events ------------------------------------------------------------------

function detailText(d) {
  if (!d || typeof d !== "object") return "";
  return Object.entries(d).filter(([, v]) => v !== null && v !== undefined).map(([k, v]) => `${k}: ${typeof v === "object" ? JSON.stringify(v) : v}`).join(" · ");
}

function eventTone(kind) {
  if (/down|open|reached|alert|revoked/.test(kind)) return "bad";
  if (/failover|retry|resume|warning/.test(kind)) return "warn";
  if (/up|closed/.test(kind)) return "ok";
  return "";
}

function events(root, { params }) {
  const type = params.get("type") || "";
  const offset = Number(params.get("offset") || 0);
  const form = h("form", { class: "filters", "aria-label": "Filter events" },
    field("Kind", select("type", [["", "all kinds"], ...EVENT_KINDS.map((k) => [k, k.replaceAll("_", " ")])], type)),
    field("Time", select("since", Object.entries(SINCE), params.get("since") || "")),
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Apply filters"), h("a", { href: "#/events", class: "button secondary" }, "Clear")));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const q = new URLSearchParams();
    for (const [k, v] of new FormData(form)) if (v) q.set(k, String(v));
    go("events", q);
  });
  const list = h("div", { id: "events" });
  const pager = h("nav", { class: "pager", "aria-label": "Pages" });
  root.append(h("h1", {}, "Events"), h("p", { class: "muted" }, "Failovers, retries, rate limits, budgets, degradation, circuits and health checks, newest first."), form, list, pager);
  return {
    async refresh() {
      const q = new URLSearchParams({ limit: String(PAGE_SIZE), offset: String(offset) });
      if (type) q.set("type", type);
      if (params.get("since")) q.set("since", params.get("since"));
      let r;
      try {
        r = await api(`/admin/events?${q}`);
      } catch (e) {
        problem(list, e);
        throw e;
      }
      update(list, r.data, (rows) =>
        rows.length
          ? table("Events, newest first", ["Time", "Kind", "Subject", "Detail"], rows.map((e) =>
            h("tr", { "data-kind": e.kind }, h("td", {}, fmt.time(e.ts_ms)), h("td", {}, badge(e.kind.replaceAll("_", " "), eventTone(e.kind))), h("td", {}, e.subject), h("td", { class: "detail" }, detailText(e.detail)))))
          : empty(type || params.get("since")
            ? "No events of this kind in this range — clear the filters to see all."
            : "No events yet — failovers, rate-limit warnings, budget alerts, degradation and health changes appear here as they happen."),
      );
      update(pager, { offset, next: r.next_offset }, ({ offset, next }) => {
        const link = (o, text) => {
          const p = new URLSearchParams(params);
          p.set("offset", String(o));
          return h("a", { href: `#/events?${p}`, class: "button secondary" }, text);
        };
        return [offset > 0 ? link(Math.max(0, offset - PAGE_SIZE), "← Newer") : null, next ? link(next, "Older →") : null];
      });
    },
  };
}

// ---- plugins ------------------------------------------------------------------

/// Where the config names a plugin, shortly: "routes demo, chat" from
/// "/routes/demo/strategy"; "deployments a, b" from "/deployments/a/adapter".
function usedBy(paths) {
  const groups = {};
  for (const p of paths) {
    const m = /^\/(routes|deployments)\/(.+)\/(strategy|evaluator|adapter)$/.exec(p);
    const [kind, name] = m ? [m[1], m[2]] : ["", p];
    (groups[kind] = groups[kind] || []).push(name);
  }
  return Object.entries(groups).map(([k, names]) => h("div", {}, k ? `${k} ` : "", names.join(", ")));
}

function plugins(root) {
  const status = h("p", { id: "plugin-status", role: "status", class: "status" });
  const file = h("input", { type: "file", id: "plugin-file", name: "file", accept: ".wasm,application/wasm", required: true });
  const name = h("input", { id: "plugin-name", name: "name", placeholder: "from the file name", autocomplete: "off", pattern: "[A-Za-z0-9][A-Za-z0-9_.\\-]*" });
  const form = h("form", { class: "filters upload", "aria-label": "Upload a plugin" },
    field("Plugin file (.wasm)", file), field("As plugin id", name),
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Upload")));
  const list = h("div", { id: "plugins" });
  let reload = async () => {};

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const f = file.files && file.files[0];
    if (!f) {
      status.textContent = "Choose a .wasm file first.";
      return;
    }
    const id = (name.value.trim() || f.name).replace(/\.wasm$/, "");
    status.textContent = `Checking and uploading ${id}.wasm…`;
    try {
      const r = await api(`/admin/plugins/${encodeURIComponent(id)}.wasm`, {
        method: "PUT", body: await f.arrayBuffer(), headers: { "Content-Type": "application/wasm" },
      });
      const p = r.plugin || {};
      status.textContent = `${id}.wasm ${r.replaced ? "replaced" : "added"}: ${r.checked.kind}, WIT ${r.checked.wit}, ${p.state || "not loaded"}${r.replaced ? " (the previous version is kept for rollback)" : ""}.`;
      form.reset();
    } catch (err) {
      status.textContent = `Not uploaded: ${err.message}`;
    }
    await reload();
  });

  root.append(h("h1", {}, "Plugins"),
    h("section", { "aria-labelledby": "upload-h" }, h("h2", { id: "upload-h" }, "Upload a plugin"),
      h("p", { class: "muted" }, "The file is loaded as the gateway would load it first; one it would refuse is not written. A file replacing another keeps that one for rollback."),
      form, status),
    h("h2", {}, "Loaded plugins"), list);

  async function rollback(id) {
    status.textContent = `Rolling back ${id}…`;
    try {
      const r = await api(`/admin/plugins/${encodeURIComponent(id)}.wasm/rollback`, { method: "POST" });
      status.textContent = `${id} rolled back: now ${(r.plugin && r.plugin.hash || "").slice(0, 12)}, ${r.plugin ? r.plugin.state : "not loaded"}.`;
    } catch (err) {
      status.textContent = `Not rolled back: ${err.message}`;
    }
    await reload();
  }

  reload = async () => {
    let r;
    try {
      r = await api("/admin/plugins");
    } catch (e) {
      problem(list, e);
      throw e;
    }
    update(list, r.data, (rows) =>
      rows.length
        ? table("Plugins", ["Plugin", "Kind", "WIT", "Version", "Hash", "State", "Calls", "Mean call", "Errors", "Timeouts", "Traps", "Used by", "Previous version"], rows.map((p) =>
          h("tr", { "data-plugin": p.id, "data-state": p.state, "data-hash": p.hash || "" },
            h("th", { scope: "row" }, p.id),
            h("td", {}, p.kind || "–"), h("td", {}, p.wit || "–"), h("td", {}, p.version || "–"),
            h("td", {}, p.hash ? h("code", { title: p.hash }, p.hash.slice(0, 12)) : "–"),
            h("td", {}, badge(p.state, tone(p.state)),
              p.quarantine_remaining_ms ? h("span", { class: "muted" }, ` ${fmt.ms(p.quarantine_remaining_ms)} left`) : null,
              p.reason ? h("p", { class: "reason" }, p.reason) : null),
            h("td", { class: "num" }, p.calls === undefined ? "–" : fmt.int(p.calls)),
            h("td", { class: "num" }, fmt.us(p.mean_call_us)),
            h("td", { class: "num" }, p.errors === undefined ? "–" : fmt.int(p.errors)),
            h("td", { class: "num" }, p.timeouts === undefined ? "–" : fmt.int(p.timeouts)),
            h("td", { class: "num" }, p.traps === undefined ? "–" : fmt.int(p.traps)),
            h("td", {}, (p.used_by || []).length ? usedBy(p.used_by) : h("span", { class: "muted" }, "not in the config")),
            h("td", {}, p.previous_hash
              ? h("button", { type: "button", class: "secondary", "data-rollback": p.id, "aria-label": `Roll back ${p.id} to ${p.previous_hash.slice(0, 12)}`, onclick: () => rollback(p.id) }, `Roll back to ${p.previous_hash.slice(0, 8)}`)
              : h("span", { class: "muted" }, "none kept"))),
        ))
        : empty("No plugins loaded — upload a .wasm above, or copy one into the gateway's plugins folder (it is loaded at once)."),
    );
  };
  return { refresh: () => reload() };
}

export const pages = {
  overview: { title: "Overview", mount: overview },
  deployments: { title: "Deployments", mount: deployments },
  routes: { title: "Routes", mount: routes },
  requests: { title: "Requests", mount: requests },
  request: { title: "Request", mount: request },
  events: { title: "Events", mount: events },
  plugins: { title: "Plugins", mount: plugins },
};
