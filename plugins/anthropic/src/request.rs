//! Canonical request → Anthropic Messages API request.
//!
//! The two dialects differ in shape more than in meaning: the system prompt
//! is a top-level member, content is a list of typed blocks, tool calls are
//! `tool_use` blocks of the assistant and their results `tool_result` blocks
//! of the next user turn, and `max_tokens` is required. What Anthropic
//! cannot do (`n > 1`, log probabilities, penalties) is refused by name
//! rather than dropped, so the caller learns it and another deployment may
//! serve. `seed` is accepted and not sent: OpenAI documents it as best
//! effort, and Anthropic has no such thing.

use std::borrow::Cow;

use serde::Serialize;
use serde_json::Value;
use switchyard_sdk::BuildError;
use switchyard_sdk::canonical::{
    Arguments, ChatRequest, Content, Message, Part, ResponseFormat, Role, ToolChoice, invalid,
};

/// The answer's length limit when the caller sets none: Anthropic requires
/// one, and this is the largest every current Claude model accepts.
pub const DEFAULT_MAX_TOKENS: u32 = 4096;

/// The tool that carries a JSON answer: Anthropic models produce JSON that
/// matches a schema most reliably as the input of a tool they must call, so
/// `response_format` becomes this tool, forced, and its input becomes the
/// answer's text again on the way back.
pub const JSON_TOOL: &str = "switchyard_json_response";

/// Anthropic's `POST /v1/messages` body.
#[derive(Serialize)]
pub struct MessagesRequest<'a> {
    pub model: &'a str,
    pub max_tokens: u32,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub system: Vec<TextBlock<'a>>,
    pub messages: Vec<Turn<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_k: Option<u32>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub stop_sequences: Vec<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub stream: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<ToolDef<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
}

#[derive(Serialize)]
pub struct TextBlock<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub text: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_control: Option<&'a Value>,
}

/// One turn: `user` or `assistant`, with its content blocks.
#[derive(Serialize)]
pub struct Turn<'a> {
    pub role: &'static str,
    pub content: Vec<Block<'a>>,
}

/// A content block of a turn, borrowed from the canonical request where it
/// can be (typed rather than built as JSON values: no map, no key copies).
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Block<'a> {
    Text {
        text: Cow<'a, str>,
        /// A prompt-cache breakpoint, as the caller marked its text part.
        #[serde(skip_serializing_if = "Option::is_none")]
        cache_control: Option<&'a Value>,
    },
    Image {
        source: Source<'a>,
    },
    ToolUse {
        id: &'a str,
        name: &'a str,
        input: Arguments<'a>,
    },
    ToolResult {
        tool_use_id: &'a str,
        content: String,
        /// A prompt-cache breakpoint: one the tool message's text parts carry
        /// (the last), as agent loops mark the newest tool result.
        #[serde(skip_serializing_if = "Option::is_none")]
        cache_control: Option<&'a Value>,
    },
}

/// Where an image block's bytes come from.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Source<'a> {
    Base64 { media_type: &'a str, data: &'a str },
    Url { url: &'a str },
}

#[derive(Serialize)]
pub struct ToolDef<'a> {
    pub name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<&'a str>,
    pub input_schema: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_control: Option<&'a Value>,
}

/// Whether the request asks for a JSON answer (carried by [`JSON_TOOL`]).
fn wants_json(request: &ChatRequest) -> bool {
    matches!(
        request.response_format,
        Some(ResponseFormat::JsonObject | ResponseFormat::JsonSchema { .. })
    )
}

/// Members of the canonical request that Anthropic has no use for and that
/// change nothing about the answer: accepted and not sent.
const IGNORED: [&str; 4] = ["metadata", "store", "service_tier", "prediction"];

/// Builds the upstream body for model `model`.
pub fn build(model: &str, request: &ChatRequest) -> Result<Vec<u8>, BuildError> {
    messages_request(model, request)?.to_body()
}

