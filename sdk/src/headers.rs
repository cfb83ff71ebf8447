//! Reading upstream response headers: rate-limit quota and retry delays.
//!
//! Every provider reports rate limits in headers, in one of a few dialects,
//! and the host's rate limiter wants them as a [`QuotaHint`]. The parsing is
//! the same for every adapter, so it lives here once; [`Adapter::quota`]
//! applies it to every response unless an adapter says otherwise.
//!
//! The sandbox has no wall clock. Headers that give an absolute time (an
//! HTTP-date `Retry-After`, Anthropic's RFC 3339 reset times) are turned into
//! delays against the response's own `Date` header; without one they are
//! ignored rather than guessed.
//!
//! [`Adapter::quota`]: crate::Adapter::quota

use alloc::string::String;
use alloc::vec::Vec;

use crate::adapter::QuotaHint;

/// The response headers this module reads (names, and prefixes ending in
/// `-`): the `Date`, the retry delays and both rate-limit dialects. An
/// adapter that reads no other header returns these from
/// [`Adapter::response_headers`](crate::Adapter::response_headers), and the
/// host passes it nothing else.
pub const READ_BY_SDK: [&str; 5] = [
    "date",
    "retry-after",
    "retry-after-ms",
    "x-ratelimit-",
    "anthropic-ratelimit-",
];

/// [`READ_BY_SDK`] and `more`, as [`Adapter::response_headers`](crate::Adapter::response_headers)
/// returns them.
pub fn read_by_sdk_and(more: &[&str]) -> Option<Vec<String>> {
    Some(
        READ_BY_SDK
            .iter()
            .chain(more)
            .map(|n| String::from(*n))
            .collect(),
    )
}

/// The headers of a header block (`name: value` lines, as the host passes
/// a response's headers), in order, as (name, value) with the value's
/// surrounding ASCII whitespace trimmed. A line without a `:` is skipped.
pub fn header_lines(headers: &str) -> HeaderLines<'_> {
    HeaderLines { rest: headers }
}

/// The iterator of [`header_lines`]: each line's end and then its first
/// `:` found eight bytes a step ([`find_byte`]). A byte at a time, this
/// was the largest part of an adapter's parse in a plugin (~5.6k
/// instructions of anthropic's 45k a build-and-parse pair, callgrind):
/// every answer's `Date` and quota are read through it.
pub struct HeaderLines<'a> {
    rest: &'a str,
}

impl<'a> Iterator for HeaderLines<'a> {
    type Item = (&'a str, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        while !self.rest.is_empty() {
            let bytes = self.rest.as_bytes();
            let end = find_byte(bytes, b'\n').unwrap_or(bytes.len());
            // Both are ASCII bytes, so every cut is at a char boundary.
            let line = &self.rest[..end];
            self.rest = &self.rest[(end + 1).min(bytes.len())..];
            if let Some(colon) = find_byte(line.as_bytes(), b':') {
                return Some((&line[..colon], line[colon + 1..].trim_ascii()));
            }
        }
        None
    }
}

