//! The built-in detectors: each one is an anchored matcher, `match_at(hay,
//! start) -> Option<end>`, that decides on its own whether a sensitive value
//! starts exactly at `start`, checking its left and right boundaries itself.
//!
//! Being anchored is what makes the scanner's result well defined: at every
//! position the longest anchored match wins, and scanning resumes after it
//! (leftmost-first, non-overlapping). The scanner only decides *where* to
//! ask (trigger bytes and prefixes); the detectors here decide *what* matches.
//!
//! Every matcher reads a bounded number of bytes around `start`
//! ([`LOOKAHEAD_BYTES_MAX`] after, [`LOOKBEHIND_BYTES_MAX`] before), which is
//! what lets the stream masker find matches split across chunks. A value
//! longer than its detector's cap is not matched at all.
//!
//! Matches only ever cover ASCII bytes, so on valid UTF-8 input every span
//! falls on character boundaries.

/// The kind of sensitive value a span covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Detector {
    /// A PEM `-----BEGIN ... PRIVATE KEY-----` block through its END line.
    PrivateKey,
    /// A JSON Web Token: three base64url segments, the first starting `eyJ`.
    Jwt,
    /// A secret token with a known vendor prefix (`sk_live_`, `ghp_`, ...).
    ApiKey,
    /// An AWS access key id (`AKIA`/`ASIA` + 16 uppercase alphanumerics).
    AwsAccessKey,
    /// An IBAN with a valid mod-97 checksum, compact or spaced by fours.
    Iban,
    /// A Luhn-valid payment card number of 13 to 19 digits.
    CreditCard,
    /// A US social security number, `AAA-GG-SSSS` or `AAA GG SSSS`.
    UsSsn,
    /// An e-mail address.
    Email,
    /// One of the scanner's custom keywords (ASCII case-insensitive).
    Keyword,
    /// A match of the scanner's custom regular expression with this index.
    Pattern(u16),
}

impl Detector {
    /// Every built-in detector, in priority order.
    pub const BUILT_IN: [Detector; 8] = [
        Detector::PrivateKey,
        Detector::Jwt,
        Detector::ApiKey,
        Detector::AwsAccessKey,
        Detector::Iban,
        Detector::CreditCard,
        Detector::UsSsn,
        Detector::Email,
    ];

    /// Whether this is one of [`Detector::BUILT_IN`].
    pub fn is_built_in(self) -> bool {
        !matches!(self, Detector::Keyword | Detector::Pattern(_))
    }

    /// Tie-break when two detectors match the same bytes: lower wins.
    pub(crate) fn priority(self) -> u32 {
        match self {
            Detector::PrivateKey => 0,
            Detector::Jwt => 1,
            Detector::ApiKey => 2,
            Detector::AwsAccessKey => 3,
            Detector::Iban => 4,
            Detector::CreditCard => 5,
            Detector::UsSsn => 6,
            Detector::Email => 7,
            Detector::Keyword => 8,
            Detector::Pattern(i) => 9 + u32::from(i),
        }
    }

    /// The anchored matcher of a built-in detector: the end of the value
    /// starting exactly at `start`, if there is one. Custom detectors
    /// (keywords, patterns) return `None`; the scanner matches those.
    pub fn match_at(self, hay: &[u8], start: usize) -> Option<usize> {
        if start >= hay.len() {
            return None;
        }
        match self {
            Detector::PrivateKey => private_key_at(hay, start),
            Detector::Jwt => jwt_at(hay, start),
            Detector::ApiKey => api_key_at(hay, start),
            Detector::AwsAccessKey => aws_access_key_at(hay, start),
            Detector::Iban => iban_at(hay, start),
            Detector::CreditCard => credit_card_at(hay, start),
            Detector::UsSsn => us_ssn_at(hay, start),
            Detector::Email => email_at(hay, start),
            Detector::Keyword | Detector::Pattern(_) => None,
        }
    }
}

/// A match: `hay[start..end]` is a sensitive value of kind `kind`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Span {
    /// Offset of the first byte.
    pub start: usize,
    /// Offset one past the last byte.
    pub end: usize,
    /// What was found.
    pub kind: Detector,
}