/// The upstream request for model `model`, before it is written.
pub fn messages_request<'a>(
    model: &'a str,
    request: &'a ChatRequest,
) -> Result<MessagesRequest<'a>, BuildError> {
    refuse_unsupported(request)?;
    let mut system = Vec::new();
    let mut turns = Vec::new();
    let last = request.messages.len().saturating_sub(1);
    for (i, m) in request.messages.iter().enumerate() {
        let field = |rest: &str| format!("messages[{i}]{rest}");
        match m.role {
            Role::System | Role::Developer => {
                if !turns.is_empty() {
                    return Err(invalid(
                        &field(".role"),
                        "is a system message after the conversation began; Anthropic takes one system prompt, before the first turn",
                    ));
                }
                for (text, cache_control) in texts(m, &field)? {
                    system.push(TextBlock {
                        kind: "text",
                        text,
                        cache_control,
                    });
                }
            }
            Role::User => push(&mut turns, "user", user_blocks(m, &field)?),
            Role::Tool => push(&mut turns, "user", vec![tool_result(m, &field)?]),
            Role::Assistant => {
                let mut blocks = Vec::new();
                let mut text = m.text();
                // Anthropic refuses a final assistant turn (a prefill) that
                // ends in whitespace; the model writes it again if it must.
                if i == last {
                    text.truncate(text.trim_end().len());
                }
                if !text.is_empty() {
                    blocks.push(Block::Text {
                        text: text.into(),
                        cache_control: None,
                    });
                }
                for (j, call) in m.tool_calls.iter().flatten().enumerate() {
                    let input = call
                        .function
                        .object(&field(&format!(".tool_calls[{j}].function.arguments")))?;
                    blocks.push(Block::ToolUse {
                        id: &call.id,
                        name: &call.function.name,
                        input,
                    });
                }
                if blocks.is_empty() {
                    continue;
                }
                push(&mut turns, "assistant", blocks);
            }
        }
    }
    if turns.is_empty() {
        return Err(invalid("messages", "has no user or assistant message"));
    }
    let (tools, tool_choice) = tools(request)?;
    let body = MessagesRequest {
        model,
        max_tokens: request.max_output_tokens().unwrap_or(DEFAULT_MAX_TOKENS),
        system,
        messages: turns,
        temperature: request.temperature,
        top_p: request.top_p,
        top_k: request.top_k,
        stop_sequences: request.stop_sequences(),
        stream: request.is_stream(),
        tools,
        tool_choice,
        metadata: request
            .user
            .as_ref()
            .map(|u| serde_json::json!({ "user_id": u })),
    };
    Ok(body)
}

/// Appends `blocks` as a turn of `role`, merged into the previous turn when
/// it has the same role (tool results of one assistant turn are one user turn).
fn push<'a>(turns: &mut Vec<Turn<'a>>, role: &'static str, blocks: Vec<Block<'a>>) {
    match turns.last_mut() {
        Some(t) if t.role == role => t.content.extend(blocks),
        _ => turns.push(Turn {
            role,
            content: blocks,
        }),
    }
}

fn refuse_unsupported(r: &ChatRequest) -> Result<(), BuildError> {
    if r.n.is_some_and(|n| n > 1) {
        return Err(invalid("n", "must be 1: Anthropic answers one choice"));
    }
    if let Some(t) = r.temperature.filter(|t| *t > 1.0) {
        return Err(invalid(
            "temperature",
            format_args!("is {t}; Anthropic accepts 0 to 1"),
        ));
    }
    for (name, v) in [
        ("presence_penalty", r.presence_penalty),
        ("frequency_penalty", r.frequency_penalty),
    ] {
        if v.is_some_and(|v| v != 0.0) {
            return Err(invalid(name, "is not supported by Anthropic"));
        }
    }
    for (name, value) in &r.extra {
        let harmless = IGNORED.contains(&name.as_str())
            || matches!(value, Value::Null | Value::Bool(false))
            || (name == "top_logprobs" && value == &Value::from(0));
        if !harmless {
            return Err(invalid(name, "is not supported by Anthropic"));
        }
    }
    Ok(())
}

