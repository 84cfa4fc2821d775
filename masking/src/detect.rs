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
//! Matches start and end on character boundaries of valid UTF-8 input: every
//! detector but e-mail matches ASCII bytes only, and e-mail addresses take
//! non-ASCII characters whole or not at all.
//!
//! # False positives
//!
//! Numbers are everywhere in data, so the number detectors are strict about
//! shape and boundaries, and refuse a value that is part of a longer run:
//! - a card is Luhn-valid and ends where its grouping ends (see
//!   [`Detector::CreditCard`]);
//! - a phone number needs a `+`, parentheses or NANP-shaped separators: a
//!   plain run of digits, a date, a time or an SSN is never a phone number;
//! - an IPv4 address is exactly four dotted octets, so version strings with
//!   more parts, and dates, are not addresses;
//! - an IPv6 address must parse as one (RFC 4291 text form), which rules out
//!   times (`12:34:56`) and colon-separated MAC addresses (six groups, no `::`).
//!
//! Where two detectors match the same bytes, the longest match wins and then
//! [`Detector::priority`] order: cards and SSNs come before phone numbers.

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
    /// An IBAN with a registered country code and a valid mod-97 checksum,
    /// compact or spaced by fours, in either letter case.
    Iban,
    /// A Luhn-valid payment card number of 13 to 19 digits: one run of digits
    /// (compact), or groups of 3 to 6 digits joined by single spaces or
    /// single dashes, the same separator throughout (grouped).
    ///
    /// A card ends where its own form ends: a compact card is not extended by
    /// a group after a space or dash (`4111111111111111 1227` is a card and an
    /// expiry), and a grouped card stops before a following group that does
    /// not fit, being shorter than 3 or longer than 6 digits, separated
    /// differently, or taking the total past 19 digits (`4111 1111 1111 1111
    /// 12`); of the group boundaries left, the longest Luhn-valid one ends the
    /// card. Symmetrically, a group before a card does not hide it
    /// (`exp 1227 4111111111111111`). No card starts or ends inside a word or
    /// a longer run of digits.
    CreditCard,
    /// A US social security number, `AAA-GG-SSSS` or `AAA GG SSSS`.
    UsSsn,
    /// An e-mail address. Local parts and domains may hold non-ASCII letters
    /// and digits (RFC 6531, IDNA U-labels), taken as whole characters.
    Email,
    /// A phone number: E.164 (`+` and 8 to 15 digits, groups joined by
    /// single spaces, dashes or dots, at most one group in parentheses), or
    /// the North American national forms `(415) 555-2671`, `415-555-2671`,
    /// `415.555.2671`, `415 555 2671` with an optional leading `1` and the
    /// same separator. A run of digits without that punctuation, a date, a
    /// time, a version string, a card number and an SSN are not phone
    /// numbers.
    Phone,
    /// An IPv4 address: four dotted decimal octets of 0 to 255 without
    /// leading zeros, not part of a longer dotted run of numbers (`1.2.3.4.5`)
    /// and not glued to a word.
    Ipv4,
    /// An IPv6 address in RFC 4291 text form: eight groups, `::`
    /// compression, an embedded IPv4 tail. It must parse as an address, so
    /// times (`12:34:56`) and MAC addresses (`00:1a:2b:3c:4d:5e`) do not
    /// match; `::` alone does not either.
    Ipv6,
    /// One of the scanner's custom keywords (ASCII case-insensitive).
    Keyword,
    /// A match of the scanner's custom regular expression with this index.
    Pattern(u16),
}

impl Detector {
    /// Every built-in detector, in priority order.
    pub const BUILT_IN: [Detector; 11] = [
        Detector::PrivateKey,
        Detector::Jwt,
        Detector::ApiKey,
        Detector::AwsAccessKey,
        Detector::Iban,
        Detector::CreditCard,
        Detector::UsSsn,
        Detector::Email,
        Detector::Phone,
        Detector::Ipv4,
        Detector::Ipv6,
    ];

    /// Whether this is one of [`Detector::BUILT_IN`].
    pub fn is_built_in(self) -> bool {
        !matches!(self, Detector::Keyword | Detector::Pattern(_))
    }