impl Span {
    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.end - self.start
    }

    /// Whether the span covers no bytes (never true for a reported match).
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }
}

/// Longest PEM private key block matched, header to END line inclusive.
/// An RSA-4096 key in PKCS#8 PEM is about 3.3 KiB; larger blocks are left
/// alone rather than letting the stream masker hold back unbounded data.
pub const PRIVATE_KEY_BYTES_MAX: usize = 4096;
/// Longest JSON Web Token matched.
pub const JWT_BYTES_MAX: usize = 4096;
/// Longest token run after an API key prefix.
pub const API_KEY_TOKEN_BYTES_MAX: usize = 512;
/// Longest e-mail local part (RFC 5321).
pub const EMAIL_LOCAL_BYTES_MAX: usize = 64;
/// Longest e-mail domain (RFC 1035).
pub const EMAIL_DOMAIN_BYTES_MAX: usize = 255;
/// Longest custom keyword accepted by the scanner builder.
pub const KEYWORD_BYTES_MAX: usize = 256;
/// Bytes after a match start that any built-in matcher or keyword may read.
pub const LOOKAHEAD_BYTES_MAX: usize = PRIVATE_KEY_BYTES_MAX + 64;
/// Bytes before a match start (or before an e-mail's `@`) that any matcher
/// may read.
pub const LOOKBEHIND_BYTES_MAX: usize = EMAIL_LOCAL_BYTES_MAX + 16;

const PEM_BEGIN: &[u8] = b"-----BEGIN ";
const PEM_LABEL_SUFFIX: &[u8] = b"PRIVATE KEY-----";
const PEM_LABEL_BYTES_MAX: usize = 64;

/// Known secret-token prefixes and the fewest token bytes that must follow.
/// No prefix is a prefix of another, so at most one applies at a position.
pub(crate) const API_KEY_PREFIXES: &[(&[u8], usize)] = &[
    (b"sk_live_", 16),
    (b"sk_test_", 16),
    (b"rk_live_", 16),
    (b"rk_test_", 16),
    (b"ghp_", 30),
    (b"gho_", 30),
    (b"ghu_", 30),
    (b"ghs_", 30),
    (b"ghr_", 30),
    (b"github_pat_", 40),
    (b"xoxb-", 10),
    (b"xoxp-", 10),
    (b"xoxa-", 10),
    (b"xoxr-", 10),
    (b"xoxs-", 10),
    (b"AIza", 30),
    (b"glpat-", 20),
    (b"sk-", 20),
    (b"npm_", 30),
    (b"hf_", 30),
];

/// The multi-byte prefixes that trigger detectors, for the scanner's
/// prefilter.
pub(crate) fn trigger_prefixes() -> Vec<(&'static [u8], Detector)> {
    let mut v: Vec<(&'static [u8], Detector)> = vec![
        (PEM_BEGIN, Detector::PrivateKey),
        (b"eyJ", Detector::Jwt),
        (b"AKIA", Detector::AwsAccessKey),
        (b"ASIA", Detector::AwsAccessKey),
    ];
    v.extend(
        API_KEY_PREFIXES
            .iter()
            .filter(|(p, _)| api_key_separator(p).is_none())
            .map(|&(p, _)| (p, Detector::ApiKey)),
    );
    v
}

/// The first `_` or `-` of an API key prefix and its offset. Most prefixes
/// have one, and in text these bytes are far rarer than the letters the
/// prefixes start with, so the scanner finds those prefixes from their
/// separator instead of through the prefix automaton.
pub(crate) fn api_key_separator(prefix: &[u8]) -> Option<(u8, usize)> {
    let k = prefix.iter().position(|&b| b == b'_' || b == b'-')?;
    Some((prefix[k], k))
}

#[inline]
pub(crate) fn is_digit(b: u8) -> bool {
    b.is_ascii_digit()
}

#[inline]
fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// base64url alphabet; also the token alphabet of API keys.
#[inline]
fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

#[inline]
pub(crate) fn is_email_local(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'%' | b'+' | b'-')
}

#[inline]
fn is_email_domain(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'.'
}

