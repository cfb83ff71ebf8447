//! Detectors over an answer's text that the scores combine: where it stops,
//! what it repeats, which bytes are noise. Each is a cheap pass (no
//! decoding where bytes suffice, no sorting where a hash set will do).

use crate::text;

/// The longest repeated block, in words, the loop detector looks for.
const MAX_PERIOD: usize = 200;
/// A character repeated this many times in prose is a loop, not a rule line.
pub const CHAR_RUN: usize = 200;

/// The end of `line` when it stops mid-sentence: prose (not a list item,
/// table row, heading, quote or fence, nor ending in a URL) ending in a
/// connecting mark (`,` `:` ...) after three words or more, or in a letter
/// after eight or more. Shorter lines without a full stop are normal in
/// poems, addresses and sign-offs, and a final number ("1, 2, 3") in
/// lists; a cut paragraph is long.
pub fn mid_sentence(line: &str) -> Option<&str> {
    let line = line.trim();
    let digits = line.bytes().take_while(u8::is_ascii_digit).count();
    let structural = matches!(
        line.as_bytes().first(),
        None | Some(b'-' | b'*' | b'+' | b'|' | b'#' | b'>' | b'`' | b'~')
    ) || (digits > 0 && matches!(line.as_bytes().get(digits), Some(b'.' | b')')));
    let url = line
        .split_whitespace()
        .next_back()
        .is_some_and(|w| w.contains("://"));
    if structural || url {
        return None;
    }
    let words = text::words(line).take(8).count();
    let c = line.chars().next_back()?;
    let open = (c.is_alphabetic() && words >= 8)
        || (matches!(c, ',' | ';' | ':' | '(' | '-' | '–' | '—' | '/' | '&') && words >= 3);
    open.then(|| {
        let mut start = line.len().saturating_sub(40);
        while !line.is_char_boundary(start) {
            start += 1;
        }
        &line[start..]
    })
}

/// `(period, words)` when the text ends in a block of words repeated at
/// least three times, covering at least 16 words: a model stuck in a loop.
pub fn tail_loop(h: &[u64]) -> Option<(usize, usize)> {
    let n = h.len();
    (1..=MAX_PERIOD.min(n / 3)).find_map(|p| {
        let same = (0..n - p)
            .take_while(|&l| h[n - 1 - l] == h[n - 1 - l - p])
            .count();
        (same >= 2 * p && same + p >= 16).then_some((p, same + p))
    })
}

/// The share of 4-word phrases that repeat an earlier one, over texts of
/// at least 20 phrases (shorter ones say too little).
pub fn repeated_shingles(h: &[u64]) -> Option<f64> {
    if h.len() < 23 {
        return None;
    }
    let shingles = h
        .windows(4)
        .map(|w| w.iter().fold(0u64, |a, &x| a.rotate_left(17) ^ x));
    repeats(shingles).map(|(d, n)| d as f64 / n as f64)
}

/// `(repeats, total)` among `items`, from 4 items on. An open-addressing
/// set at most half full: one allocation, cheaper than sorting.
pub fn repeats(items: impl ExactSizeIterator<Item = u64>) -> Option<(usize, usize)> {
    let n = items.len();
    if n < 4 {
        return None;
    }
    let bits = (2 * n).next_power_of_two().trailing_zeros();
    let mut table = vec![0u64; 1 << bits];
    let (mut dups, mut zero) = (0, false);
    for item in items {
        if item == 0 {
            // 0 marks an empty slot, so the value 0 is counted apart.
            dups += usize::from(zero);
            zero = true;
            continue;
        }
        let mut i = (item.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - bits)) as usize;
        loop {
            match table[i] {
                0 => table[i] = item,
                x if x == item => dups += 1,
                _ => {
                    i = (i + 1) & (table.len() - 1);
                    continue;
                }
            }
            break;
        }
    }
    Some((dups, n))
}

