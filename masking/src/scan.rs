//! The scanner: finds every sensitive value in a byte slice, leftmost-first
//! and non-overlapping.
//!
//! Clean text is the common case, so the scanner never asks a detector
//! anything until a cheap pass has found a trigger:
//! - one Aho-Corasick search (SIMD "Teddy" when available) over the few
//!   multi-byte prefixes (`-----BEGIN `, `eyJ`, `AKIA`, `ASIA`, `AIza`); few
//!   enough that each gets its own Teddy bucket and ordinary words rarely
//!   pass the fingerprint;
//! - one pass of the block classifier ([`crate::classify`], SIMD) over
//!   64-byte blocks, which marks digits, `@`, `:`, `_` and `-` at once and
//!   skips blocks with none of them. In the others, each digit run long
//!   enough to matter starts the number detectors, each `@` the e-mail
//!   detector, each `:` with an address byte beside it the IPv6 detector (at
//!   the start of its address-shaped run), and each `_` or `-` the API key
//!   prefixes that contain one (`sk_live_`, `ghp_`, `xoxb-`, ...), checked
//!   backwards.
//!
//! Phone numbers and IPv4 addresses add no trigger of their own: they start
//! at a digit run (or at the `+` or `(` just before one) that the block masks
//! already mark, so they only widen the set of runs visited from those of
//! three digits or more to every run.
//!
//! The multi-byte prefixes stay with the automaton: their first letters are
//! common (`e`, `A`), so as single-byte triggers they would make the
//! classifier stop on most blocks of text.
//!
//! Every candidate the detectors confirm is collected, then sorted by
//! (start, longest first, detector priority) and thinned greedily. That is
//! exactly "at each position the longest match wins, then resume after it",
//! which the tests check against a scan that asks every detector at every
//! position.

use std::cmp::Reverse;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, Input, MatchKind};
use regex::bytes::Regex;

use crate::Error;
use crate::classify::{self, BLOCK, Classes};
use crate::detect::{self, Detector, KEYWORD_BYTES_MAX, LOOKBEHIND_BYTES_MAX, Span};

/// Custom regular expressions accepted by one scanner (their index is a
/// `u16` in [`Detector::Pattern`]).
pub const PATTERNS_MAX: usize = 256;
/// Custom keywords accepted by one scanner.
pub const KEYWORDS_MAX: usize = 10_000;

/// Longest prefix the prefix automaton looks for (`-----BEGIN `), with
/// room to spare.
const PREFIX_BYTES_MAX: usize = 16;
/// How far before its trigger byte a candidate may start: an e-mail's local
/// part before its `@` is the farthest, then an IPv6 address before its
/// first colon, an API key before its separator, an IBAN before its check
/// digits.
const TRIGGER_LAG_BYTES_MAX: usize = LOOKBEHIND_BYTES_MAX;
/// Digits of a run measured before the number detectors are asked: one
/// more than the longest compact card.
const RUN_BYTES_MAX: usize = 20;

/// Finds sensitive values. Build one per policy and share it: scanning
/// takes `&self` and allocates nothing unless a value is found.
#[derive(Clone, Debug)]
pub struct Scanner {
    enabled: [bool; Detector::BUILT_IN.len()],
    prefixes: Option<AhoCorasick>,
    prefix_kinds: Vec<Detector>,
    /// Where API key prefixes are found from their separator; empty when
    /// API keys are off.
    api_seps: Vec<ApiSep>,
    numbers: bool,
    email: bool,
    keywords: Option<AhoCorasick>,
    patterns: Vec<Regex>,
}

/// The API key prefixes that have their first `_` or `-` (`sep`) at
/// `offset`, as the set of their first bytes (all ASCII): a separator at `p`
/// is worth asking the API key matcher about at `p - offset` only if the
/// byte there is in the set.
#[derive(Clone, Debug)]
struct ApiSep {
    sep: u8,
    offset: usize,
    firsts: u128,
}

