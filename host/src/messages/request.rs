//! An Anthropic Messages API request → the canonical (OpenAI) request.
//!
//! Every member Anthropic documents either maps or is refused by name: a
//! gateway that silently dropped `thinking` or a server tool would answer a
//! different question than the one asked. Unknown members are refused too,
//! as Anthropic's own API does.

use serde::Deserialize;
use serde_json::{Map, Value, json};

/// A Messages API request, as far as the gateway reads it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MessagesRequest {
    model: String,
    max_tokens: u64,
    messages: Vec<Turn>,
    #[serde(default)]
    system: Option<System>,
    #[serde(default)]
    stop_sequences: Option<Vec<String>>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(default)]
    top_p: Option<f64>,
    #[serde(default)]
    top_k: Option<u64>,
    #[serde(default)]
    tools: Option<Vec<Value>>,
    #[serde(default)]
    tool_choice: Option<Value>,
    #[serde(default)]
    metadata: Option<Metadata>,
    /// Extended thinking has no canonical form yet: refused by name.
    #[serde(default)]
    thinking: Option<Value>,
    #[serde(default)]
    service_tier: Option<Value>,
    /// Structured outputs (`format`: a JSON Schema the answer must match).
    #[serde(default)]
    output_config: Option<OutputConfig>,
}

/// `output_config`: the answer's format (JSON Schema) and effort.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OutputConfig {
    /// No canonical form: refused by name unless null.
    #[serde(default)]
    effort: Option<Value>,
    #[serde(default)]
    format: Option<OutputFormat>,
}

/// `output_config.format`: `{"type": "json_schema", "schema": {...}}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OutputFormat {
    #[serde(rename = "type")]
    kind: String,
    schema: Value,
}

