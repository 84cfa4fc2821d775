//! Masking throughput over reply payloads with every built-in detector on:
//! clean English-like text (the common case, which the prefilter must make
//! nearly free), clean log lines full of digits, dates, times and colons (the
//! hardest clean case for the number and address prefilters), PII-dense text
//! with one value about every 100 bytes, and the same density of phone
//! numbers and IP addresses.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use custos_masking::{Detector, Masked, Masker, Scanner, Span, StreamMasker, Style};
use std::hint::black_box;

const INPUT_BYTES: usize = 1 << 20;
const STREAM_CHUNK_BYTES: usize = 16 * 1024;

const WORDS: &[&str] = &[
    "the",
    "proxy",
    "forwards",
    "replies",
    "to",
    "clients",
    "and",
    "masks",
    "values",
    "that",
    "look",
    "sensitive",
    "while",
    "keeping",
    "latency",
    "low",
    "under",
    "load",
    "with",
    "many",
    "connections",
    "open",
    "at",
    "once",
    "every",
    "policy",
    "is",
    "checked",
    "before",
    "a",
    "reply",
    "leaves",
    "session",
    "audit",
    "records",
    "who",
    "asked",
    "for",
    "what",
    "when",
];

/// A deterministic generator, so every run measures the same bytes.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) as usize
    }
}

/// Words, punctuation and the occasional short number ("page 12"), as in
/// ordinary text columns; no sensitive values.
fn clean_text() -> Vec<u8> {
    let mut rng = Lcg(7);
    let mut out = Vec::with_capacity(INPUT_BYTES + 64);
    while out.len() < INPUT_BYTES {
        out.extend_from_slice(WORDS[rng.next() % WORDS.len()].as_bytes());
        match rng.next() % 40 {
            0 => out.extend_from_slice(b". "),
            1 => out.extend_from_slice(b", "),
            2 => out.extend_from_slice(format!(" {} ", rng.next() % 100).as_bytes()),
            _ => out.push(b' '),
        }
    }
    out.truncate(INPUT_BYTES);
    out
}

/// Log lines: timestamps, durations, counters, versions and `key: value`
/// pairs, with no sensitive values.
fn clean_log() -> Vec<u8> {
    let mut rng = Lcg(5);
    let mut out = Vec::with_capacity(INPUT_BYTES + 256);
    while out.len() < INPUT_BYTES {
        let line = format!(
            "2026-11-{:02}T{:02}:{:02}:{:02}.{:03}Z INFO session: {} {} {} took {}.{}ms, rows: {}, v1.{}.{}\n",
            rng.next() % 28 + 1,
            rng.next() % 24,
            rng.next() % 60,
            rng.next() % 60,
            rng.next() % 1000,
            WORDS[rng.next() % WORDS.len()],
            WORDS[rng.next() % WORDS.len()],
            WORDS[rng.next() % WORDS.len()],
            rng.next() % 100,
            rng.next() % 10,
            rng.next() % 10_000,
            rng.next() % 20,
            rng.next() % 10,
        );
        out.extend_from_slice(line.as_bytes());
    }
    out.truncate(INPUT_BYTES);
    out
}

/// One sensitive value in every ~100 bytes of text, cycling through kinds.
fn dense_text() -> Vec<u8> {
    dense_with(&[
        "4111 1111 1111 1111",
        "jane.roe@example.com",
        "123-45-6789",
        "GB82WEST12345698765432",
        "AKIAIOSFODNN7EXAMPLE",
        "sk_live_4eC39HqLyjWDarjtT1zdp7dc",
        "5555555555554444",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    ])
}

/// One phone number or IP address in every ~100 bytes of text.
fn dense_net() -> Vec<u8> {
    dense_with(&[
        "+1 (415) 555-2671",
        "10.20.30.40",
        "(415) 555-2671",
        "2001:db8:85a3::8a2e:370:7334",
        "+44 20 7946 0958",
        "192.168.100.200",
        "415-555-2671",
        "fe80::1ff:fe23:4567:890a",
    ])
}

