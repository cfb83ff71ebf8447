// The overview: the window's figures against the admin API's series, charts
// and budgets.

import { api, h, fmt, empty, table } from "./app.js";
import { chart, legend } from "./charts.js";
import { update, problem } from "./widgets.js";

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

export function overview(root, { params }) {
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
    // The day and week ranges sort more of the store for their percentiles
    // and change slowly: every 15 s is live enough.
    every: win === "1h" ? undefined : 15000,
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

