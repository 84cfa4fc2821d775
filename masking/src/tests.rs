//! Cross-module tests: the fast scanner against the naive reference on
//! random inputs with planted values, and streamed output against one-shot
//! output for the ways of splitting a corpus that matter.

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
    "4111 1111 1111 1111 12",
    "4111111111111111 1227",
    "gb82west12345698765432",
    "ünïcode@example.com",
    "«jane@exämple.de»",
    "иван@пример.рф",
    "+1 (415) 555-2671",
    "+44 20 7946 0958",
    "(415) 555-2671",
    "415-555-2671",
    "1-800-555-0199",
    "2024-01-15T12:34:56Z",
    "192.168.1.10",
    "1.2.3.4.5",
    "256.1.1.1",
    "2001:db8::1",
    "::ffff:192.0.2.128",
    "fe80::1ff:fe23:4567:890a",
    "00:1a:2b:3c:4d:5e",
    "12:34:56",
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
    b":",
    b"::",
    b"+",
    b"(",
    b")",
    b"\xc2\xab",
    b"\xd0\xb8",
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

/// Same-length redaction written out plainly over the reference spans: one
/// star per character (per byte that is not a UTF-8 continuation byte).
fn reference_redact(hay: &[u8], spans: &[Span]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut at = 0;
    for s in spans {
        out.extend_from_slice(&hay[at..s.start]);
        let chars = hay[s.start..s.end]
            .iter()
            .filter(|&&b| b & 0xC0 != 0x80)
            .count();
        out.extend(std::iter::repeat_n(b'*', chars));
        at = s.end;
    }
    out.extend_from_slice(&hay[at..]);
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

    /// Short spans find prefixes from their first bytes (one, two or three
    /// distinct ones, depending on the detectors on), long ones with the
    /// automaton: each subset of prefix detectors against the reference.
    #[test]
    fn prefix_subsets_equal_reference(hay in planted_input()) {
        let prefixed = [
            Detector::PrivateKey,
            Detector::Jwt,
            Detector::AwsAccessKey,
            Detector::ApiKey,
        ];
        for bits in 1..(1u32 << prefixed.len()) {
            let on: Vec<Detector> = (0..prefixed.len())
                .filter(|i| bits >> i & 1 == 1)
                .map(|i| prefixed[i])
                .collect();
            let mut spans = Vec::new();
            Scanner::new(&on).unwrap().find(&hay, &mut spans);
            prop_assert_eq!(spans, reference::find(&on, &[], &hay), "{:?}", on);
        }
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
            prop_assert_eq!(out, reference_redact(&hay, &spans));
        }
    }

    /// A scan bounded to a range of starts (the stream masker's) is the
    /// whole scan cut to that range.
    #[test]
    fn range_equals_whole_cut(
        hay in planted_input(),
        from in any::<proptest::sample::Index>(),
        to in any::<proptest::sample::Index>(),
    ) {
        let scanner = scanner();
        let from = from.index(hay.len() + 1);
        let to = from + to.index(hay.len() - from + 1);
        let mut whole = Vec::new();
        scanner.find_range(&hay, from, hay.len(), &mut whole);
        whole.retain(|s| s.start < to);
        let mut cut = Vec::new();
        scanner.find_range(&hay, from, to, &mut cut);
        prop_assert_eq!(cut, whole);
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

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Values on both sides of a stretch of filler long enough that the
    /// stream masker emits output (and drops context) in between.
    #[test]
    fn streaming_equals_one_shot_past_the_window(
        head in proptest::collection::vec(planted_input(), 1..20).prop_map(|v| v.concat()),
        filler_bytes in STREAM_WINDOW_BYTES..4 * STREAM_WINDOW_BYTES,
        tail in proptest::collection::vec(planted_input(), 1..20).prop_map(|v| v.concat()),
        cuts in proptest::collection::vec(1usize..40_000, 1..8),
    ) {
        let filler = b"lorem 12 ipsum: 3.4 dolor ".iter().copied().cycle().take(filler_bytes);
        let hay: Vec<u8> = head.iter().copied().chain(filler).chain(tail).collect();
        let masker = Masker::new(scanner(), Style::Partial).unwrap();
        let chunks = split_at_sizes(&hay, &cuts);
        prop_assert_eq!(stream(&masker, &chunks), one_shot(&masker, &hay));
    }
}

