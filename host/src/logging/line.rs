//! The text of a log line, written without `core::fmt` where it can be.
//!
//! Why not tracing-subscriber's own `Full` format: the one `info` line a
//! request logs cost ~9 µs of gateway CPU under load (A/B of the same
//! binary at c=64 with that line filtered out), while formatting it in a
//! hot loop takes 0.7 µs. The difference is footprint: the default format
//! goes through `core::fmt` for every piece (timestamp digits, padded level,
//! each field's name, `=` and value), code that is cold by the time the
//! next request logs, and evicts the request path's own code meanwhile.
//!
//! [`Line`] writes the same text as the default format without colours:
//! `2026-12-04T02:02:23.564754Z  INFO target: message key=value ...`, with
//! span scopes as `name{fields}:` before the target. Timestamp text is kept
//! per thread for the current second; numbers, booleans and the message are
//! written directly. Rare values (errors, floats, quoted strings) go through
//! tracing-subscriber's own field visitor, so they read as before. On a
//! terminal (colours) the default format is used as is.

use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_log::NormalizeEvent as _;
use tracing_subscriber::field::VisitOutput as _;
use tracing_subscriber::fmt::format::{DefaultVisitor, Format, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// The gateway's log line format (see the module docs).
#[derive(Default)]
pub struct Line {
    /// Used when the writer takes colours (a terminal).
    coloured: Format,
}

impl<S, N> FormatEvent<S, N> for Line
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        if w.has_ansi_escapes() {
            return self.coloured.format_event(ctx, w, event);
        }
        // Events from the `log` crate carry their real target in fields.
        let normalized = event.normalized_metadata();
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
        timestamp(&mut w)?;
        w.write_str(level(meta.level()))?;
        if let Some(scope) = ctx.event_scope() {
            let mut seen = false;
            for span in scope.from_root() {
                w.write_str(span.metadata().name())?;
                seen = true;
                let ext = span.extensions();
                if let Some(fields) = ext.get::<FormattedFields<N>>()
                    && !fields.is_empty()
                {
                    w.write_char('{')?;
                    w.write_str(fields)?;
                    w.write_char('}')?;
                }
                w.write_char(':')?;
            }
            if seen {
                w.write_char(' ')?;
            }
        }
        w.write_str(meta.target())?;
        w.write_str(": ")?;
        let mut fields = Fields {
            w: w.by_ref(),
            first: true,
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;
        w.write_char('\n')
    }
}

/// The level as the default format pads it, and the space after it.
fn level(level: &Level) -> &'static str {
    match *level {
        Level::TRACE => "TRACE ",
        Level::DEBUG => "DEBUG ",
        Level::INFO => " INFO ",
        Level::WARN => " WARN ",
        _ => "ERROR ",
    }
}

thread_local! {
    /// The second the cached text is for, and `YYYY-MM-DDTHH:MM:SS.`.
    static SECOND: RefCell<(u64, [u8; 20])> = const { RefCell::new((u64::MAX, [0; 20])) };
}

/// `2026-12-04T02:02:23.564754Z ` (UTC, microseconds), as the default
/// format's timer writes it.
fn timestamp(w: &mut Writer<'_>) -> fmt::Result {
    let Ok(now) = SystemTime::now().duration_since(UNIX_EPOCH) else {
        return w.write_str("<unknown time> ");
    };
    let secs = now.as_secs();
    let mut text = [0u8; 28];
    SECOND.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != secs {
            *cached = (secs, second_text(secs));
        }
        text[..20].copy_from_slice(&cached.1);
    });
    digits(&mut text[20..26], u64::from(now.subsec_micros()));
    text[26] = b'Z';
    text[27] = b' ';
    // Only ASCII digits and punctuation were written.
    w.write_str(std::str::from_utf8(&text).map_err(|_| fmt::Error)?)
}

/// A warning line in the format of the others, for the log writer's own
/// notices (written without going through `tracing`).
pub(super) fn notice(message: &str) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let mut stamp = second_text(now.as_secs()).to_vec();
    let mut micros = [0u8; 6];
    digits(&mut micros, u64::from(now.subsec_micros()));
    stamp.extend_from_slice(&micros);
    let stamp = String::from_utf8(stamp).unwrap_or_default();
    format!("{stamp}Z  WARN switchyard::logging: {message}\n")
}

/// `YYYY-MM-DDTHH:MM:SS.` for `secs` since the Unix epoch (UTC), for
/// years 1970 to 9999.
fn second_text(secs: u64) -> [u8; 20] {
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = crate::calendar::civil(days as i64);
    let mut t = *b"0000-00-00T00:00:00.";
    digits(&mut t[0..4], year.clamp(0, 9999) as u64);
    digits(&mut t[5..7], month as u64);
    digits(&mut t[8..10], day as u64);
    digits(&mut t[11..13], rem / 3600);
    digits(&mut t[14..16], rem % 3600 / 60);
    digits(&mut t[17..19], rem % 60);
    t
}

