// The request log with its filters, one request's attempts, and events.

import { api, h, fmt, empty, table, badge, go } from "./app.js";
import { update, problem, tone, dl, field, select, statusBadge, SINCE, PAGE_SIZE } from "./widgets.js";

const EVENT_KINDS = [
  "failover", "retry", "resume", "failover_alert", "circuit_open", "circuit_closed",
  "health_down", "health_up", "rate_limit_warning", "rate_limit_reached",
  "budget_alert", "degradation_alert", "key_revoked",
];

export function requests(root, { params }) {
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

export function request(root, { rest }) {
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

export function events(root, { params }) {
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