/// Byte-level facts, read without decoding characters: how many characters
/// are unprintable (C0/C1 controls other than tab and CR, U+FFFD from a bad
/// decode) and the longest run of one printable ASCII character in prose.
#[derive(Default)]
pub struct Bytes {
    pub chars: usize,
    pub bad: usize,
    pub longest: (u8, usize),
}

impl Bytes {
    pub fn line(&mut self, line: &str, code: bool) {
        let b = line.as_bytes();
        // Eight bytes at a time (the wasm build has no SIMD): count the
        // characters and spot bytes that may start a bad one; the exact
        // count of bad characters only when a line may have one.
        let (chars, suspect) = scan(b);
        self.chars += chars;
        if suspect {
            self.bad += (0..b.len())
                .filter(|&i| match b[i] {
                    b'\t' | b'\r' => false,
                    0xC2 => matches!(b.get(i + 1), Some(0x80..=0x9F)),
                    0xEF => b.get(i + 1..i + 3) == Some(&[0xBF, 0xBD]),
                    c => c < 0x20 || c == 0x7F,
                })
                .count();
        }
        if !code
            && let Some(run) = long_run(b)
            && run.1 > self.longest.1
        {
            self.longest = run;
        }
    }
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// Whether a byte of `x` is below `n` (at most 128): exact for "any",
/// though not for which byte (a borrow can mark the byte above a hit).
const fn any_below(x: u64, n: u8) -> bool {
    x.wrapping_sub(ONES * n as u64) & !x & HIGHS != 0
}

/// Whether a byte of `x` is `b`.
const fn any_equal(x: u64, b: u8) -> bool {
    any_below(x ^ (ONES * b as u64), 1)
}

/// `(characters, suspect)` of `b`: how many UTF-8 characters it holds (its
/// bytes that are not continuation bytes `10xxxxxx`), and whether it has a
/// byte that may belong to an unprintable character (a control, DEL, or
/// the lead byte of a C1 control or of U+FFFD).
fn scan(b: &[u8]) -> (usize, bool) {
    let suspect = |c: u8| c < 0x20 || c == 0x7F || c == 0xC2 || c == 0xEF;
    let chunks = b.chunks_exact(8);
    let rest = chunks.remainder();
    let (mut continuations, mut any) = (0, false);
    for chunk in chunks {
        let x = u64::from_le_bytes(chunk.try_into().unwrap_or_default());
        // Bit 7 set and bit 6 (shifted into bit 7's place) clear.
        continuations += (x & !(x << 1) & HIGHS).count_ones() as usize;
        any |= any_below(x, 0x20) | any_equal(x, 0x7F) | any_equal(x, 0xC2) | any_equal(x, 0xEF);
    }
    continuations += rest.iter().filter(|&&c| c & 0xC0 == 0x80).count();
    any |= rest.iter().any(|&c| suspect(c));
    (b.len() - continuations, any)
}

/// The longest run of one printable ASCII character in `b`, if it is
/// [`CHAR_RUN`] or longer. Such a run covers a whole block of `CHAR_RUN / 2`
/// starting at one of the positions probed below (never more than half a
/// run apart), so most of the line is skipped, not compared.
pub fn long_run(b: &[u8]) -> Option<(u8, usize)> {
    let half = CHAR_RUN / 2;
    let (mut best, mut j) = (None, 0);
    while j + half <= b.len() {
        let c = b[j];
        if !(c.is_ascii_graphic() && b[j..j + half].iter().all(|&x| x == c)) {
            j += half;
            continue;
        }
        let start = j - b[..j].iter().rev().take_while(|&&x| x == c).count();
        let end = j + b[j..].iter().take_while(|&&x| x == c).count();
        if end - start >= CHAR_RUN && best.is_none_or(|(_, l)| end - start > l) {
            best = Some((c, end - start));
        }
        j = end;
    }
    best
}

/// The first `max` bytes of `text`, cut at a character boundary.
pub fn head(text: &str, max: usize) -> &str {
    let mut end = max.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mid_sentence_needs_a_long_prose_line() {
        assert!(
            mid_sentence("The borrow checker rejects this program because the vector").is_some()
        );
        assert!(mid_sentence("Here is the code:").is_some());
        for line in [
            "The checker rejects it.",
            "the tide keeps its time",
            "- a list item without a stop at the end of it here",
            "1. a numbered item without a stop at the end of it",
            "| a | table | row | with | many | cells | in | it |",
            "See the docs at https://doc.rust-lang.org/book",
            "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12",
            "",
        ] {
            assert_eq!(mid_sentence(line), None, "{line}");
        }
        let line = "word ".repeat(30);
        let tail = mid_sentence(&line).unwrap();
        assert!(tail.len() <= 40 && tail.ends_with("word"));
    }

    #[test]
    fn loops_at_the_tail() {
        let h = |s: &str| s.split(' ').map(text::hash_lower).collect::<Vec<_>>();
        assert_eq!(
            tail_loop(&h("a b c d e ".repeat(4).trim_end())),
            Some((5, 20))
        );
        assert_eq!(
            tail_loop(&h(format!("x y {}", "no ".repeat(20)).trim_end())),
            Some((1, 20))
        );
        assert_eq!(
            tail_loop(&h("a b c d e a b c d e")),
            None,
            "twice is not a loop"
        );
        assert_eq!(
            tail_loop(&h("a b c d e f g h i j k l m n o p q r s t")),
            None
        );
        assert_eq!(tail_loop(&[]), None);
    }

    #[test]
    fn repeats_count_duplicates() {
        assert_eq!(repeats([1, 2, 3].into_iter()), None);
        assert_eq!(repeats([5, 5, 5, 7, 0].into_iter()), Some((2, 5)));
        assert_eq!(
            repeats([0, 1, 0, 1, 0, 1].into_iter()),
            Some((4, 6)),
            "0 and 1 are kept apart"
        );
        let words: Vec<u64> = (0..30).collect();
        assert_eq!(repeated_shingles(&words), Some(0.0));
    }

    #[test]
    fn eight_bytes_at_a_time_equals_one_at_a_time() {
        let suspect = |c: u8| c < 0x20 || c == 0x7F || c == 0xC2 || c == 0xEF;
        let mut samples: Vec<Vec<u8>> = (0..=255u8)
            .map(|c| {
                let mut v = b"plain text with one odd byte: ".to_vec();
                v.insert(c as usize % 30, c);
                v
            })
            .collect();
        samples.push("déjà vu, 東京, naïve — ok\u{FFFD}".as_bytes().to_vec());
        samples.push(b"\x1f\x20\x21\x7e\x7f\x80\xc1\xc2\xc3\xee\xef\xf0".to_vec());
        samples.push(Vec::new());
        for b in samples {
            let chars = b.iter().filter(|&&c| c & 0xC0 != 0x80).count();
            assert_eq!(scan(&b), (chars, b.iter().any(|&c| suspect(c))), "{b:?}");
        }
    }

    #[test]
    fn runs_and_bytes() {
        assert_eq!(long_run(&[b'!'; 199]), None);
        assert_eq!(long_run(&[b'!'; 200]), Some((b'!', 200)));
        let mut line = b"ab ".to_vec();
        line.extend([b'='; 250]);
        line.extend(b" cd");
        line.extend([b'-'; 300]);
        assert_eq!(long_run(&line), Some((b'-', 300)));
        assert_eq!(long_run(&[b' '; 500]), None, "whitespace is layout");
        let mut b = Bytes::default();
        b.line("ok\u{1}\u{FFFD}\u{85}\té", false);
        assert_eq!((b.chars, b.bad), (7, 3));
        assert_eq!(head("aé", 2), "a");
    }
}
