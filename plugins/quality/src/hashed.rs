//! The words of a text with their hashes, in one pass over its bytes.
//!
//! The scores need, for every word, its lowercase hash and, for a content
//! word, its stem's hash. Splitting the text with [`text::words`] and then
//! classifying, stemming and hashing each word reads every byte three or
//! four times; here the hash is computed while the word is scanned, and the
//! stem's hash is taken from the hashes of the word's prefixes kept along
//! the way (a stem is the word less at most 4 bytes, and FNV is a stream,
//! so the stem's hash is the hash of the word's prefix of its length).
//! Words with a non-ASCII character (rare in most answers) take the plain
//! route through [`text`]; both give the same values, which a test checks.

use crate::text::{self, HASH_START};

const FNV_PRIME: u64 = 0x0100_0000_01b3;

/// ASCII letters and digits: one load per byte instead of range tests.
static ALNUM: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 128 {
        t[b] = (b as u8).is_ascii_alphanumeric();
        b += 1;
    }
    t
};

/// One word and its hashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hashed<'a> {
    pub word: &'a str,
    /// [`text::hash_lower`] of the word.
    pub hash: u64,
    /// `hash_lower(stem(word))` for a content word ([`text::is_content_word`]).
    pub stem: Option<u64>,
}

/// The words of `text` as [`text::words`] splits them, hashed.
pub fn hashed(text: &str) -> HashedWords<'_> {
    HashedWords { text, pos: 0 }
}

/// See [`hashed`].
pub struct HashedWords<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Iterator for HashedWords<'a> {
    type Item = Hashed<'a>;

    fn next(&mut self) -> Option<Hashed<'a>> {
        let (text, bytes) = (self.text, self.text.as_bytes());
        let decode = |i: usize| {
            let c = text[i..].chars().next().unwrap_or_default();
            (c, c.len_utf8())
        };
        // The same word boundaries as `text::words`.
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
                    if text::is_cjk(c) {
                        self.pos = i + len;
                        return Some(slow(&text[i..i + len]));
                    }
                    if c.is_alphanumeric() {
                        break;
                    }
                    i += len;
                }
            }
        }
        let start = i;
        // `prefix[k & 7]`: the hash of the word's first `k` bytes, for the
        // last 8 values of `k` (valid while the word is ASCII).
        let (mut h, mut prefix, mut ascii) = (HASH_START, [HASH_START; 8], true);
        // The last 8 bytes, lowercased: the stopword key of a short word.
        let mut key = 0u64;
        while let Some(&b) = bytes.get(i) {
            if ALNUM[usize::from(b)] {
                // Setting bit 5 lowercases a letter and keeps a digit.
                let lower = u64::from(b | 0x20);
                h = (h ^ lower).wrapping_mul(FNV_PRIME);
                key = key << 8 | lower;
                i += 1;
                prefix[(i - start) & 7] = h;
            } else if b.is_ascii() {
                break;
            } else {
                let (c, len) = decode(i);
                if !c.is_alphanumeric() || text::is_cjk(c) {
                    break;
                }
                ascii = false;
                i += len;
            }
        }
        self.pos = i;
        let word = &text[start..i];
        if !ascii {
            return Some(slow(word));
        }
        // An ASCII word's characters are its bytes: content words are those
        // of three letters or more that are not stopwords.
        let n = word.len();
        let stop = (3..=8).contains(&n) && text::is_stop_key(key << (8 * (8 - n)));
        let stem = (n >= 3 && !stop).then(|| {
            let k = text::stem(word).len();
            debug_assert!(n - k < 8);
            prefix[k & 7]
        });
        Some(Hashed {
            word,
            hash: h,
            stem,
        })
    }
}

/// A word with a non-ASCII character, hashed by the plain route.
fn slow(word: &str) -> Hashed<'_> {
    Hashed {
        word,
        hash: text::hash_lower(word),
        stem: text::is_content_word(word).then(|| text::hash_lower(text::stem(word))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the one-pass route must equal: split, classify, stem, hash.
    fn plain(text: &str) -> Vec<Hashed<'_>> {
        text::words(text)
            .map(|w| Hashed {
                word: w,
                hash: text::hash_lower(w),
                stem: text::is_content_word(w).then(|| text::hash_lower(text::stem(w))),
            })
            .collect()
    }

    #[test]
    fn one_pass_equals_the_plain_route() {
        for t in [
            "",
            " ,; ",
            "Hello, wörld! x2 ... 東京タワー ok",
            "The PARSED parsing Parses working worked works plants class bus this is",
            "Paris is the capital of France. Île-de-France, Musée d'Orsay, cafés.",
            "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZING 0123456789s",
            "renamed renames renaming stored storing e es ed ing ings THESE Those",
            "naïve naïveté STRASSE straße ÉTÉ été x1y2z3 a-b-c_d",
            "end",
        ] {
            assert_eq!(hashed(t).collect::<Vec<_>>(), plain(t), "{t}");
        }
        let long = "word".repeat(40) + "ings and " + &"Ab".repeat(30) + "ed";
        assert_eq!(hashed(&long).collect::<Vec<_>>(), plain(&long));
    }
}