/// A run of bytes satisfying `pred` from `from`, reading at most `max + 1`
/// bytes: `Some(end)` if the run is at most `max` long, `None` if longer.
#[inline]
fn run(hay: &[u8], from: usize, max: usize, pred: impl Fn(u8) -> bool) -> Option<usize> {
    let limit = hay.len().min(from + max + 1);
    let mut i = from;
    while i < limit && pred(hay[i]) {
        i += 1;
    }
    if i - from > max { None } else { Some(i) }
}

/// Numbers: the byte before `start` must not be a word byte, nor a single
/// separator continuing a digit run (`4111 1111` must not match at `1111`).
fn number_left_ok(hay: &[u8], start: usize) -> bool {
    if start == 0 {
        return true;
    }
    let b = hay[start - 1];
    if is_word(b) {
        return false;
    }
    !(matches!(b, b' ' | b'-') && start >= 2 && is_digit(hay[start - 2]))
}

/// Numbers: the byte at `end` must not be a word byte, nor a separator
/// followed by a digit.
fn number_right_ok(hay: &[u8], end: usize) -> bool {
    match hay.get(end) {
        None => true,
        Some(&b) if is_word(b) => false,
        Some(&b) => !(matches!(b, b' ' | b'-') && hay.get(end + 1).is_some_and(|&c| is_digit(c))),
    }
}

fn credit_card_at(hay: &[u8], start: usize) -> Option<usize> {
    const DIGITS_MAX: usize = 19;
    if !matches!(hay[start], b'2'..=b'6') || !number_left_ok(hay, start) {
        return None;
    }
    let mut digits = [0u8; DIGITS_MAX];
    let mut count = 0;
    let mut sep: Option<u8> = None;
    let mut group = 0;
    let mut i = start;
    loop {
        // One group of digits.
        while i < hay.len() && is_digit(hay[i]) {
            if count == DIGITS_MAX {
                return None; // part of a longer digit run
            }
            digits[count] = hay[i] - b'0';
            count += 1;
            group += 1;
            i += 1;
        }
        let next = hay.get(i).copied();
        let continues =
            matches!(next, Some(b' ' | b'-')) && hay.get(i + 1).is_some_and(|&c| is_digit(c));
        if sep.is_some() && !(3..=6).contains(&group) {
            return None;
        }
        if !continues {
            break;
        }
        let s = next.unwrap_or_default();
        match sep {
            None if (3..=6).contains(&group) => sep = Some(s),
            Some(prev) if prev == s => {}
            _ => return None, // mixed separators or a short first group
        }
        group = 0;
        i += 1;
    }
    if count < 13 || !number_right_ok(hay, i) || !luhn_valid(&digits[..count]) {
        return None;
    }
    Some(i)
}

/// The Luhn checksum over decimal digit values.
pub fn luhn_valid(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (k, &d) in digits.iter().rev().enumerate() {
        let d = u32::from(d);
        sum += if k % 2 == 1 {
            let x = d * 2;
            if x > 9 { x - 9 } else { x }
        } else {
            d
        };
    }
    sum.is_multiple_of(10)
}

fn us_ssn_at(hay: &[u8], start: usize) -> Option<usize> {
    let b = hay.get(start..start + 11)?;
    let sep = b[3];
    if !matches!(sep, b'-' | b' ') || b[6] != sep {
        return None;
    }
    let digits_ok = [0, 1, 2, 4, 5, 7, 8, 9, 10].iter().all(|&k| is_digit(b[k]));
    if !digits_ok || !number_left_ok(hay, start) || !number_right_ok(hay, start + 11) {
        return None;
    }
    let num =
        |r: std::ops::Range<usize>| b[r].iter().fold(0u32, |a, &d| a * 10 + u32::from(d - b'0'));
    let area = num(0..3);
    let group = num(4..6);
    let serial = num(7..11);
    // SSA: area 000, 666 and 900-999 are never issued, nor group 00 or
    // serial 0000.
    if area == 0 || area == 666 || area >= 900 || group == 0 || serial == 0 {
        return None;
    }
    Some(start + 11)
}

