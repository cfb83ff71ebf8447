//! Options: unsupported members, tools, tool choice, generation config.

use serde_json::Value;
use switchyard_sdk::BuildError;
use switchyard_sdk::canonical::{ChatRequest, ResponseFormat, Stop, ToolChoice, invalid};

use crate::wire::{FunctionCallingConfig, FunctionDeclaration, GenerationConfig, Tool, ToolConfig};

/// Members of the canonical request that are bookkeeping for the caller or
/// for OpenAI's platform: Gemini would answer no differently, so they are
/// dropped. (`user`, `parallel_tool_calls` and `stream_options` are typed
/// members and dropped the same way; `stream_options` only decides whether
/// the stream ends with a usage chunk.)
const IGNORED: &[&str] = &[
    "metadata",
    "store",
    "prompt_cache_key",
    "safety_identifier",
    "service_tier",
];

/// Refuses members the canonical types do not name, unless they are
/// bookkeeping ([`IGNORED`]), null or their default value.
pub fn refuse_unsupported(req: &ChatRequest) -> Result<(), BuildError> {
    for (key, value) in &req.extra {
        if value.is_null() || IGNORED.contains(&key.as_str()) {
            continue;
        }
        let why = match (key.as_str(), value) {
            ("logprobs", Value::Bool(false)) => continue,
            ("logit_bias", Value::Object(m)) if m.is_empty() => continue,
            ("modalities", Value::Array(a)) if a.iter().all(|m| m == "text") => continue,
            ("logprobs" | "top_logprobs", _) => {
                "is not supported: the Gemini adapter does not translate log probabilities"
            }
            ("logit_bias", _) => "is not supported: Gemini has no token biases",
            ("modalities" | "audio", _) => "is not supported: the Gemini adapter answers text only",
            ("functions" | "function_call", _) => {
                "is not supported by the Gemini adapter: use `tools` and `tool_choice`"
            }
            _ => "is not supported by the Gemini adapter",
        };
        return Err(invalid(key, why));
    }
    Ok(())
}

/// The caller's functions, all in one `Tool`.
///
/// Schemas go in `parametersJsonSchema`, not `parameters`: `parameters` takes
/// Google's OpenAPI subset, which rejects keywords every OpenAI strict-mode
/// schema carries (`additionalProperties`, `$defs`/`$ref`, type arrays), and
/// stripping them would quietly loosen the caller's contract.
/// `parametersJsonSchema` takes the JSON Schema as written. A missing, null
/// or empty (`{}`) schema is a function without parameters.
pub fn tools(req: &ChatRequest) -> Result<Vec<Tool<'_>>, BuildError> {
    let Some(tools) = req.tools.as_deref().filter(|t| !t.is_empty()) else {
        return Ok(Vec::new());
    };
    let mut function_declarations = Vec::with_capacity(tools.len());
    for (i, tool) in tools.iter().enumerate() {
        if tool.kind != "function" {
            return Err(invalid(
                &format!("tools[{i}].type"),
                "must be `function`: the Gemini adapter sends function tools only",
            ));
        }
        let f = &tool.function;
        function_declarations.push(FunctionDeclaration {
            name: &f.name,
            description: f.description.as_deref(),
            parameters_json_schema: f
                .parameters
                .as_ref()
                .filter(|p| !p.is_null() && p.as_object().is_none_or(|o| !o.is_empty())),
        });
    }
    Ok(vec![Tool {
        function_declarations,
    }])
}

/// `tool_choice` as a function-calling mode: `none` → `NONE`, `auto` →
/// `AUTO`, `required` → `ANY`, a named function → `ANY` restricted to it.
pub fn tool_config(
    req: &ChatRequest,
    has_tools: bool,
) -> Result<Option<ToolConfig<'_>>, BuildError> {
    let Some(choice) = &req.tool_choice else {
        return Ok(None);
    };
    let (mode, allowed_function_names) = match choice {
        ToolChoice::Mode(m) => match m.as_str() {
            "none" => ("NONE", Vec::new()),
            "auto" => ("AUTO", Vec::new()),
            "required" => ("ANY", Vec::new()),
            _ => {
                return Err(invalid(
                    "tool_choice",
                    "must be `none`, `auto`, `required` or a named function",
                ));
            }
        },
        ToolChoice::Function(named) => {
            if named.kind != "function" {
                return Err(invalid("tool_choice.type", "must be `function`"));
            }
            let name = named.function.name.as_str();
            let declared = req.tools.iter().flatten().any(|t| t.function.name == name);
            if !declared {
                return Err(invalid(
                    "tool_choice.function.name",
                    format_args!("`{name}` is not a function in `tools`"),
                ));
            }
            ("ANY", vec![name])
        }
    };
    if !has_tools {
        // Without tools, `none` and `auto` mean what Gemini does anyway.
        return match mode {
            "ANY" => Err(invalid("tool_choice", "requires `tools`")),
            _ => Ok(None),
        };
    }
    Ok(Some(ToolConfig {
        function_calling_config: FunctionCallingConfig {
            mode,
            allowed_function_names,
        },
    }))
}

/// Sampling, length, stop sequences and structured output.
///
/// A `json_schema` response format goes in `responseJsonSchema` rather than
/// `responseSchema`, for the reason [`tools`] gives: the schema is the
/// caller's JSON Schema, sent as written.
pub fn generation_config(req: &ChatRequest) -> Result<GenerationConfig<'_>, BuildError> {
    let (response_mime_type, response_json_schema) = match &req.response_format {
        None | Some(ResponseFormat::Text) => (None, None),
        Some(ResponseFormat::JsonObject) => (Some("application/json"), None),
        Some(ResponseFormat::JsonSchema { json_schema }) => (
            Some("application/json"),
            json_schema.schema.as_ref().filter(|s| !s.is_null()),
        ),
    };
    let candidate_count = match req.n {
        None | Some(1) => None,
        Some(0) => return Err(invalid("n", "must be at least 1")),
        // One choice per stream keeps the stream state small; Gemini's
        // streamed candidates would interleave.
        Some(_) if req.is_stream() => {
            return Err(invalid(
                "n",
                "greater than 1 is not supported with `stream` by the Gemini adapter",
            ));
        }
        Some(n) => Some(n),
    };
    let seed = match req.seed {
        None => None,
        Some(s) => {
            Some(i32::try_from(s).map_err(|_| invalid("seed", "must fit in 32 bits for Gemini"))?)
        }
    };
    let stop_sequences = match &req.stop {
        None => Vec::new(),
        Some(Stop::One(s)) => vec![s.as_str()],
        Some(Stop::Many(v)) => v.iter().map(String::as_str).collect(),
    }
    .into_iter()
    .filter(|s| !s.is_empty())
    .collect();
    Ok(GenerationConfig {
        stop_sequences,
        response_mime_type,
        response_json_schema,
        candidate_count,
        max_output_tokens: req.max_output_tokens(),
        temperature: req.temperature,
        top_p: req.top_p,
        top_k: req.top_k,
        seed,
        presence_penalty: req.presence_penalty,
        frequency_penalty: req.frequency_penalty,
    })
}