/// `n` in decimal, zero-padded to fill `out` (its leading digits dropped
/// when it does not fit).
fn digits(out: &mut [u8], mut n: u64) {
    for b in out.iter_mut().rev() {
        *b = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

/// An event's fields as the default format writes them: the message, then
/// ` name=value` (values in their `Debug` form; `%` values in their
/// `Display` form), `log.*` fields left out.
struct Fields<'a> {
    w: Writer<'a>,
    first: bool,
    result: fmt::Result,
}

impl Fields<'_> {
    /// A separating space unless this is the first field.
    fn pad(&mut self) -> fmt::Result {
        if self.first {
            self.first = false;
            Ok(())
        } else {
            self.w.write_char(' ')
        }
    }

    /// `name=` for `field` (a raw identifier's `r#` dropped); `None` for
    /// the fields the default format leaves out.
    fn name(&mut self, field: &Field) -> Option<fmt::Result> {
        let name = field.name();
        if name.starts_with("log.") {
            return None;
        }
        let name = name.strip_prefix("r#").unwrap_or(name);
        Some(
            self.pad()
                .and_then(|()| self.w.write_str(name))
                .and_then(|()| self.w.write_char('=')),
        )
    }

    /// A value the default visitor writes in a way worth keeping exactly
    /// (quoted strings, error source lists, floats).
    fn delegate(&mut self, record: impl FnOnce(&mut DefaultVisitor<'_>)) {
        let mut visitor = DefaultVisitor::new(self.w.by_ref(), self.first);
        record(&mut visitor);
        self.first = false;
        self.result = visitor.finish();
    }

    fn number(&mut self, field: &Field, negative: bool, n: u64) {
        if self.result.is_err() {
            return;
        }
        self.result = match self.name(field) {
            None => Ok(()),
            Some(Err(e)) => Err(e),
            Some(Ok(())) => {
                let mut buf = [0u8; 21];
                let mut at = buf.len();
                let mut n = n;
                loop {
                    at -= 1;
                    buf[at] = b'0' + (n % 10) as u8;
                    n /= 10;
                    if n == 0 {
                        break;
                    }
                }
                if negative {
                    at -= 1;
                    buf[at] = b'-';
                }
                std::str::from_utf8(&buf[at..])
                    .map_err(|_| fmt::Error)
                    .and_then(|s| self.w.write_str(s))
            }
        };
    }
}

impl Visit for Fields<'_> {
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.number(field, false, value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.number(field, value < 0, value.unsigned_abs());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if self.result.is_err() {
            return;
        }
        self.result = match self.name(field) {
            None => Ok(()),
            Some(r) => r.and_then(|()| self.w.write_str(if value { "true" } else { "false" })),
        };
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if self.result.is_err() {
            return;
        }
        if field.name() == "message" {
            self.result = self.pad().and_then(|()| escaped(&mut self.w, value));
        } else {
            self.delegate(|v| v.record_str(field, value));
        }
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        if self.result.is_ok() {
            self.delegate(|v| v.record_f64(field, value));
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        if self.result.is_ok() {
            self.delegate(|v| v.record_error(field, value));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.result.is_err() {
            return;
        }
        if field.name() == "message" {
            self.result = self.pad().and_then(|()| {
                let mut out = Escaping { w: &mut self.w };
                write!(out, "{value:?}")
            });
            return;
        }
        self.result = match self.name(field) {
            None => Ok(()),
            Some(r) => r.and_then(|()| write!(self.w, "{value:?}")),
        };
    }
}

/// Writes through to `w` with the control characters a terminal could act
/// on escaped, as the default format escapes messages.
struct Escaping<'a, 'b> {
    w: &'a mut Writer<'b>,
}

impl fmt::Write for Escaping<'_, '_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        escaped(self.w, s)
    }
}

/// `s` with ESC, BEL, BS, FF and DEL as `\x..` and C1 controls as `\u{..}`.
fn escaped(w: &mut Writer<'_>, s: &str) -> fmt::Result {
    let plain = |c: char| {
        !matches!(
            c,
            '\x1b' | '\x07' | '\x08' | '\x0c' | '\x7f' | '\u{80}'..='\u{9f}'
        )
    };
    if s.chars().all(plain) {
        return w.write_str(s);
    }
    for c in s.chars() {
        match c {
            '\x1b' => w.write_str("\\x1b")?,
            '\x07' => w.write_str("\\x07")?,
            '\x08' => w.write_str("\\x08")?,
            '\x0c' => w.write_str("\\x0c")?,
            '\x7f' => w.write_str("\\x7f")?,
            '\u{80}'..='\u{9f}' => write!(w, "\\u{{{:x}}}", c as u32)?,
            c => w.write_char(c)?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
