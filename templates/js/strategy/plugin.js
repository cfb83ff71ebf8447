// {{name}}: a Switchyard routing strategy written in JavaScript.
//
// `order` returns the indices of the candidates in the order to try them;
// this skeleton keeps the configured order. Build it with
//     scripts/build-lang-plugins path/to/{{name}}
// into path/to/{{name}}.wasm and copy that file into the gateway's plugins/
// folder (it is hot-loaded). There is no stdout: log through `host.log`.
//
// Built with componentize-qjs (QuickJS) from the WIT version and world named
// in the `world` file. An imported WIT interface is a module named after it,
// its functions in camelCase; the exported interface is a const named after
// it. Records are objects with camelCase fields, enums are strings, flags are
// objects of booleans; a `result` is returned (ok) or thrown (err). There is
// no `console` and no `Date.now()` (it traps): take time from
// `host.monotonicNow()`.
import * as host from "switchyard:plugin/host@0.2.0";

// The top level runs at build time (the engine state is snapshotted): host
// imports are not callable there, so read the config on the first call.
let config = null;

function pluginConfig() {
  if (config === null) {
    try {
      config = JSON.parse(host.pluginConfig());
    } catch (_) {
      config = {};
    }
  }
  return config;
}

export const strategy = {
  metadata() {
    return { name: "{{name}}", version: "0.1.0", capabilities: [] };
  },

  order(request, candidates) {
    // `throw "why"` makes the host fall back to the configured order.
    host.log("debug", `ordering ${candidates.length} candidates`);
    return candidates.map((_, i) => i);
  },
};