#[derive(Deserialize)]
struct Metadata {
    #[serde(default)]
    user_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum System {
    Text(String),
    Blocks(Vec<Value>),
}

#[derive(Deserialize)]
struct Turn {
    role: String,
    content: TurnContent,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum TurnContent {
    Text(String),
    Blocks(Vec<Value>),
}

/// The canonical request for an Anthropic request body, or what is wrong
/// with it (naming the member). The route is the request's `model`.
///
/// `keeps_marks(route)` says whether the request's prompt-cache breakpoints
/// (`cache_control`) may ride the canonical request: only when every
/// deployment the route can reach speaks Anthropic's dialect, since another
/// provider's API may refuse the unknown member. Kept, they sit on the
/// system's and the user turns' text parts, on tool results and on tools,
/// where the `anthropic` adapter puts them back; elsewhere (images,
/// assistant turns) they are dropped.
pub fn to_canonical(body: &[u8], keeps_marks: &dyn Fn(&str) -> bool) -> Result<Vec<u8>, String> {
    let req: MessagesRequest =
        serde_json::from_slice(body).map_err(|e| format!("invalid Messages API request: {e}"))?;
    let marks = Marks(keeps_marks(&req.model));
    if req
        .thinking
        .as_ref()
        .is_some_and(|t| t["type"] != "disabled")
    {
        return Err("`thinking` (extended thinking) is not supported through this gateway".into());
    }
    if req.max_tokens == 0 || req.max_tokens > u64::from(u32::MAX) {
        return Err(format!("`max_tokens` must be from 1 to {}", u32::MAX));
    }
    let _ = req.service_tier;
    let mut messages = Vec::new();
    match &req.system {
        None => {}
        Some(System::Text(t)) => messages.push(json!({"role": "system", "content": t})),
        Some(System::Blocks(blocks)) => {
            let mut parts = Vec::new();
            for (i, b) in blocks.iter().enumerate() {
                match (b["type"].as_str(), b["text"].as_str()) {
                    (Some("text"), Some(text)) => {
                        parts.push(marks.text(text, b, &|| format!("system[{i}]"))?)
                    }
                    _ => return Err(format!("`system[{i}]` is not a text block")),
                }
            }
            messages.push(json!({"role": "system", "content": parts}));
        }
    }
    let last = req.messages.len().saturating_sub(1);
    for (i, turn) in req.messages.iter().enumerate() {
        // As Anthropic's API has it: only a final assistant turn (a prefill)
        // may be empty; dropped, an empty turn would leave two turns of one
        // role side by side, or no message at all.
        if matches!(&turn.content, TurnContent::Blocks(b) if b.is_empty())
            && (turn.role == "user" || i != last)
        {
            return Err(format!("`messages[{i}].content` is empty"));
        }
        match turn.role.as_str() {
            "user" => user_turn(i, &turn.content, marks, &mut messages)?,
            "assistant" => messages.push(assistant_turn(i, &turn.content)?),
            other => {
                return Err(format!(
                    "`messages[{i}].role` is {other:?}; expected \"user\" or \"assistant\""
                ));
            }
        }
    }
    let mut out = Map::new();
    out.insert("model".into(), json!(req.model));
    out.insert("messages".into(), Value::Array(messages));
    out.insert("max_tokens".into(), json!(req.max_tokens));
    if let Some(s) = req.stop_sequences.filter(|s| !s.is_empty()) {
        out.insert("stop".into(), json!(s));
    }
    if let Some(t) = req.temperature {
        out.insert("temperature".into(), json!(t));
    }
    if let Some(p) = req.top_p {
        out.insert("top_p".into(), json!(p));
    }
    if let Some(k) = req.top_k {
        out.insert("top_k".into(), json!(k));
    }
    if req.stream == Some(true) {
        out.insert("stream".into(), json!(true));
        // The final message_delta reports usage: ask for it.
        out.insert("stream_options".into(), json!({"include_usage": true}));
    }
    if let Some(user) = req.metadata.and_then(|m| m.user_id) {
        out.insert("user".into(), json!(user));
    }
    if let Some(config) = &req.output_config {
        output_config(config, &mut out)?;
    }
    let tools = tools(req.tools.as_deref().unwrap_or_default(), marks)?;
    if let Some(choice) = &req.tool_choice {
        tool_choice(choice, &mut out)?;
    }
    if !tools.is_empty() {
        out.insert("tools".into(), Value::Array(tools));
    }
    Ok(serde_json::to_vec(&Value::Object(out)).unwrap_or_default())
}

/// Structured outputs: the format becomes the canonical `response_format`
/// (a strict JSON Schema), which every adapter maps to its provider's own
/// way (an Anthropic route: a forced tool whose input is the answer's text).
fn output_config(config: &OutputConfig, out: &mut Map<String, Value>) -> Result<(), String> {
    if config.effort.as_ref().is_some_and(|e| !e.is_null()) {
        return Err("`output_config.effort` is not supported through this gateway".into());
    }
    let Some(format) = &config.format else {
        return Ok(());
    };
    if format.kind != "json_schema" {
        return Err(format!(
            "`output_config.format.type` is {:?}; expected \"json_schema\"",
            format.kind
        ));
    }
    if !format.schema.is_object() {
        return Err("`output_config.format.schema` must be a JSON Schema object".into());
    }
    out.insert(
        "response_format".into(),
        json!({"type": "json_schema",
            "json_schema": {"name": "output", "schema": format.schema, "strict": true}}),
    );
    Ok(())
}

/// A user turn: its `tool_result` blocks become tool messages (first, as
/// they answer the previous assistant turn), the rest one user message.
fn user_turn(
    i: usize,
    content: &TurnContent,
    marks: Marks,
    out: &mut Vec<Value>,
) -> Result<(), String> {
    let blocks = match content {
        TurnContent::Text(t) => {
            out.push(json!({"role": "user", "content": t}));
            return Ok(());
        }
        TurnContent::Blocks(b) => b,
    };
    let mut parts = Vec::new();
    for (j, b) in blocks.iter().enumerate() {
        let at = || format!("messages[{i}].content[{j}]");
        match b["type"].as_str() {
            Some("text") => parts.push(marks.text(text_of(b, &at)?, b, &at)?),
            Some("image") => {
                // Checked, and dropped: the canonical image has no mark.
                Marks(false).of(b, &at)?;
                parts.push(image(b, &at)?)
            }
            Some("tool_result") => {
                let id = b["tool_use_id"]
                    .as_str()
                    .ok_or_else(|| format!("`{}.tool_use_id` is missing", at()))?;
                // The block's own breakpoint, else its last inner block's.
                let mut mark = marks.of(b, &at)?;
                let text = match &b["content"] {
                    Value::Null => String::new(),
                    Value::String(s) => s.clone(),
                    Value::Array(inner) => {
                        let mut text = String::new();
                        let mut last = None;
                        for (k, ib) in inner.iter().enumerate() {
                            let inner_at = || format!("{}.content[{k}]", at());
                            text.push_str(text_of(ib, &inner_at)?);
                            last = marks.of(ib, &inner_at)?.or(last);
                        }
                        mark = mark.or(last);
                        text
                    }
                    _ => return Err(format!("`{}.content` is neither text nor blocks", at())),
                };
                // A failed tool says so in its result; the canonical form has no flag.
                let text = if b["is_error"] == Value::Bool(true) {
                    format!("Error: {text}")
                } else {
                    text
                };
                let content = match mark {
                    None => json!(text),
                    Some(m) => json!([{"type": "text", "text": text, "cache_control": m}]),
                };
                out.push(json!({"role": "tool", "tool_call_id": id, "content": content}));
            }
            Some(other) => {
                return Err(format!(
                    "`{}` is a {other:?} block; this gateway takes text, image, tool_use and tool_result blocks",
                    at()
                ));
            }
            None => return Err(format!("`{}.type` is missing", at())),
        }
    }
    if !parts.is_empty() {
        out.push(json!({"role": "user", "content": parts}));
    }
    Ok(())
}

fn assistant_turn(i: usize, content: &TurnContent) -> Result<Value, String> {
    let blocks = match content {
        TurnContent::Text(t) => return Ok(json!({"role": "assistant", "content": t})),
        TurnContent::Blocks(b) => b,
    };
    let mut text = String::new();
    let mut calls = Vec::new();
    for (j, b) in blocks.iter().enumerate() {
        let at = || format!("messages[{i}].content[{j}]");
        // Checked, and dropped: the canonical assistant turn has no marks.
        Marks(false).of(b, &at)?;
        match b["type"].as_str() {
            Some("text") => text.push_str(text_of(b, &at)?),
            Some("tool_use") => {
                let field = |k: &str| {
                    b[k].as_str()
                        .ok_or_else(|| format!("`{}.{k}` is missing", at()))
                };
                if !b["input"].is_object() {
                    return Err(format!("`{}.input` must be an object", at()));
                }
                calls.push(json!({
                    "id": field("id")?,
                    "type": "function",
                    "function": {"name": field("name")?, "arguments": b["input"].to_string()},
                }));
            }
            // Earlier reasoning is the model's own scratch work: not part
            // of the conversation another provider continues.
            Some("thinking" | "redacted_thinking") => {}
            Some(other) => {
                return Err(format!(
                    "`{}` is a {other:?} block; assistant turns take text and tool_use blocks",
                    at()
                ));
            }
            None => return Err(format!("`{}.type` is missing", at())),
        }
    }
    let mut m = json!({"role": "assistant", "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { json!(text) }});
    if !calls.is_empty() {
        m["tool_calls"] = Value::Array(calls);
    }
    Ok(m)
}

/// Whether prompt-cache breakpoints are carried (see [`to_canonical`]).
#[derive(Clone, Copy)]
struct Marks(bool);

impl Marks {
    /// The breakpoint of `block` (at `at`), when they are carried and it has
    /// one. Checked whether carried or not, so that a request is refused or
    /// served alike whatever its route reaches: `null`, or
    /// `{"type": "ephemeral"}` with an optional `ttl` of `"5m"` or `"1h"`
    /// (Anthropic's only form).
    fn of<'v>(
        self,
        block: &'v Value,
        at: &dyn Fn() -> String,
    ) -> Result<Option<&'v Value>, String> {
        let mark = match block.get("cache_control") {
            None | Some(Value::Null) => return Ok(None),
            Some(m) => m,
        };
        let ok = mark.as_object().is_some_and(|o| {
            o.get("type").and_then(Value::as_str) == Some("ephemeral")
                && o.iter().all(|(k, v)| match k.as_str() {
                    "type" => true,
                    "ttl" => matches!(v.as_str(), Some("5m" | "1h")),
                    _ => false,
                })
        });
        if !ok {
            return Err(format!(
                "`{}.cache_control` must be {{\"type\": \"ephemeral\"}}, with an optional \"ttl\" of \"5m\" or \"1h\"",
                at()
            ));
        }
        Ok(self.0.then_some(mark))
    }

    /// A canonical text part for `text`, with `block`'s breakpoint.
    fn text(self, text: &str, block: &Value, at: &dyn Fn() -> String) -> Result<Value, String> {
        Ok(match self.of(block, at)? {
            None => json!({"type": "text", "text": text}),
            Some(m) => json!({"type": "text", "text": text, "cache_control": m}),
        })
    }
}

fn text_of<'a>(b: &'a Value, at: &dyn Fn() -> String) -> Result<&'a str, String> {
    match (b["type"].as_str(), b["text"].as_str()) {
        (Some("text"), Some(t)) => Ok(t),
        _ => Err(format!("`{}` is not a text block", at())),
    }
}

