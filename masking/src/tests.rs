//! Cross-module tests: the fast scanner against the naive reference on
//! random inputs with planted values, and streamed output against one-shot
//! output for every way of splitting a corpus.

use proptest::prelude::*;

use crate::scan::reference;
use crate::*;

const KEYWORDS: [&str; 2] = ["Orion", "orion-7"];

/// Values every detector should find, and near misses it should not.
const PLANTS: &[&str] = &[
    "4111111111111111",
    "4111 1111 1111 1111",
    "5555-5555-5555-4444",
    "378282246310005",
    "4111111111111112",
    "41111111111111111111",
    "123-45-6789",
    "078 05 1120",
    "666-12-3456",
    "123-00-4567",
    "john.doe@example.com",
    "a@b.co",
    ".x@y.io",
    "user@localhost",
    "GB82WEST12345698765432",
    "GB82 WEST 1234 5698 7654 32",
    "GB82WEST12345698765433",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    "AKIAIOSFODNN7EXAMPLE",
    "ASIAY34FZKBOKMUTVV7A",
    "sk_live_4eC39HqLyjWDarjtT1zdp7dc",
    "ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789",
    "xoxb-1234567890-abcdefghij",
    "sk-abcdefghijklmnopqrstuvwx",
    "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIBkg\n-----END EC PRIVATE KEY-----",
    "-----BEGIN PRIVATE KEY-----\nAAAA",
    "Orion",
    "ORION-7",
];

/// Filler that touches boundaries: digits, separators, word bytes,
/// punctuation, non-ASCII and invalid UTF-8.
const FILLER: &[&[u8]] = &[
    b" ",
    b"-",
    b".",
    b"@",
    b"_",
    b"x",
    b"A",
    b"7",
    b"42",
    b"\n",
    b"\xc3\xa9",
    b"\xe2\x82\xac",
    b"\xff",
    b"the ",
    b"lorem ipsum ",
    b"==",
];

fn planted_input() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        (0..PLANTS.len()).prop_map(|i| PLANTS[i].as_bytes().to_vec()),
        (0..FILLER.len()).prop_map(|i| FILLER[i].to_vec()),
        proptest::collection::vec(any::<u8>(), 0..8),
    ];
    proptest::collection::vec(piece, 0..24).prop_map(|pieces| pieces.concat())
}

fn scanner() -> Scanner {
    let mut b = Scanner::builder().detectors(&Detector::BUILT_IN);
    for k in KEYWORDS {
        b = b.keyword(k);
    }
    b.build().unwrap()
}

fn reference_spans(hay: &[u8]) -> Vec<Span> {
    let keywords: Vec<&[u8]> = KEYWORDS.iter().map(|k| k.as_bytes()).collect();
    reference::find(&Detector::BUILT_IN, &keywords, hay)
}

