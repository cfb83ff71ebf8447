use std::sync::{Arc, Mutex};

use tracing_subscriber::layer::SubscriberExt as _;

use super::*;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[derive(Debug)]
struct Outer(Inner);
#[derive(Debug)]
struct Inner;
impl fmt::Display for Outer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("outer failed")
    }
}
impl fmt::Display for Inner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("inner \x1b[31mcause")
    }
}
impl std::error::Error for Outer {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}
impl std::error::Error for Inner {}

/// Every kind of event the gateway logs, inside and outside spans.
fn events() {
    let id: Arc<str> = Arc::from("0000abcd-000000000001");
    tracing::info!(request_id = %id, model = %"load", deployment = %"mock",
        attempts = 1usize, ms = 0u64, total_ms = 12u64, "answered");
    tracing::warn!(class = ?Some(3), status = 429u16, delta = -42i64, "attempt failed: {}", "too many");
    tracing::error!(
        ok = true,
        no = false,
        ratio = 0.25f64,
        text = "quoted \"x\"",
        "plain"
    );
    tracing::info!(
        r#type = "raw",
        "message with \x1b[2J escape, \x07 bell and \u{85} C1"
    );
    let e = Outer(Inner);
    tracing::warn!(
        error = &e as &(dyn std::error::Error + 'static),
        "with an error"
    );
    tracing::warn!(
        error = &Inner as &(dyn std::error::Error + 'static),
        "error without a source"
    );
    let outer = tracing::info_span!("stream", request_id = %id, model = "m");
    let _o = outer.enter();
    tracing::info!(n = u64::MAX, m = i64::MIN, "inside one span");
    let inner = tracing::info_span!("leg");
    let _i = inner.enter();
    tracing::debug!(x = 1, "inside two spans");
    tracing::trace!("no fields at all");
}

fn render(line: bool) -> String {
    let out = Captured::default();
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(out.clone())
        .with_ansi(false);
    let subscriber =
        tracing_subscriber::registry().with(tracing_subscriber::filter::LevelFilter::TRACE);
    if line {
        let s = subscriber.with(layer.event_format(Line::default()));
        tracing::subscriber::with_default(s, events);
    } else {
        let s = subscriber.with(layer);
        tracing::subscriber::with_default(s, events);
    }
    String::from_utf8(out.0.lock().unwrap().clone()).unwrap()
}

#[test]
fn lines_read_exactly_as_the_default_format_writes_them() {
    let (ours, theirs) = (render(true), render(false));
    let ours: Vec<&str> = ours.lines().collect();
    let theirs: Vec<&str> = theirs.lines().collect();
    assert_eq!(ours.len(), 9, "{ours:#?}");
    assert_eq!(ours.len(), theirs.len());
    for (a, b) in ours.iter().zip(&theirs) {
        // The timestamps differ by the time between the two runs.
        assert_eq!(a.len(), b.len(), "\n{a}\n{b}");
        assert_eq!(a[27..], b[27..]);
        assert_eq!(a.as_bytes()[4], b'-');
        assert!(a[..27].ends_with('Z'), "{a}");
    }
    // A few spelled out, so a change in both cannot pass unseen.
    assert!(ours[0].ends_with(
        "  INFO switchyard::logging::line::tests: answered request_id=0000abcd-000000000001 model=load deployment=mock attempts=1 ms=0 total_ms=12"
    ));
    assert!(ours[3].contains(r"message with \x1b[2J escape, \x07 bell and \u{85} C1 type="));
    assert!(ours[6].contains(
        r#"stream{request_id=0000abcd-000000000001 model="m"}: switchyard::logging::line::tests: inside one span n=18446744073709551615 m=-9223372036854775808"#
    ));
}

#[test]
fn timestamps_are_utc_calendar_dates() {
    let text = |secs| String::from_utf8(second_text(secs).to_vec()).unwrap();
    assert_eq!(text(0), "1970-01-01T00:00:00.");
    assert_eq!(text(951_782_400), "2000-02-29T00:00:00.");
    assert_eq!(text(1_709_251_199), "2024-02-29T23:59:59.");
    assert_eq!(text(1_796_350_943), "2026-12-04T02:22:23.");
    assert_eq!(text(4_102_444_799), "2099-12-31T23:59:59.");
    assert_eq!(text(253_402_300_799), "9999-12-31T23:59:59.");
}
