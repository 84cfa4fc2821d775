//! Finding and masking sensitive values (card numbers, SSNs, e-mail
//! addresses, phone numbers, IP addresses, IBANs, tokens, keys) inside reply
//! payloads, in line, on the proxy's hot path.
//!
//! - [`detect`]: the built-in detectors, each an anchored matcher over bytes.
//! - [`Scanner`]: runs the enabled detectors, custom keywords and patterns
//!   behind a prefilter that makes clean text nearly free.
//! - [`Masker`]: a scanner plus a [`Style`]; [`Masker::mask_into`] copies a
//!   value only when something in it must be masked.
//! - [`StreamMasker`]: the same result for a value that arrives in chunks.
//!
//! ```
//! use custos_masking::{Masked, Masker, Scanner, Style};
//!
//! let masker = Masker::new(Scanner::default(), Style::Partial).unwrap();
//! let mut out = Vec::new();
//! assert_eq!(masker.mask_into(b"no secrets here", &mut out), Masked::Unchanged);
//! let reply = b"card 4111 1111 1111 1111, mail jane@example.com";
//! assert_eq!(masker.mask_into(reply, &mut out), Masked::Rewritten { spans: 2 });
//! assert_eq!(out, b"card **** **** **** 1111, mail ****@******e.com");
//! ```
//!
//! Inputs are bytes, not `str`: values may be binary or invalid UTF-8 and are
//! then handled byte by byte. Built-in matches are ASCII except for the
//! letters and digits of internationalised e-mail addresses, which are taken
//! as whole characters, so on valid UTF-8 a mask never splits a character.

#![deny(missing_docs)]
// Only the block classifier's vector code may use `unsafe`; it opts in.
#![deny(unsafe_code)]

#[allow(unsafe_code)]
mod classify;
pub mod detect;
mod mask;
mod scan;
mod stream;

pub use detect::{Detector, LOOKAHEAD_BYTES_MAX, LOOKBEHIND_BYTES_MAX, Span};
pub use mask::{HASH_HEX_DIGITS, Masked, Masker, PARTIAL_MIN_ALNUM, Style};
pub use scan::{KEYWORDS_MAX, PATTERNS_MAX, Scanner, ScannerBuilder};
pub use stream::{STREAM_WINDOW_BYTES, StreamMasker};

/// What can go wrong building a scanner or masker.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Only built-in detectors can be enabled by name; keywords and patterns
    /// have their own builder methods.
    #[error("{0:?} is not a built-in detector")]
    NotBuiltIn(Detector),
    /// A keyword is empty or longer than [`detect::KEYWORD_BYTES_MAX`].
    #[error("keyword length {0} is outside 1..={max}", max = detect::KEYWORD_BYTES_MAX)]
    KeywordLength(usize),
    /// More than [`KEYWORDS_MAX`] keywords.
    #[error("more than {KEYWORDS_MAX} keywords")]
    TooManyKeywords,
    /// More than [`PATTERNS_MAX`] patterns.
    #[error("more than {PATTERNS_MAX} patterns")]
    TooManyPatterns,
    /// A custom pattern does not compile.
    #[error("pattern {index} does not compile: {reason}")]
    Pattern {
        /// Position of the pattern in the order it was added.
        index: usize,
        /// The regex engine's explanation.
        reason: String,
    },
    /// The keyword or prefix automaton could not be built.
    #[error("automaton: {0}")]
    Automaton(String),
    /// [`Style::Hash`] needs a non-empty key.
    #[error("hash style needs a non-empty key")]
    EmptyHashKey,
}

#[cfg(test)]
mod tests;
