//! Text primitives the scores share: words, their hashes and stems,
//! stopwords and code fences.
//!
//! Nothing here allocates: a word is a slice of the text, and words are
//! compared by a hash of their lowercase form rather than by lowercased
//! copies, which keeps the whole evaluation to a handful of allocations.

/// Iterates the words of `text`: maximal runs of alphanumeric characters,
/// except that each CJK ideograph or kana is a word of its own (those
/// scripts do not separate words with spaces, so a run would be a sentence).
pub fn words(text: &str) -> Words<'_> {
    Words { text, pos: 0 }
}

/// See [`words`].
pub struct Words<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Iterator for Words<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let (text, bytes) = (self.text, self.text.as_bytes());
        // ASCII bytes are classified without decoding: most text is ASCII.
        let decode = |i: usize| {
            let c = text[i..].chars().next().unwrap_or_default();
            (c, c.len_utf8())
        };
        let mut i = self.pos;
        loop {
            match bytes.get(i) {
                None => {
                    self.pos = i;
                    return None;
                }
                Some(b) if b.is_ascii_alphanumeric() => break,
                Some(b) if b.is_ascii() => i += 1,
                Some(_) => {
                    let (c, len) = decode(i);
                    if is_cjk(c) {
                        self.pos = i + len;
                        return Some(&text[i..i + len]);
                    }
                    if c.is_alphanumeric() {
                        break;
                    }
                    i += len;
                }
            }
        }
        let start = i;
        while let Some(&b) = bytes.get(i) {
            if b.is_ascii() {
                if !b.is_ascii_alphanumeric() {
                    break;
                }
                i += 1;
            } else {
                let (c, len) = decode(i);
                if !c.is_alphanumeric() || is_cjk(c) {
                    break;
                }
                i += len;
            }
        }
        self.pos = i;
        Some(&text[start..i])
    }
}

/// CJK ideographs, hiragana and katakana: written without spaces.
pub fn is_cjk(c: char) -> bool {
    matches!(
        c,
        '\u{3040}'..='\u{30FF}'
            | '\u{3400}'..='\u{4DBF}'
            | '\u{4E00}'..='\u{9FFF}'
            | '\u{F900}'..='\u{FAFF}'
    )
}

/// The hash of the empty word; see [`hash_more`].
pub const HASH_START: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a of the word's lowercase form: equal for `Rust` and `rust`.
pub fn hash_lower(word: &str) -> u64 {
    hash_more(HASH_START, word)
}

/// Continues hash `h` of a word's start with `more` of it: FNV is a stream,
/// so a word's hash extends its stem's rather than rereading the word.
pub fn hash_more(mut h: u64, more: &str) -> u64 {
    let mut mix = |b: u8| h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    let bytes = more.as_bytes();
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b.is_ascii() {
            mix(b.to_ascii_lowercase());
            i += 1;
            continue;
        }
        let c = more[i..].chars().next().unwrap_or_default();
        for l in c.to_lowercase() {
            let mut buf = [0; 4];
            l.encode_utf8(&mut buf).bytes().for_each(&mut mix);
        }
        i += c.len_utf8();
    }
    h
}

/// A crude English stem, so that `works`, `worked` and `working` (and
/// `parse`, `parses`, `parsed`, `parsing`) meet: strips one of `ing`, `ed`,
/// `s` (not `ss`, `us`, `is`), then a final `e`, keeping at least three
/// letters. Good enough to match a prompt's words in an answer; not a
/// linguistic stemmer.
pub fn stem(word: &str) -> &str {
    let ends = |w: &str, s: &str| {
        w.len() > s.len() && w.as_bytes()[w.len() - s.len()..].eq_ignore_ascii_case(s.as_bytes())
    };
    let mut w = word;
    if w.len() >= 6 && ends(w, "ing") {
        w = &w[..w.len() - 3];
    } else if w.len() >= 5 && ends(w, "ed") {
        w = &w[..w.len() - 2];
    } else if w.len() >= 4 && ends(w, "s") && !["ss", "us", "is"].iter().any(|s| ends(w, s)) {
        w = &w[..w.len() - 1];
    }
    if w.len() >= 4 && ends(w, "e") {
        w = &w[..w.len() - 1];
    }
    w
}

