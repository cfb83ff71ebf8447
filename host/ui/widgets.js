// Pieces the dashboard's pages share: regions re-rendered only when their
// data changed, state colours, fact lists and filter fields.

import { h, empty, badge } from "./app.js";

export const PAGE_SIZE = 25;

/// Replaces `region`'s content with `render(data)` when `data` changed.
export function update(region, data, render) {
  const key = JSON.stringify(data);
  if (region.dataset.key === key) return;
  region.dataset.key = key;
  region.replaceChildren(...[render(data)].flat().filter(Boolean));
}

/// An API error shown in place of the data (e.g. the store is off).
export function problem(region, e) {
  region.dataset.key = "";
  region.replaceChildren(empty(e.message));
}

export function dayStartMs() {
  const d = new Date();
  return Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate());
}

export function tone(state) {
  return {
    active: "ok", closed: "ok", healthy: "ok", success: "ok", ok: "ok", available: "ok",
    quarantined: "warn", half_open: "warn", rate_limited: "warn", cooling_down: "warn", cooling: "warn",
    rejected: "bad", open: "bad", down: "bad", failed: "bad", unhealthy: "bad", revoked: "bad", unset: "bad",
  }[state] || "";
}

export function dl(pairs) {
  return h("dl", { class: "facts" }, pairs.filter(Boolean).map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}

export const SINCE = { "": "any time", "15m": "last 15 min", "1h": "last hour", "24h": "last day", "7d": "last week" };

export function field(label, control) {
  return h("label", { class: "field" }, h("span", {}, label), control);
}

export function select(name, options, value) {
  return h("select", { name, id: `f-${name}` }, options.map(([v, text]) => h("option", { value: v, selected: v === value }, text)));
}

export function statusBadge(status) {
  return badge(String(status), status < 300 ? "ok" : status < 500 ? "warn" : "bad");
}

