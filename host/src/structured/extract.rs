//! Finding the JSON in a model's answer: the whole answer, a fenced code
//! block, or the first balanced object or array embedded in prose — what
//! a model asked for "only JSON" in a prompt actually returns.

/// Candidate spans scanned for, at most: each unbalanced opening bracket
/// costs a scan to the end of the text, so the count bounds the work to a
/// few passes over even a hostile answer.
const MAX_SPANS: usize = 16;

/// The first JSON value in `content` (its text, trimmed), trying the whole
/// answer, then each fenced block, then each embedded object or array.
pub fn extract(content: &str) -> Option<&str> {
    candidates(content).next()
}

/// Every JSON value found in `content`, in the order [`extract`] tries
/// them: a caller that wants one of a given shape takes the first that has
/// it.
pub fn candidates(content: &str) -> impl Iterator<Item = &str> {
    let whole = content.trim();
    std::iter::once(whole)
        .chain(fenced(content))
        .chain(embedded(content))
        .filter(|s| parses(s))
}

fn parses(s: &str) -> bool {
    !s.is_empty() && serde_json::from_str::<serde::de::IgnoredAny>(s).is_ok()
}

/// The bodies of the answer's fenced code blocks (```json … ``` or plain).
fn fenced(content: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = content;
    while let Some(open) = rest.find("```") {
        let after = &rest[open + 3..];
        // The info string (`json`, `JSON`, none) ends the fence's line.
        let Some(line_end) = after.find('\n') else {
            break;
        };
        let body = &after[line_end + 1..];
        let Some(close) = body.find("```") else {
            break;
        };
        out.push(body[..close].trim());
        rest = &body[close + 3..];
    }
    out
}

/// Each balanced `{…}` or `[…]` span, outermost first, skipping brackets
/// inside strings (at most [`MAX_SPANS`] openings tried).
fn embedded(content: &str) -> Vec<&str> {
    let bytes = content.as_bytes();
    let mut out = Vec::new();
    let mut start = 0;
    let mut tried = 0;
    while let Some(offset) = bytes[start..].iter().position(|b| matches!(b, b'{' | b'[')) {
        if tried == MAX_SPANS {
            break;
        }
        tried += 1;
        let open = start + offset;
        match balanced_end(&bytes[open..]) {
            Some(len) => {
                out.push(&content[open..open + len]);
                start = open + 1;
            }
            None => start = open + 1,
        }
    }
    out
}

/// The length of the balanced span starting at `s[0]` (an opening bracket).
fn balanced_end(s: &[u8]) -> Option<usize> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for (i, &b) in s.iter().enumerate() {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::extract;

    #[test]
    fn the_whole_answer_fenced_or_embedded() {
        assert_eq!(extract(" {\"a\": 1}\n"), Some("{\"a\": 1}"));
        assert_eq!(
            extract("Here it is:\n```json\n{\"a\": [1, 2]}\n```\nDone."),
            Some("{\"a\": [1, 2]}")
        );
        assert_eq!(extract("```\n[1]\n```"), Some("[1]"));
        assert_eq!(
            extract("Sure! The answer is {\"name\": \"a } in a string\", \"n\": 2}. Hope it helps"),
            Some("{\"name\": \"a } in a string\", \"n\": 2}")
        );
        // A broken first candidate does not hide a good one.
        assert_eq!(
            extract("{oops} then {\"ok\": true}"),
            Some("{\"ok\": true}")
        );
        assert_eq!(extract("\"just a string\""), Some("\"just a string\""));
    }

    #[test]
    fn nothing_when_there_is_no_json() {
        assert_eq!(extract("I cannot help with that."), None);
        assert_eq!(extract("{\"unclosed\": 1"), None);
        assert_eq!(extract("```json\n{bad}\n```"), None);
        assert_eq!(extract(""), None);
    }

    #[test]
    fn a_hostile_answer_costs_a_bounded_scan() {
        let many = "[".repeat(200_000);
        let started = std::time::Instant::now();
        assert_eq!(extract(&many), None);
        let closed = "[1] ".repeat(50_000);
        assert_eq!(extract(&closed), Some("[1]"));
        // Generous: a quadratic scan takes seconds here.
        assert!(started.elapsed() < std::time::Duration::from_millis(500));
    }

    #[test]
    fn every_candidate_in_order() {
        let found: Vec<&str> = super::candidates("[1, 2] then {\"a\": 1}").collect();
        assert_eq!(found, ["[1, 2]", "{\"a\": 1}"]);
    }
}