/// The first `byte` of `bytes`, eight bytes a step (the has-zero test on
/// each word XORed with the byte: a borrow can only set bits above the
/// first match, so the lowest set bit is exact).
fn find_byte(bytes: &[u8], byte: u8) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    let mut i = 0;
    while let Some(block) = bytes.get(i..i + 8) {
        let v =
            u64::from_le_bytes(block.try_into().expect("eight bytes")) ^ (ONES * u64::from(byte));
        let found = v.wrapping_sub(ONES) & !v & HIGH;
        if found != 0 {
            return Some(i + (found.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    bytes[i..].iter().position(|&b| b == byte).map(|p| i + p)
}

/// A header block of `pairs`, in the host's format: for tests, and for code
/// that builds a response to parse. Names are written as given (the host's
/// are lower case); a name must hold no `:` and a value no line break.
pub fn header_block(pairs: &[(&str, &str)]) -> String {
    let mut block = String::new();
    for (name, value) in pairs {
        debug_assert!(
            !name.contains([':', '\n', '\r']) && !value.contains(['\n', '\r']),
            "not a header line: {name:?}: {value:?}"
        );
        block.push_str(name);
        block.push_str(": ");
        block.push_str(value);
        block.push('\n');
    }
    block
}

/// The first header named `name` in a header block, compared
/// case-insensitively, with surrounding ASCII whitespace trimmed (HTTP
/// allows only spaces and tabs there).
pub fn header<'a>(headers: &'a str, name: &str) -> Option<&'a str> {
    header_lines(headers)
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

/// The retry delay the upstream asked for, in milliseconds: `retry-after-ms`
/// (OpenAI, Azure) first, else `retry-after` as (possibly fractional)
/// seconds or as an HTTP-date, which counts from the response's `Date`.
/// Rounded up: retrying a millisecond early is a wasted call.
pub fn retry_after_ms(headers: &str) -> Option<u32> {
    if let Some(ms) = header(headers, "retry-after-ms").and_then(|v| scaled(v, 1_000_000)) {
        return Some(ms);
    }
    let value = header(headers, "retry-after")?;
    scaled(value, NANOS_PER_SECOND).or_else(|| {
        let at = http_date_ms(value)?;
        delay_ms(at, date_ms(headers)?)
    })
}

/// A duration in milliseconds (rounded up, saturating at `u32::MAX`), as
/// rate-limit reset headers write it: Go-style `1s`, `6m0s`, `20ms`,
/// `1h2m3.5s`, `250us`, or a bare number of seconds (`12`, `0.5`).
pub fn parse_duration_ms(text: &str) -> Option<u32> {
    let text = text.trim_ascii();
    if let Some(ms) = scaled(text, NANOS_PER_SECOND) {
        return Some(ms);
    }
    if text.is_empty() {
        return None;
    }
    let mut rest = text;
    let mut total_ns: u128 = 0;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, tail) = rest.split_at(digits);
        let units = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(units);
        let unit_ns = match unit {
            "h" => 3_600 * NANOS_PER_SECOND,
            "m" => 60 * NANOS_PER_SECOND,
            "s" => NANOS_PER_SECOND,
            "ms" => 1_000_000,
            "us" | "µs" | "μs" => 1_000,
            "ns" => 1,
            _ => return None,
        };
        total_ns = total_ns.saturating_add(nanos(number, unit_ns)?);
        rest = tail;
    }
    Some(ns_to_ms(total_ns))
}

impl QuotaHint {
    /// The rate-limit state in `headers`, or `None` when they report none.
    ///
    /// Reads the OpenAI dialect, which most OpenAI-compatible servers (Azure,
    /// Groq, Together, OpenRouter, ...) copy: `x-ratelimit-limit-requests`,
    /// `x-ratelimit-remaining-requests`, `x-ratelimit-reset-requests` (a
    /// duration such as `6m0s`, see [`parse_duration_ms`]) and the `-tokens`
    /// variants; and Anthropic's `anthropic-ratelimit-{requests,tokens}-
    /// {limit,remaining,reset}`, whose reset is an RFC 3339 time (counted from
    /// the response's `Date`). Where both are present the first one wins.
    pub fn from_headers(headers: &str) -> Option<QuotaHint> {
        // One pass over the headers (a response has a dozen or more, most of
        // them unrelated): the six values by dialect, the OpenAI one first.
        // The `Date` is read only when a reset needs it.
        let mut values: [[Option<&str>; 2]; 6] = [[None; 2]; 6];
        for (name, value) in header_lines(headers) {
            let Some((dialect, field)) = quota_field(name) else {
                continue;
            };
            values[field][dialect].get_or_insert(value);
        }
        if values.iter().all(|v| v == &[None, None]) {
            return None;
        }
        // Only a reset is counted from the `Date`.
        let now = if values[2].iter().chain(&values[5]).any(Option::is_some) {
            date_ms(headers)
        } else {
            None
        };
        let count = |i: usize| values[i].iter().flatten().find_map(|v| parse_count(v));
        let reset = |i: usize| values[i].iter().flatten().find_map(|v| reset_ms(v, now));
        let hint = QuotaHint {
            limit_requests: count(0),
            remaining_requests: count(1),
            reset_requests_ms: reset(2),
            limit_tokens: count(3),
            remaining_tokens: count(4),
            reset_tokens_ms: reset(5),
        };
        (!hint.is_empty()).then_some(hint)
    }

