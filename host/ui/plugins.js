// Plugins: what runs, upload (checked before it is written) and rollback.

import { api, h, fmt, empty, table, badge } from "./app.js";
import { update, problem, tone, field } from "./widgets.js";

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

export function plugins(root) {
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