fn iban_at(hay: &[u8], start: usize) -> Option<usize> {
    const BBAN_MIN: usize = 11;
    const BBAN_MAX: usize = 30;
    let head = hay.get(start..start + 4)?;
    if !(head[0].is_ascii_uppercase()
        && head[1].is_ascii_uppercase()
        && is_digit(head[2])
        && is_digit(head[3]))
    {
        return None;
    }
    if start > 0 && is_word(hay[start - 1]) {
        return None;
    }
    let is_bban = |b: u8| b.is_ascii_uppercase() || is_digit(b);
    let mut i = start + 4;
    // Candidate ends with their BBAN lengths, longest last.
    let mut ends = [(0usize, 0usize); BBAN_MAX / 4 + 2];
    let mut n_ends = 0;
    let mut bban = 0;
    if hay.get(i) == Some(&b' ') {
        // Spaced form: groups of four, the last one possibly shorter.
        while hay.get(i) == Some(&b' ') {
            let g_start = i + 1;
            let g_end = run(hay, g_start, 4, is_bban).unwrap_or(g_start + 4);
            let len = g_end - g_start;
            if len == 0 || bban + len > BBAN_MAX || n_ends == ends.len() {
                break;
            }
            bban += len;
            i = g_end;
            if hay.get(i).is_some_and(|&b| is_word(b)) {
                break; // a group longer than four: not this form
            }
            ends[n_ends] = (i, bban);
            n_ends += 1;
            if len < 4 {
                break;
            }
        }
    } else {
        let end = run(hay, i, BBAN_MAX, is_bban)?;
        if hay.get(end).is_some_and(|&b| is_word(b)) {
            return None;
        }
        ends[0] = (end, end - i);
        n_ends = 1;
    }
    ends[..n_ends]
        .iter()
        .rev()
        .find(|&&(end, len)| (BBAN_MIN..=BBAN_MAX).contains(&len) && iban_mod97(&hay[start..end]))
        .map(|&(end, _)| end)
}

/// ISO 13616 check: the first four characters moved to the end, letters as
/// 10..=35, the number mod 97 must be 1. Spaces are skipped.
fn iban_mod97(iban: &[u8]) -> bool {
    let mut rem = 0u32;
    let chars = iban[4..].iter().chain(&iban[..4]);
    for &b in chars {
        match b {
            b'0'..=b'9' => rem = (rem * 10 + u32::from(b - b'0')) % 97,
            b'A'..=b'Z' => rem = (rem * 100 + u32::from(b - b'A') + 10) % 97,
            _ => {}
        }
    }
    rem == 1
}

fn jwt_at(hay: &[u8], start: usize) -> Option<usize> {
    const HEADER_MIN: usize = 10;
    if !hay[start..].starts_with(b"eyJ") {
        return None;
    }
    if start > 0 && (is_token(hay[start - 1]) || hay[start - 1] == b'.') {
        return None;
    }
    let cap = start + JWT_BYTES_MAX;
    let seg = |from: usize| run(hay, from, cap.saturating_sub(from), is_token);
    let h_end = seg(start)?;
    if h_end - start < HEADER_MIN || hay.get(h_end) != Some(&b'.') {
        return None;
    }
    let p_end = seg(h_end + 1)?;
    if p_end - (h_end + 1) < 2 || hay.get(p_end) != Some(&b'.') {
        return None;
    }
    let s_end = seg(p_end + 1)?;
    if s_end == p_end + 1 || s_end > cap {
        return None;
    }
    Some(s_end)
}

fn aws_access_key_at(hay: &[u8], start: usize) -> Option<usize> {
    let key = hay.get(start..start + 20)?;
    if !(key.starts_with(b"AKIA") || key.starts_with(b"ASIA")) {
        return None;
    }
    let body_ok = key[4..]
        .iter()
        .all(|&b| b.is_ascii_uppercase() || is_digit(b));
    let left_ok = start == 0 || !is_word(hay[start - 1]);
    let right_ok = hay.get(start + 20).is_none_or(|&b| !is_word(b));
    (body_ok && left_ok && right_ok).then_some(start + 20)
}