    /// Tie-break when two detectors match the same bytes: lower wins. For
    /// built-in detectors it is also the index in [`Detector::BUILT_IN`].
    pub fn priority(self) -> u32 {
        match self {
            Detector::PrivateKey => 0,
            Detector::Jwt => 1,
            Detector::ApiKey => 2,
            Detector::AwsAccessKey => 3,
            Detector::Iban => 4,
            Detector::CreditCard => 5,
            Detector::UsSsn => 6,
            Detector::Email => 7,
            Detector::Phone => 8,
            Detector::Ipv4 => 9,
            Detector::Ipv6 => 10,
            Detector::Keyword => 11,
            Detector::Pattern(i) => 12 + u32::from(i),
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
            Detector::Phone => phone_at(hay, start),
            Detector::Ipv4 => ipv4_at(hay, start),
            Detector::Ipv6 => ipv6_at(hay, start),
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
/// An RSA-4096 key in PKCS#8 PEM is about 3.3 KiB, an RSA-8192 key about
/// 6.4 KiB, and encrypted forms with their headers a little more; 16 KiB
/// covers them with room to spare. A block with no END line within the cap
/// is left alone rather than letting the stream masker hold back unbounded
/// data.
pub const PRIVATE_KEY_BYTES_MAX: usize = 16 * 1024;
/// Longest JSON Web Token matched (tokens carrying many claims or an
/// embedded certificate chain run to several KiB).
pub const JWT_BYTES_MAX: usize = 16 * 1024;
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
/// may read: an e-mail local part and the character before it.
pub const LOOKBEHIND_BYTES_MAX: usize = EMAIL_LOCAL_BYTES_MAX + 16;
/// Longest IPv6 address text: six groups and a dotted IPv4 tail.
pub const IPV6_BYTES_MAX: usize = 45;

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

pub(crate) fn credit_card_at(hay: &[u8], start: usize) -> Option<usize> {
    const DIGITS_MAX: usize = 19;
    const GROUP: std::ops::RangeInclusive<usize> = 3..=6;
    if !matches!(hay[start], b'2'..=b'6') || start > 0 && is_word(hay[start - 1]) {
        return None;
    }
    let group_end = |from: usize| {
        let mut i = from;
        while i < hay.len() && is_digit(hay[i]) {
            i += 1;
        }
        i
    };
    let first = group_end(start);
    let first_len = first - start;
    if first_len > DIGITS_MAX || hay.get(first).is_some_and(|&b| is_word(b)) {
        return None;
    }
    if (13..=DIGITS_MAX).contains(&first_len) {
        // Compact: what follows a space or dash is another value.
        return luhn_valid_ascii(&hay[start..first]).then_some(first);
    }
    if !GROUP.contains(&first_len) {
        return None;
    }
    let sep = *hay.get(first).filter(|&&b| b == b' ' || b == b'-')?;
    // Groups while they fit; every boundary with 13 or more digits is a
    // candidate end, the longest Luhn-valid one wins.
    let mut digits = [0u8; DIGITS_MAX];
    let mut count = 0;
    let mut ends = [(0usize, 0usize); DIGITS_MAX / 3 + 1];
    let mut n_ends = 0;
    let mut g_start = start;
    let mut g_end = first;
    loop {
        let len = g_end - g_start;
        if !GROUP.contains(&len)
            || count + len > DIGITS_MAX
            || hay.get(g_end).is_some_and(|&b| is_word(b))
        {
            break;
        }
        for (d, &b) in digits[count..count + len]
            .iter_mut()
            .zip(&hay[g_start..g_end])
        {
            *d = b - b'0';
        }
        count += len;
        if count >= 13 {
            ends[n_ends] = (g_end, count);
            n_ends += 1;
        }
        if hay.get(g_end) != Some(&sep) || !hay.get(g_end + 1).is_some_and(|&b| is_digit(b)) {
            break;
        }
        g_start = g_end + 1;
        g_end = group_end(g_start);
    }
    ends[..n_ends]
        .iter()
        .rev()
        .find(|&&(_, n)| luhn_valid(&digits[..n]))
        .map(|&(end, _)| end)
}

/// [`luhn_valid`] over ASCII digits.
fn luhn_valid_ascii(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (k, &b) in digits.iter().rev().enumerate() {
        let d = u32::from(b - b'0');
        sum += if k % 2 == 1 {
            let x = d * 2;
            if x > 9 { x - 9 } else { x }
        } else {
            d
        };
    }
    sum.is_multiple_of(10)
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

pub(crate) fn us_ssn_at(hay: &[u8], start: usize) -> Option<usize> {
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

/// Countries of the SWIFT IBAN registry, sorted.
const IBAN_COUNTRIES: [[u8; 2]; 89] = [
    *b"AD", *b"AE", *b"AL", *b"AT", *b"AZ", *b"BA", *b"BE", *b"BG", *b"BH", *b"BI", *b"BR", *b"BY",
    *b"CH", *b"CR", *b"CY", *b"CZ", *b"DE", *b"DJ", *b"DK", *b"DO", *b"EE", *b"EG", *b"ES", *b"FI",
    *b"FK", *b"FO", *b"FR", *b"GB", *b"GE", *b"GI", *b"GL", *b"GR", *b"GT", *b"HN", *b"HR", *b"HU",
    *b"IE", *b"IL", *b"IQ", *b"IS", *b"IT", *b"JO", *b"KW", *b"KZ", *b"LB", *b"LC", *b"LI", *b"LT",
    *b"LU", *b"LV", *b"LY", *b"MC", *b"MD", *b"ME", *b"MK", *b"MN", *b"MR", *b"MT", *b"MU", *b"NI",
    *b"NL", *b"NO", *b"OM", *b"PK", *b"PL", *b"PS", *b"PT", *b"QA", *b"RO", *b"RS", *b"RU", *b"SA",
    *b"SC", *b"SD", *b"SE", *b"SI", *b"SK", *b"SM", *b"SO", *b"ST", *b"SV", *b"TL", *b"TN", *b"TR",
    *b"UA", *b"VA", *b"VG", *b"XK", *b"YE",
];

/// [`IBAN_COUNTRIES`] as one bit per letter pair: row = first letter,
/// bit = second letter, so the check is two subtractions and a shift.
const IBAN_COUNTRY_BITS: [u32; 26] = {
    let mut rows = [0u32; 26];
    let mut i = 0;
    while i < IBAN_COUNTRIES.len() {
        let [a, b] = IBAN_COUNTRIES[i];
        rows[(a - b'A') as usize] |= 1 << (b - b'A');
        i += 1;
    }
    rows
};

/// Whether two bytes are an IBAN country code, in either case. Checking
/// the country keeps lowercase identifiers with a lucky mod-97 remainder
/// (hex digests, slugs) from passing as IBANs.
#[inline]
fn iban_country(a: u8, b: u8) -> bool {
    let a = a.to_ascii_uppercase().wrapping_sub(b'A');
    let b = b.to_ascii_uppercase().wrapping_sub(b'A');
    a < 26 && b < 26 && IBAN_COUNTRY_BITS[usize::from(a)] >> b & 1 == 1
}

pub(crate) fn iban_at(hay: &[u8], start: usize) -> Option<usize> {
    const BBAN_MIN: usize = 11;
    const BBAN_MAX: usize = 30;
    let head = hay.get(start..start + 4)?;
    if !(is_digit(head[2]) && is_digit(head[3]) && iban_country(head[0], head[1])) {
        return None;
    }
    if start > 0 && is_word(hay[start - 1]) {
        return None;
    }
    let is_bban = |b: u8| b.is_ascii_alphanumeric();
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

/// ISO 13616 check: the first four characters moved to the end, letters
/// (either case) as 10..=35, the number mod 97 must be 1. Spaces are
/// skipped.
fn iban_mod97(iban: &[u8]) -> bool {
    // The number is taken in a u64 and reduced only when it could overflow
    // on the next character (below 2^50, times 100 plus 35 stays below
    // 2^57): a remainder per character would make every step wait for a
    // division.
    const REDUCE_AT: u64 = 1 << 50;
    let mut acc = 0u64;
    let chars = iban[4..].iter().chain(&iban[..4]);
    for &b in chars {
        match b {
            b'0'..=b'9' => acc = acc * 10 + u64::from(b - b'0'),
            b'A'..=b'Z' | b'a'..=b'z' => {
                acc = acc * 100 + u64::from(b.to_ascii_uppercase() - b'A') + 10;
            }
            _ => continue,
        }
        if acc >= REDUCE_AT {
            acc %= 97;
        }
    }
    acc % 97 == 1
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

pub(crate) fn api_key_at(hay: &[u8], start: usize) -> Option<usize> {
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

/// Which characters an e-mail part may hold.
#[derive(Clone, Copy)]
enum EmailPart {
    Local,
    Domain,
}

/// The length in bytes of the character at `i` if an e-mail `part` may hold
/// it: the ASCII set of the part, or any non-ASCII letter or digit. ASCII is
/// decided on the byte alone; only non-ASCII bytes are decoded.
#[inline]
fn email_char_at(hay: &[u8], i: usize, part: EmailPart) -> Option<usize> {
    let b = *hay.get(i)?;
    if b.is_ascii() {
        let ok = match part {
            EmailPart::Local => is_email_local(b),
            EmailPart::Domain => is_email_domain(b),
        };
        return ok.then_some(1);
    }
    let width = match b {
        0xC2..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF4 => 4,
        _ => return None, // a continuation or invalid byte
    };
    let c = std::str::from_utf8(hay.get(i..i + width)?)
        .ok()?
        .chars()
        .next()?;
    c.is_alphanumeric().then_some(width)
}

/// Like [`email_char_at`] for the character ending just before `i`.
#[inline]
fn email_char_before(hay: &[u8], i: usize, part: EmailPart) -> Option<usize> {
    let b = *hay.get(i.checked_sub(1)?)?;
    if b.is_ascii() {
        return email_char_at(hay, i - 1, part);
    }
    let lead = (i.saturating_sub(4)..i)
        .rev()
        .find(|&k| hay[k] & 0xC0 != 0x80)?;
    email_char_at(hay, lead, part).filter(|&w| lead + w == i)
}

/// The end of the run of `part` characters from `from`, if it is at most
/// `max` bytes long; reads at most `max + 4` bytes.
#[inline]
fn email_run(hay: &[u8], from: usize, max: usize, part: EmailPart) -> Option<usize> {
    let ascii = match part {
        EmailPart::Local => is_email_local,
        EmailPart::Domain => is_email_domain,
    };
    let limit = hay.len().min(from + max + 1);
    let mut i = from;
    loop {
        // ASCII bytes one compare each; a non-ASCII character is decoded.
        while i < limit && ascii(hay[i]) {
            i += 1;
        }
        if i >= limit || hay[i].is_ascii() {
            break;
        }
        match email_char_at(hay, i, part) {
            Some(w) => i += w,
            None => break,
        }
    }
    (i - from <= max).then_some(i)
}

pub(crate) fn email_at(hay: &[u8], start: usize) -> Option<usize> {
    if hay[start] == b'.' || email_char_before(hay, start, EmailPart::Local).is_some() {
        return None;
    }
    let at = email_run(hay, start, EMAIL_LOCAL_BYTES_MAX, EmailPart::Local)?;
    if at == start || hay.get(at) != Some(&b'@') || hay[at - 1] == b'.' {
        return None;
    }
    email_domain_end(hay, at + 1)
}

/// The end of a valid domain starting at `from`, or `None`. A trailing dot
/// is sentence punctuation, not part of the address.
fn email_domain_end(hay: &[u8], from: usize) -> Option<usize> {
    let mut end = email_run(hay, from, EMAIL_DOMAIN_BYTES_MAX, EmailPart::Domain)?;
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
    (labels >= 2 && tld_ok(last)).then_some(end)
}

/// A top-level domain: two or more letters (ASCII or not), or an IDNA
/// A-label (`xn--p1ai`).
fn tld_ok(label: &[u8]) -> bool {
    if label.is_ascii() {
        return (label.len() >= 2 && label.iter().all(u8::is_ascii_alphabetic))
            || (label.len() > 4
                && label[..4].eq_ignore_ascii_case(b"xn--")
                && label[4..].iter().all(|&b| b.is_ascii_alphanumeric()));
    }
    std::str::from_utf8(label).is_ok_and(|t| t.chars().all(char::is_alphabetic))
}

/// The start of the e-mail whose `@` is at `at`: the first byte of the
/// local-part run before it. Reads at most [`EMAIL_LOCAL_BYTES_MAX`] + 4
/// bytes back; `None` if the run is longer or empty.
pub(crate) fn email_start_for_at(hay: &[u8], at: usize) -> Option<usize> {
    let floor = at.saturating_sub(EMAIL_LOCAL_BYTES_MAX + 1);
    let mut s = at;
    loop {
        while s > floor && is_email_local(hay[s - 1]) {
            s -= 1;
        }
        if s == floor || hay[s - 1].is_ascii() {
            break;
        }
        match email_char_before(hay, s, EmailPart::Local) {
            Some(w) => s -= w,
            None => break,
        }
        if at - s > EMAIL_LOCAL_BYTES_MAX {
            return None;
        }
    }
    (s != at && at - s <= EMAIL_LOCAL_BYTES_MAX).then_some(s)
}

/// Separators between the digit groups of a phone number.
#[inline]
fn is_phone_sep(b: u8) -> bool {
    matches!(b, b' ' | b'-' | b'.')
}

/// The end of the run of digits from `from`.
#[inline]
fn digits_end(hay: &[u8], from: usize) -> usize {
    let mut i = from;
    while i < hay.len() && is_digit(hay[i]) {
        i += 1;
    }
    i
}

/// A phone number may not be glued to a word, nor continue a run of
/// numbers (`12-415-555-2671`, `1.415.555.2671.9`).
fn phone_left_ok(hay: &[u8], start: usize) -> bool {
    if start == 0 {
        return true;
    }
    let b = hay[start - 1];
    !(is_word(b) || b == b'+' || (is_phone_sep(b) && start >= 2 && is_digit(hay[start - 2])))
}

fn phone_right_ok(hay: &[u8], end: usize) -> bool {
    match hay.get(end) {
        None => true,
        Some(&b) if is_word(b) => false,
        Some(&b) => !(is_phone_sep(b) && hay.get(end + 1).is_some_and(|&c| is_digit(c))),
    }
}

pub(crate) fn phone_at(hay: &[u8], start: usize) -> Option<usize> {
    if !phone_left_ok(hay, start) {
        return None;
    }
    match hay[start] {
        b'+' => phone_e164_at(hay, start),
        b'(' => nanp_parenthesised_at(hay, start),
        b'1' if hay.get(start + 1) == Some(&b' ') && hay.get(start + 2) == Some(&b'(') => {
            nanp_parenthesised_at(hay, start + 2)
        }
        b'0'..=b'9' => nanp_separated_at(hay, start),
        _ => None,
    }
}

/// `+`, then 8 to 15 digits in groups joined by one space, dash or dot; one
/// group may be in parentheses (`+1 (415) 555-2671`, `+44 (20) 7946 0958`).
fn phone_e164_at(hay: &[u8], start: usize) -> Option<usize> {
    const DIGITS: std::ops::RangeInclusive<usize> = 8..=15;
    const GROUPS_MAX: usize = 8;
    let mut groups = [0usize; GROUPS_MAX];
    let mut n_groups = 0;
    let mut digits = 0;
    let mut parenthesised = false;
    let mut i = start + 1;
    if !hay.get(i).is_some_and(|&b| is_digit(b)) {
        return None;
    }
    loop {
        let end = digits_end(hay, i);
        digits += end - i;
        if digits > *DIGITS.end() || n_groups == GROUPS_MAX {
            return None;
        }
        groups[n_groups] = end - i;
        n_groups += 1;
        i = end;
        let digit_at = |k: usize| hay.get(k).is_some_and(|&b| is_digit(b));
        let sep = hay.get(i).is_some_and(|&b| is_phone_sep(b));
        if sep && digit_at(i + 1) {
            i += 1;
            continue;
        }
        // One group in parentheses, after an optional space.
        let open = if hay.get(i) == Some(&b'(') {
            i
        } else if hay.get(i) == Some(&b' ') && hay.get(i + 1) == Some(&b'(') {
            i + 1
        } else {
            break;
        };
        if parenthesised || !digit_at(open + 1) {
            break;
        }
        let close = digits_end(hay, open + 1);
        if close - (open + 1) > 4 || hay.get(close) != Some(&b')') {
            break;
        }
        let mut next = close + 1;
        if hay.get(next).is_some_and(|&b| is_phone_sep(b)) {
            next += 1;
        }
        if !digit_at(next) {
            break;
        }
        parenthesised = true;
        digits += close - (open + 1);
        if n_groups == GROUPS_MAX {
            return None;
        }
        groups[n_groups] = close - (open + 1);
        n_groups += 1;
        i = next;
    }
    if !DIGITS.contains(&digits) || !phone_right_ok(hay, i) {
        return None;
    }
    // A date with a sign is a date; a card or an SSN after a `+` is that.
    if groups[..n_groups] == [4, 2, 2]
        || credit_card_at(hay, start + 1).is_some()
        || us_ssn_at(hay, start + 1).is_some()
    {
        return None;
    }
    Some(i)
}

/// NANP area code and exchange: three digits each, not starting with 0 or 1.
fn nanp_group_ok(hay: &[u8], from: usize) -> bool {
    hay.get(from..from + 3)
        .is_some_and(|g| matches!(g[0], b'2'..=b'9') && is_digit(g[1]) && is_digit(g[2]))
        && !hay.get(from + 3).is_some_and(|&b| is_digit(b))
}

/// Exactly `n` digits at `from`, not followed by another digit.
fn exact_digits(hay: &[u8], from: usize, n: usize) -> bool {
    digits_end(hay, from) == from + n
}

/// `(415) 555-2671`, `(415)555-2671`, `(415) 555 2671`, `(415) 555.2671`.
fn nanp_parenthesised_at(hay: &[u8], open: usize) -> Option<usize> {
    if !nanp_group_ok(hay, open + 1) || hay.get(open + 4) != Some(&b')') {
        return None;
    }
    let mut i = open + 5;
    if hay.get(i) == Some(&b' ') {
        i += 1;
    }
    if !nanp_group_ok(hay, i) {
        return None;
    }
    i += 3;
    if hay.get(i).is_some_and(|&b| is_phone_sep(b)) {
        i += 1;
    }
    if !exact_digits(hay, i, 4) || !phone_right_ok(hay, i + 4) {
        return None;
    }
    Some(i + 4)
}

/// `415-555-2671`, `415.555.2671`, `415 555 2671`, optionally after `1` and
/// the same separator.
fn nanp_separated_at(hay: &[u8], start: usize) -> Option<usize> {
    let mut i = start;
    let mut sep = None;
    if hay[i] == b'1' && hay.get(i + 1).is_some_and(|&b| is_phone_sep(b)) {
        sep = Some(hay[i + 1]);
        i += 2;
    }
    if !nanp_group_ok(hay, i) {
        return None;
    }
    let s = *hay.get(i + 3).filter(|&&b| is_phone_sep(b))?;
    if sep.is_some_and(|p| p != s) || !nanp_group_ok(hay, i + 4) || hay.get(i + 7) != Some(&s) {
        return None;
    }
    let end = i + 12;
    (exact_digits(hay, i + 8, 4) && phone_right_ok(hay, end)).then_some(end)
}

pub(crate) fn ipv4_at(hay: &[u8], start: usize) -> Option<usize> {
    if start > 0 {
        let b = hay[start - 1];
        if is_word(b) || (b == b'.' && start >= 2 && is_digit(hay[start - 2])) {
            return None;
        }
    }
    let mut i = start;
    for octet in 0..4 {
        if octet > 0 {
            if hay.get(i) != Some(&b'.') {
                return None;
            }
            i += 1;
        }
        let end = digits_end(hay, i);
        let text = &hay[i..end];
        // No leading zeros: `01.02.03.04` is not how addresses are written.
        if text.is_empty() || text.len() > 3 || (text.len() > 1 && text[0] == b'0') {
            return None;
        }
        if text.iter().fold(0u32, |a, &d| a * 10 + u32::from(d - b'0')) > 255 {
            return None;
        }
        i = end;
    }
    let right_ok = match hay.get(i) {
        None => true,
        Some(&b) => !(is_word(b) || (b == b'.' && hay.get(i + 1).is_some_and(|&c| is_digit(c)))),
    };
    right_ok.then_some(i)
}

/// Bytes of IPv6 address text (an embedded IPv4 tail brings the dots).
#[inline]
pub(crate) fn is_ipv6_byte(b: u8) -> bool {
    b.is_ascii_hexdigit() || b == b':' || b == b'.'
}

pub(crate) fn ipv6_at(hay: &[u8], start: usize) -> Option<usize> {
    if start > 0 {
        let b = hay[start - 1];
        if is_word(b) || b == b':' || b == b'.' {
            return None;
        }
    }
    if !(hay[start].is_ascii_hexdigit() || hay[start] == b':') {
        return None;
    }
    // The whole run of address bytes, plus one for a full stop after it.
    let run_end = run(hay, start, IPV6_BYTES_MAX + 1, is_ipv6_byte)?;
    if hay.get(run_end).is_some_and(|&b| is_word(b)) {
        return None;
    }
    let end = if hay[run_end - 1] == b'.' {
        run_end - 1
    } else {
        run_end
    };
    let text = &hay[start..end];
    if text.len() > IPV6_BYTES_MAX || text == b"::" || !text.contains(&b':') {
        return None;
    }
    let text = std::str::from_utf8(text).ok()?;
    text.parse::<std::net::Ipv6Addr>().ok().map(|_| end)
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
                ("4111111111111112", None),        // Luhn-invalid
                ("41111111111111111111111", None), // longer digit run
                ("94111111111111111", None),       // inside a run
                ("x4111111111111111", None),       // inside a word
                ("4111111111111111x", None),       // inside a word
                // A group that does not fit ends the card before it.
                ("4111 1111 1111 1111 12", Some("4111 1111 1111 1111")),
                ("4111 1111 1111 1111 1", Some("4111 1111 1111 1111")),
                ("4111 1111 1111 1111 1234", Some("4111 1111 1111 1111")),
                ("4111 1111 1111 1111-1234", Some("4111 1111 1111 1111")),
                ("4111-1111-1111-1111 1234567", Some("4111-1111-1111-1111")),
                ("4111 1111 1111 1111 003", Some("4111 1111 1111 1111 003")),
                // Compact cards are not extended by a separated group.
                ("card 4111111111111111 exp 1227", Some("4111111111111111")),
                ("4111111111111111 1227", Some("4111111111111111")),
                ("4111111111111111-12", Some("4111111111111111")),
                ("1 4111111111111111", Some("4111111111111111")),
                ("exp 1227 4111111111111111", Some("4111111111111111")),
                ("12 4111 1111 1111 1111", Some("4111 1111 1111 1111")),
                ("4111111111111111", Some("4111111111111111")),
                ("ü4111 1111 1111 1111 12ü", Some("4111 1111 1111 1111")),
                ("4111 1111 1111 1111x", None), // last group in a word
                ("4111 1111 1111 1111 12x", Some("4111 1111 1111 1111")),
                ("4111 1111 1111 11112", None), // 17 digits, Luhn-invalid
                ("41111111111111111 1227", None), // 17 compact, invalid
                ("4111 1111 1111 111", None),   // 15 digits, invalid
                ("4111-1111 1111-1111", None),  // mixed separators
                ("4111  1111 1111 1111", None), // double space
                ("0000000000000000", None),     // IIN
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
                // Internationalised addresses, whole characters only.
                ("mail ünïcode@example.com", Some("ünïcode@example.com")),
                ("«jane@exämple.de»", Some("jane@exämple.de")),
                ("用户@例子.广告 end", Some("用户@例子.广告")),
                ("почта: иван@пример.рф.", Some("иван@пример.рф")),
                ("user@example.xn--p1ai", Some("user@example.xn--p1ai")),
                ("“bob@example.com”", Some("bob@example.com")),
                ("\u{a0}bob@example.com\u{a0}", Some("bob@example.com")),
                ("bob@example.com—more", Some("bob@example.com")),
                ("jane@example.c€", None),
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
                ("gb82west12345698765432", Some("gb82west12345698765432")),
                (
                    "iban gb82 west 1234 5698 7654 32.",
                    Some("gb82 west 1234 5698 7654 32"),
                ),
                (
                    "é De89 3704 0044 0532 0130 00 ü",
                    Some("De89 3704 0044 0532 0130 00"),
                ),
                ("gb82west12345698765433", None), // checksum
                ("ZZ82WEST12345698765432", None), // no such country
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
    fn iban_mod97_matches_per_character_remainders() {
        let plain = |iban: &[u8]| {
            let mut rem = 0u32;
            for &b in iban[4..].iter().chain(&iban[..4]) {
                match b {
                    b'0'..=b'9' => rem = (rem * 10 + u32::from(b - b'0')) % 97,
                    b'A'..=b'Z' | b'a'..=b'z' => {
                        rem = (rem * 100 + u32::from(b.to_ascii_uppercase() - b'A') + 10) % 97;
                    }
                    _ => {}
                }
            }
            rem == 1
        };
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let alphabet = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZz ";
        for len in 4..=40 {
            for _ in 0..2000 {
                let iban: Vec<u8> = (0..len)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        alphabet[(x % alphabet.len() as u64) as usize]
                    })
                    .collect();
                assert_eq!(iban_mod97(&iban), plain(&iban), "{iban:?}");
            }
        }
        assert!(iban_mod97(b"GB82WEST12345698765432"));
        assert!(iban_mod97(b"GB82 WEST 1234 5698 7654 32"));
    }

    #[test]
    fn iban_country_bits_match_the_list() {
        assert!(IBAN_COUNTRIES.is_sorted());
        for a in 0..=255u8 {
            for b in 0..=255u8 {
                let code = [a.to_ascii_uppercase(), b.to_ascii_uppercase()];
                let want = IBAN_COUNTRIES.contains(&code);
                assert_eq!(iban_country(a, b), want, "{a} {b}");
            }
        }
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
        // An encrypted RSA-4096 key with headers, well over 4 KiB: 64-column
        // base64 lines, as OpenSSL writes them.
        let line = "MIIJnDBOBgkqhkiG9w0BBQ0wQTApBgkqhkiG9w0BBQwwHAQIK3nJ1cYVm8YCAggA\n";
        let encrypted = format!(
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\n{}-----END ENCRYPTED PRIVATE KEY-----",
            line.repeat(100)
        );
        assert!(encrypted.len() > 6 * 1024);
        let encrypted_text = format!("ü{encrypted}ü");
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
                (&encrypted, Some(&encrypted)),
                (&encrypted_text, Some(&encrypted)),
            ],
        );
    }

    #[test]
    fn long_jwt_is_matched_whole() {
        let claims = format!("eyJ{}", "a".repeat(9000));
        let jwt = format!("eyJhbGciOiJSUzI1NiJ9.{claims}.c2lnbmF0dXJl");
        let text = format!("Bearer {jwt} rest");
        let too_long = format!("eyJhbGciOiJSUzI1NiJ9.{}.sig", "a".repeat(JWT_BYTES_MAX));
        check(Detector::Jwt, &[(&text, Some(&jwt)), (&too_long, None)]);
    }

    #[test]
    fn phone_corpus() {
        check(
            Detector::Phone,
            &[
                // E.164 and international forms.
                ("call +14155552671 now", Some("+14155552671")),
                ("+44 20 7946 0958", Some("+44 20 7946 0958")),
                ("tel:+1-415-555-2671;", Some("+1-415-555-2671")),
                ("+1 (415) 555-2671", Some("+1 (415) 555-2671")),
                ("+44 (20) 7946 0958.", Some("+44 (20) 7946 0958")),
                ("+33 1 23 45 67 89", Some("+33 1 23 45 67 89")),
                ("+49.30.901820", Some("+49.30.901820")),
                ("«+81 3-1234-5678»", Some("+81 3-1234-5678")),
                ("é+4915112345679é", Some("+4915112345679")),
                // A Luhn-valid run after a `+` is left to the card detector.
                ("+4915112345678", None),
                // North American national forms.
                ("(415) 555-2671", Some("(415) 555-2671")),
                ("phone: (415)555-2671.", Some("(415)555-2671")),
                ("415-555-2671", Some("415-555-2671")),
                ("415.555.2671", Some("415.555.2671")),
                ("415 555 2671", Some("415 555 2671")),
                ("1-800-555-0199", Some("1-800-555-0199")),
                ("1 (800) 555-0199", Some("1 (800) 555-0199")),
                ("ü(415) 555 2671ü", Some("(415) 555 2671")),
                // Too short, too long, or not phone-shaped.
                ("+1234567", None),
                ("+1234567890123456", None),
                ("4155552671", None),        // a plain integer
                ("12345678901", None),       // a plain integer
                ("415-555-26710", None),     // longer run
                ("12-415-555-2671", None),   // run continues left
                ("415-555-2671-12", None),   // run continues right
                ("415-555.2671", None),      // mixed separators
                ("1-800.555.0199", None),    // mixed separators
                ("015-555-2671", None),      // area code 0xx
                ("415-155-2671", None),      // exchange 1xx
                ("x415-555-2671", None),     // in a word
                ("(415) 555-2671x", None),   // in a word
                ("+44 20 7946 0958x", None), // in a word
                ("a+14155552671", None),     // in a word
                // Dates, times, versions, cards, SSNs.
                ("2024-01-15", None),
                ("+2024-01-15", None),
                ("15.01.2024", None),
                ("2024-01-15T12:34:56Z", None),
                ("12:34:56", None),
                ("+05:30", None),
                ("v1.2.3", None),
                ("10.2.300.4000", None),
                ("123-45-6789", None),
                ("+123-45-6789", None),
                ("4111 1111 1111 1111", None),
                ("+4111111111111111", None),
                ("+411111111111111", Some("+411111111111111")), // not Luhn-valid
            ],
        );
    }

    #[test]
    fn ipv4_corpus() {
        check(
            Detector::Ipv4,
            &[
                ("host 192.168.1.10 up", Some("192.168.1.10")),
                ("8.8.8.8", Some("8.8.8.8")),
                ("0.0.0.0", Some("0.0.0.0")),
                ("255.255.255.255", Some("255.255.255.255")),
                ("from 10.0.0.1:5432", Some("10.0.0.1")),
                ("net 10.0.0.0/8", Some("10.0.0.0")),
                ("end 172.16.0.1.", Some("172.16.0.1")),
                ("[10.1.2.3]", Some("10.1.2.3")),
                ("é10.1.2.3ü", Some("10.1.2.3")),
                ("::ffff:10.1.2.3", Some("10.1.2.3")),
                ("256.1.1.1", None),
                ("1.2.3.256", None),
                ("1.2.3", None),
                ("1.2.3.4.5", None), // a longer dotted run
                ("version 1.2.3.4.5", None),
                ("0.1.2.3.4", None),
                ("01.02.03.04", None), // leading zeros
                ("1.2.3.04", None),
                ("1.2.3.4a", None),
                ("v1.2.3.4", None),
                ("12.34.56.7890", None),
                ("1..2.3.4", None),
                ("1.2..3.4", None),
                ("2024.01.15", None),
            ],
        );
    }

    #[test]
    fn ipv6_corpus() {
        check(
            Detector::Ipv6,
            &[
                (
                    "addr 2001:0db8:85a3:0000:0000:8a2e:0370:7334 up",
                    Some("2001:0db8:85a3:0000:0000:8a2e:0370:7334"),
                ),
                ("2001:db8::1", Some("2001:db8::1")),
                ("[2001:db8::1]:443", Some("2001:db8::1")),
                (
                    "via fe80::1ff:fe23:4567:890a.",
                    Some("fe80::1ff:fe23:4567:890a"),
                ),
                ("::1", Some("::1")),
                ("::ffff:192.0.2.128", Some("::ffff:192.0.2.128")),
                ("64:ff9b::192.0.2.33 ok", Some("64:ff9b::192.0.2.33")),
                ("FE80::ABCD", Some("FE80::ABCD")),
                ("é2001:db8::1ü", Some("2001:db8::1")),
                ("1:2:3:4:5:6:7:8", Some("1:2:3:4:5:6:7:8")),
                ("::", None),
                ("12:34", None),
                ("12:34:56", None),
                ("2024-01-15T12:34:56Z", None),
                ("00:1a:2b:3c:4d:5e", None), // MAC address
                ("00:1A:2B:3C:4D:5E:6F", None),
                ("1:2:3:4:5:6:7:8:9", None),
                ("2001:db8::1::2", None),
                ("2001:db8:::1", None),
                ("12345::1", None),
                ("2001:db8::g", None),
                ("x2001:db8::1", None),
                ("2001:db8::1x", None),
                ("std::vec", None),
                ("Foo::bar", None),
                ("a.b:c", None),
            ],
        );
    }

    #[test]
    fn email_start_walks_back() {
        let hay = b"to: a.b@c.io";
        assert_eq!(email_start_for_at(hay, 7), Some(4));
        let long = [b'a'; 70];
        assert_eq!(email_start_for_at(&long, 69), None);
        let hay = "«ünï@x.io".as_bytes();
        assert_eq!(email_start_for_at(hay, 7), Some(2));
        // Never inside a character, even when the cap falls there.
        let wide = format!("{}@x.io", "é".repeat(40));
        assert_eq!(email_start_for_at(wide.as_bytes(), 80), None);
        let fits = format!("{}@x.io", "é".repeat(32));
        assert_eq!(email_start_for_at(fits.as_bytes(), 64), Some(0));
    }
}
