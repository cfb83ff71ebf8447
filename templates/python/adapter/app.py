"""{{name}}: a Switchyard provider adapter written in Python.

This skeleton passes OpenAI chat-completions through: `build_request` posts
the canonical request to `/chat/completions`, `parse_response` returns the
body (naming the deployment as `model`), `classify_error` maps the status,
and the stream functions pass SSE chunks through, keeping a small JSON state
that the host hands back on every call (any instance may serve any call:
keep nothing in globals). Change what your upstream needs.

Build it with
    scripts/build-lang-plugins path/to/{{name}}
into path/to/{{name}}.wasm and copy that file into the gateway's plugins/
folder (it is hot-loaded). stdout goes nowhere: log through `host.log`.

The bindings (`wit_world`, `componentize_py_types`) are generated at build
time from the WIT version and world named in the `world` file.
"""

import json
from typing import List, Optional

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports import adapter
from wit_world.imports import host, types

# Response headers arrive as one string: a `name: value` line each, names
# in lower case, each line ending in "\n".
Headers = str


def _dumps(value) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _u32(value) -> int:
    try:
        return min(max(int(value or 0), 0), 0xFFFFFFFF)
    except (TypeError, ValueError):
        return 0


def _header(headers: Headers, name: str) -> Optional[str]:
    for line in headers.splitlines():
        key, sep, value = line.partition(":")
        if sep and key == name:
            return value.strip()
    return None


def _usage(body: dict) -> Optional[types.Usage]:
    usage = body.get("usage")
    if not isinstance(usage, dict):
        return None
    return types.Usage(
        prompt_tokens=_u32(usage.get("prompt_tokens")),
        completion_tokens=_u32(usage.get("completion_tokens")),
        cached_prompt_tokens=_u32((usage.get("prompt_tokens_details") or {}).get("cached_tokens")),
        reasoning_tokens=_u32((usage.get("completion_tokens_details") or {}).get("reasoning_tokens")),
        cache_write_tokens=_u32((usage.get("prompt_tokens_details") or {}).get("cache_creation_tokens")),
    )


def _error(class_: adapter.ErrorClass, message: str) -> adapter.UpstreamError:
    # quota: read the upstream's rate-limit headers into an adapter.QuotaHint here.
    return adapter.UpstreamError(class_=class_, message=message, quota=None)


def _events(events: adapter.StreamEvents) -> List[Tuple[str, str]]:
    """The (name, data) of each event: the host packs them back to back in
    one string, with two end offsets (in UTF-8 bytes) per event."""
    raw = events.text.encode()
    out = []
    start = 0
    for k in range(0, len(events.ends) - 1, 2):
        name_end, data_end = events.ends[k], events.ends[k + 1]
        out.append((raw[start:name_end].decode(), raw[name_end:data_end].decode()))
        start = data_end
    return out


def _state(raw: bytes) -> dict:
    try:
        return json.loads(raw) if raw else {}
    except ValueError:
        return {}


class Adapter(exports.Adapter):
    def metadata(self) -> adapter.AdapterMetadata:
        return adapter.AdapterMetadata(
            name="{{name}}",
            version="0.1.0",
            capabilities=["streaming"],
            auth=adapter.AuthScheme_Bearer(),
            framing=adapter.StreamFraming.SSE,
            # The response headers this adapter reads (names, or prefixes
            # ending in "-"); None: all of them.
            response_headers=["date", "retry-after", "x-ratelimit-"],
        )

    def build_request(self, target: adapter.Target, request: str) -> adapter.HttpRequest:
        try:
            body = json.loads(request)
        except ValueError as e:
            raise Err(adapter.BuildError_InvalidRequest(f"request is not JSON: {e}"))
        body["model"] = target.model
        return adapter.HttpRequest(
            method="POST",
            path="/chat/completions",
            headers=[("content-type", "application/json")],
            body=_dumps(body).encode(),
        )

    def parse_response(
        self, target: adapter.Target, response: adapter.HttpResponse
    ) -> adapter.ChatResponse:
        try:
            body = json.loads(response.body)
        except ValueError as e:
            raise Err(_error(adapter.ErrorClass_Permanent(), f"answer is not JSON: {e}"))
        body["model"] = target.deployment
        return adapter.ChatResponse(body=_dumps(body), usage=_usage(body), quota=None)

    def classify_error(self, response: adapter.HttpResponse) -> adapter.UpstreamError:
        status = response.status
        message, code = f"upstream answered {status}", ""
        try:
            error = json.loads(response.body).get("error")
            if isinstance(error, dict):
                message = str(error.get("message") or message)
                code = str(error.get("code") or "")
        except (ValueError, AttributeError):
            pass
        if status == 429:
            retry_after = None
            try:
                retry_after = _u32(float(_header(response.headers, "retry-after") or "") * 1000)
            except ValueError:
                pass
            return _error(adapter.ErrorClass_RateLimited(retry_after), message)
        if status >= 500:
            return _error(adapter.ErrorClass_Overloaded(), message)
        if status in (401, 403):
            return _error(adapter.ErrorClass_Auth(), message)
        if status == 400 and code == "context_length_exceeded":
            return _error(adapter.ErrorClass_ContextLengthExceeded(), message)
        if status == 400:
            return _error(adapter.ErrorClass_InvalidRequest(), message)
        return _error(adapter.ErrorClass_Permanent(), message)

    def begin_stream(
        self, target: adapter.Target, request: str, headers: Headers
    ) -> adapter.StreamStart:
        # Later calls are not given the target: keep what they need of it.
        state = {"done": False, "deployment": target.deployment}
        return adapter.StreamStart(state=_dumps(state).encode(), quota=None)

    def parse_stream(self, state: bytes, events: adapter.StreamEvents) -> adapter.StreamStep:
        st = _state(state)
        chunks: List[str] = []
        usage = None
        malformed = 0
        for _name, data in _events(events):
            if st.get("done"):
                # Nothing after the end marker belongs to the answer.
                break
            data = data.strip()
            if data == "[DONE]":
                st["done"] = True
                continue
            if not data:
                continue
            try:
                chunk = json.loads(data)
            except ValueError:
                # Skipped and counted: the host fails the stream on a burst.
                malformed += 1
                continue
            if not isinstance(chunk, dict):
                malformed += 1
                continue
            if isinstance(chunk.get("error"), dict):
                message = str(chunk["error"].get("message") or "error in stream")
                raise Err(_error(adapter.ErrorClass_Overloaded(), message))
            chunk["model"] = st.get("deployment", "")
            usage = _usage(chunk) or usage
            chunks.append(_dumps(chunk))
        return adapter.StreamStep(
            chunks=chunks,
            usage=usage,
            done=bool(st.get("done")),
            state=_dumps(st).encode(),
            malformed=malformed,
        )

    def end_stream(self, state: bytes) -> adapter.StreamStep:
        st = _state(state)
        if not st.get("done"):
            host.log(types.LogLevel.WARN, f"{st.get('deployment')}: stream ended before [DONE]")
            raise Err(_error(adapter.ErrorClass_Overloaded(), "stream ended before [DONE]"))
        return adapter.StreamStep(chunks=[], usage=None, done=True, state=None, malformed=0)