fn api_key_at(hay: &[u8], start: usize) -> Option<usize> {
    if start > 0 && is_token(hay[start - 1]) {
        return None;
    }
    let rest = &hay[start..];
    let &(prefix, min) = API_KEY_PREFIXES.iter().find(|(p, _)| rest.starts_with(p))?;
    let from = start + prefix.len();
    let end = run(hay, from, API_KEY_TOKEN_BYTES_MAX, is_token)?;
    (end - from >= min).then_some(end)
}

fn private_key_at(hay: &[u8], start: usize) -> Option<usize> {
    let rest = &hay[start..hay.len().min(start + PRIVATE_KEY_BYTES_MAX)];
    let after_begin = rest.strip_prefix(PEM_BEGIN)?;
    // The label: uppercase words ending in "PRIVATE KEY-----".
    let label_len = after_begin
        .iter()
        .take(PEM_LABEL_BYTES_MAX)
        .position(|&b| !(b.is_ascii_uppercase() || is_digit(b) || b == b' '))?;
    let label = &after_begin[..label_len];
    if !label.ends_with(b"PRIVATE KEY") || !after_begin[label_len..].starts_with(b"-----") {
        return None;
    }
    debug_assert!(PEM_LABEL_SUFFIX.starts_with(b"PRIVATE KEY"));
    let body_from = PEM_BEGIN.len() + label_len + 5;
    let body = &rest[body_from..];
    // "-----END " + label + "-----", searched without allocating.
    let mut at = 0;
    while let Some(p) = memchr::memmem::find(&body[at..], b"-----END ") {
        let tail = &body[at + p + 9..];
        if tail.starts_with(label) && tail[label.len()..].starts_with(b"-----") {
            let end = start + body_from + at + p + 9 + label.len() + 5;
            // The block body is text; refuse anything that is not ASCII so
            // a span never splits a character.
            return body[..at + p].is_ascii().then_some(end);
        }
        at += p + 1;
    }
    None
}

fn email_at(hay: &[u8], start: usize) -> Option<usize> {
    if start > 0 && is_email_local(hay[start - 1]) {
        return None;
    }
    if hay[start] == b'.' {
        return None;
    }
    let at = run(hay, start, EMAIL_LOCAL_BYTES_MAX, is_email_local)?;
    if at == start || hay.get(at) != Some(&b'@') || hay[at - 1] == b'.' {
        return None;
    }
    email_domain_end(hay, at + 1)
}

/// The end of a valid domain starting at `from`, or `None`. A trailing dot
/// is sentence punctuation, not part of the address.
fn email_domain_end(hay: &[u8], from: usize) -> Option<usize> {
    let mut end = run(hay, from, EMAIL_DOMAIN_BYTES_MAX, is_email_domain)?;
    while end > from && hay[end - 1] == b'.' {
        end -= 1;
    }
    let domain = &hay[from..end];
    let mut labels = 0;
    let mut last: &[u8] = &[];
    for label in domain.split(|&b| b == b'.') {
        if label.is_empty() || label[0] == b'-' || label[label.len() - 1] == b'-' {
            return None;
        }
        labels += 1;
        last = label;
    }
    let tld_ok = last.len() >= 2 && last.iter().all(u8::is_ascii_alphabetic);
    (labels >= 2 && tld_ok).then_some(end)
}

