// {{name}}: a Switchyard provider adapter written in JavaScript.
//
// This skeleton passes OpenAI chat-completions through: `buildRequest` posts
// the canonical request to `/chat/completions`, `parseResponse` returns the
// body (naming the deployment as `model`), `classifyError` maps the status,
// and the stream functions pass SSE chunks through, keeping a small JSON
// state that the host hands back on every call (any instance may serve any
// call: keep nothing in globals). Change what your upstream needs.
//
// Build it with
//     scripts/build-lang-plugins path/to/{{name}}
// into path/to/{{name}}.wasm and copy that file into the gateway's plugins/
// folder (it is hot-loaded). There is no stdout: log through `host.log`.
//
// Built with componentize-qjs (QuickJS) from the WIT version and world named
// in the `world` file. Records are objects with camelCase fields, enums are
// strings, variants are `{ tag, val }`, `option` is a value or null,
// `list<u8>` is a Uint8Array (there is no TextEncoder: see utf8.js); a
// `result` is returned (ok) or thrown (err).
import * as host from "switchyard:plugin/host@0.2.0";
import * as utf8 from "./utf8.js";

const u32 = (v) => Math.min(Math.max(Math.trunc(Number(v) || 0), 0), 0xffffffff);

// Response headers arrive as one string: a `name: value` line each, names
// in lower case, each line ending in "\n".
const header = (headers, name) => {
  for (const line of headers.split("\n")) {
    const colon = line.indexOf(":");
    if (colon > 0 && line.slice(0, colon) === name) return line.slice(colon + 1).trim();
  }
  return null;
};

function usageOf(body) {
  const u = body.usage;
  if (!u || typeof u !== "object") return null;
  return {
    promptTokens: u32(u.prompt_tokens),
    completionTokens: u32(u.completion_tokens),
    cachedPromptTokens: u32(u.prompt_tokens_details?.cached_tokens),
    reasoningTokens: u32(u.completion_tokens_details?.reasoning_tokens),
    cacheWriteTokens: u32(u.prompt_tokens_details?.cache_creation_tokens),
  };
}

// quota: read the upstream's rate-limit headers into a quota-hint here.
const upstreamError = (tag, message, val) => ({
  class: val === undefined ? { tag } : { tag, val },
  message,
  quota: null,
});

function readState(bytes) {
  try {
    return bytes.length ? JSON.parse(utf8.decode(bytes)) : {};
  } catch (_) {
    return {};
  }
}
const writeState = (state) => utf8.encode(JSON.stringify(state));

// The [name, data] of each event: the host packs them back to back in one
// string, with two end offsets (in UTF-8 bytes) per event.
function eventsOf(events) {
  const raw = utf8.encode(events.text);
  const out = [];
  let start = 0;
  for (let k = 0; k + 1 < events.ends.length; k += 2) {
    const nameEnd = events.ends[k];
    const dataEnd = events.ends[k + 1];
    out.push([utf8.decode(raw.subarray(start, nameEnd)), utf8.decode(raw.subarray(nameEnd, dataEnd))]);
    start = dataEnd;
  }
  return out;
}

export const adapter = {
  metadata() {
    return {
      name: "{{name}}",
      version: "0.1.0",
      capabilities: ["streaming"],
      auth: { tag: "bearer" },
      framing: "sse",
      // The response headers this adapter reads (names, or prefixes ending
      // in "-"); null: all of them.
      responseHeaders: ["date", "retry-after", "x-ratelimit-"],
    };
  },

  buildRequest(target, request) {
    let body;
    try {
      body = JSON.parse(request);
    } catch (e) {
      throw { tag: "invalid-request", val: `request is not JSON: ${e.message}` };
    }
    body.model = target.model;
    return {
      method: "POST",
      path: "/chat/completions",
      headers: [["content-type", "application/json"]],
      body: utf8.encode(JSON.stringify(body)),
    };
  },

  parseResponse(target, response) {
    let body;
    try {
      body = JSON.parse(utf8.decode(response.body));
    } catch (e) {
      throw upstreamError("permanent", `answer is not JSON: ${e.message}`);
    }
    body.model = target.deployment;
    return { body: JSON.stringify(body), usage: usageOf(body), quota: null };
  },

  classifyError(response) {
    const status = response.status;
    let message = `upstream answered ${status}`;
    let code = "";
    try {
      const error = JSON.parse(utf8.decode(response.body)).error;
      if (error && typeof error === "object") {
        message = String(error.message || message);
        code = String(error.code || "");
      }
    } catch (_) {
      // Not JSON: keep the status line.
    }
    if (status === 429) {
      const seconds = parseFloat(header(response.headers, "retry-after") ?? "");
      return upstreamError("rate-limited", message, Number.isFinite(seconds) ? u32(seconds * 1000) : null);
    }
    if (status >= 500) return upstreamError("overloaded", message);
    if (status === 401 || status === 403) return upstreamError("auth", message);
    if (status === 400 && code === "context_length_exceeded") return upstreamError("context-length-exceeded", message);
    if (status === 400) return upstreamError("invalid-request", message);
    return upstreamError("permanent", message);
  },

  beginStream(target, request, headers) {
    // Later calls are not given the target: keep what they need of it.
    return { state: writeState({ done: false, deployment: target.deployment }), quota: null };
  },

  parseStream(state, events) {
    const st = readState(state);
    const chunks = [];
    let usage = null;
    let malformed = 0;
    for (const [, raw] of eventsOf(events)) {
      // Nothing after the end marker belongs to the answer.
      if (st.done) break;
      const data = raw.trim();
      if (data === "[DONE]") {
        st.done = true;
        continue;
      }
      if (!data) continue;
      let chunk;
      try {
        chunk = JSON.parse(data);
      } catch (_) {
        chunk = null;
      }
      if (!chunk || typeof chunk !== "object" || Array.isArray(chunk)) {
        // Skipped and counted: the host fails the stream on a burst.
        malformed += 1;
        continue;
      }
      if (chunk.error && typeof chunk.error === "object") {
        throw upstreamError("overloaded", String(chunk.error.message || "error in stream"));
      }
      chunk.model = st.deployment ?? "";
      usage = usageOf(chunk) ?? usage;
      chunks.push(JSON.stringify(chunk));
    }
    return { chunks, usage, done: Boolean(st.done), state: writeState(st), malformed };
  },

  endStream(state) {
    const st = readState(state);
    if (!st.done) {
      host.log("warn", `${st.deployment}: stream ended before [DONE]`);
      throw upstreamError("overloaded", "stream ended before [DONE]");
    }
    return { chunks: [], usage: null, done: true, state: null, malformed: 0 };
  },
};