/// The text of a system message, one block per text part, each with its
/// prompt-cache breakpoint.
type Texts<'m> = Vec<(&'m str, Option<&'m Value>)>;

fn texts<'m>(m: &'m Message, field: &dyn Fn(&str) -> String) -> Result<Texts<'m>, BuildError> {
    match &m.content {
        None => Ok(Vec::new()),
        Some(Content::Text(t)) => Ok(vec![(t.as_str(), None)]),
        Some(Content::Parts(parts)) => parts
            .iter()
            .enumerate()
            .map(|(j, p)| match p {
                Part::Text {
                    text,
                    cache_control,
                } => Ok((text.as_str(), cache_control.as_ref())),
                _ => Err(invalid(
                    &field(&format!(".content[{j}]")),
                    "is not text; a system prompt is text only",
                )),
            })
            .collect(),
    }
}

fn user_blocks<'m>(
    m: &'m Message,
    field: &dyn Fn(&str) -> String,
) -> Result<Vec<Block<'m>>, BuildError> {
    let parts = match &m.content {
        None => return Err(invalid(&field(".content"), "is missing")),
        Some(Content::Text(text)) => {
            return Ok(vec![Block::Text {
                text: Cow::Borrowed(text),
                cache_control: None,
            }]);
        }
        Some(Content::Parts(parts)) => parts,
    };
    let mut blocks = Vec::with_capacity(parts.len());
    for (j, part) in parts.iter().enumerate() {
        blocks.push(match part {
            Part::Text {
                text,
                cache_control,
            } => Block::Text {
                text: Cow::Borrowed(text),
                cache_control: cache_control.as_ref(),
            },
            Part::ImageUrl { image_url } => match image_url.data() {
                Some((media_type, data)) => Block::Image {
                    source: Source::Base64 { media_type, data },
                },
                None if image_url.url.starts_with("https://")
                    || image_url.url.starts_with("http://") =>
                {
                    Block::Image {
                        source: Source::Url {
                            url: &image_url.url,
                        },
                    }
                }
                None => {
                    return Err(invalid(
                        &field(&format!(".content[{j}].image_url.url")),
                        "is neither an http(s) URL nor a base64 data: URL",
                    ));
                }
            },
            Part::Other => {
                return Err(invalid(
                    &field(&format!(".content[{j}]")),
                    "is a kind of content Anthropic does not take (text and images only)",
                ));
            }
        });
    }
    Ok(blocks)
}

fn tool_result<'m>(
    m: &'m Message,
    field: &dyn Fn(&str) -> String,
) -> Result<Block<'m>, BuildError> {
    let Some(id) = &m.tool_call_id else {
        return Err(invalid(&field(".tool_call_id"), "is missing"));
    };
    let cache_control = match &m.content {
        Some(Content::Parts(parts)) => parts.iter().rev().find_map(|p| match p {
            Part::Text {
                cache_control: Some(c),
                ..
            } => Some(c),
            _ => None,
        }),
        _ => None,
    };
    Ok(Block::ToolResult {
        tool_use_id: id,
        content: m.text(),
        cache_control,
    })
}

type Tools<'a> = (Vec<ToolDef<'a>>, Option<Value>);