/// The start of the e-mail whose `@` is at `at`: the first byte of the
/// local-part run before it. Reads at most [`EMAIL_LOCAL_BYTES_MAX`] + 1
/// bytes back; `None` if the run is longer or empty.
pub(crate) fn email_start_for_at(hay: &[u8], at: usize) -> Option<usize> {
    let floor = at.saturating_sub(EMAIL_LOCAL_BYTES_MAX + 1);
    let mut s = at;
    while s > floor && is_email_local(hay[s - 1]) {
        s -= 1;
    }
    if s == at || (at - s > EMAIL_LOCAL_BYTES_MAX) {
        return None;
    }
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (input, expected matched text or None) per detector.
    fn check(det: Detector, cases: &[(&str, Option<&str>)]) {
        for &(input, want) in cases {
            let hay = input.as_bytes();
            let got = (0..hay.len()).find_map(|s| det.match_at(hay, s).map(|e| &input[s..e]));
            assert_eq!(got, want, "{det:?} on {input:?}");
        }
    }

    #[test]
    fn credit_card_corpus() {
        check(
            Detector::CreditCard,
            &[
                ("4111111111111111", Some("4111111111111111")),
                ("card 4111 1111 1111 1111 ok", Some("4111 1111 1111 1111")),
                ("card 4111-1111-1111-1111.", Some("4111-1111-1111-1111")),
                ("amex 378282246310005", Some("378282246310005")),
                ("amex 3782 822463 10005", Some("3782 822463 10005")),
                ("mc 5555555555554444", Some("5555555555554444")),
                ("é4111111111111111ü", Some("4111111111111111")),
                ("«4111 1111 1111 1111»", Some("4111 1111 1111 1111")),
                ("4111111111111112", None),                // Luhn-invalid
                ("41111111111111111111111", None),         // longer digit run
                ("94111111111111111", None),               // inside a run
                ("x4111111111111111", None),               // inside a word
                ("4111111111111111x", None),               // inside a word
                ("4111 1111 1111 1111 1", None),           // run continues
                ("1 4111111111111111", None),              // run continues left
                ("4111-1111 1111-1111", None),             // mixed separators
                ("4111  1111 1111 1111", None),            // double space
                ("0000000000000000", None),                // IIN
                ("4 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1", None), // not grouped
                ("order 12345", None),
            ],
        );
    }

    #[test]
    fn luhn_reference_values() {
        assert!(luhn_valid(&[7, 9, 9, 2, 7, 3, 9, 8, 7, 1, 3]));
        assert!(!luhn_valid(&[7, 9, 9, 2, 7, 3, 9, 8, 7, 1, 4]));
    }

    #[test]
    fn us_ssn_corpus() {
        check(
            Detector::UsSsn,
            &[
                ("ssn 123-45-6789", Some("123-45-6789")),
                ("ssn 123 45 6789.", Some("123 45 6789")),
                ("(078-05-1120)", Some("078-05-1120")),
                ("ünï 123-45-6789 ü", Some("123-45-6789")),
                ("000-12-3456", None),
                ("666-12-3456", None),
                ("900-12-3456", None),
                ("999-12-3456", None),
                ("123-00-4567", None),
                ("123-45-0000", None),
                ("123-45 6789", None),
                ("123456789", None),
                ("1123-45-6789", None),
                ("123-45-67890", None),
                ("a123-45-6789", None),
                ("555-123-45-6789", None),
                ("123-45-6789-1", None),
            ],
        );
    }

    #[test]
    fn email_corpus() {
        check(
            Detector::Email,
            &[
                (
                    "mail john.doe+x@example.com now",
                    Some("john.doe+x@example.com"),
                ),
                (
                    "<a_b%c@sub.mail-host.co.uk>",
                    Some("a_b%c@sub.mail-host.co.uk"),
                ),
                ("end alice@example.org.", Some("alice@example.org")),
                ("ü bob@example.de ü", Some("bob@example.de")),
                ("x@y.co", Some("x@y.co")),
                ("first@bad second@good.io", Some("second@good.io")),
                ("user@localhost", None),
                ("user@example.c", None),
                ("user@example.123", None),
                (".user@example.com", None),
                ("user.@example.com", None),
                ("@example.com", None),
                ("user@-bad.com", None),
                ("user@a..com", None),
                ("no at sign here", None),
            ],
        );
    }

    #[test]
    fn iban_corpus() {
        check(
            Detector::Iban,
            &[
                ("GB82WEST12345698765432", Some("GB82WEST12345698765432")),
                (
                    "iban GB82 WEST 1234 5698 7654 32 EUR",
                    Some("GB82 WEST 1234 5698 7654 32"),
                ),
                (
                    "DE89 3704 0044 0532 0130 00.",
                    Some("DE89 3704 0044 0532 0130 00"),
                ),
                (
                    "DE89370400440532013000 then",
                    Some("DE89370400440532013000"),
                ),
                (
                    "FR14 2004 1010 0505 0001 3M02 606 ok",
                    Some("FR14 2004 1010 0505 0001 3M02 606"),
                ),
                (
                    "NL91 ABNA 0417 1643 00 more",
                    Some("NL91 ABNA 0417 1643 00"),
                ),
                ("GB82WEST12345698765433", None), // checksum
                ("GB82WEST1234569876543X2", None),
                ("xGB82WEST12345698765432", None),
                ("GB82WEST12345698765432x", None),
                ("GB82 WEST12 3456 9876 5432", None),
                ("AB12", None),
            ],
        );
    }

    #[test]
    fn jwt_corpus() {
        let jwt =
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";
        let with_text = format!("Authorization: Bearer {jwt}.");
        let glued = format!("x{jwt}");
        check(
            Detector::Jwt,
            &[
                (jwt, Some(jwt)),
                (&with_text, Some(jwt)),
                (&glued, None),
                ("eyJhbGciOiJIUzI1NiJ9.eyJzdWIi", None),
                ("eyJ.eyJ.sig", None),
            ],
        );
    }

    #[test]
    fn aws_access_key_corpus() {
        check(
            Detector::AwsAccessKey,
            &[
                ("key=AKIAIOSFODNN7EXAMPLE;", Some("AKIAIOSFODNN7EXAMPLE")),
                ("ASIAY34FZKBOKMUTVV7A", Some("ASIAY34FZKBOKMUTVV7A")),
                ("AKIAIOSFODNN7EXAMPLEX", None),
                ("XAKIAIOSFODNN7EXAMPLE", None),
                ("AKIAiosfodnn7example", None),
                ("AKIAIOSFODNN7EXAMPL", None),
            ],
        );
    }

    #[test]
    fn api_key_corpus() {
        check(
            Detector::ApiKey,
            &[
                (
                    "stripe sk_live_4eC39HqLyjWDarjtT1zdp7dc ok",
                    Some("sk_live_4eC39HqLyjWDarjtT1zdp7dc"),
                ),
                (
                    "GH=ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789",
                    Some("ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789"),
                ),
                (
                    "xoxb-1234567890-abcdefghij",
                    Some("xoxb-1234567890-abcdefghij"),
                ),
                (
                    "k: sk-proj-abcdefghijklmnopqrstuvwx",
                    Some("sk-proj-abcdefghijklmnopqrstuvwx"),
                ),
                (
                    "AIzaSyD-abcdefghijklmnopqrstuvwxyz12345",
                    Some("AIzaSyD-abcdefghijklmnopqrstuvwxyz12345"),
                ),
                (
                    "glpat-abcdefghij0123456789",
                    Some("glpat-abcdefghij0123456789"),
                ),
                ("sk-short", None),
                ("ask-abcdefghijklmnopqrstuvwxyz", None),
                ("ghp_short", None),
            ],
        );
    }

    #[test]
    fn private_key_corpus() {
        let rsa = "-----BEGIN RSA PRIVATE KEY-----\nMIIBOgIBAAJBAKj34GkxFhD90vcNLYLInFEX6Ppy1tPf9Cnzj4p4WGeKLs1Pt8Qu\nKUpRKfFLfRYC9AIKjbJTWit+CqvjWYzvQwECAwEAAQ==\n-----END RSA PRIVATE KEY-----";
        let text = format!("key:\n{rsa}\ntrailer");
        let mismatched = "-----BEGIN RSA PRIVATE KEY-----\nabc\n-----END EC PRIVATE KEY-----";
        let public = "-----BEGIN PUBLIC KEY-----\nabc\n-----END PUBLIC KEY-----";
        let unterminated = "-----BEGIN PRIVATE KEY-----\nabc\n";
        let non_ascii = "-----BEGIN PRIVATE KEY-----\nabcé\n-----END PRIVATE KEY-----";
        let huge = format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----",
            "A".repeat(PRIVATE_KEY_BYTES_MAX)
        );
        check(
            Detector::PrivateKey,
            &[
                (rsa, Some(rsa)),
                (&text, Some(rsa)),
                (mismatched, None),
                (public, None),
                (unterminated, None),
                (non_ascii, None),
                (&huge, None),
            ],
        );
    }

    #[test]
    fn email_start_walks_back() {
        let hay = b"to: a.b@c.io";
        assert_eq!(email_start_for_at(hay, 7), Some(4));
        let long = [b'a'; 70];
        assert_eq!(email_start_for_at(&long, 69), None);
    }
}