fn image(b: &Value, at: &dyn Fn() -> String) -> Result<Value, String> {
    let source = &b["source"];
    let url = match source["type"].as_str() {
        Some("base64") => {
            let media = source["media_type"]
                .as_str()
                .ok_or_else(|| format!("`{}.source.media_type` is missing", at()))?;
            let data = source["data"]
                .as_str()
                .ok_or_else(|| format!("`{}.source.data` is missing", at()))?;
            format!("data:{media};base64,{data}")
        }
        Some("url") => source["url"]
            .as_str()
            .ok_or_else(|| format!("`{}.source.url` is missing", at()))?
            .to_owned(),
        _ => {
            return Err(format!(
                "`{}.source.type` must be \"base64\" or \"url\"",
                at()
            ));
        }
    };
    Ok(json!({"type": "image_url", "image_url": {"url": url}}))
}

/// The caller's tools in canonical form; server tools (web search, code
/// execution, ...) run at Anthropic and cannot be routed elsewhere.
fn tools(list: &[Value], marks: Marks) -> Result<Vec<Value>, String> {
    let mut out = Vec::new();
    for (i, t) in list.iter().enumerate() {
        if let Some(kind) = t["type"].as_str().filter(|k| *k != "custom") {
            return Err(format!(
                "`tools[{i}]` is a {kind:?} server tool; only client tools (name, input_schema) can be routed"
            ));
        }
        let name = t["name"]
            .as_str()
            .ok_or_else(|| format!("`tools[{i}].name` is missing"))?;
        let mut f = json!({"name": name, "parameters": t.get("input_schema").cloned().unwrap_or(json!({"type": "object"}))});
        if let Some(d) = t["description"].as_str() {
            f["description"] = json!(d);
        }
        let mut tool = json!({"type": "function", "function": f});
        if let Some(m) = marks.of(t, &|| format!("tools[{i}]"))? {
            tool["cache_control"] = m.clone();
        }
        out.push(tool);
    }
    Ok(out)
}