fn dense_with(values: &[&str]) -> Vec<u8> {
    let mut rng = Lcg(11);
    let mut out = Vec::with_capacity(INPUT_BYTES + 256);
    let mut k = 0;
    while out.len() < INPUT_BYTES {
        let start = out.len();
        while out.len() - start < 75 {
            out.extend_from_slice(WORDS[rng.next() % WORDS.len()].as_bytes());
            out.push(b' ');
        }
        out.extend_from_slice(values[k % values.len()].as_bytes());
        out.extend_from_slice(b" ");
        k += 1;
    }
    out.truncate(INPUT_BYTES);
    out
}

fn masking(c: &mut Criterion) {
    let masker = Masker::new(Scanner::default(), Style::Partial).expect("masker");
    let inputs = [
        ("clean", clean_text()),
        ("clean_log", clean_log()),
        ("dense", dense_text()),
        ("dense_net", dense_net()),
    ];
    let mut group = c.benchmark_group("masking");
    group.throughput(Throughput::Bytes(INPUT_BYTES as u64));
    for (name, input) in &inputs {
        let mut spans: Vec<Span> = Vec::new();
        group.bench_function(format!("find/{name}"), |b| {
            b.iter(|| {
                masker.find(black_box(input), &mut spans);
                spans.len()
            })
        });
        let mut out = Vec::with_capacity(INPUT_BYTES * 2);
        group.bench_function(format!("mask_into/{name}"), |b| {
            b.iter(|| {
                out.clear();
                let r = masker.mask_into_with(black_box(input), &mut out, &mut spans);
                matches!(r, Masked::Rewritten { .. })
            })
        });
        group.bench_function(format!("stream_16k/{name}"), |b| {
            b.iter(|| {
                out.clear();
                let mut stream = StreamMasker::new(&masker);
                for chunk in black_box(input).chunks(STREAM_CHUNK_BYTES) {
                    stream.push(chunk, &mut out);
                }
                stream.finish(&mut out)
            })
        });
    }
    // Each detector alone, to see where time goes.
    for d in Detector::BUILT_IN {
        let one = Scanner::new(&[d]).expect("scanner");
        let mut spans: Vec<Span> = Vec::new();
        for (name, input) in &inputs {
            group.bench_function(format!("find_only/{d:?}/{name}"), |b| {
                b.iter(|| {
                    one.find(black_box(input), &mut spans);
                    spans.len()
                })
            });
        }
    }
    group.finish();
}

/// Short values one at a time, as the reply path and the audit trail mask
/// them: command names, keys, small values, a sentence; each call pays the
/// scanner's fixed cost.
fn masking_short(c: &mut Criterion) {
    let masker = Masker::new(Scanner::default(), Style::Partial).expect("masker");
    let values: [&[u8]; 8] = [
        b"SET",
        b"key:000000012345",
        &[b'x'; 64],
        b"user:42:profile",
        b"Meeting notes: the team agreed to ship the release after the review.",
        b"OK",
        b"session-7f3a9c",
        b"Ada Lovelace wrote the first program for the Analytical Engine in 1843.",
    ];
    let mut group = c.benchmark_group("masking_short");
    group.throughput(Throughput::Elements(values.len() as u64));
    let mut spans: Vec<Span> = Vec::new();
    let mut out = Vec::with_capacity(1024);
    group.bench_function("mask_into/8_values", |b| {
        b.iter(|| {
            out.clear();
            let mut n = 0;
            for v in black_box(&values) {
                n += matches!(
                    masker.mask_into_with(v, &mut out, &mut spans),
                    Masked::Rewritten { .. }
                ) as usize;
            }
            n
        })
    });
    group.finish();
}

criterion_group!(benches, masking, masking_short);
criterion_main!(benches);
