//! Masking styles and the [`Masker`], which rewrites a value only when the
//! scanner found something in it.
//!
//! The proxy forwards most replies untouched, so the API is built around
//! not copying: [`Masker::mask_into`] leaves `out` alone and returns
//! [`Masked::Unchanged`] when the value is clean, and the caller forwards its
//! own input slice.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::Error;
use crate::detect::Span;
use crate::scan::Scanner;

/// How a found value is replaced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Style {
    /// Replace with asterisks: `****` when `keep_length` is false, else one
    /// `*` per character of the value.
    Redact {
        /// One `*` per character instead of a fixed `****`.
        keep_length: bool,
    },
    /// Keep the last four ASCII letters or digits and any ASCII punctuation
    /// (separators); every other character becomes one `*`:
    /// `4111-1111-1111-1234` → `****-****-****-1234`. Values with fewer than
    /// [`PARTIAL_MIN_ALNUM`] letters and digits are masked whole.
    Partial,
    /// `hash:` and the first 16 hex digits of HMAC-SHA-256(key, value):
    /// equal values stay equal (joins, counts) without being readable.
    Hash {
        /// The HMAC key; must not be empty.
        key: Vec<u8>,
    },
    /// The whole value must be replaced by the protocol's null; the masker
    /// only reports it ([`Masked::Null`]).
    Null,
}

/// Hex digits of the HMAC kept in [`Style::Hash`] output.
pub const HASH_HEX_DIGITS: usize = 16;
const HASH_PREFIX: &[u8] = b"hash:";
const PARTIAL_KEEP: usize = 4;
/// Fewest ASCII letters and digits a value needs for [`Style::Partial`] to
/// keep any of them.
pub const PARTIAL_MIN_ALNUM: usize = 8;

/// What [`Masker::mask_into`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Masked {
    /// Nothing found: `out` was not touched; forward the input as is.
    Unchanged,
    /// `spans` values were masked; the masked copy was appended to `out`.
    Rewritten {
        /// Number of values masked.
        spans: usize,
    },
    /// `spans` values were found and the style is [`Style::Null`]: `out` was
    /// not touched; replace the whole value with null.
    Null {
        /// Number of values found.
        spans: usize,
    },
}

#[derive(Clone, Debug)]
enum Compiled {
    Redact { keep_length: bool },
    Partial,
    Hash(Box<Hmac<Sha256>>),
    Null,
}

/// A scanner plus a style.
#[derive(Clone, Debug)]
pub struct Masker {
    scanner: Scanner,
    style: Compiled,
}

impl Masker {
    /// Combines a scanner and a style.
    pub fn new(scanner: Scanner, style: Style) -> Result<Self, Error> {
        let style = match style {
            Style::Redact { keep_length } => Compiled::Redact { keep_length },
            Style::Partial => Compiled::Partial,
            Style::Hash { key } if key.is_empty() => return Err(Error::EmptyHashKey),
            // The keyed state is built once; each value clones it instead
            // of re-running the key schedule.
            Style::Hash { key } => Compiled::Hash(Box::new(
                Hmac::<Sha256>::new_from_slice(&key).map_err(|_| Error::EmptyHashKey)?,
            )),
            Style::Null => Compiled::Null,
        };
        Ok(Masker { scanner, style })
    }

    /// The scanner this masker uses.
    pub fn scanner(&self) -> &Scanner {
        &self.scanner
    }

    /// Whether the style is [`Style::Null`].
    pub fn is_null(&self) -> bool {
        matches!(self.style, Compiled::Null)
    }

    /// Replaces the contents of `spans` with the values found in `input`.
    pub fn find(&self, input: &[u8], spans: &mut Vec<Span>) {
        self.scanner.find(input, spans);
    }

    /// Masks `input`, appending the result to `out` only if something was
    /// found. Allocates nothing when `input` is clean.
    pub fn mask_into(&self, input: &[u8], out: &mut Vec<u8>) -> Masked {
        let mut spans = Vec::new();
        self.mask_into_with(input, out, &mut spans)
    }

