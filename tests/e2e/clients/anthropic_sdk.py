"""The official anthropic SDK against the gateway's /v1/messages, once per
route given: plain, streamed, tool use both ways (streamed and not),
structured output (a JSON Schema).
Asserts as it goes; prints one JSON line per route on success."""
import json
import sys

import anthropic

base, routes = sys.argv[1], sys.argv[2:]
client = anthropic.Anthropic(base_url=base, api_key="unused", max_retries=0)
schema = {"type": "object", "properties": {"city": {"type": "string"}, "temp_c": {"type": "number"}},
          "required": ["city", "temp_c"], "additionalProperties": False}
weather = {
    "name": "get_weather",
    "description": "Current weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}

for route in routes:
    ask = [{"role": "user", "content": "What is the weather in Paris?"}]
    msg = client.messages.create(model=route, max_tokens=256, system="Be brief.", messages=ask)
    assert msg.type == "message" and msg.role == "assistant", msg
    assert msg.stop_reason == "end_turn", msg
    text = "".join(b.text for b in msg.content if b.type == "text")
    assert text.startswith("answer from"), msg
    assert msg.usage.output_tokens > 0 and msg.usage.input_tokens > 0, msg.usage

    with client.messages.stream(model=route, max_tokens=256, messages=ask) as stream:
        streamed = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert streamed == text, (streamed, text)
    assert final.stop_reason == "end_turn" and final.usage.output_tokens > 0, final

    # A stop sequence the model stopped at, and prompt-cache writes: an
    # Anthropic deployment says both and they come back as it said them;
    # other dialects say neither (end_turn, no writes).
    claude = route == "via-anthropic"
    with client.messages.stream(model=route, max_tokens=256, messages=ask, stop_sequences=["STOP-HERE"]) as s:
        streamed_stop = s.get_final_message()
    for stopped in [
        client.messages.create(model=route, max_tokens=256, messages=ask, stop_sequences=["STOP-HERE"]),
        streamed_stop,
    ]:
        want = ("stop_sequence", "STOP-HERE") if claude else ("end_turn", None)
        assert (stopped.stop_reason, stopped.stop_sequence) == want, stopped
        assert stopped.usage.cache_creation_input_tokens == (3 if claude else 0), stopped.usage
        if claude:
            assert (stopped.usage.input_tokens, stopped.usage.cache_read_input_tokens) == (20, 5), stopped.usage

    call = client.messages.create(model=route, max_tokens=256, messages=ask, tools=[weather])
    assert call.stop_reason == "tool_use", call
    use = next(b for b in call.content if b.type == "tool_use")
    assert use.name == "get_weather" and use.input == {"city": "Paris"}, use

    with client.messages.stream(model=route, max_tokens=256, messages=ask, tools=[weather]) as stream:
        final = stream.get_final_message()
    suse = next(b for b in final.content if b.type == "tool_use")
    assert suse.input == {"city": "Paris"} and final.stop_reason == "tool_use", final

    # An agent loop's prompt-cache breakpoints (system, tools, the newest
    # tool result): an Anthropic route carries them to Anthropic, others
    # drop them (the test checks what each upstream received).
    mark = {"type": "ephemeral"}
    after = client.messages.create(
        model=route, max_tokens=256, tools=[dict(weather, cache_control=mark)],
        system=[{"type": "text", "text": "Be brief.", "cache_control": mark}],
        messages=ask + [
            {"role": "assistant", "content": [{"type": "tool_use", "id": use.id, "name": use.name, "input": use.input}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": use.id, "content": "21C", "cache_control": mark}]},
        ])
    assert "21C" in after.content[0].text, after

    # Structured output (`output_config.format`): the answer is the JSON.
    shaped = client.messages.create(
        model=route, max_tokens=256, messages=ask,
        output_config={"format": {"type": "json_schema", "schema": schema}})
    assert json.loads(shaped.content[0].text) == {"city": "Paris", "temp_c": 21}, shaped

    try:
        client.messages.create(model="no-such-route", max_tokens=5, messages=ask)
        raise AssertionError("an unknown route answered")
    except anthropic.NotFoundError as e:
        assert e.body["type"] == "error" and e.body["error"]["type"] == "not_found_error", e.body
    print(json.dumps({"route": route, "text": text, "tool_id": use.id}))