/// Whether `word` carries meaning for relevance: not a stopword, and at
/// least three characters long (or a CJK character, a word on its own).
pub fn is_content_word(word: &str) -> bool {
    let mut chars = word.chars();
    match (chars.next(), chars.next(), chars.next()) {
        (Some(c), None, _) => is_cjk(c),
        (_, _, None) => false,
        _ => !is_stopword(word),
    }
}

/// English function words and chat filler, sorted (a test checks) so that
/// [`STOP_START`] can bucket them by initial letter.
const STOPWORDS: &[&str] = &[
    "about", "above", "after", "again", "all", "also", "and", "any", "are", "aren", "because",
    "been", "before", "being", "below", "between", "both", "but", "can", "cannot", "could",
    "describe", "did", "didn", "does", "doesn", "doing", "don", "down", "during", "each",
    "explain", "few", "for", "from", "further", "give", "had", "has", "have", "having", "hello",
    "her", "here", "hers", "herself", "him", "himself", "his", "how", "into", "isn", "its",
    "itself", "just", "know", "let", "like", "make", "more", "most", "myself", "need", "nor",
    "not", "now", "off", "once", "only", "other", "our", "ours", "out", "over", "own", "please",
    "same", "she", "should", "show", "some", "such", "sure", "tell", "than", "thank", "thanks",
    "that", "the", "their", "them", "then", "there", "these", "they", "this", "those", "through",
    "too", "under", "until", "use", "very", "want", "was", "wasn", "were", "what", "when", "where",
    "which", "while", "who", "whom", "why", "will", "with", "won", "would", "write", "you", "your",
    "yours",
];

/// [`STOPWORDS`] packed as by [`pack`], in the same order: a lookup
/// compares integers, not strings (it runs for every word of the answer).
const STOP_KEYS: [u64; STOPWORDS.len()] = {
    let mut keys = [0; STOPWORDS.len()];
    let mut i = 0;
    while i < keys.len() {
        keys[i] = pack(STOPWORDS[i].as_bytes());
        i += 1;
    }
    keys
};

/// Where each initial letter's stopwords start in [`STOP_KEYS`] (`z` + 1
/// ends them): a lookup scans a dozen keys at most, with no branchy search.
const STOP_START: [usize; 27] = {
    let mut start = [STOPWORDS.len(); 27];
    let mut i = STOPWORDS.len();
    while i > 0 {
        i -= 1;
        start[(STOPWORDS[i].as_bytes()[0] - b'a') as usize] = i;
    }
    let mut l = 26;
    while l > 0 {
        l -= 1;
        if start[l] > start[l + 1] {
            start[l] = start[l + 1];
        }
    }
    start
};

/// Up to 8 bytes, ASCII-lowercased, big-endian in a `u64`: integer order is
/// then the strings' order.
const fn pack(bytes: &[u8]) -> u64 {
    let mut key = 0u64;
    let mut i = 0;
    while i < 8 {
        let b = if i < bytes.len() {
            bytes[i].to_ascii_lowercase()
        } else {
            0
        };
        key = key << 8 | b as u64;
        i += 1;
    }
    key
}

pub fn is_stopword(word: &str) -> bool {
    let bytes = word.as_bytes();
    if bytes.len() > 8 || bytes.is_empty() {
        return false;
    }
    // `pack` at run time, a word at once: setting bit 5 of each byte
    // lowercases ASCII letters and turns no other byte into a letter.
    let mut buf = [0u8; 8];
    buf[..bytes.len()].copy_from_slice(bytes);
    let key = u64::from_be_bytes(buf)
        | (0x2020_2020_2020_2020 & !u64::MAX.checked_shr(8 * bytes.len() as u32).unwrap_or(0));
    is_stop_key(key)
}

/// Whether `key`, a word of 1 to 8 bytes packed as by [`pack`] (bytes
/// lowercased by setting bit 5), is a stopword.
pub fn is_stop_key(key: u64) -> bool {
    let letter = usize::from((key >> 56) as u8).wrapping_sub(usize::from(b'a'));
    letter < 26 && STOP_KEYS[STOP_START[letter]..STOP_START[letter + 1]].contains(&key)
}