/// The caller's tools and `tool_choice`, or the JSON tool.
fn tools(r: &ChatRequest) -> Result<Tools<'_>, BuildError> {
    let mut defs = Vec::new();
    for (i, t) in r.tools.iter().flatten().enumerate() {
        if t.kind != "function" {
            return Err(invalid(&format!("tools[{i}].type"), "must be \"function\""));
        }
        if t.function.name == JSON_TOOL {
            return Err(invalid(
                &format!("tools[{i}].function.name"),
                "is reserved by the gateway",
            ));
        }
        defs.push(ToolDef {
            name: &t.function.name,
            description: t.function.description.as_deref(),
            input_schema: t
                .function
                .parameters
                .clone()
                .unwrap_or_else(|| serde_json::json!({"type": "object", "properties": {}})),
            cache_control: t.cache_control.as_ref(),
        });
    }
    let parallel_off = r.parallel_tool_calls == Some(false);
    let mut choice = match &r.tool_choice {
        None => None,
        Some(ToolChoice::Mode(m)) => Some(match m.as_str() {
            "auto" => serde_json::json!({"type": "auto"}),
            "required" => serde_json::json!({"type": "any"}),
            "none" => serde_json::json!({"type": "none"}),
            other => {
                return Err(invalid(
                    "tool_choice",
                    format_args!("is {other:?}; expected none, auto, required or a function"),
                ));
            }
        }),
        Some(ToolChoice::Function(f)) => {
            Some(serde_json::json!({"type": "tool", "name": f.function.name}))
        }
    };
    if wants_json(r) {
        if !defs.is_empty() {
            return Err(invalid(
                "response_format",
                "cannot be combined with tools for Anthropic (the JSON answer is carried by a tool)",
            ));
        }
        let schema = match &r.response_format {
            Some(ResponseFormat::JsonSchema { json_schema }) => json_schema
                .schema
                .clone()
                .unwrap_or_else(|| serde_json::json!({"type": "object"})),
            _ => serde_json::json!({"type": "object"}),
        };
        defs.push(ToolDef {
            name: JSON_TOOL,
            description: Some("Respond with the answer as this tool's input."),
            input_schema: schema,
            cache_control: None,
        });
        choice = Some(serde_json::json!({"type": "tool", "name": JSON_TOOL}));
    }
    if parallel_off && !defs.is_empty() {
        let c = choice.get_or_insert_with(|| serde_json::json!({"type": "auto"}));
        if c["type"] != "none" {
            c["disable_parallel_tool_use"] = Value::Bool(true);
        }
    }
    Ok((defs, choice))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(request: &str) -> Value {
        let r = ChatRequest::parse(request).unwrap();
        serde_json::from_slice(&build("claude", &r).unwrap()).unwrap()
    }

    fn refused(request: &str) -> String {
        let r = ChatRequest::parse(request).unwrap();
        match build("claude", &r) {
            Err(BuildError::InvalidRequest(m)) => m,
            other => panic!("{request}: {other:?}"),
        }
    }

    /// Prompt-cache breakpoints on system and user text parts and on tools
    /// reach Anthropic where the caller put them; no other block gets one.
    #[test]
    fn cache_breakpoints_are_passed_on() {
        let b = body(
            r#"{"messages":[{"role":"system","content":[{"type":"text","text":"Long rules.","cache_control":{"type":"ephemeral"}},{"type":"text","text":"Short."}]},{"role":"user","content":[{"type":"text","text":"Doc.","cache_control":{"type":"ephemeral","ttl":"1h"}},{"type":"text","text":"Q?"}]}],"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}},"cache_control":{"type":"ephemeral"}}]}"#,
        );
        assert_eq!(b["system"][0]["cache_control"]["type"], "ephemeral");
        assert!(b["system"][1].get("cache_control").is_none());
        let user = &b["messages"][0]["content"];
        assert_eq!(
            user[0]["cache_control"],
            serde_json::json!({"type": "ephemeral", "ttl": "1h"})
        );
        assert!(user[1].get("cache_control").is_none());
        assert_eq!(b["tools"][0]["cache_control"]["type"], "ephemeral");
    }

    /// A tool message's marked text part puts its breakpoint on the
    /// tool_result block (agent loops mark the newest result); an unmarked
    /// one, and a plain-text one, get none.
    #[test]
    fn a_marked_tool_result_keeps_its_breakpoint() {
        let b = body(
            r#"{"messages":[{"role":"user","content":"Weather?"},{"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"w","arguments":"{}"}},{"id":"c2","type":"function","function":{"name":"w","arguments":"{}"}},{"id":"c3","type":"function","function":{"name":"w","arguments":"{}"}}]},{"role":"tool","tool_call_id":"c1","content":"sunny"},{"role":"tool","tool_call_id":"c2","content":[{"type":"text","text":"rain"}]},{"role":"tool","tool_call_id":"c3","content":[{"type":"text","text":"wind","cache_control":{"type":"ephemeral"}},{"type":"text","text":"."}]}]}"#,
        );
        let results = &b["messages"][2]["content"];
        assert_eq!(results.as_array().unwrap().len(), 3, "{b}");
        assert!(results[0].get("cache_control").is_none());
        assert!(results[1].get("cache_control").is_none());
        assert_eq!(results[2]["type"], "tool_result");
        assert_eq!(results[2]["content"], "wind.");
        assert_eq!(results[2]["cache_control"]["type"], "ephemeral");
    }

    #[test]
    fn system_turns_and_parameters() {
        let b = body(
            r#"{"model":"r","messages":[{"role":"system","content":"Be brief."},{"role":"developer","content":[{"type":"text","text":"No lists."}]},{"role":"user","content":"hi"},{"role":"assistant","content":"hello"},{"role":"user","content":"more"}],"temperature":0.5,"top_p":0.9,"max_completion_tokens":99,"stop":"END","user":"u1","stream":true}"#,
        );
        assert_eq!(b["model"], "claude");
        assert_eq!(b["max_tokens"], 99);
        assert_eq!(b["system"][0]["text"], "Be brief.");
        assert_eq!(b["system"][1]["text"], "No lists.");
        assert_eq!(b["messages"].as_array().unwrap().len(), 3);
        assert_eq!(b["messages"][1]["role"], "assistant");
        assert_eq!(b["messages"][1]["content"][0]["text"], "hello");
        assert_eq!(b["stop_sequences"], serde_json::json!(["END"]));
        assert_eq!(
            (b["temperature"].as_f64(), b["top_p"].as_f64()),
            (Some(0.5), Some(0.9))
        );
        assert_eq!(b["metadata"]["user_id"], "u1");
        assert_eq!(b["stream"], true);
        let b = body(r#"{"messages":[{"role":"user","content":"x"}],"max_tokens":7}"#);
        assert_eq!(b["max_tokens"], 7);
        assert!(b.get("stream").is_none() && b.get("system").is_none());
        let b = body(r#"{"messages":[{"role":"user","content":"x"}]}"#);
        assert_eq!(b["max_tokens"], DEFAULT_MAX_TOKENS);
    }

    #[test]
    fn tools_both_ways() {
        let b = body(
            r#"{"messages":[{"role":"user","content":"weather?"},{"role":"assistant","content":null,"tool_calls":[{"id":"toolu_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}},{"id":"toolu_2","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Rome\"}"}}]},{"role":"tool","tool_call_id":"toolu_1","content":"18C"},{"role":"tool","tool_call_id":"toolu_2","content":[{"type":"text","text":"21C"}]}],"tools":[{"type":"function","function":{"name":"get_weather","description":"Weather now","parameters":{"type":"object","properties":{"city":{"type":"string"}}}}}],"tool_choice":"required","parallel_tool_calls":false}"#,
        );
        let turns = b["messages"].as_array().unwrap();
        assert_eq!(turns.len(), 3, "{b}");
        assert_eq!(turns[1]["content"][1]["input"]["city"], "Rome");
        assert_eq!(turns[1]["content"][0]["type"], "tool_use");
        // Both results in one user turn.
        assert_eq!(turns[2]["role"], "user");
        assert_eq!(turns[2]["content"][1]["tool_use_id"], "toolu_2");
        assert_eq!(turns[2]["content"][1]["content"], "21C");
        assert_eq!(
            b["tools"][0]["input_schema"]["properties"]["city"]["type"],
            "string"
        );
        assert_eq!(
            b["tool_choice"],
            serde_json::json!({"type":"any","disable_parallel_tool_use":true})
        );
        let b = body(
            r#"{"messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{"name":"f"}}],"tool_choice":{"type":"function","function":{"name":"f"}}}"#,
        );
        assert_eq!(
            b["tool_choice"],
            serde_json::json!({"type":"tool","name":"f"})
        );
        assert_eq!(b["tools"][0]["input_schema"]["type"], "object");
    }

    #[test]
    fn images_and_prefill() {
        let b = body(
            r#"{"messages":[{"role":"user","content":[{"type":"text","text":"what is this"},{"type":"image_url","image_url":{"url":"data:image/png;base64,iVBORw0KGgo="}},{"type":"image_url","image_url":{"url":"https://example.com/a.jpg"}}]},{"role":"assistant","content":"It is a "}]}"#,
        );
        let blocks = &b["messages"][0]["content"];
        assert_eq!(blocks[1]["source"]["media_type"], "image/png");
        assert_eq!(blocks[1]["source"]["data"], "iVBORw0KGgo=");
        assert_eq!(blocks[2]["source"]["url"], "https://example.com/a.jpg");
        assert_eq!(b["messages"][1]["content"][0]["text"], "It is a");
    }

    #[test]
    fn json_answers_ride_a_forced_tool() {
        let b = body(
            r#"{"messages":[{"role":"user","content":"x"}],"response_format":{"type":"json_schema","json_schema":{"name":"city","schema":{"type":"object","properties":{"name":{"type":"string"}},"required":["name"]}}}}"#,
        );
        assert_eq!(b["tools"][0]["name"], JSON_TOOL);
        assert_eq!(b["tools"][0]["input_schema"]["required"][0], "name");
        assert_eq!(
            b["tool_choice"],
            serde_json::json!({"type":"tool","name":JSON_TOOL})
        );
        let b = body(
            r#"{"messages":[{"role":"user","content":"x"}],"response_format":{"type":"json_object"}}"#,
        );
        assert_eq!(b["tools"][0]["input_schema"]["type"], "object");
        let b = body(
            r#"{"messages":[{"role":"user","content":"x"}],"response_format":{"type":"text"}}"#,
        );
        assert!(b.get("tools").is_none());
    }

    #[test]
    fn refusals_name_the_field() {
        for (req, field) in [
            (
                r#"{"messages":[{"role":"user","content":"x"}],"n":2}"#,
                "`n`",
            ),
            (
                r#"{"messages":[{"role":"user","content":"x"}],"temperature":1.5}"#,
                "`temperature`",
            ),
            (
                r#"{"messages":[{"role":"user","content":"x"}],"logprobs":true}"#,
                "`logprobs`",
            ),
            (
                r#"{"messages":[{"role":"user","content":"x"}],"presence_penalty":0.5}"#,
                "`presence_penalty`",
            ),
            (
                r#"{"messages":[{"role":"user","content":"x"},{"role":"system","content":"late"}]}"#,
                "`messages[1].role`",
            ),
            (
                r#"{"messages":[{"role":"user","content":[{"type":"input_audio","input_audio":{}}]}]}"#,
                "`messages[0].content[0]`",
            ),
            (
                r#"{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"ftp://x"}}]}]}"#,
                "`messages[0].content[0].image_url.url`",
            ),
            (
                r#"{"messages":[{"role":"assistant","tool_calls":[{"id":"a","function":{"name":"f","arguments":"{"}}]}]}"#,
                "`messages[0].tool_calls[0].function.arguments`",
            ),
            (
                r#"{"messages":[{"role":"tool","content":"x"}]}"#,
                "`messages[0].tool_call_id`",
            ),
            (r#"{"messages":[]}"#, "`messages`"),
            (
                r#"{"messages":[{"role":"user","content":"x"}],"tool_choice":"sometimes"}"#,
                "`tool_choice`",
            ),
            (
                r#"{"messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{"name":"f"}}],"response_format":{"type":"json_object"}}"#,
                "`response_format`",
            ),
        ] {
            let m = refused(req);
            assert!(m.starts_with(field), "{req}: {m}");
        }
        // Harmless members are accepted.
        body(
            r#"{"messages":[{"role":"user","content":"x"}],"store":false,"logprobs":false,"metadata":{"a":"b"},"presence_penalty":0,"seed":null}"#,
        );
    }
}
