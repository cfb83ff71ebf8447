// cheapest-strategy: a Switchyard routing strategy written in JavaScript.
//
// Orders a route's candidates: healthy ones first, then by price (input plus
// output cost per million tokens), ties kept in configured order. Logs one line per
// call through the host's `log` import.
//
// Config (the plugin's block in the gateway config, read through the host's
// `plugin-config` import):
//   {"max_candidates": 2}   try at most the two cheapest deployments (default: all)
//
// Build: scripts/build-lang-plugins examples/js/cheapest-strategy
//    ->  examples/js/cheapest-strategy.wasm
//
// Built with componentize-qjs (QuickJS) against wit/v0.2, world
// `strategy-plugin` (named in the `world` file beside this one). An imported
// WIT interface is a module named after it, its functions in camelCase; the
// exported interface is a const named after it. Records are objects with
// camelCase fields, enums are strings; a `result` is returned (ok) or thrown
// (err). There is no `console` and no `Date.now()` (it traps): log through
// `host.log`, take time from `host.monotonicNow()`.
import * as host from "switchyard:plugin/host@0.2.0";

// The module's top level runs at *build* time (the engine state is
// snapshotted): host imports are not callable there, so read the config on
// the first call.
let maxCandidates = null;

function limit() {
  if (maxCandidates === null) {
    maxCandidates = 0;
    try {
      const value = JSON.parse(host.pluginConfig()).max_candidates;
      if (Number.isInteger(value) && value > 0) maxCandidates = value;
    } catch (_) {
      // Not JSON: keep the default.
    }
  }
  return maxCandidates;
}

const price = (c) => c.inputCostPer1m + c.outputCostPer1m;

export const strategy = {
  metadata() {
    return { name: "cheapest", version: "0.1.0", capabilities: [] };
  },

  order(request, candidates) {
    if (candidates.length === 0) return [];
    // Array.prototype.sort is stable: equal candidates keep configured order.
    let ranked = candidates
      .map((_, i) => i)
      .sort((a, b) => {
        const ca = candidates[a];
        const cb = candidates[b];
        if (ca.healthy !== cb.healthy) return ca.healthy ? -1 : 1;
        return price(ca) - price(cb);
      });
    const n = limit();
    if (n > 0) ranked = ranked.slice(0, n);
    host.log("info", `cheapest: ${candidates[ranked[0]].deployment} first of ${ranked.length} for ${request.model}`);
    return ranked;
  },
};