    /// [`Masker::mask_into`] with a caller-owned span buffer, so a
    /// connection can reuse one and never allocate in steady state.
    pub fn mask_into_with(&self, input: &[u8], out: &mut Vec<u8>, spans: &mut Vec<Span>) -> Masked {
        self.scanner.find(input, spans);
        if spans.is_empty() {
            return Masked::Unchanged;
        }
        if self.is_null() {
            return Masked::Null { spans: spans.len() };
        }
        out.reserve(input.len());
        self.write_masked(input, spans, out);
        Masked::Rewritten { spans: spans.len() }
    }

    /// Appends `input` to `out` with every span (ordered, non-overlapping,
    /// within `input`) replaced by its mask.
    pub(crate) fn write_masked(&self, input: &[u8], spans: &[Span], out: &mut Vec<u8>) {
        let mut at = 0;
        for s in spans {
            out.extend_from_slice(&input[at..s.start]);
            self.mask_value(&input[s.start..s.end], out);
            at = s.end;
        }
        out.extend_from_slice(&input[at..]);
    }

    /// Appends the mask of one whole value. [`Style::Null`] copies the value
    /// (the caller replaces the enclosing value instead).
    pub fn mask_value(&self, value: &[u8], out: &mut Vec<u8>) {
        match &self.style {
            Compiled::Redact { keep_length: false } => out.extend_from_slice(b"****"),
            Compiled::Redact { keep_length: true } => {
                let chars = value.iter().filter(|&&b| !is_continuation(b)).count();
                out.resize(out.len() + chars, b'*');
            }
            Compiled::Partial => partial(value, out),
            Compiled::Hash(mac) => {
                let mut mac = (**mac).clone();
                mac.update(value);
                let digest = mac.finalize().into_bytes();
                out.extend_from_slice(HASH_PREFIX);
                for &b in &digest[..HASH_HEX_DIGITS / 2] {
                    out.push(HEX[usize::from(b >> 4)]);
                    out.push(HEX[usize::from(b & 0xF)]);
                }
            }
            Compiled::Null => out.extend_from_slice(value),
        }
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn is_continuation(b: u8) -> bool {
    b & 0xC0 == 0x80
}

fn partial(value: &[u8], out: &mut Vec<u8>) {
    // Index of the first kept alphanumeric: the fourth from the end. A
    // short value (a keyword, a short token) would be mostly revealed by its
    // last four, so below PARTIAL_MIN_ALNUM it is masked whole. One backward
    // pass that stops as soon as the value is known to be long enough.
    let mut seen = 0;
    let mut keep_from = value.len();
    for (i, b) in value.iter().enumerate().rev() {
        if b.is_ascii_alphanumeric() {
            seen += 1;
            if seen == PARTIAL_KEEP {
                keep_from = i;
            }
            if seen == PARTIAL_MIN_ALNUM {
                break;
            }
        }
    }
    if seen < PARTIAL_MIN_ALNUM {
        keep_from = value.len();
    }
    let (masked, kept) = value.split_at(keep_from);
    if masked.is_ascii() {
        // Built-in matches are ASCII: copy, then star the letters and
        // digits in place.
        let from = out.len();
        out.extend_from_slice(masked);
        for b in &mut out[from..] {
            if b.is_ascii_alphanumeric() {
                *b = b'*';
            }
        }
    } else {
        for &b in masked {
            if b.is_ascii() && !b.is_ascii_alphanumeric() {
                out.push(b);
            } else if !is_continuation(b) {
                // One star per letter, digit or non-ASCII character: never
                // half a character.
                out.push(b'*');
            }
        }
    }
    if kept.is_ascii() {
        out.extend_from_slice(kept);
    } else {
        for &b in kept {
            if b.is_ascii() {
                out.push(b);
            } else if !is_continuation(b) {
                out.push(b'*');
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::Detector;

    fn mask(style: Style, input: &str) -> (Masked, String) {
        let m = Masker::new(Scanner::default(), style).unwrap();
        let mut out = Vec::new();
        let r = m.mask_into(input.as_bytes(), &mut out);
        (r, String::from_utf8(out).unwrap())
    }

    #[test]
    fn clean_input_is_unchanged_and_untouched() {
        let m = Masker::new(Scanner::default(), Style::Partial).unwrap();
        let mut out = b"prefix".to_vec();
        assert_eq!(
            m.mask_into(b"nothing to see, 42 here", &mut out),
            Masked::Unchanged
        );
        assert_eq!(out, b"prefix");
    }

    #[test]
    fn styles() {
        let input = "card 4111-1111-1111-1111 to «ünïcode@example.com»";
        // Non-ASCII letters belong to the address, the guillemets do not;
        // each masked character becomes one star.
        let cases: Vec<(Style, &str)> = vec![
            (Style::Redact { keep_length: false }, "card **** to «****»"),
            (
                Style::Redact { keep_length: true },
                "card ******************* to «*******************»",
            ),
            (
                Style::Partial,
                "card ****-****-****-1111 to «*******@******e.com»",
            ),
        ];
        for (style, want) in cases {
            assert_eq!(
                mask(style.clone(), input),
                (Masked::Rewritten { spans: 2 }, want.to_string()),
                "{style:?}"
            );
        }
    }

    #[test]
    fn partial_short_values_are_masked_whole() {
        let mut out = Vec::new();
        partial(b"a-b", &mut out);
        assert_eq!(out, b"*-*");
        out.clear();
        partial("ab©cdefgh".as_bytes(), &mut out);
        assert_eq!(out, b"*****efgh");
        out.clear();
        partial("abcdefgh12é34".as_bytes(), &mut out);
        assert_eq!(out, b"********12*34");
        out.clear();
        partial(b"4111-1111-1111-1111", &mut out);
        assert_eq!(out, b"****-****-****-1111");
    }

    /// Partial masking, character by character.
    fn partial_reference(value: &str) -> String {
        let alnum = value.chars().filter(char::is_ascii_alphanumeric).count();
        let keep = if alnum >= PARTIAL_MIN_ALNUM {
            PARTIAL_KEEP
        } else {
            0
        };
        let mut seen = 0;
        value
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    seen += 1;
                    if seen > alnum - keep { c } else { '*' }
                } else if c.is_ascii() {
                    c
                } else {
                    '*'
                }
            })
            .collect()
    }

    proptest::proptest! {
        #[test]
        fn partial_equals_reference(value in "[a-z0-9 .é€-]{0,24}") {
            let mut out = Vec::new();
            partial(value.as_bytes(), &mut out);
            proptest::prop_assert_eq!(String::from_utf8(out).unwrap(), partial_reference(&value));
        }
    }

    #[test]
    fn hash_is_stable_and_keyed() {
        let a = mask(
            Style::Hash {
                key: b"k1".to_vec(),
            },
            "x 123-45-6789 y 123-45-6789",
        )
        .1;
        let parts: Vec<&str> = a.split(' ').collect();
        assert_eq!(parts[1], parts[3]);
        assert!(parts[1].starts_with("hash:") && parts[1].len() == 5 + HASH_HEX_DIGITS);
        assert!(parts[1][5..].bytes().all(|b| b.is_ascii_hexdigit()));
        let b = mask(
            Style::Hash {
                key: b"k2".to_vec(),
            },
            "x 123-45-6789",
        )
        .1;
        assert_ne!(parts[1], b.split(' ').nth(1).unwrap());
        // RFC 4231 test case 2: HMAC-SHA-256("Jefe", "what do ya want for nothing?").
        let m = Masker::new(
            Scanner::default(),
            Style::Hash {
                key: b"Jefe".to_vec(),
            },
        )
        .unwrap();
        let mut out = Vec::new();
        m.mask_value(b"what do ya want for nothing?", &mut out);
        assert_eq!(out, b"hash:5bdcc146bf60754e");
    }

    #[test]
    fn null_reports_without_writing() {
        let m = Masker::new(Scanner::new(&[Detector::UsSsn]).unwrap(), Style::Null).unwrap();
        let mut out = Vec::new();
        assert_eq!(
            m.mask_into(b"123-45-6789", &mut out),
            Masked::Null { spans: 1 }
        );
        assert!(out.is_empty());
    }

    #[test]
    fn empty_hash_key_is_refused() {
        assert!(matches!(
            Masker::new(Scanner::default(), Style::Hash { key: Vec::new() }),
            Err(Error::EmptyHashKey)
        ));
    }

    #[test]
    fn invalid_utf8_is_masked_bytewise() {
        let m = Masker::new(Scanner::default(), Style::Redact { keep_length: false }).unwrap();
        let mut out = Vec::new();
        let input = b"\xff\xfe123-45-6789\xc3";
        assert_eq!(m.mask_into(input, &mut out), Masked::Rewritten { spans: 1 });
        assert_eq!(out, b"\xff\xfe****\xc3");
    }
}
