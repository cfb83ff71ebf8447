"""reverse-print: a tiny Switchyard strategy plugin written in Python.

Built with componentize-py against world `strategy-plugin` of wit/plugin.wit.
`order` returns the candidate indices in reverse order.

Behaviour is chosen by the host's `plugin-config` JSON for this plugin id:
  {"print": true}   -> also `print("ordering", n)` to stdout (WASI stdio)
  anything else     -> quiet: log through the host interface instead
The same source is built twice (see build.sh): reverse_print.wasm (configured
with {"print": true}) and reverse_quiet.wasm (no config).

The bindings (`wit_world`, `componentize_py_types`) are generated at build time
into /tmp, never committed.
"""

import json
from typing import List

from wit_world import exports
from wit_world.exports import strategy
from wit_world.imports import host, types

# componentize-py runs module top-level code at *build* time (pre-initialised
# snapshot), where host imports are not callable: read the config lazily.
_print = None


def _wants_print() -> bool:
    global _print
    if _print is None:
        try:
            _print = json.loads(host.plugin_config()).get("print") is True
        except Exception:
            _print = False
    return _print


class Strategy(exports.Strategy):
    def metadata(self) -> types.Metadata:
        return types.Metadata(
            name="reverse-print",
            version="0.1.0",
            kind=types.PluginKind.STRATEGY,
            capabilities=[],
        )

    def order(
        self, request: strategy.RequestSummary, candidates: List[strategy.Candidate]
    ) -> List[int]:
        if _wants_print():
            # flush=True: write through WASI stdout on every call, not only
            # when Python's 8 KiB stdout buffer fills.
            print("ordering", len(candidates), flush=True)
        else:
            host.log(types.LogLevel.INFO, f"ordering {len(candidates)}")
        return list(range(len(candidates) - 1, -1, -1))
