"""The official openai SDK against /v1/chat/completions, once per route:
plain, streamed, tool calls (streamed and not), JSON schema output (streamed
and not)."""
import json
import sys

from openai import OpenAI

base, routes = sys.argv[1], sys.argv[2:]
client = OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0)
tools = [{"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
schema = {"type": "object", "properties": {"city": {"type": "string"}, "temp_c": {"type": "number"}},
          "required": ["city", "temp_c"], "additionalProperties": False}

for route in routes:
    ask = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is the weather in Paris?"}]
    r = client.chat.completions.create(model=route, messages=ask, max_tokens=200)
    text = r.choices[0].message.content
    assert text.startswith("answer from") and r.choices[0].finish_reason == "stop", r
    assert r.usage.prompt_tokens > 0 and r.usage.completion_tokens > 0, r.usage

    chunks = list(client.chat.completions.create(
        model=route, messages=ask, stream=True, stream_options={"include_usage": True}))
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == text, (streamed, text)
    assert chunks[-1].usage and chunks[-1].usage.completion_tokens > 0, chunks[-1]

    r = client.chat.completions.create(model=route, messages=ask, tools=tools)
    call = r.choices[0].message.tool_calls[0]
    assert r.choices[0].finish_reason == "tool_calls", r
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}, call

    args, name, finish = "", None, None
    for c in client.chat.completions.create(model=route, messages=ask, tools=tools, stream=True):
        if not c.choices:
            continue
        for d in c.choices[0].delta.tool_calls or []:
            name = d.function.name or name
            args += d.function.arguments or ""
        finish = c.choices[0].finish_reason or finish
    assert (name, json.loads(args), finish) == ("get_weather", {"city": "Paris"}, "tool_calls"), (name, args, finish)

    r = client.chat.completions.create(model=route, messages=ask + [
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "21C"}], tools=tools)
    assert "21C" in r.choices[0].message.content, r

    r = client.chat.completions.create(model=route, messages=ask, response_format={
        "type": "json_schema", "json_schema": {"name": "weather", "schema": schema, "strict": True}})
    assert json.loads(r.choices[0].message.content) == {"city": "Paris", "temp_c": 21}, r
    streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model=route, messages=ask, stream=True, response_format={
            "type": "json_schema", "json_schema": {"name": "weather", "schema": schema, "strict": True}})
        if c.choices)
    assert json.loads(streamed) == {"city": "Paris", "temp_c": 21}, streamed
    print(json.dumps({"route": route, "text": text}))