/// Same-length redaction written out plainly over the reference spans.
fn reference_redact(hay: &[u8], spans: &[Span]) -> Vec<u8> {
    let mut out = hay.to_vec();
    for s in spans {
        out[s.start..s.end].fill(b'*');
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn scanner_equals_reference(hay in planted_input()) {
        let mut spans = Vec::new();
        scanner().find(&hay, &mut spans);
        prop_assert_eq!(spans, reference_spans(&hay));
    }

    #[test]
    fn masker_equals_reference(hay in planted_input()) {
        let masker = Masker::new(scanner(), Style::Redact { keep_length: true }).unwrap();
        let spans = reference_spans(&hay);
        let mut out = Vec::new();
        let got = masker.mask_into(&hay, &mut out);
        if spans.is_empty() {
            prop_assert_eq!(got, Masked::Unchanged);
            prop_assert!(out.is_empty());
        } else {
            prop_assert_eq!(got, Masked::Rewritten { spans: spans.len() });
            // Built-in matches are ASCII, so one star per byte.
            prop_assert_eq!(out, reference_redact(&hay, &spans));
        }
    }

    #[test]
    fn spans_fall_on_char_boundaries(hay in planted_input()) {
        let mut spans = Vec::new();
        scanner().find(&hay, &mut spans);
        if let Ok(text) = std::str::from_utf8(&hay) {
            for s in &spans {
                prop_assert!(text.is_char_boundary(s.start) && text.is_char_boundary(s.end));
            }
        }
    }

    #[test]
    fn streaming_equals_one_shot_random_chunks(
        hay in proptest::collection::vec(planted_input(), 1..40).prop_map(|v| v.concat()),
        cuts in proptest::collection::vec(1usize..3000, 1..12),
    ) {
        let masker = Masker::new(scanner(), Style::Partial).unwrap();
        let chunks = split_at_sizes(&hay, &cuts);
        prop_assert_eq!(stream(&masker, &chunks), one_shot(&masker, &hay));
    }
}

fn split_at_sizes<'a>(hay: &'a [u8], sizes: &[usize]) -> Vec<&'a [u8]> {
    let mut chunks = Vec::new();
    let mut rest = hay;
    for &n in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (a, b) = rest.split_at(n.min(rest.len()));
        chunks.push(a);
        rest = b;
    }
    chunks
}

fn one_shot(masker: &Masker, hay: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match masker.mask_into(hay, &mut out) {
        Masked::Unchanged => hay.to_vec(),
        _ => out,
    }
}

fn stream(masker: &Masker, chunks: &[&[u8]]) -> Vec<u8> {
    let mut sm = StreamMasker::new(masker);
    let mut out = Vec::new();
    for c in chunks {
        sm.push(c, &mut out);
    }
    sm.finish(&mut out);
    out
}

/// About 12 KiB: values of every kind spread through filler, some right at
/// the distances the stream masker holds back, plus a PEM block of ~3 KiB.
fn corpus() -> Vec<u8> {
    let mut hay = Vec::new();
    let filler = "Plain words, 42 apples, naïve café text. ".as_bytes();
    let pem = format!(
        "-----BEGIN RSA PRIVATE KEY-----\n{}\n-----END RSA PRIVATE KEY-----",
        "MIIEowIBAAKCAQEA0Z3VS5JJcds3xfn/ygWyF8PbnGy0AHB7MhgwMbRvI0MBZhpI\n".repeat(48)
    );
    let mut k = 0;
    while hay.len() < 12 * 1024 {
        hay.extend_from_slice(filler);
        let plant: &[u8] = if k % 7 == 3 {
            pem.as_bytes()
        } else {
            PLANTS[k % PLANTS.len()].as_bytes()
        };
        hay.extend_from_slice(plant);
        k += 1;
    }
    hay
}

#[test]
fn streaming_equals_one_shot_at_every_split_point() {
    let hay = corpus();
    let masker = Masker::new(scanner(), Style::Redact { keep_length: false }).unwrap();
    let want = one_shot(&masker, &hay);
    assert_ne!(want, hay, "the corpus must contain values");
    for split in 0..=hay.len() {
        let (a, b) = hay.split_at(split);
        assert_eq!(stream(&masker, &[a, b]), want, "split at {split}");
    }
}

#[test]
fn streaming_byte_by_byte() {
    let hay = corpus();
    let masker = Masker::new(scanner(), Style::Partial).unwrap();
    let chunks: Vec<&[u8]> = hay.chunks(1).collect();
    assert_eq!(stream(&masker, &chunks), one_shot(&masker, &hay));
}

#[test]
fn streaming_counts_values_and_resets() {
    let masker = Masker::new(scanner(), Style::Null).unwrap();
    let mut sm = StreamMasker::new(&masker);
    let mut out = Vec::new();
    sm.push(b"ssn 123-45-", &mut out);
    sm.push(b"6789 and a@b.io", &mut out);
    assert_eq!(sm.finish(&mut out), 2);
    assert_eq!(out, b"ssn 123-45-6789 and a@b.io");
    assert_eq!(sm.spans_found(), 0);
}