    /// Whether no field is set.
    pub fn is_empty(&self) -> bool {
        *self == QuotaHint::default()
    }
}

// The type is generated, and `additional_derives` would ask every type of the
// world for `Default`, variants included; so it is written out here.
#[allow(clippy::derivable_impls)]
impl Default for QuotaHint {
    fn default() -> Self {
        QuotaHint {
            limit_requests: None,
            remaining_requests: None,
            reset_requests_ms: None,
            limit_tokens: None,
            remaining_tokens: None,
            reset_tokens_ms: None,
        }
    }
}

/// Which quota value a header carries: `(dialect, field)`, dialect 0 for
/// OpenAI's `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` and 1
/// for Anthropic's `anthropic-ratelimit-{requests,tokens}-{limit,remaining,reset}`;
/// fields in [`QuotaHint`]'s order.
fn quota_field(name: &str) -> Option<(usize, usize)> {
    fn strip<'a>(n: &'a str, prefix: &str) -> Option<&'a str> {
        let head = n.get(..prefix.len())?;
        head.eq_ignore_ascii_case(prefix)
            .then(|| &n[prefix.len()..])
    }
    let (dialect, kind, what) = if let Some(rest) = strip(name, "x-ratelimit-") {
        let (kind, what) = rest.split_once('-')?;
        (0, kind, what)
    } else if let Some(rest) = strip(name, "anthropic-ratelimit-") {
        let (what, kind) = rest.split_once('-')?;
        (1, kind, what)
    } else {
        return None;
    };
    let is = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
    let base = if is(what, "requests") {
        0
    } else if is(what, "tokens") {
        3
    } else {
        return None;
    };
    let offset = if is(kind, "limit") {
        0
    } else if is(kind, "remaining") {
        1
    } else if is(kind, "reset") {
        2
    } else {
        return None;
    };
    Some((dialect, base + offset))
}

const NANOS_PER_SECOND: u128 = 1_000_000_000;

/// Unix times at or above this (2001-09-09) in a reset header are absolute
/// times, not durations: some servers send epoch seconds there.
const EPOCH_SECONDS_FLOOR: u64 = 1_000_000_000;

/// A request or token count; saturates rather than failing on huge limits.
fn parse_count(v: &str) -> Option<u32> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Past 10 digits, every count is beyond u32 (saturated). Below, plain
    // 64-bit steps: a checked or saturating 64-bit multiply is a 128-bit
    // one, which a wasm32 plugin calls a function for.
    let v = v.trim_start_matches('0');
    if v.len() > 10 {
        return Some(u32::MAX);
    }
    let n = v.bytes().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
    Some(n.min(u64::from(u32::MAX)) as u32)
}

/// A reset header: an RFC 3339 time or epoch seconds (both against `now`,
/// the response's `Date`), else a duration.
fn reset_ms(v: &str, now: Option<i64>) -> Option<u32> {
    if let Some(at) = rfc3339_ms(v) {
        return delay_ms(at, now?);
    }
    if let Some(secs) = v.parse::<u64>().ok().filter(|&s| s >= EPOCH_SECONDS_FLOOR) {
        return delay_ms(i64::try_from(secs).ok()?.checked_mul(1000)?, now?);
    }
    parse_duration_ms(v)
}

/// A plain decimal number (`2`, `0.25`) times `unit_ns`, in milliseconds.
fn scaled(v: &str, unit_ns: u128) -> Option<u32> {
    nanos(v, unit_ns).map(ns_to_ms)
}

/// `number` (digits with at most one `.`) times `unit_ns`, rounded up.
fn nanos(number: &str, unit_ns: u128) -> Option<u128> {
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    if int.is_empty() && frac.is_empty()
        || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())
    {
        return None;
    }
    Some(
        decimal(int)
            .saturating_mul(unit_ns)
            .saturating_add(fraction_nanos(frac, unit_ns)),
    )
}

/// The digits after a decimal point (ASCII digits only) times `unit_ns`,
/// rounded up.
fn fraction_nanos(frac: &str, unit_ns: u128) -> u128 {
    // Digits beyond nanosecond precision cannot change the rounded-up ms.
    let frac = &frac[..frac.len().min(9)];
    (decimal(frac) * unit_ns).div_ceil(10u128.pow(frac.len() as u32))
}