/// Collects detectors, keywords and patterns for a [`Scanner`].
#[derive(Clone, Debug, Default)]
pub struct ScannerBuilder {
    detectors: Vec<Detector>,
    keywords: Vec<Vec<u8>>,
    patterns: Vec<String>,
}

impl ScannerBuilder {
    /// Enables built-in detectors (duplicates are harmless).
    pub fn detectors(mut self, detectors: &[Detector]) -> Self {
        self.detectors.extend_from_slice(detectors);
        self
    }

    /// Adds a keyword, matched ASCII case-insensitively wherever it occurs.
    pub fn keyword(mut self, keyword: impl AsRef<[u8]>) -> Self {
        self.keywords.push(keyword.as_ref().to_vec());
        self
    }

    /// Adds a regular expression (`regex::bytes` syntax). Its matches are
    /// found by the regex engine's own leftmost-first iteration, then merged
    /// with the other detectors' matches.
    pub fn pattern(mut self, pattern: impl Into<String>) -> Self {
        self.patterns.push(pattern.into());
        self
    }

    /// Compiles the scanner.
    pub fn build(self) -> Result<Scanner, Error> {
        let mut enabled = [false; Detector::BUILT_IN.len()];
        for d in &self.detectors {
            let i = Detector::BUILT_IN
                .iter()
                .position(|b| b == d)
                .ok_or(Error::NotBuiltIn(*d))?;
            enabled[i] = true;
        }
        let on = |d: Detector| enabled[d.priority() as usize];

        let (patterns, prefix_kinds): (Vec<&[u8]>, Vec<Detector>) = detect::trigger_prefixes()
            .into_iter()
            .filter(|&(_, d)| on(d))
            .unzip();
        let prefixes = if patterns.is_empty() {
            None
        } else {
            Some(
                AhoCorasickBuilder::new()
                    .match_kind(MatchKind::LeftmostFirst)
                    .build(&patterns)
                    .map_err(|e| Error::Automaton(e.to_string()))?,
            )
        };

        if self.keywords.len() > KEYWORDS_MAX {
            return Err(Error::TooManyKeywords);
        }
        if let Some(k) = self
            .keywords
            .iter()
            .find(|k| k.is_empty() || k.len() > KEYWORD_BYTES_MAX)
        {
            return Err(Error::KeywordLength(k.len()));
        }
        let keywords = if self.keywords.is_empty() {
            None
        } else {
            // Standard semantics so overlapping search reports every
            // occurrence; the selection step picks the longest per start.
            Some(
                AhoCorasickBuilder::new()
                    .ascii_case_insensitive(true)
                    .match_kind(MatchKind::Standard)
                    .build(&self.keywords)
                    .map_err(|e| Error::Automaton(e.to_string()))?,
            )
        };

        if self.patterns.len() > PATTERNS_MAX {
            return Err(Error::TooManyPatterns);
        }
        let patterns = self
            .patterns
            .iter()
            .enumerate()
            .map(|(index, p)| {
                Regex::new(p).map_err(|e| Error::Pattern {
                    index,
                    reason: e.to_string(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;

        let mut api_seps: Vec<ApiSep> = Vec::new();
        if on(Detector::ApiKey) {
            for (prefix, _) in detect::API_KEY_PREFIXES {
                let Some((sep, k)) = detect::api_key_separator(prefix) else {
                    continue;
                };
                assert!(prefix[0].is_ascii(), "API key prefixes are ASCII");
                let first = 1u128 << prefix[0];
                match api_seps.iter_mut().find(|a| (a.sep, a.offset) == (sep, k)) {
                    Some(a) => a.firsts |= first,
                    None => api_seps.push(ApiSep {
                        sep,
                        offset: k,
                        firsts: first,
                    }),
                }
            }
        }

        Ok(Scanner {
            enabled,
            prefixes,
            prefix_kinds,
            api_seps,
            numbers: on(Detector::CreditCard)
                || on(Detector::UsSsn)
                || on(Detector::Iban)
                || on(Detector::Phone)
                || on(Detector::Ipv4),
            email: on(Detector::Email),
            keywords,
            patterns,
        })
    }
}

impl Default for Scanner {
    /// Every built-in detector, no keywords, no patterns.
    fn default() -> Self {
        Scanner::builder()
            .detectors(&Detector::BUILT_IN)
            .build()
            .unwrap_or_else(|_| unreachable!("built-in detectors always compile"))
    }
}

impl Scanner {
    /// Starts a builder with nothing enabled.
    pub fn builder() -> ScannerBuilder {
        ScannerBuilder::default()
    }

    /// A scanner with just these built-in detectors.
    pub fn new(detectors: &[Detector]) -> Result<Self, Error> {
        Scanner::builder().detectors(detectors).build()
    }

    fn on(&self, d: Detector) -> bool {
        d.is_built_in() && self.enabled[d.priority() as usize]
    }

    /// Replaces the contents of `spans` with the matches in `hay`, in order,
    /// non-overlapping. `spans` is not grown when nothing matches.
    pub fn find(&self, hay: &[u8], spans: &mut Vec<Span>) {
        self.find_range(hay, 0, hay.len(), spans);
    }

    /// The matches of [`Scanner::find`] that start in `from..to`, found
    /// without asking about the rest: detectors still read the bytes around
    /// them, but triggers are only sought where they can lead to a match
    /// starting in the range. Leftmost-first selection decides a match from
    /// the candidates starting at or before it, so the result is exactly
    /// `find` on the whole of `hay` cut to the range (ignoring matches that
    /// start before `from`).
    pub(crate) fn find_range(&self, hay: &[u8], from: usize, to: usize, spans: &mut Vec<Span>) {
        spans.clear();
        let to = to.min(hay.len());
        if from >= to {
            return;
        }
        if let Some(ac) = &self.prefixes {
            let end = hay.len().min(to + PREFIX_BYTES_MAX);
            let mut pos = from;
            while let Some(m) = ac.find(Input::new(hay).span(pos..end)) {
                let start = m.start();
                let kind = self.prefix_kinds[m.pattern().as_usize()];
                if let Some(end) = kind.match_at(hay, start) {
                    spans.push(Span { start, end, kind });
                }
                // A prefix may start inside another one (`xoxb-----BEGIN`).
                pos = start + 1;
                if pos >= end {
                    break;
                }
            }
        }
        let mut ends = [0usize; SEGMENTS];
        ends[0] = spans.len();
        self.find_triggered(hay, from, hay.len().min(to + TRIGGER_LAG_BYTES_MAX), spans);
        ends[1] = spans.len();
        if let Some(ac) = &self.keywords {
            let end = hay.len().min(to + KEYWORD_BYTES_MAX);
            for m in ac.find_overlapping_iter(Input::new(hay).span(from..end)) {
                spans.push(Span {
                    start: m.start(),
                    end: m.end(),
                    kind: Detector::Keyword,
                });
            }
        }
        ends[2] = spans.len();
        for (index, re) in self.patterns.iter().enumerate() {
            let kind = Detector::Pattern(index as u16);
            for m in re.find_iter(hay) {
                let (start, end) = widen_to_char_boundaries(hay, m.start(), m.end());
                if start >= from && end > start {
                    spans.push(Span { start, end, kind });
                }
            }
        }
        ends[3] = spans.len();
        select(spans, ends);
        if to < hay.len() {
            let keep = spans.partition_point(|s| s.start < to);
            spans.truncate(keep);
        }
    }

    /// The candidates started from single trigger bytes in `hay[from..end]`,
    /// all found in one pass of the block classifier: digit runs start the
    /// number detectors, `@` the e-mail detector, `:` the IPv6 detector and
    /// `_`/`-` the API key prefixes that contain one.
    fn find_triggered(&self, hay: &[u8], from: usize, end: usize, spans: &mut Vec<Span>) {
        let card = self.on(Detector::CreditCard);
        let ssn = self.on(Detector::UsSsn);
        let iban = self.on(Detector::Iban);
        let phone = self.on(Detector::Phone);
        let ipv4 = self.on(Detector::Ipv4);
        let ipv6 = self.on(Detector::Ipv6);
        let api = !self.api_seps.is_empty();
        if !(self.numbers || self.email || ipv6 || api) {
            return;
        }
        // Phone numbers (`+1 ...`, `1-800-...`) and IPv4 addresses
        // (`8.8.8.8`) may start with a single digit.
        let singles = phone || ipv4;
        let on_mask = |on: bool| if on { u64::MAX } else { 0 };
        let (digits_on, ats_on) = (on_mask(self.numbers), on_mask(self.email));
        let (colons_on, seps_on) = (on_mask(ipv6), on_mask(api));
        let mut push = |kind: Detector, start: usize, end: Option<usize>| {
            if let Some(end) = end {
                spans.push(Span { start, end, kind });
            }
        };
        let mut last_ipv6_start = usize::MAX;
        let mut last_colon: Option<usize> = None;
        let mut blocks = TriggerBlocks::new(hay, from, end, digits_on);
        while let Some(b) = blocks.next_block() {
            let (base, block_len, c, digits, run_starts) =
                (b.base, b.len, b.classes, b.digits, b.run_starts);
            // Runs too short for any number detector (a "12" in text) are
            // dropped on the masks: cards and SSNs start with three digits,
            // IBAN check digits are two. Runs that may continue past the
            // block are kept.
            let spill2 = 1u64 << (block_len - 1);
            let spill3 = spill2 | spill2 >> 1;
            let two = run_starts & ((digits >> 1) | spill2);
            let three = two & ((digits >> 2) | spill3);
            let starts = if singles {
                run_starts
            } else if iban {
                two
            } else {
                three
            };
            let mut bits = starts | c.ats & ats_on | c.colons & colons_on | c.seps & seps_on;
            while bits != 0 {
                let k = bits.trailing_zeros();
                bits &= bits - 1;
                let p = base + k as usize;
                match hay[p] {
                    b'@' => {
                        if let Some(s) = detect::email_start_for_at(hay, p).filter(|&s| s >= from) {
                            push(Detector::Email, s, detect::email_at(hay, s));
                        }
                    }
                    b':' => {
                        // An address can only start where its run of address
                        // bytes starts, so each run is tried once, and only
                        // from a colon with an address byte or a colon next
                        // to it (not `key: value`).
                        let near = |i: Option<usize>| {
                            i.and_then(|i| hay.get(i))
                                .is_some_and(|&b| b.is_ascii_hexdigit() || b == b':')
                        };
                        if !(near(p.checked_sub(1)) || near(Some(p + 1))) {
                            continue;
                        }
                        // Later colons of a run already tried lead back to
                        // the same start: skip them without walking back.
                        let same_run = last_colon.is_some_and(|q| {
                            p - q <= detect::IPV6_BYTES_MAX
                                && hay[q + 1..p].iter().all(|&b| detect::is_ipv6_byte(b))
                        });
                        last_colon = Some(p);
                        if same_run {
                            continue;
                        }
                        let Some(start) =
                            ipv6_run_start(hay, p).filter(|&s| s >= from && s != last_ipv6_start)
                        else {
                            continue;
                        };
                        last_ipv6_start = start;
                        push(Detector::Ipv6, start, detect::ipv6_at(hay, start));
                    }
                    b'_' | b'-' => {
                        // At most one prefix matches at a position; the
                        // same start reached from two separators is dropped
                        // by the selection.
                        let sep = hay[p];
                        for a in &self.api_seps {
                            if a.sep == sep && p >= from + a.offset {
                                let start = p - a.offset;
                                let first = hay[start];
                                if first < 128 && a.firsts >> first & 1 == 1 {
                                    push(Detector::ApiKey, start, detect::api_key_at(hay, start));
                                }
                            }
                        }
                    }
                    _ => {
                        // A digit run starts at `p` (or `p` is `from`): the
                        // only place a card number, SSN or IPv4 address may
                        // start, two bytes after an IBAN's start, and at or
                        // just after a phone number's start. Most runs are
                        // plain numbers in text ("page 12", dates, times):
                        // the run's length and the bytes around it rule out
                        // most detectors before any matcher is called. Each
                        // test below is implied by the matcher's own checks.
                        // The run's length from the mask, unless it reaches
                        // the end of the block.
                        let in_block = (!(digits >> k)).trailing_zeros() as usize;
                        let len = if (k as usize) + in_block < block_len {
                            in_block.min(RUN_BYTES_MAX)
                        } else {
                            let cap = hay.len().min(p + RUN_BYTES_MAX);
                            let mut run_end = p + in_block.min(RUN_BYTES_MAX);
                            while run_end < cap && hay[run_end].is_ascii_digit() {
                                run_end += 1;
                            }
                            run_end - p
                        };
                        let run_end = p + len;
                        let next = if len < RUN_BYTES_MAX {
                            hay.get(run_end).copied()
                        } else {
                            None
                        };
                        let sep_next = matches!(next, Some(b' ' | b'-'));
                        // Compact, or the first group of a grouped card.
                        if card
                            && matches!(hay[p], b'2'..=b'6')
                            && ((13..=19).contains(&len) || ((3..=6).contains(&len) && sep_next))
                        {
                            push(Detector::CreditCard, p, detect::credit_card_at(hay, p));
                        }
                        if ssn && len == 3 && sep_next {
                            push(Detector::UsSsn, p, detect::us_ssn_at(hay, p));
                        }
                        // The country code before the check digits.
                        if iban
                            && len >= 2
                            && p >= from + 2
                            && hay[p - 2].is_ascii_alphabetic()
                            && hay[p - 1].is_ascii_alphabetic()
                        {
                            push(Detector::Iban, p - 2, detect::iban_at(hay, p - 2));
                        }
                        if ipv4 && len <= 3 && next == Some(b'.') {
                            push(Detector::Ipv4, p, detect::ipv4_at(hay, p));
                        }
                        if phone {
                            // `415-555-2671`, `1-800-...`, `1 (800) ...`
                            let separated = matches!(next, Some(b' ' | b'-' | b'.'));
                            if separated && (len == 3 || (len == 1 && hay[p] == b'1')) {
                                push(Detector::Phone, p, detect::phone_at(hay, p));
                            }
                            if p > from && matches!(hay[p - 1], b'+' | b'(') {
                                push(Detector::Phone, p - 1, detect::phone_at(hay, p - 1));
                            }
                        }
                    }
                }
            }
        }
    }
}

/// One block's trigger masks, bit `k` for byte `base + k`.
struct Block {
    base: usize,
    len: usize,
    classes: Classes,
    /// Digits, if the number detectors are on.
    digits: u64,
    run_starts: u64,
}

/// Walks `hay[from..end]` in blocks and yields those with a trigger byte,
/// with the starts of the digit runs in them.
struct TriggerBlocks<'h> {
    hay: &'h [u8],
    pos: usize,
    end: usize,
    digits_on: u64,
    /// Whether the byte before `pos` is a digit (false at `from`, so a run
    /// that begins before `from` is seen as starting at `from`).
    prev_digit: bool,
}

impl<'h> TriggerBlocks<'h> {
    fn new(hay: &'h [u8], from: usize, end: usize, digits_on: u64) -> Self {
        TriggerBlocks {
            hay,
            pos: from,
            end,
            digits_on,
            prev_digit: false,
        }
    }

    #[inline]
    fn next_block(&mut self) -> Option<Block> {
        let (base, classes) = classify::next_block(self.hay, self.pos, self.end)?;
        if base != self.pos {
            // The blocks skipped in between hold no digit.
            self.prev_digit = false;
        }
        let len = (self.end - base).min(BLOCK);
        self.pos = base + len;
        let digits = classes.digits & self.digits_on;
        let run_starts = digits & !((digits << 1) | u64::from(self.prev_digit));
        self.prev_digit = digits >> (len - 1) & 1 == 1;
        Some(Block {
            base,
            len,
            classes,
            digits,
            run_starts,
        })
    }
}

/// The first byte of the run of IPv6 address bytes that holds the colon at
/// `colon`, or `None` if that run is too long to be an address.
fn ipv6_run_start(hay: &[u8], colon: usize) -> Option<usize> {
    let floor = colon.saturating_sub(detect::IPV6_BYTES_MAX + 1);
    let mut s = colon;
    while s > floor && detect::is_ipv6_byte(hay[s - 1]) {
        s -= 1;
    }
    (s > floor || s == 0 || !detect::is_ipv6_byte(hay[s - 1])).then_some(s)
}

/// Moves a span outwards so it does not start or end inside a UTF-8
/// sequence. Built-in matches are ASCII and never need it; custom patterns
/// may match bytes mid-character.
fn widen_to_char_boundaries(hay: &[u8], mut start: usize, mut end: usize) -> (usize, usize) {
    let continuation = |b: u8| b & 0xC0 == 0x80;
    while start > 0 && hay.get(start).is_some_and(|&b| continuation(b)) {
        start -= 1;
    }
    while end < hay.len() && continuation(hay[end]) {
        end += 1;
    }
    (start, end)
}

/// Candidate sources, each pushing one segment of the candidate list:
/// prefixes, single-byte triggers, keywords, patterns.
const SEGMENTS: usize = 4;

#[inline]
fn order_key(s: &Span) -> (usize, Reverse<usize>, u32) {
    (s.start, Reverse(s.end), s.kind.priority())
}

/// Keeps the leftmost-first, longest, non-overlapping subset of the
/// candidates, in order. `ends[i]` is where segment `i` ends.
///
/// Each segment is already (nearly) in start order, so instead of sorting
/// the whole list the segments are put in order on their own (usually a
/// no-op check) and merged; the kept spans are appended behind the
/// candidates and moved to the front at the end. Equal keys are equal
/// spans, so the result is that of a full sort.
fn select(spans: &mut Vec<Span>, ends: [usize; SEGMENTS]) {
    let n = spans.len();
    if n < 2 {
        return;
    }
    let mut heads = [0usize; SEGMENTS];
    heads[1..].copy_from_slice(&ends[..SEGMENTS - 1]);
    for i in 0..SEGMENTS {
        let segment = &mut spans[heads[i]..ends[i]];
        if !segment.is_sorted_by_key(order_key) {
            segment.sort_unstable_by_key(order_key);
        }
    }
    let mut last_end: Option<usize> = None;
    loop {
        let mut best: Option<usize> = None;
        for i in 0..SEGMENTS {
            if heads[i] < ends[i]
                && best.is_none_or(|b| order_key(&spans[heads[i]]) < order_key(&spans[heads[b]]))
            {
                best = Some(i);
            }
        }
        let Some(b) = best else { break };
        let s = spans[heads[b]];
        heads[b] += 1;
        if last_end.is_none_or(|e| s.start >= e) {
            spans.push(s);
            last_end = Some(s.end);
        }
    }
    spans.drain(..n);
}

#[cfg(test)]
pub(crate) mod reference {
    //! The naive scan the fast one must agree with: every detector asked at
    //! every position, longest match wins, then resume after it.

    use super::*;

    pub(crate) fn find(detectors: &[Detector], keywords: &[&[u8]], hay: &[u8]) -> Vec<Span> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < hay.len() {
            let mut best: Option<Span> = None;
            let mut offer = |s: Span| {
                let better = best.is_none_or(|b| {
                    (Reverse(s.end), s.kind.priority()) < (Reverse(b.end), b.kind.priority())
                });
                if better {
                    best = Some(s);
                }
            };
            for &d in detectors {
                if let Some(end) = d.match_at(hay, i) {
                    offer(Span {
                        start: i,
                        end,
                        kind: d,
                    });
                }
            }
            for k in keywords {
                if hay[i..].len() >= k.len() && hay[i..i + k.len()].eq_ignore_ascii_case(k) {
                    offer(Span {
                        start: i,
                        end: i + k.len(),
                        kind: Detector::Keyword,
                    });
                }
            }
            match best {
                Some(s) => {
                    out.push(s);
                    i = s.end;
                }
                None => i += 1,
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(hay: &str, spans: &[Span]) -> Vec<(Detector, String)> {
        spans
            .iter()
            .map(|s| (s.kind, hay[s.start..s.end].to_string()))
            .collect()
    }

    #[test]
    fn finds_everything_in_order() {
        let hay = "Ann <ann@example.com> paid with 4111 1111 1111 1111, SSN 123-45-6789, \
                   IBAN GB82WEST12345698765432, key AKIAIOSFODNN7EXAMPLE and ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789.";
        let mut spans = Vec::new();
        Scanner::default().find(hay.as_bytes(), &mut spans);
        assert_eq!(
            texts(hay, &spans),
            vec![
                (Detector::Email, "ann@example.com".into()),
                (Detector::CreditCard, "4111 1111 1111 1111".into()),
                (Detector::UsSsn, "123-45-6789".into()),
                (Detector::Iban, "GB82WEST12345698765432".into()),
                (Detector::AwsAccessKey, "AKIAIOSFODNN7EXAMPLE".into()),
                (
                    Detector::ApiKey,
                    "ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789".into()
                ),
            ]
        );
    }

    #[test]
    fn finds_phones_and_addresses() {
        let hay = "Call +1 (415) 555-2671 or (415) 555-2672; host 10.0.0.12 and \
                   [2001:db8::7]:443, fallback ::ffff:192.0.2.1, card 4111111111111111 exp 1227.";
        let mut spans = Vec::new();
        Scanner::default().find(hay.as_bytes(), &mut spans);
        assert_eq!(
            texts(hay, &spans),
            vec![
                (Detector::Phone, "+1 (415) 555-2671".into()),
                (Detector::Phone, "(415) 555-2672".into()),
                (Detector::Ipv4, "10.0.0.12".into()),
                (Detector::Ipv6, "2001:db8::7".into()),
                (Detector::Ipv6, "::ffff:192.0.2.1".into()),
                (Detector::CreditCard, "4111111111111111".into()),
            ]
        );
    }

    #[test]
    fn numbers_that_are_not_values_are_left_alone() {
        let hay = "At 2024-01-15T12:34:56.789Z (12:34) v1.2.3.4.5 built 20240115, \
                   order 123456789012, MAC 00:1a:2b:3c:4d:5e, ratio 3.14, std::vec::Vec, \
                   15.01.2024, +05:30, range 1-2-3, page 415 of 555.";
        let mut spans = Vec::new();
        Scanner::default().find(hay.as_bytes(), &mut spans);
        assert_eq!(texts(hay, &spans), vec![]);
    }

    #[test]
    fn ipv6_runs_too_long_are_skipped() {
        let long = format!("{}::1", "a".repeat(60));
        assert_eq!(ipv6_run_start(long.as_bytes(), 60), None);
        let hay = b"at ::1";
        assert_eq!(ipv6_run_start(hay, 3), Some(3));
        assert_eq!(ipv6_run_start(b"::1", 0), Some(0));
    }

    #[test]
    fn clean_text_does_not_allocate_spans() {
        let mut spans = Vec::new();
        Scanner::default().find(
            b"The quick brown fox jumps over 13 lazy dogs @ noon.",
            &mut spans,
        );
        assert!(spans.is_empty());
        assert_eq!(spans.capacity(), 0);
    }

    #[test]
    fn only_enabled_detectors_report() {
        let hay = b"a@b.io 4111111111111111";
        let mut spans = Vec::new();
        Scanner::new(&[Detector::CreditCard])
            .unwrap()
            .find(hay, &mut spans);
        assert_eq!(spans.len(), 1);
        assert_eq!(spans[0].kind, Detector::CreditCard);
        Scanner::new(&[Detector::Email])
            .unwrap()
            .find(hay, &mut spans);
        assert_eq!(spans.len(), 1);
        assert_eq!(spans[0].kind, Detector::Email);
    }

    #[test]
    fn overlaps_resolve_leftmost_then_longest() {
        // The e-mail starts first and covers the digits.
        let hay = "4111111111111111@example.com";
        let mut spans = Vec::new();
        Scanner::default().find(hay.as_bytes(), &mut spans);
        assert_eq!(texts(hay, &spans), vec![(Detector::Email, hay.to_string())]);
    }

    #[test]
    fn keywords_and_patterns() {
        let scanner = Scanner::builder()
            .detectors(&[Detector::Email])
            .keyword("Project Orion")
            .keyword("orion")
            .pattern(r"ACME-\d{6}")
            .build()
            .unwrap();
        let hay = "project orion and ORION, ticket ACME-123456, mail x@y.io";
        let mut spans = Vec::new();
        scanner.find(hay.as_bytes(), &mut spans);
        assert_eq!(
            texts(hay, &spans),
            vec![
                (Detector::Keyword, "project orion".into()),
                (Detector::Keyword, "ORION".into()),
                (Detector::Pattern(0), "ACME-123456".into()),
                (Detector::Email, "x@y.io".into()),
            ]
        );
    }

    #[test]
    fn pattern_spans_keep_characters_whole() {
        let scanner = Scanner::builder().pattern(r"(?-u)\xA9x").build().unwrap();
        let hay = "é©x".as_bytes(); // © is C2 A9
        let mut spans = Vec::new();
        scanner.find(hay, &mut spans);
        assert_eq!(spans.len(), 1);
        assert_eq!(&hay[spans[0].start..spans[0].end], "©x".as_bytes());
    }

    #[test]
    fn builder_errors() {
        assert!(matches!(
            Scanner::new(&[Detector::Keyword]),
            Err(Error::NotBuiltIn(_))
        ));
        assert!(matches!(
            Scanner::builder().keyword("").build(),
            Err(Error::KeywordLength(0))
        ));
        assert!(matches!(
            Scanner::builder().pattern("(").build(),
            Err(Error::Pattern { index: 0, .. })
        ));
    }

    #[test]
    fn prefixes_starting_inside_prefixes_are_found() {
        let key = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----";
        let hay = format!("xoxb{key}");
        let mut spans = Vec::new();
        Scanner::default().find(hay.as_bytes(), &mut spans);
        assert_eq!(
            texts(&hay, &spans),
            vec![(Detector::PrivateKey, key.to_string())]
        );
    }

    #[test]
    fn trigger_blocks_match_scalar() {
        let mut hay = vec![b'a'; 300];
        for (pos, b) in [
            (0, b'1'),
            (1, b'2'),
            (63, b'@'),
            (64, b'3'),
            (65, b'4'),
            (127, b'5'),
        ] {
            hay[pos] = b;
        }
        for (pos, b) in [
            (128, b'6'),
            (150, b':'),
            (200, b'@'),
            (250, b'7'),
            (299, b'8'),
        ] {
            hay[pos] = b;
        }
        for from in [0, 1, 2, 64, 65, 66, 128, 299, 300] {
            let want: Vec<usize> = (from..hay.len())
                .filter(|&i| {
                    hay[i] == b'@'
                        || (hay[i].is_ascii_digit() && (i == from || !hay[i - 1].is_ascii_digit()))
                })
                .collect();
            let mut got = Vec::new();
            let mut blocks = TriggerBlocks::new(&hay, from, hay.len(), u64::MAX);
            while let Some(b) = blocks.next_block() {
                let mut bits = b.run_starts | b.classes.ats;
                while bits != 0 {
                    got.push(b.base + bits.trailing_zeros() as usize);
                    bits &= bits - 1;
                }
            }
            assert_eq!(got, want, "from {from}");
        }
    }
}
