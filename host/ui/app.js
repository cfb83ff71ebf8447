// The Switchyard dashboard: login, hash navigation, polling, formatting.
// No framework and no build step: the gateway embeds these files as they are.

import { pages } from "./pages.js";

const TOKEN_KEY = "switchyard.admin.token";
const POLL_MS = 3000;

// ---- DOM ------------------------------------------------------------------

/// Builds an element: h("a", {href: "#/x", class: "c"}, "text", child, ...).
/// Text is always set as text, never parsed as HTML.
export function h(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") e.className = v;
    else if (k.startsWith("on") && typeof v === "function") e.addEventListener(k.slice(2), v);
    else if (v === true) e.setAttribute(k, "");
    else e.setAttribute(k, String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    e.append(c instanceof Node ? c : String(c));
  }
  return e;
}

/// A message for when a list is empty: what it means and what to do.
export function empty(text, ...more) {
  return h("div", { class: "empty", role: "note" }, h("p", {}, text), ...more);
}

/// A table in a scrollable, keyboard-focusable region.
export function table(label, head, rows) {
  return h(
    "div",
    { class: "table-wrap", tabindex: "0", role: "region", "aria-label": label },
    h(
      "table",
      {},
      h("caption", { class: "visually-hidden" }, label),
      h("thead", {}, h("tr", {}, head.map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, rows),
    ),
  );
}

export function badge(text, tone) {
  return h("span", { class: `badge ${tone || ""}` }, text);
}

// ---- numbers with units ---------------------------------------------------

const nf = (d) => new Intl.NumberFormat("en-US", { maximumFractionDigits: d, minimumFractionDigits: d });

export const fmt = {
  /// Milliseconds: µs below 1 ms, s from 10 s.
  ms(v) {
    if (v === null || v === undefined || Number.isNaN(v)) return "–";
    if (v < 1) return `${nf(0).format(v * 1000)} µs`;
    if (v < 10) return `${nf(2).format(v)} ms`;
    if (v < 10000) return `${nf(0).format(v)} ms`;
    return `${nf(1).format(v / 1000)} s`;
  },
  us(v) {
    if (v === null || v === undefined) return "–";
    return v < 1000 ? `${nf(1).format(v)} µs` : fmt.ms(v / 1000);
  },
  pct(v) {
    if (v === null || v === undefined) return "–";
    return `${nf(1).format(v * 100)} %`;
  },
  /// Dollars: cents from $1, up to four decimals below (LLM calls are cheap).
  usd(v) {
    if (v === null || v === undefined) return "–";
    if (Math.abs(v) >= 1 || v === 0) return `$${nf(2).format(v)}`;
    const small = new Intl.NumberFormat("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 4 });
    return `$${small.format(v)}`;
  },
  /// Requests per second; slow rates keep two significant digits.
  rate(v) {
    if (v === null || v === undefined) return "–";
    if (v > 0 && v < 0.1) return `${Number(v.toPrecision(2))} req/s`;
    return `${nf(v < 10 ? 2 : 1).format(v)} req/s`;
  },
  int(v) {
    if (v === null || v === undefined) return "–";
    return nf(0).format(v);
  },
  count(v, unit) {
    return `${fmt.int(v)} ${unit}`;
  },
  time(ms) {
    if (!ms) return "–";
    const d = new Date(ms);
    return d.toLocaleString(undefined, { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit" });
  },
  /// "12 s ago", "5 min ago".
  ago(ms) {
    if (!ms) return "never";
    const s = Math.max(0, (Date.now() - ms) / 1000);
    if (s < 60) return `${Math.round(s)} s ago`;
    if (s < 3600) return `${Math.round(s / 60)} min ago`;
    if (s < 86400) return `${Math.round(s / 3600)} h ago`;
    return `${Math.round(s / 86400)} d ago`;
  },
};

// ---- the admin API --------------------------------------------------------

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

/// Calls the admin API with the token; a 401 logs out. Resolves to the JSON
/// body; rejects with an ApiError carrying the API's own message.
export async function api(path, options = {}) {
  const headers = new Headers(options.headers || {});
  if (token()) headers.set("Authorization", `Bearer ${token()}`);
  const r = await fetch(path, { ...options, headers, cache: "no-store" });
  const text = await r.text();
  let body = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = null;
  }
  if (r.status === 401 && !options.probe) {
    logout("Your session's token was refused: log in again.");
  }
  if (!r.ok) {
    throw new ApiError(r.status, (body && body.error && body.error.message) || `${r.status} ${r.statusText}`);
  }
  return body;
}

// ---- login ----------------------------------------------------------------

let authRequired = true;

function showLogin(message) {
  document.body.classList.add("logged-out");
  document.getElementById("app").hidden = true;
  const login = document.getElementById("login");
  login.hidden = false;
  const msg = document.getElementById("login-message");
  msg.textContent = message || "";
  document.getElementById("token").focus();
}

function showApp() {
  document.body.classList.remove("logged-out");
  document.getElementById("login").hidden = true;
  document.getElementById("app").hidden = false;
  document.getElementById("logout").hidden = !authRequired;
}

function logout(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  stopPolling();
  showLogin(message);
}

async function login(event) {
  event.preventDefault();
  const input = document.getElementById("token");
  const value = input.value.trim();
  if (!value) {
    showLogin("Enter the admin token (the value of the variable admin.token_env names).");
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, value);
  try {
    await api("/admin/budgets", { probe: true });
  } catch (e) {
    sessionStorage.removeItem(TOKEN_KEY);
    showLogin(e.status === 401 ? "That token was refused: check the value of the variable admin.token_env names." : e.message);
    return;
  }
  input.value = "";
  start();
}

// ---- navigation and polling -----------------------------------------------

/// The page and its parameters from the hash: #/requests?route=demo.
export function parseHash() {
  const raw = location.hash.replace(/^#\/?/, "");
  const [path, query] = raw.split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  return { page: parts[0] || "overview", rest: parts.slice(1), params: new URLSearchParams(query || "") };
}

export function go(page, params) {
  const q = params && [...params].length ? `?${params}` : "";
  location.hash = `#/${page}${q}`;
}

let timer = null;
let current = null;
let generation = 0;

function stopPolling() {
  if (timer) clearTimeout(timer);
  timer = null;
}

/// The header's live indicator; the detail is hidden on a phone.
function setStatus(ok, text, detail) {
  const live = document.getElementById("live");
  live.className = ok ? "live ok" : "live stale";
  live.replaceChildren(text, detail ? h("span", { class: "when" }, detail) : "");
}

async function refresh() {
  stopPolling();
  const mine = generation;
  if (current && current.refresh) {
    try {
      await current.refresh();
      if (mine === generation) setStatus(true, "Live", ` · updated ${new Date().toLocaleTimeString()}`);
    } catch (e) {
      if (mine === generation) setStatus(false, `Not updated: ${e.message}`);
    }
  }
  // A page may poll less often (the long overview windows cost the store more).
  if (mine === generation && !document.hidden) timer = setTimeout(refresh, (current && current.every) || POLL_MS);
}

async function route() {
  if (authRequired && !token()) return showLogin();
  showApp();
  generation += 1;
  stopPolling();
  const { page, rest, params } = parseHash();
  const def = pages[page] || pages.overview;
  const name = pages[page] ? page : "overview";
  for (const a of document.querySelectorAll("#nav a")) {
    if (a.dataset.page === name || (name === "request" && a.dataset.page === "requests")) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  const main = document.getElementById("main");
  main.replaceChildren();
  document.title = `${def.title} · Switchyard`;
  current = def.mount(main, { rest, params });
  await refresh();
}

function start() {
  showApp();
  route();
}

async function boot() {
  document.getElementById("login-form").addEventListener("submit", login);
  document.getElementById("logout").addEventListener("click", () => logout("Logged out."));
  window.addEventListener("hashchange", route);
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && !document.getElementById("app").hidden) refresh();
  });
  try {
    const r = await fetch("/ui/auth.json", { cache: "no-store" });
    authRequired = (await r.json()).token_required !== false;
  } catch {
    authRequired = true;
  }
  if (authRequired && !token()) showLogin();
  else start();
}

boot();
