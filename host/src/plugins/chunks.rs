//! What an adapter's stream chunks must be before the host writes them:
//! each becomes one SSE event, `data: <chunk>` and a blank line, so each
//! must be a JSON object on one line.
//!
//! A line break inside a chunk would end its event early, and a chunk
//! carrying `\n\ndata: [DONE]` would end the client's stream as a clean
//! success while the gateway recorded more; text that is not a JSON object
//! breaks every client's parser. The bundled adapters write compact
//! objects; a third-party one may not.

use super::PluginError;

/// Checks `chunks` in place: a JSON object spread over lines (or with
/// whitespace around it) is made compact, members in their order; anything
/// that is not a JSON object is the adapter's error, naming the chunk. The
/// usual chunk costs one scan for line breaks and two byte compares: a
/// one-line chunk between braces is not parsed again (what is inside is
/// the adapter's; it cannot break the stream's framing).
pub(crate) fn check(plugin: &str, chunks: &mut [String]) -> Result<(), PluginError> {
    for (i, chunk) in chunks.iter_mut().enumerate() {
        let one_line = memchr::memchr2(b'\n', b'\r', chunk.as_bytes()).is_none();
        if one_line && chunk.starts_with('{') && chunk.ends_with('}') {
            continue;
        }
        let object = serde_json::from_str::<serde::de::IgnoredAny>(chunk).is_ok()
            && chunk.trim_start().starts_with('{');
        if !object {
            let head: String = chunk.chars().take(80).collect();
            return Err(PluginError::BadOutput {
                plugin: plugin.to_string(),
                message: format!("stream chunk {i} is not a JSON object: {head:?}"),
            });
        }
        *chunk = compact(chunk);
    }
    Ok(())
}

/// `json` (valid JSON) without the whitespace between its tokens.
fn compact(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    let mut in_string = false;
    let mut escaped = false;
    for c in json.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if !matches!(c, ' ' | '\t' | '\n' | '\r') {
            in_string = c == '"';
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checked(chunks: &[&str]) -> Result<Vec<String>, String> {
        let mut v: Vec<String> = chunks.iter().map(|c| c.to_string()).collect();
        check("ad", &mut v).map(|()| v).map_err(|e| e.to_string())
    }

    #[test]
    fn compact_objects_pass_untouched_and_spread_ones_are_made_compact() {
        let one = r#"{"choices":[{"delta":{"content":"a b\n"}}]}"#;
        assert_eq!(checked(&[one]).unwrap(), [one]);
        let spread = "{\n  \"id\" : \"x y\",\r\n  \"choices\": [ {\"delta\": {\"content\": \"\\\" }\\n\"}} ]\n}\n";
        let out = checked(&[one, spread]).unwrap();
        assert_eq!(
            out[1],
            r#"{"id":"x y","choices":[{"delta":{"content":"\" }\n"}}]}"#
        );
        let a: serde_json::Value = serde_json::from_str(spread).unwrap();
        let b: serde_json::Value = serde_json::from_str(&out[1]).unwrap();
        assert_eq!(a, b);
        assert_eq!(checked(&[" {} "]).unwrap(), ["{}"]);
    }

    #[test]
    fn anything_but_a_json_object_is_the_adapters_error() {
        for bad in [
            "hello",
            "",
            "[1]",
            "\"{}\"",
            "{\"a\":1}\n\ndata: [DONE]",
            "{\"a\":\n1",
            "{\n} {}",
        ] {
            let e = checked(&[r#"{"ok":1}"#, bad]).unwrap_err();
            assert!(
                e.contains("\"ad\"") && e.contains("stream chunk 1"),
                "{bad:?}: {e}"
            );
        }
    }
}