/// ASCII digits as a number, saturating.
fn decimal(digits: &str) -> u128 {
    digits.bytes().fold(0u128, |n, d| {
        n.saturating_mul(10).saturating_add(u128::from(d - b'0'))
    })
}

fn ns_to_ms(ns: u128) -> u32 {
    ns.div_ceil(1_000_000).min(u128::from(u32::MAX)) as u32
}

/// Milliseconds from `now` until `at` (both Unix ms), 0 when already past.
fn delay_ms(at: i64, now: i64) -> Option<u32> {
    Some(at.saturating_sub(now).clamp(0, i64::from(u32::MAX)) as u32)
}

/// The response's `Date` header as Unix seconds, 0 without one: the
/// `created` of a canonical answer (the sandbox has no wall clock, and the
/// upstream's own clock is the one that dated the answer).
pub fn created_s(headers: &str) -> u64 {
    date_ms(headers).map_or(0, |ms| u64::try_from(ms / 1000).unwrap_or(0))
}

/// An RFC 3339 time (as some bodies carry, e.g. Ollama's `created_at`) as
/// Unix seconds.
pub fn rfc3339_s(text: &str) -> Option<u64> {
    u64::try_from(rfc3339_ms(text)? / 1000).ok()
}

/// The response's `Date` header as Unix milliseconds.
fn date_ms(headers: &str) -> Option<i64> {
    http_date_ms(header(headers, "date")?)
}

const MONTHS: [[u8; 3]; 12] = [
    *b"Jan", *b"Feb", *b"Mar", *b"Apr", *b"May", *b"Jun", *b"Jul", *b"Aug", *b"Sep", *b"Oct",
    *b"Nov", *b"Dec",
];

/// 1 for `Jan` ... 12 for `Dec` (case as the standard writes it). Compared
/// as arrays, not slices: no `memcmp` call per month.
fn month_number(name: &[u8]) -> Option<u32> {
    let &[a, b, c] = name else {
        return None;
    };
    Some(MONTHS.iter().position(|m| *m == [a, b, c])? as u32 + 1)
}

/// An IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the only HTTP-date
/// form servers may still send, as Unix milliseconds.
fn http_date_ms(v: &str) -> Option<i64> {
    fixdate_ms(v.as_bytes()).or_else(|| loose_date_ms(v))
}

/// [`http_date_ms`] of the exact 29-byte layout, read by position: every
/// answer's `created` comes from it (the general reader was ~5 % of an
/// adapter's build-and-parse).
fn fixdate_ms(b: &[u8]) -> Option<i64> {
    let layout = b.len() == 29
        && b[..3].iter().all(u8::is_ascii_alphabetic)
        && &b[3..5] == b", "
        && b[7] == b' '
        && b[11] == b' '
        && b[16] == b' '
        && b[19] == b':'
        && b[22] == b':'
        && &b[25..] == b" GMT";
    if !layout {
        return None;
    }
    let digit = |i: usize| b[i].is_ascii_digit().then(|| i64::from(b[i] - b'0'));
    let two = |i: usize| Some(digit(i)? * 10 + digit(i + 1)?);
    let month = month_number(&b[8..11])?;
    let (h, m, s) = clock(&b[17..25])?;
    unix_ms(two(12)? * 100 + two(14)?, month, two(5)? as u32, h, m, s, 0)
}

/// [`http_date_ms`] split on whitespace, for a date laid out otherwise.
fn loose_date_ms(v: &str) -> Option<i64> {
    let mut parts = v.split_ascii_whitespace();
    let _weekday = parts.next()?.strip_suffix(',')?;
    let day = parts.next()?.parse().ok()?;
    let month_name = parts.next()?;
    let month = month_number(month_name.as_bytes())?;
    let year = parts.next()?.parse().ok()?;
    let (h, m, s) = clock(parts.next()?.as_bytes())?;
    if parts.next()? != "GMT" || parts.next().is_some() {
        return None;
    }
    unix_ms(year, month, day, h, m, s, 0)
}

