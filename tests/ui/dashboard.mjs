// The dashboard's browser test: playwright-core drives Debian's Chromium
// (headless, no sandbox, no background networking) against a running
// gateway that tests/e2e/ui.rs started and sent a traffic mix through.
//
// Environment (set by tests/e2e/ui.rs):
//   SWITCHYARD_ADMIN_URL, SWITCHYARD_ADMIN_TOKEN  the admin listener and token
//   SWITCHYARD_API_URL                            the API (more traffic)
//   SWITCHYARD_CONFIG                             the config file (rewritten to take a deployment down)
//   SWITCHYARD_REFUSED_PORT                       a loopback port nothing listens on
//   SWITCHYARD_UPLOAD_A, SWITCHYARD_UPLOAD_B      two strategy plugin files to upload
//   SWITCHYARD_SCREENSHOTS                        where the screenshots go
//   SWITCHYARD_EXPECT                             {"requests", "errors", "failed_over"} of the traffic mix
//
// Every wait is bounded; any console error or page error fails the test
// (except the few responses the test provokes on purpose, listed below).

import { chromium } from "playwright-core";
import { readFileSync, writeFileSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import assert from "node:assert/strict";

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set: run this through cargo test --release --test e2e -- ui`);
  return v;
};
const ADMIN = env("SWITCHYARD_ADMIN_URL");
const TOKEN = env("SWITCHYARD_ADMIN_TOKEN");
const API = env("SWITCHYARD_API_URL");
const CONFIG = env("SWITCHYARD_CONFIG");
const REFUSED = env("SWITCHYARD_REFUSED_PORT");
const SHOTS = env("SWITCHYARD_SCREENSHOTS");
const EXPECT = JSON.parse(env("SWITCHYARD_EXPECT"));
const WAIT = 15000;
const t0 = Date.now();
// The whole run is bounded too (a hung browser must not hang the suite).
setTimeout(() => {
  console.error("dashboard.mjs: gave up after 120 s");
  process.exit(2);
}, 120000).unref();

function step(name) {
  console.log(`[${((Date.now() - t0) / 1000).toFixed(1)} s] ${name}`);
}

async function admin(path, options = {}) {
  const r = await fetch(`${ADMIN}${path}`, { ...options, headers: { Authorization: `Bearer ${TOKEN}`, ...(options.headers || {}) } });
  const body = await r.json();
  if (!r.ok) throw new Error(`${path}: ${r.status} ${JSON.stringify(body)}`);
  return body;
}

async function chat(model) {
  const r = await fetch(`${API}/v1/chat/completions`, {
    method: "POST",
    body: JSON.stringify({ model, messages: [{ role: "user", content: "hello there" }] }),
  });
  await r.arrayBuffer();
  return { status: r.status, deployment: r.headers.get("x-switchyard-deployment") };
}

/// Polls `check` until it returns a truthy value (bounded).
async function until(what, check, ms = WAIT) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

function rewriteConfig(change) {
  const c = JSON.parse(readFileSync(CONFIG, "utf8"));
  change(c);
  writeFileSync(CONFIG, JSON.stringify(c, null, 2));
}

// Responses the test provokes on purpose (Chromium logs every failed
// response as a console error): a gateway without shadow strategies
// answers 404 to /admin/shadow, a wrong token 401, an invalid upload 422.
const expected = [
  { status: 404, url: "/admin/shadow" },
  { status: 401, url: "/admin/budgets", phase: "wrong-token" },
  { status: 422, url: "/admin/plugins/junk.wasm" },
];
let phase = "";
const problems = [];

const profile = mkdtempSync(join(tmpdir(), "switchyard-ui-"));
// A fresh profile each run (Playwright passes it as --user-data-dir).
const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  timeout: 30000,
  viewport: { width: 1280, height: 800 },
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});

try {
  const page = context.pages()[0] || (await context.newPage());
  page.setDefaultTimeout(WAIT);
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  page.on("console", (m) => {
    if (m.type() !== "error") return;
    const url = (m.location() && m.location().url) || "";
    const ok = expected.some((x) => url.includes(x.url) && m.text().includes(`status of ${x.status}`) && (!x.phase || x.phase === phase));
    if (!ok) problems.push(`console error: ${m.text()} (${url})`);
  });
  const shot = async (name) => page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });

  // ---- login -------------------------------------------------------------
  step("login");
  await page.goto(`${ADMIN}/ui`);
  await page.locator("#token").waitFor();
  assert.ok(!page.url().includes(TOKEN));
  await shot("login");
  phase = "wrong-token";
  await page.fill("#token", "not-the-token");
  await page.press("#token", "Enter");
  await page.locator("#login-message", { hasText: "refused" }).waitFor();
  phase = "";
  await page.fill("#token", TOKEN);
  await page.click("#login-form button[type=submit]");
  await page.locator("#overview-cards [data-stat=requests]").waitFor();
  assert.ok(!page.url().includes(TOKEN), "the token never goes into the URL");
  assert.equal(await page.evaluate(() => sessionStorage.getItem("switchyard.admin.token")), TOKEN);

  // ---- overview: the numbers are the admin API's ---------------------------
  step("overview");
  const series = await admin("/admin/series?window=1h");
  const t = series.totals;
  assert.equal(t.requests, EXPECT.requests, "the traffic mix is in the store");
  assert.equal(t.errors, EXPECT.errors);
  assert.equal(t.failed_over, EXPECT.failed_over);
  const card = (id) => page.locator(`#overview-cards [data-stat=${id}]`);
  await until("the overview showing every request", async () => (await card("requests").getAttribute("data-raw")) === String(t.requests));
  const same = {
    requests: t.requests, error_rate: t.error_rate, latency_p50_ms: t.latency_p50_ms, latency_p95_ms: t.latency_p95_ms,
    overhead_p50_ms: t.overhead_p50_ms, today_usd: series.spend.today_usd, month_usd: series.spend.month_usd,
  };
  for (const [id, v] of Object.entries(same)) {
    assert.equal(await card(id).getAttribute("data-raw"), String(v), `overview ${id}`);
  }
  const text = async (id) => (await card(id).locator(".value").textContent()).trim();
  assert.equal(await text("requests"), `${t.requests} requests`);
  assert.equal(await text("error_rate"), `${(t.error_rate * 100).toFixed(1)} %`);
  for (const id of ["latency_p50_ms", "latency_p95_ms", "overhead_p50_ms"]) {
    assert.match(await text(id), /^[\d.,]+ (µs|ms|s)$/, `${id} has a unit`);
  }
  assert.ok(series.spend.today_usd > 0, "the traffic was priced");
  assert.match(await text("today_usd"), /^\$[\d.,]+$/);
  assert.equal(await text("cache_hit_rate"), "–", "no route caches");
  assert.equal(await page.locator(".charts svg.chart").count(), 4);
  await shot("overview");
  await page.click("a[href='#/overview?window=24h']");
  await page.locator(".segmented a[aria-current=true]", { hasText: "24h" }).waitFor();
  // Keyboard: after a reload (still logged in: the tab's session storage),
  // the first Tab reaches the skip link, the next ones the navigation.
  await page.goto(`${ADMIN}/ui#/overview`);
  await page.reload();
  await page.locator("#overview-cards [data-stat=requests]").waitFor();
  await page.keyboard.press("Tab");
  assert.equal(await page.evaluate(() => document.activeElement.className), "skip");
  await page.keyboard.press("Tab");
  await page.keyboard.press("Tab");
  assert.equal(await page.evaluate(() => document.activeElement.dataset.page), "overview");

  // ---- requests: a request's attempts, then the filters ----------------------
  step("requests");
  await page.click("#nav a[data-page=requests]");
  await until("the request log", async () => (await page.locator("#requests tr[data-request]").count()) === EXPECT.requests);
  await shot("requests");
  await page.selectOption("#f-route", "flaky");
  await page.click("form.filters button[type=submit]");
  await until("the route filter", async () => page.url().includes("route=flaky") && (await page.locator("#requests tr[data-request]").count()) === 2);
  await page.locator("#requests tr[data-request] a").first().click();
  await page.locator("#request tr[data-attempt]").nth(1).waitFor();
  const attempts = page.locator("#request tr[data-attempt]");
  assert.equal(await attempts.count(), 2, "the failed attempt and the answer");
  assert.match(await attempts.nth(0).textContent(), /broken/);
  assert.match(await attempts.nth(1).textContent(), /backup/);
  await shot("request");
  await page.goto(`${ADMIN}/ui#/requests?status=502`);
  await until("the status filter", async () => (await page.locator("#requests tr[data-request]").count()) === 1);
  assert.match(await page.locator("#requests tr[data-request]").textContent(), /lonely/);
  assert.equal(await page.inputValue("#f-status"), "502");
  // A time range that ended before the traffic began holds none of it.
  await page.goto(`${ADMIN}/ui#/requests?to=2020-01-01T00:00`);
  await page.locator("#requests .empty", { hasText: "No requests match" }).waitFor();
  assert.equal(await page.inputValue("#f-to"), "2020-01-01T00:00");
  await page.goto(`${ADMIN}/ui#/requests?route=nothing-here`);
  await page.locator("#requests .empty", { hasText: "No requests match" }).waitFor();

  // ---- routes ---------------------------------------------------------------
  step("routes");
  await page.click("#nav a[data-page=routes]");
  await page.locator("#routes tr[data-route=flaky]").waitFor();
  assert.match(await page.locator("#routes tr[data-route=flaky]").textContent(), /broken.*backup/s);
  assert.match(await page.locator("#routes tr[data-route=chat]").textContent(), /none$/, "no shadow strategies (404)");
  await shot("routes");
  // A gateway with shadow strategies answers /admin/shadow: its agreement
  // is shown (answered here by the browser, as this build has none).
  await page.route("**/admin/shadow", (r) => r.fulfill({
    status: 200,
    contentType: "application/json",
    body: JSON.stringify({ routes: [{ route: "chat", live: "priority", shadows: [{
      strategy: "cost-aware", decisions: 120, agreement: 0.83,
      what_if: { cost_usd: 0.012, latency_p50_ms: 210.0 }, live_stats: { cost_usd: 0.015, latency_p50_ms: 190.0 },
    }] }] }),
  }));
  await page.click("#nav a[data-page=overview]");
  await page.click("#nav a[data-page=routes]");
  await page.locator("#routes tr[data-route=chat] [data-shadow=cost-aware]", { hasText: "83.0 % agreement over 120 decisions" }).waitFor();
  await shot("routes-shadow");
  await page.unroute("**/admin/shadow");

  // ---- a deployment goes down and comes back -----------------------------------
  step("deployment down");
  const circuit = (name) => page.locator(`#deployments [data-deployment=${name}] [data-circuit]`).getAttribute("data-circuit");
  await page.click("#nav a[data-page=deployments]");
  await page.locator("#deployments [data-deployment=primary]").waitFor();
  assert.equal(await circuit("primary"), "closed");
  // Each limit with its use and headroom; keys by variable and state only.
  const limits = await page.locator("#deployments [data-deployment=primary] table").textContent();
  assert.match(limits, /rpm.*600/s);
  assert.match(limits, /tpm.*100,000/s);
  const backupCard = await page.locator("#deployments [data-deployment=backup]").textContent();
  assert.match(backupCard, /UI_BACKUP_KEY\s*active/);
  assert.ok(!backupCard.includes("sk-test"), "a key's value never reaches the page");
  await shot("deployments");
  let upstream;
  rewriteConfig((c) => {
    upstream = c.deployments.primary.base_url;
    c.deployments.primary.base_url = `http://127.0.0.1:${REFUSED}/v1`;
  });
  await until("the config reload", async () => {
    const d = await admin("/admin/deployments");
    return d.data.find((x) => x.name === "primary").base_url.includes(`:${REFUSED}/`);
  });
  for (let i = 0; i < 3; i++) {
    const r = await chat("chat");
    assert.equal(r.status, 200, "the backup answers");
    assert.equal(r.deployment, "backup");
  }
  // Open while it cools down, then half-open until a request probes it.
  await until("the circuit shown open", async () => ["open", "half_open"].includes(await circuit("primary")), 20000);
  await shot("deployment-down");

  step("deployment back");
  rewriteConfig((c) => {
    c.deployments.primary.base_url = upstream;
  });
  await until("the config reload", async () => {
    const d = await admin("/admin/deployments");
    return d.data.find((x) => x.name === "primary").base_url === upstream;
  });
  // After the cool-down (2 s) one request probes the deployment.
  await until("the primary answering again", async () => (await chat("chat")).deployment === "primary", 20000);
  await until("the circuit shown closed", async () => (await circuit("primary")) === "closed", 20000);
  await shot("deployment-back");

  // ---- events ------------------------------------------------------------------
  step("events");
  await page.click("#nav a[data-page=events]");
  await page.locator("#events tr[data-kind=failover]").first().waitFor();
  await page.locator("#events tr[data-kind=circuit_open]").first().waitFor();
  await page.selectOption("#f-type", "circuit_open");
  await page.click("form.filters button[type=submit]");
  await until("the kind filter", async () => {
    const kinds = await page.locator("#events tr[data-kind]").evaluateAll((rows) => rows.map((r) => r.dataset.kind));
    return kinds.length > 0 && kinds.every((k) => k === "circuit_open");
  });
  await page.goto(`${ADMIN}/ui#/events`);
  await page.locator("#events tr[data-kind]").first().waitFor();
  await shot("events");

  // ---- plugins: upload, see it active, roll back ---------------------------------
  step("plugins");
  await page.click("#nav a[data-page=plugins]");
  await page.locator("#plugins tr[data-plugin=priority]").waitFor();
  // A file that is not a plugin is refused and not written.
  await page.setInputFiles("#plugin-file", { name: "junk.wasm", mimeType: "application/wasm", buffer: Buffer.from("not a plugin") });
  await page.click("form.upload button[type=submit]");
  await page.locator("#plugin-status", { hasText: "would be refused" }).waitFor();
  assert.match(await page.locator("#plugin-status").textContent(), /no wasm header/);
  assert.equal(await page.locator("#plugins tr[data-plugin=junk]").count(), 0);

  const upload = async (file) => {
    await page.setInputFiles("#plugin-file", file);
    await page.fill("#plugin-name", "canary");
    await page.click("form.upload button[type=submit]");
  };
  const row = page.locator("#plugins tr[data-plugin=canary]");
  await upload(env("SWITCHYARD_UPLOAD_A"));
  await page.locator("#plugin-status", { hasText: "canary.wasm added" }).waitFor({ timeout: 30000 });
  await until("canary active", async () => (await row.count()) === 1 && (await row.getAttribute("data-state")) === "active");
  const first = await row.getAttribute("data-hash");
  await upload(env("SWITCHYARD_UPLOAD_B"));
  await page.locator("#plugin-status", { hasText: "canary.wasm replaced" }).waitFor({ timeout: 30000 });
  await until("the new version active", async () => (await row.getAttribute("data-hash")) !== first && (await row.getAttribute("data-state")) === "active");
  const listed = (await admin("/admin/plugins")).data.find((p) => p.id === "canary");
  assert.equal(listed.state, "active");
  assert.equal(listed.previous_hash, first);
  await shot("plugins");
  await row.locator("button[data-rollback=canary]").click();
  await page.locator("#plugin-status", { hasText: "canary rolled back" }).waitFor({ timeout: 30000 });
  await until("the previous version back", async () => (await row.getAttribute("data-hash")) === first && (await row.getAttribute("data-state")) === "active");
  await shot("plugins-rolled-back");

  // ---- a phone's width -------------------------------------------------------------
  step("phone");
  await page.setViewportSize({ width: 390, height: 844 });
  await page.goto(`${ADMIN}/ui#/overview`);
  await page.locator("#overview-cards [data-stat=requests]").waitFor();
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 1, `the page scrolls sideways on a phone by ${overflow} px`);
  await shot("overview-phone");
  // Wide tables scroll inside their own region, never the page.
  for (const [name, ready] of [
    ["deployments", "#deployments [data-deployment=primary]"],
    ["requests", "#requests tr[data-request]"],
    ["plugins", "#plugins tr[data-plugin=canary]"],
  ]) {
    await page.goto(`${ADMIN}/ui#/${name}`);
    await page.locator(ready).first().waitFor();
    const wide = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(wide <= 1, `${name} scrolls sideways on a phone by ${wide} px`);
    await shot(`${name}-phone`);
  }

  // Log out: the token leaves session storage.
  await page.setViewportSize({ width: 1280, height: 800 });
  await page.click("#logout");
  await page.locator("#token").waitFor();
  assert.equal(await page.evaluate(() => sessionStorage.getItem("switchyard.admin.token")), null);

  assert.deepEqual(problems, [], "no console errors or page errors");
  step("done");
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