#[test]
fn planted_values_match_whole_at_buffer_edges() {
    let scanner = scanner();
    let mut spans = Vec::new();
    for plant in PLANTS {
        let hay = plant.as_bytes();
        let want = reference_spans(hay);
        scanner.find(hay, &mut spans);
        assert_eq!(spans, want, "{plant:?}");
        // A value that is all of its buffer is found whole, and again when
        // the buffer starts or ends with non-ASCII punctuation.
        if want.len() == 1 && want[0].len() == hay.len() {
            for wrapped in [
                format!("«{plant}"),
                format!("{plant}»"),
                format!("€{plant}—"),
            ] {
                scanner.find(wrapped.as_bytes(), &mut spans);
                assert_eq!(spans.len(), 1, "{wrapped:?}");
                assert_eq!(&wrapped.as_bytes()[spans[0].start..spans[0].end], hay);
            }
        }
    }
}

/// Every value at every offset across the first two 64-byte block edges
/// of the classifier, after ASCII or non-ASCII filler, equals the reference.
#[test]
fn planted_values_across_block_edges() {
    let scanner = scanner();
    let mut spans = Vec::new();
    for plant in PLANTS {
        for filler in [&b"lorem ipsum "[..], "«é» ".as_bytes(), b"1 "] {
            for offset in 40..140 {
                let mut hay: Vec<u8> = filler.iter().copied().cycle().take(offset).collect();
                hay.extend_from_slice(plant.as_bytes());
                hay.extend_from_slice(filler);
                scanner.find(&hay, &mut spans);
                assert_eq!(spans, reference_spans(&hay), "{plant:?} at {offset}");
            }
        }
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

/// About 64 KiB: values of every kind spread through filler, with PEM
/// blocks of about 3, 6.5 and 10 KiB and a 9 KiB JWT (longer than the old
/// 4 KiB cap), so the stream masker emits several times before the end.
/// Returns the corpus and where each planted value lies.
fn corpus() -> (Vec<u8>, Vec<(usize, usize)>) {
    let mut hay = Vec::new();
    let mut planted = Vec::new();
    let filler = "Plain words, 42 apples, naïve café text at 10:30. ".as_bytes();
    let pem = |lines: usize| {
        format!(
            "-----BEGIN RSA PRIVATE KEY-----\n{}-----END RSA PRIVATE KEY-----",
            "MIIEowIBAAKCAQEA0Z3VS5JJcds3xfn/ygWyF8PbnGy0AHB7MhgwMbRvI0MBZhpI\n".repeat(lines)
        )
    };
    let pems = [pem(48), pem(100), pem(160)];
    let jwt = format!("eyJhbGciOiJSUzI1NiJ9.eyJ{}.c2lnbmF0dXJl", "a".repeat(9000));
    let mut k = 0;
    while hay.len() < 64 * 1024 {
        hay.extend_from_slice(filler);
        let plant: &[u8] = match k % 13 {
            3 => pems[(k / 13) % pems.len()].as_bytes(),
            9 => jwt.as_bytes(),
            _ => PLANTS[k % PLANTS.len()].as_bytes(),
        };
        planted.push((hay.len(), hay.len() + plant.len()));
        hay.extend_from_slice(plant);
        k += 1;
    }
    (hay, planted)
}

/// Split points that matter: a stride through the corpus, and every point
/// near the start and end of each planted value, directly and one window
/// later (where the first chunk's emit limit falls).
fn split_points(len: usize, planted: &[(usize, usize)]) -> Vec<usize> {
    let mut points: Vec<usize> = (0..=len).step_by(89).collect();
    for &(start, end) in planted {
        for edge in [
            start,
            end,
            start + STREAM_WINDOW_BYTES,
            end + STREAM_WINDOW_BYTES,
        ] {
            points.extend((edge.saturating_sub(2)..=edge + 2).filter(|&p| p <= len));
        }
    }
    points.sort_unstable();
    points.dedup();
    points
}

#[test]
fn streaming_equals_one_shot_at_split_points() {
    let (hay, planted) = corpus();
    let masker = Masker::new(scanner(), Style::Redact { keep_length: false }).unwrap();
    let want = one_shot(&masker, &hay);
    assert_ne!(want, hay, "the corpus must contain values");
    // The long PEM blocks and the JWT are masked whole.
    let mut spans = Vec::new();
    masker.find(&hay, &mut spans);
    assert!(
        spans
            .iter()
            .any(|s| s.kind == Detector::PrivateKey && s.len() > 10 * 1024)
    );
    assert!(
        spans
            .iter()
            .any(|s| s.kind == Detector::Jwt && s.len() > 9000)
    );
    for split in split_points(hay.len(), &planted) {
        let (a, b) = hay.split_at(split);
        assert_eq!(stream(&masker, &[a, b]), want, "split at {split}");
    }
}

#[test]
fn streaming_byte_by_byte() {
    let (hay, _) = corpus();
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
