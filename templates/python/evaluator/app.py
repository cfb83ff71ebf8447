"""{{name}}: a Switchyard response evaluator written in Python.

`evaluate` gets the canonical request and response (OpenAI chat-completions
JSON) and returns a verdict; this skeleton passes any answer with content or
tool calls. Build it with
    scripts/build-lang-plugins path/to/{{name}}
into path/to/{{name}}.wasm and copy that file into the gateway's plugins/
folder (it is hot-loaded). stdout goes nowhere: log through `host.log`.

The bindings (`wit_world`, `componentize_py_types`) are generated at build
time from the WIT version and world named in the `world` file.
"""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports import evaluator
from wit_world.imports import host, types


class Evaluator(exports.Evaluator):
    def metadata(self) -> types.Metadata:
        return types.Metadata(name="{{name}}", version="0.1.0", capabilities=[])

    def evaluate(self, request: str, response: str) -> evaluator.Verdict:
        try:
            answer = json.loads(response)
        except ValueError as e:
            raise Err(f"response is not JSON: {e}")
        reasons = []
        for choice in answer.get("choices") or []:
            message = choice.get("message") or {}
            if not (message.get("content") or message.get("tool_calls")):
                reasons.append(f"choice {choice.get('index', 0)} is empty")
        if not answer.get("choices"):
            reasons.append("no choices")
        if reasons:
            host.log(types.LogLevel.DEBUG, "; ".join(reasons))
        return evaluator.Verdict(score=0.0 if reasons else 1.0, pass_=not reasons, reasons=reasons)