fn tool_choice(choice: &Value, out: &mut Map<String, Value>) -> Result<(), String> {
    let canonical = match choice["type"].as_str() {
        Some("auto") => json!("auto"),
        Some("any") => json!("required"),
        Some("none") => json!("none"),
        Some("tool") => {
            let name = choice["name"]
                .as_str()
                .ok_or("`tool_choice.name` is missing")?;
            json!({"type": "function", "function": {"name": name}})
        }
        _ => return Err("`tool_choice.type` must be auto, any, tool or none".into()),
    };
    out.insert("tool_choice".into(), canonical);
    if choice["disable_parallel_tool_use"] == Value::Bool(true) {
        out.insert("parallel_tool_calls".into(), json!(false));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canonical(body: Value) -> Value {
        serde_json::from_slice(&to_canonical(body.to_string().as_bytes(), &|_| false).unwrap())
            .unwrap()
    }

    fn refused(body: Value) -> String {
        to_canonical(body.to_string().as_bytes(), &|_| false).unwrap_err()
    }

    #[test]
    fn a_whole_conversation() {
        let c = canonical(json!({
            "model": "claude-route", "max_tokens": 512, "stream": true,
            "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
            "stop_sequences": ["END"], "temperature": 0.3, "top_k": 5,
            "metadata": {"user_id": "u-1"},
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "Weather?"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBO"}}]},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "hm", "signature": "s"},
                    {"type": "text", "text": "Checking."},
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "21C"}]},
                    {"type": "text", "text": "Thanks"}]}
            ],
            "tools": [{"name": "get_weather", "description": "Weather now", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": true}
        }));
        assert_eq!(c["model"], "claude-route");
        assert_eq!(c["max_tokens"], 512);
        assert_eq!(c["stream_options"]["include_usage"], true);
        assert_eq!(c["stop"], json!(["END"]));
        assert_eq!(c["top_k"], 5);
        assert_eq!(c["user"], "u-1");
        let m = c["messages"].as_array().unwrap();
        assert_eq!(
            m[0],
            json!({"role": "system", "content": [{"type": "text", "text": "Be brief."}]})
        );
        assert_eq!(
            m[1]["content"][1]["image_url"]["url"],
            "data:image/png;base64,iVBO"
        );
        assert_eq!(m[2]["content"], "Checking.");
        assert_eq!(
            m[2]["tool_calls"][0]["function"]["arguments"],
            r#"{"city":"Paris"}"#
        );
        assert_eq!(
            m[3],
            json!({"role": "tool", "tool_call_id": "toolu_1", "content": "21C"})
        );
        assert_eq!(m[4]["content"][0]["text"], "Thanks");
        assert_eq!(c["tools"][0]["function"]["parameters"]["type"], "object");
        assert_eq!(c["tool_choice"], "required");
        assert_eq!(c["parallel_tool_calls"], false);
    }

    /// Breakpoints ride the canonical request only when the route allows
    /// it (asked with the route's name), on the parts the anthropic adapter
    /// puts them back on.
    #[test]
    fn cache_marks_are_kept_only_for_routes_that_allow_them() {
        let eph = json!({"type": "ephemeral"});
        let body = json!({
            "model": "claude-route", "max_tokens": 64,
            "system": [{"type": "text", "text": "Rules.", "cache_control": eph},
                       {"type": "text", "text": "More."}],
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "Doc.", "cache_control": {"type": "ephemeral", "ttl": "1h"}},
                    {"type": "text", "text": "Q?"}]},
                {"role": "assistant", "content": [
                    {"type": "tool_use", "id": "t1", "name": "w", "input": {}},
                    {"type": "tool_use", "id": "t2", "name": "w", "input": {}}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "t1", "content": "sun", "cache_control": eph},
                    {"type": "tool_result", "tool_use_id": "t2",
                     "content": [{"type": "text", "text": "rain", "cache_control": eph}]}]}
            ],
            "tools": [{"name": "w", "input_schema": {"type": "object"}, "cache_control": eph}]
        });
        let asked = std::cell::RefCell::new(Vec::new());
        let kept: Value = serde_json::from_slice(
            &to_canonical(body.to_string().as_bytes(), &|route| {
                asked.borrow_mut().push(route.to_owned());
                true
            })
            .unwrap(),
        )
        .unwrap();
        assert_eq!(*asked.borrow(), ["claude-route"]);
        let m = &kept["messages"];
        assert_eq!(m[0]["content"][0]["cache_control"], eph);
        assert!(m[0]["content"][1].get("cache_control").is_none());
        assert_eq!(m[1]["content"][0]["cache_control"]["ttl"], "1h");
        assert!(m[1]["content"][1].get("cache_control").is_none());
        assert_eq!(
            m[3],
            json!({"role": "tool", "tool_call_id": "t1",
                "content": [{"type": "text", "text": "sun", "cache_control": eph}]})
        );
        assert_eq!(m[4]["content"][0]["cache_control"], eph);
        assert_eq!(kept["tools"][0]["cache_control"], eph);
        // Not allowed: the same request with no mark anywhere.
        let dropped = canonical(body);
        assert!(!dropped.to_string().contains("cache_control"), "{dropped}");
        assert_eq!(dropped["messages"][3]["content"], "sun");
    }

    /// A tool result's own mark wins over its inner blocks'; among those the
    /// last marked one's; marks on images and assistant turns are dropped
    /// even where marks are kept; no mark is ever added.
    #[test]
    fn cache_marks_collapse_onto_their_block_and_are_never_added() {
        let eph = json!({"type": "ephemeral"});
        let hour = json!({"type": "ephemeral", "ttl": "1h"});
        let five = json!({"type": "ephemeral", "ttl": "5m"});
        let body = json!({
            "model": "m", "max_tokens": 64,
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "Look.", "cache_control": eph},
                    {"type": "image", "cache_control": eph,
                     "source": {"type": "url", "url": "https://example.com/a.png"}}]},
                {"role": "assistant", "content": [
                    {"type": "text", "text": "Calling.", "cache_control": eph},
                    {"type": "tool_use", "id": "t1", "name": "w", "input": {}, "cache_control": eph},
                    {"type": "tool_use", "id": "t2", "name": "w", "input": {}}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "t1", "cache_control": hour,
                     "content": [{"type": "text", "text": "a", "cache_control": five}]},
                    {"type": "tool_result", "tool_use_id": "t2", "content": [
                        {"type": "text", "text": "b", "cache_control": five},
                        {"type": "text", "text": "c", "cache_control": hour},
                        {"type": "text", "text": "d"}]}]}
            ]
        });
        let c: Value =
            serde_json::from_slice(&to_canonical(body.to_string().as_bytes(), &|_| true).unwrap())
                .unwrap();
        let m = &c["messages"];
        assert_eq!(m[0]["content"][0]["cache_control"], eph);
        assert!(m[0]["content"][1].get("cache_control").is_none(), "{c}");
        assert!(!m[1].to_string().contains("cache_control"), "{c}");
        assert_eq!(
            m[2]["content"][0]["cache_control"], hour,
            "its own mark wins"
        );
        assert_eq!(m[3]["content"][0]["text"], "bcd");
        assert_eq!(
            m[3]["content"][0]["cache_control"], hour,
            "the last marked block's"
        );
        let marks = |v: &Value| v.to_string().matches("cache_control").count();
        assert_eq!(marks(&c), 3, "{c}");
    }

    /// A mark that is not Anthropic's one form is refused by name, whether
    /// or not the route would carry it.
    #[test]
    fn a_malformed_cache_mark_is_refused_by_name() {
        let base = || json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]});
        let at_system = |mark: Value| {
            let mut b = base();
            b["system"] = json!([{"type": "text", "text": "s", "cache_control": mark}]);
            b
        };
        for bad in [
            json!("ephemeral"),
            json!({}),
            json!({"type": "persistent"}),
            json!({"type": "ephemeral", "ttl": "2h"}),
            json!({"type": "ephemeral", "scope": "org"}),
        ] {
            for keep in [false, true] {
                let why = to_canonical(at_system(bad.clone()).to_string().as_bytes(), &|_| keep)
                    .unwrap_err();
                assert!(why.contains("`system[0].cache_control`"), "{bad}: {why}");
            }
        }
        let mut b = base();
        b["tools"] = json!([{"name": "w", "input_schema": {}, "cache_control": 1}]);
        assert!(refused(b).contains("`tools[0].cache_control`"));
        let mut b = base();
        b["messages"] = json!([{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t",
            "content": [{"type": "text", "text": "r", "cache_control": []}]}]}]);
        assert!(refused(b).contains("`messages[0].content[0].content[0].cache_control`"));
        let mut b = base();
        b["messages"] = json!([{"role": "user", "content": "q"}, {"role": "assistant",
            "content": [{"type": "text", "text": "a", "cache_control": "x"}]}]);
        assert!(refused(b).contains("`messages[1].content[0].cache_control`"));
        // `null` is no mark.
        assert!(
            canonical(at_system(Value::Null))
                .to_string()
                .find("cache_control")
                .is_none()
        );
    }

    #[test]
    fn refusals_name_the_member() {
        let base = || json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]});
        let mut b = base();
        b["thinking"] = json!({"type": "enabled", "budget_tokens": 1024});
        assert!(refused(b).contains("`thinking`"));
        let mut b = base();
        b["tools"] = json!([{"type": "web_search_20250305", "name": "web_search"}]);
        assert!(refused(b).contains("`tools[0]`"));
        let mut b = base();
        b["messages"][0]["content"] = json!([{"type": "document", "source": {}}]);
        assert!(refused(b).contains("`messages[0].content[0]`"));
        let mut b = base();
        b["messages"][0]["role"] = json!("system");
        assert!(refused(b).contains("`messages[0].role`"));
        let mut b = base();
        b["frobnicate"] = json!(1);
        assert!(refused(b).contains("frobnicate"));
        let b = json!({"model": "m", "messages": []});
        assert!(refused(b).contains("max_tokens"));
        let mut b = base();
        b["messages"] = json!([{"role": "user", "content": []}]);
        assert!(refused(b).contains("`messages[0].content` is empty"));
        let mut b = base();
        b["messages"] = json!([{"role": "user", "content": "q"}, {"role": "assistant", "content": []},
            {"role": "user", "content": "again"}]);
        assert!(refused(b).contains("`messages[1].content` is empty"));
    }

    /// Structured outputs as the Anthropic SDK sends them
    /// (`output_config.format`) become a strict canonical JSON Schema.
    #[test]
    fn output_config_format_is_a_json_schema_response_format() {
        let schema = json!({"type": "object", "properties": {"city": {"type": "string"}},
            "required": ["city"], "additionalProperties": false});
        let base = || json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]});
        let mut b = base();
        b["output_config"] = json!({"format": {"type": "json_schema", "schema": schema}});
        let c = canonical(b);
        assert_eq!(c["response_format"]["type"], "json_schema");
        assert_eq!(c["response_format"]["json_schema"]["schema"], schema);
        assert_eq!(c["response_format"]["json_schema"]["strict"], true);
        // Nothing asked: nothing set.
        let mut b = base();
        b["output_config"] = json!({"effort": null});
        assert!(canonical(b).get("response_format").is_none());
        for (config, named) in [
            (json!({"effort": "high"}), "`output_config.effort`"),
            (
                json!({"format": {"type": "xml", "schema": {}}}),
                "`output_config.format.type`",
            ),
            (
                json!({"format": {"type": "json_schema", "schema": 1}}),
                "`output_config.format.schema`",
            ),
            (
                json!({"format": {"type": "json_schema", "schema": {}, "x": 1}}),
                "`x`",
            ),
            (json!({"speed": "fast"}), "`speed`"),
        ] {
            let mut b = base();
            b["output_config"] = config;
            let why = refused(b);
            assert!(why.contains(named), "{why}");
        }
    }
}
