"""{{name}}: a Switchyard routing strategy written in Python.

`order` returns the indices of the candidates in the order to try them; this
skeleton keeps the configured order. Build it with
    scripts/build-lang-plugins path/to/{{name}}
into path/to/{{name}}.wasm and copy that file into the gateway's plugins/
folder (it is hot-loaded). stdout goes nowhere: log through `host.log`.

The bindings (`wit_world`, `componentize_py_types`) are generated at build
time from the WIT version and world named in the `world` file.
"""

import json
from typing import List, Optional

from wit_world import exports
from wit_world.exports import strategy
from wit_world.imports import host, types

# Top-level code runs at build time (componentize-py snapshots the module):
# host imports are not callable there, so read the config on the first call.
_config: Optional[dict] = None


def config() -> dict:
    global _config
    if _config is None:
        try:
            _config = json.loads(host.plugin_config())
        except Exception:
            _config = {}
    return _config


class Strategy(exports.Strategy):
    def metadata(self) -> types.Metadata:
        return types.Metadata(name="{{name}}", version="0.1.0", capabilities=[])

    def order(
        self, request: strategy.RequestSummary, candidates: List[strategy.Candidate]
    ) -> List[int]:
        # Raise componentize_py_types.Err("why") to make the host fall back
        # to the configured order.
        host.log(types.LogLevel.DEBUG, f"ordering {len(candidates)} candidates")
        return list(range(len(candidates)))