/// Tracks Markdown code fences line by line (CommonMark's rule: a fence of
/// three or more backticks or tildes is closed by a line of at least as
/// many of the same character and nothing else). Indentation is allowed
/// since fences nest in lists.
#[derive(Default)]
pub struct Fences {
    open: Option<(u8, usize)>,
}

impl Fences {
    /// Feeds the next line; whether it is code (a fence line or inside a block).
    pub fn line(&mut self, line: &str) -> bool {
        let t = line.trim_start().as_bytes();
        let c = t.first().copied().unwrap_or(0);
        let n = t.iter().take_while(|&&b| b == c).count();
        if (c == b'`' || c == b'~') && n >= 3 {
            let rest = &t[n..];
            match self.open {
                None if !(c == b'`' && rest.contains(&b'`')) => {
                    self.open = Some((c, n));
                    return true;
                }
                Some((oc, on)) if oc == c && n >= on && rest.trim_ascii().is_empty() => {
                    self.open = None;
                    return true;
                }
                _ => {}
            }
        }
        self.open.is_some()
    }

    /// Whether a block is still open (after the last line fed).
    pub fn is_open(&self) -> bool {
        self.open.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stopwords_are_sorted_short_and_lowercase() {
        assert!(STOPWORDS.windows(2).all(|w| w[0] < w[1]));
        assert!(STOP_KEYS.windows(2).all(|w| w[0] < w[1]));
        assert!(
            STOPWORDS
                .iter()
                .all(|s| s.len() <= 8 && *s == s.to_lowercase())
        );
        for (i, w) in STOPWORDS.iter().enumerate() {
            assert!(is_stopword(w), "{w}");
            let letter = usize::from(w.as_bytes()[0] - b'a');
            assert!(
                (STOP_START[letter]..STOP_START[letter + 1]).contains(&i),
                "{w}"
            );
        }
        assert!(is_stopword("The") && is_stopword("WHAT") && is_stopword("yours"));
        for w in ["rust", "abo", "aboutt", "zebra", "", "1st", "Über", "thé"] {
            assert!(!is_stopword(w), "{w}");
        }
    }

    #[test]
    fn words_split_on_punctuation_and_cjk() {
        let w: Vec<_> = words("Hello, wörld! x2 ... 東京タワー ok").collect();
        assert_eq!(
            w,
            ["Hello", "wörld", "x2", "東", "京", "タ", "ワ", "ー", "ok"]
        );
        assert_eq!(words("").count(), 0);
        assert_eq!(words(" ,; ").count(), 0);
        assert_eq!(words("end").collect::<Vec<_>>(), ["end"]);
    }

    #[test]
    fn stems_and_hashes_meet_across_forms_and_case() {
        for (a, b) in [
            ("works", "working"),
            ("parsed", "Parsing"),
            ("parse", "parses"),
            ("plants", "plant"),
        ] {
            assert_eq!(hash_lower(stem(a)), hash_lower(stem(b)), "{a} {b}");
        }
        assert_eq!(stem("photosynthesis"), "photosynthesis");
        assert_eq!(stem("class"), "class");
        assert_ne!(hash_lower("rust"), hash_lower("trust"));
        assert_eq!(hash_lower("ÉTÉ"), hash_lower("été"));
        assert_eq!(hash_more(hash_lower("Work"), "ing"), hash_lower("working"));
    }

    #[test]
    fn content_words() {
        assert!(is_content_word("rust") && is_content_word("東"));
        assert!(!is_content_word("the") && !is_content_word("is") && !is_content_word("x"));
    }

    #[test]
    fn fences_open_and_close() {
        let mut f = Fences::default();
        let lines = [
            "text", "```rust", "code", "``", "```", "after", "~~~~", "x", "~~~",
        ];
        let code: Vec<bool> = lines.iter().map(|l| f.line(l)).collect();
        assert_eq!(
            code,
            [false, true, true, true, true, false, true, true, true]
        );
        assert!(f.is_open(), "three tildes do not close four");
        let mut f = Fences::default();
        assert!(!f.line("inline ```code``` here") && !f.is_open());
        assert!(
            !f.line("``` `x` ```") && !f.is_open(),
            "backticks in the info string"
        );
    }
}
