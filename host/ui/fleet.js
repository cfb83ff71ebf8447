// Deployments (live health, circuit, limits, rolling figures) and routes
// (strategy, order, fallbacks, shadow strategies).

import { api, h, fmt, empty, table, badge } from "./app.js";
import { update, problem, dayStartMs, tone, dl } from "./widgets.js";

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
      ["Headroom (tightest limit)", fmt.pct(d.health.headroom)],
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

export function deployments(root) {
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
/// A route's shadow strategies: each configured one with its figures, or
/// a note that it has decided nothing yet (also any with past decisions).
function shadowCell(configured, figures) {
  const ids = [...new Set([...configured, ...figures.map((s) => s.strategy)])];
  if (!ids.length) return "none";
  return h("ul", { class: "plain" }, ids.map((id) => {
    const s = figures.find((f) => f.strategy === id);
    return h("li", { "data-shadow": id }, s ? shadowLine(s) : [h("strong", {}, id), h("span", { class: "muted" }, ": no decisions in the last 24 h yet")]);
  }));
}

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

export function routes(root) {
  const list = h("div", { id: "routes" });
  root.append(h("h1", {}, "Routes"), list);
  // Shadow strategies' figures: a gateway without a store answers 404;
  // asked at most every 30 s (they read a day of decisions).
  let shadow;
  let shadowAt = 0;
  return {
    async refresh() {
      if (shadow !== null && Date.now() - shadowAt > 30000) {
        shadowAt = Date.now();
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
              h("td", {}, shadowCell(x.shadow_strategies || [], shadows[x.name] || [])),
            )))
          : empty("No routes configured — add one under routes in the config file, naming its deployments."),
      );
    },
  };
}