/// An RFC 3339 time (`2024-05-01T12:00:30.5Z`, `...+02:00`) as Unix milliseconds.
fn rfc3339_ms(v: &str) -> Option<i64> {
    let b = v.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let num = |s: &str| -> Option<i64> {
        if s.bytes().all(|c| c.is_ascii_digit()) {
            s.parse().ok()
        } else {
            None
        }
    };
    let year = num(v.get(..4)?)?;
    let month = num(v.get(5..7)?)? as u32;
    let day = num(v.get(8..10)?)? as u32;
    let (h, m, s) = clock(v.get(11..19)?.as_bytes())?;
    let mut rest = v.get(19..)?;
    let mut millis = 0;
    if let Some(frac) = rest.strip_prefix('.') {
        let end = frac
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(frac.len());
        if end == 0 {
            return None;
        }
        millis = ns_to_ms(fraction_nanos(&frac[..end], NANOS_PER_SECOND)) as i64;
        rest = &frac[end..];
    }
    let offset_min = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let (oh, om) = rest.get(1..)?.split_once(':')?;
            if oh.len() != 2 || om.len() != 2 {
                return None;
            }
            sign * (num(oh)? * 60 + num(om)?)
        }
    };
    Some(unix_ms(year, month, day, h, m, s, millis)? - offset_min * 60_000)
}

/// `HH:MM:SS`, read by position.
fn clock(b: &[u8]) -> Option<(i64, i64, i64)> {
    if b.len() != 8 || b[2] != b':' || b[5] != b':' {
        return None;
    }
    let two = |i: usize| {
        let (a, c) = (b[i], b[i + 1]);
        (a.is_ascii_digit() && c.is_ascii_digit())
            .then(|| i64::from(a - b'0') * 10 + i64::from(c - b'0'))
    };
    let (h, m, s) = (two(0)?, two(3)?, two(6)?);
    (h < 24 && m < 60 && s <= 60).then_some((h, m, s))
}

