//! Server-sent events framing, independent of what the events carry.
//!
//! Bytes arrive split anywhere; only complete lines are consumed, so an event,
//! a line or a UTF-8 sequence cut between two feeds is simply completed by the
//! next one.

/// Accumulates bytes and yields the `data` payload of each complete event.
#[derive(Default)]
pub struct SseDecoder {
    buf: Vec<u8>,
    /// `data:` lines of the event being read, joined with `\n`.
    data: Option<String>,
}

/// What one complete line contributed.
enum Line {
    /// A blank line: the current event is complete.
    Dispatch,
    /// Anything else (already folded into the current event).
    Field,
}

impl SseDecoder {
    /// Appends `bytes` and returns the data of every event they complete.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<String>, String> {
        self.buf.extend_from_slice(bytes);
        let mut events = Vec::new();
        let mut start = 0;
        let mut i = 0;
        while i < self.buf.len() {
            let b = self.buf[i];
            if b != b'\n' && b != b'\r' {
                i += 1;
                continue;
            }
            // A lone `\r` at the end may be the first half of `\r\n`: wait.
            if b == b'\r' && i + 1 == self.buf.len() {
                break;
            }
            let end = i;
            i += if b == b'\r' && self.buf[i + 1] == b'\n' {
                2
            } else {
                1
            };
            let line = std::str::from_utf8(&self.buf[start..end])
                .map_err(|e| format!("stream is not UTF-8: {e}"))?
                .to_owned();
            start = i;
            if let Line::Dispatch = self.line(&line)
                && let Some(data) = self.data.take()
            {
                events.push(data);
            }
        }
        self.buf.drain(..start);
        Ok(events)
    }

    /// The body ended: a last line without terminator and an event without
    /// its blank line still count.
    pub fn finish(&mut self) -> Result<Vec<String>, String> {
        // Two line ends complete any pending line (a buffered lone `\r`
        // included) and then the pending event.
        self.push(b"\n\n")
    }

    fn line(&mut self, line: &str) -> Line {
        if line.is_empty() {
            return Line::Dispatch;
        }
        let (field, value) = match line.find(':') {
            Some(0) => return Line::Field, // comment
            Some(n) => {
                let v = &line[n + 1..];
                (&line[..n], v.strip_prefix(' ').unwrap_or(v))
            }
            None => (line, ""),
        };
        if field == "data" {
            match &mut self.data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            }
        }
        // `event`, `id`, `retry` and unknown fields carry nothing we use.
        Line::Field
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_splits(input: &[u8]) -> Vec<Vec<String>> {
        let mut out = Vec::new();
        for cut in 0..=input.len() {
            let mut d = SseDecoder::default();
            let mut ev = d.push(&input[..cut]).unwrap();
            ev.extend(d.push(&input[cut..]).unwrap());
            ev.extend(d.finish().unwrap());
            out.push(ev);
        }
        out
    }

    #[test]
    fn splits_lf_and_crlf_at_every_byte() {
        for input in [
            "data: {\"a\":1}\n\ndata: [DONE]\n\n",
            "data: {\"a\":1}\r\n\r\ndata: [DONE]\r\n\r\n",
            ": keep-alive\n\nevent: x\nid: 3\nretry: 10\ndata: {\"a\":1}\n\ndata: [DONE]\n\n",
            "data: {\"a\":1}\r\rdata: [DONE]\r\r",
        ] {
            for ev in all_splits(input.as_bytes()) {
                assert_eq!(
                    ev,
                    vec!["{\"a\":1}".to_string(), "[DONE]".to_string()],
                    "{input:?}"
                );
            }
        }
    }

    #[test]
    fn joins_multi_line_data_and_keeps_utf8_across_feeds() {
        let input = "data: {\"t\":\ndata: \"é☃\"}\n\n".as_bytes();
        for ev in all_splits(input) {
            assert_eq!(ev, vec!["{\"t\":\n\"é☃\"}".to_string()]);
        }
    }

    #[test]
    fn comment_only_event_yields_nothing() {
        let mut d = SseDecoder::default();
        assert!(d.push(b": ping\n\n").unwrap().is_empty());
    }

    #[test]
    fn unterminated_last_event_is_flushed_on_finish() {
        let mut d = SseDecoder::default();
        assert!(d.push(b"data: x").unwrap().is_empty());
        assert_eq!(d.finish().unwrap(), vec!["x".to_string()]);
    }
}
