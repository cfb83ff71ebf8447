// {{name}}: a Switchyard response evaluator written in JavaScript.
//
// `evaluate` gets the canonical request and response (OpenAI chat-completions
// JSON) and returns a verdict; this skeleton passes any answer with content or
// tool calls. Build it with
//     scripts/build-lang-plugins path/to/{{name}}
// into path/to/{{name}}.wasm and copy that file into the gateway's plugins/
// folder (it is hot-loaded). There is no stdout: log through `host.log`.
//
// Built with componentize-qjs (QuickJS) from the WIT version and world named
// in the `world` file. Records are objects with camelCase fields, enums are
// strings; a `result` is returned (ok) or thrown (err).
import * as host from "switchyard:plugin/host@0.2.0";

export const evaluator = {
  metadata() {
    return { name: "{{name}}", version: "0.1.0", capabilities: [] };
  },

  evaluate(request, response) {
    let answer;
    try {
      answer = JSON.parse(response);
    } catch (e) {
      throw `response is not JSON: ${e.message}`;
    }
    const choices = Array.isArray(answer.choices) ? answer.choices : [];
    const reasons = [];
    if (choices.length === 0) reasons.push("no choices");
    for (const choice of choices) {
      const message = choice.message || {};
      if (!message.content && !(message.tool_calls || []).length) {
        reasons.push(`choice ${choice.index ?? 0} is empty`);
      }
    }
    if (reasons.length) host.log("debug", reasons.join("; "));
    return { score: reasons.length ? 0 : 1, pass: reasons.length === 0, reasons };
  },
};