/// Unix milliseconds of a proleptic Gregorian UTC date and time.
fn unix_ms(year: i64, month: u32, day: u32, h: i64, m: i64, s: i64, ms: i64) -> Option<i64> {
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    // Days since 1970-01-01, counting years from March so that the leap day
    // is the last day of a year. In 32-bit arithmetic (years beyond a
    // million are no date a header means): a 64-bit division by a constant
    // is a 128-bit multiply, which a wasm32 plugin calls a function for.
    let year = i32::try_from(year).ok().filter(|y| y.abs() < 1_000_000)?;
    let (month, day) = (month as i32, day as i32);
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y.rem_euclid(400);
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days = i64::from(era) * 146_097 + i64::from(day_of_era) - 719_468;
    Some(((days * 24 + h) * 60 + m) * 60_000 + s * 1000 + ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    fn h(pairs: &[(&str, &str)]) -> String {
        header_block(pairs)
    }

    #[test]
    fn a_header_block_reads_back_as_its_pairs() {
        let block = h(&[
            ("date", "Wed, 01 May 2024 12:00:00 GMT"),
            ("x-empty", ""),
            ("x-twice", "1"),
            ("x-twice", "2"),
        ]);
        assert_eq!(
            block,
            "date: Wed, 01 May 2024 12:00:00 GMT\nx-empty: \nx-twice: 1\nx-twice: 2\n"
        );
        let read: Vec<(&str, &str)> = header_lines(&block).collect();
        assert_eq!(
            read,
            [
                ("date", "Wed, 01 May 2024 12:00:00 GMT"),
                ("x-empty", ""),
                ("x-twice", "1"),
                ("x-twice", "2"),
            ]
        );
        assert_eq!(header(&block, "X-Twice"), Some("1"));
        assert_eq!(header(&block, "x-none"), None);
        // Whitespace around a value is not part of it; a line with no colon
        // is no header.
        assert_eq!(
            header_lines("a:  1 \nno colon\nb:2").collect::<Vec<_>>(),
            [("a", "1"), ("b", "2")]
        );
        assert_eq!(header_lines("").count(), 0);
    }

    /// Eight bytes a step finds what a byte at a time finds, at every
    /// place in the word and in the tail, beside high and equal-minus-one
    /// bytes (the has-zero test's borrows).
    #[test]
    fn find_byte_finds_the_first() {
        for len in 0..27 {
            for fill in [b'a', 0x80, 0xff, b'\n' - 1, b':' + 1] {
                for at in 0..=len {
                    let mut bytes = alloc::vec![fill; len];
                    if at < len {
                        bytes[at] = b'\n';
                    }
                    if at + 3 < len {
                        bytes[at + 3] = b'\n';
                    }
                    let want = bytes.iter().position(|&b| b == b'\n');
                    assert_eq!(find_byte(&bytes, b'\n'), want, "{bytes:?}");
                }
            }
        }
    }

    #[test]
    fn counts_saturate() {
        for (v, want) in [
            ("0", Some(0)),
            ("007", Some(7)),
            ("00000000001", Some(1)),
            ("4294967295", Some(u32::MAX)),
            ("4294967296", Some(u32::MAX)),
            ("99999999999999999999999", Some(u32::MAX)),
            ("", None),
            ("1a", None),
            ("-1", None),
        ] {
            assert_eq!(parse_count(v), want, "{v}");
        }
    }

    #[test]
    fn durations() {
        for (text, ms) in [
            ("1s", 1000),
            ("6m0s", 360_000),
            ("20ms", 20),
            ("1h2m3.5s", 3_723_500),
            ("2m59.56s", 179_560),
            ("0.5s", 500),
            ("250us", 1),
            ("1ns", 1),
            ("0s", 0),
            ("12", 12_000),
            ("0.25", 250),
            (" 7s ", 7000),
            ("100000000h", u32::MAX),
        ] {
            assert_eq!(parse_duration_ms(text), Some(ms), "{text}");
        }
        for bad in ["", "s", "1x", "-1s", "1.2.3s", "1 s", "ms5"] {
            assert_eq!(parse_duration_ms(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn openai_quota() {
        let q = QuotaHint::from_headers(&h(&[
            ("x-ratelimit-limit-requests", "10000"),
            ("x-ratelimit-remaining-requests", "9999"),
            ("x-ratelimit-reset-requests", "6m0s"),
            ("x-ratelimit-limit-tokens", "99999999999"),
            ("x-ratelimit-remaining-tokens", "149984"),
            ("x-ratelimit-reset-tokens", "6ms"),
        ]))
        .unwrap();
        assert_eq!(
            q,
            QuotaHint {
                limit_requests: Some(10000),
                remaining_requests: Some(9999),
                reset_requests_ms: Some(360_000),
                limit_tokens: Some(u32::MAX),
                remaining_tokens: Some(149_984),
                reset_tokens_ms: Some(6),
            }
        );
        // Partial reports are kept; garbage is skipped, not guessed.
        let q = QuotaHint::from_headers(&h(&[
            ("X-RateLimit-Remaining-Tokens", "5"),
            ("x-ratelimit-limit-requests", "many"),
        ]))
        .unwrap();
        assert_eq!(q.remaining_tokens, Some(5));
        assert_eq!(q.limit_requests, None);
        assert_eq!(QuotaHint::from_headers(&h(&[("content-type", "x")])), None);
    }

    #[test]
    fn both_dialects_openai_first_names_any_case() {
        let both = h(&[
            ("anthropic-ratelimit-requests-remaining", "7"),
            ("X-RateLimit-Remaining-Requests", "3"),
            ("x-ratelimit-remaining-foo", "1"),
            ("x-ratelimit-limit-tokens", "not a number"),
            ("anthropic-ratelimit-tokens-limit", "900"),
        ]);
        let q = QuotaHint::from_headers(&both).unwrap();
        assert_eq!(q.remaining_requests, Some(3));
        // An unreadable OpenAI value gives way to the Anthropic one.
        assert_eq!(q.limit_tokens, Some(900));
        assert_eq!(q.limit_requests, None);
        assert!(QuotaHint::from_headers(&h(&[("server", "x"), ("x-ratelimit", "1")])).is_none());
    }

    #[test]
    fn anthropic_quota_counts_reset_from_date() {
        let headers = h(&[
            ("date", "Wed, 01 May 2024 12:00:00 GMT"),
            ("anthropic-ratelimit-requests-limit", "50"),
            ("anthropic-ratelimit-requests-remaining", "0"),
            ("anthropic-ratelimit-requests-reset", "2024-05-01T12:00:30Z"),
            (
                "anthropic-ratelimit-tokens-reset",
                "2024-05-01T14:00:01.250+02:00",
            ),
        ]);
        let q = QuotaHint::from_headers(&headers).unwrap();
        assert_eq!(q.limit_requests, Some(50));
        assert_eq!(q.remaining_requests, Some(0));
        assert_eq!(q.reset_requests_ms, Some(30_000));
        assert_eq!(q.reset_tokens_ms, Some(1250));
        // Without a Date the absolute reset cannot be placed: left out.
        let q = QuotaHint::from_headers(headers.split_once('\n').unwrap().1).unwrap();
        assert_eq!(q.reset_requests_ms, None);
        // A reset already past is "now", not negative.
        let past = h(&[
            ("date", "Wed, 01 May 2024 12:00:00 GMT"),
            ("x-ratelimit-reset-requests", "1714564000"),
        ]);
        assert_eq!(
            QuotaHint::from_headers(&past).unwrap().reset_requests_ms,
            Some(0)
        );
    }

    #[test]
    fn fixed_dates_read_by_position_as_when_split() {
        let weekdays = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
        // Every 7919th minute for a century and more, odd seconds included.
        let mut at = 0i64;
        while at < 4_200_000_000_000 {
            let days = at.div_euclid(86_400_000);
            let (y, mo, d) = civil(days);
            let secs = at.rem_euclid(86_400_000) / 1000;
            let text = alloc::format!(
                "{}, {d:02} {} {y} {:02}:{:02}:{:02} GMT",
                weekdays[days.rem_euclid(7) as usize],
                core::str::from_utf8(&MONTHS[mo as usize - 1]).unwrap(),
                secs / 3600,
                secs / 60 % 60,
                secs % 60
            );
            assert_eq!(fixdate_ms(text.as_bytes()), Some(at - at % 1000), "{text}");
            assert_eq!(loose_date_ms(&text), Some(at - at % 1000), "{text}");
            at += 7919 * 60_000 + 17_000;
        }
        for odd in [
            "Sun, 06 Nov 1994 08:49:37 GMT ",
            "Sun,  6 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 24:49:37 GMT",
            "Sun, 06 Nov 1994 08:60:37 GMT",
            "Sun, 06 Nox 1994 08:49:37 GMT",
            "Sun, 0x Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 08:49:37 UTC",
            "S n, 06 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 08-49-37 GMT",
        ] {
            assert_eq!(fixdate_ms(odd.as_bytes()), None, "{odd}");
        }
        // What the position reader leaves, the split one still reads.
        assert_eq!(
            http_date_ms("Sun,  6 Nov 1994 08:49:37 GMT"),
            http_date_ms("Sun, 06 Nov 1994 08:49:37 GMT")
        );
    }

    /// (year, month, day) of days since 1970-01-01.
    fn civil(days: i64) -> (i64, u32, u32) {
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        (yoe + era * 400 + i64::from(m <= 2), m, d)
    }

    #[test]
    fn retry_after() {
        let r = |pairs: &[(&str, &str)]| retry_after_ms(&h(pairs));
        assert_eq!(r(&[("retry-after-ms", "1500")]), Some(1500));
        assert_eq!(
            r(&[("retry-after-ms", "1.5"), ("retry-after", "9")]),
            Some(2)
        );
        assert_eq!(r(&[("Retry-After", "2")]), Some(2000));
        assert_eq!(r(&[("retry-after", "0.25")]), Some(250));
        assert_eq!(r(&[("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT")]), None);
        assert_eq!(
            r(&[
                ("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT"),
                ("date", "Wed, 21 Oct 2015 07:27:55 GMT"),
            ]),
            Some(5000)
        );
        assert_eq!(r(&[("retry-after", "soon")]), None);
        assert_eq!(r(&[]), None);
    }

    #[test]
    fn dates() {
        assert_eq!(http_date_ms("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(
            http_date_ms("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777_000)
        );
        assert_eq!(rfc3339_ms("2000-02-29T00:00:00Z"), Some(951_782_400_000));
        assert_eq!(rfc3339_ms("1969-12-31T23:59:59.5Z"), Some(-500));
        assert_eq!(rfc3339_ms("2024-13-01T00:00:00Z"), None);
        assert_eq!(rfc3339_ms("2024-01-01T00:00:00"), None);
        assert_eq!(http_date_ms("Sunday, 06-Nov-94 08:49:37 GMT"), None);
    }
}
