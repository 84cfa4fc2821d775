//! What the workloads send: a fast seeded random source, key and value-size
//! distributions, and the "agent memory" records whose text carries personal
//! data (names, e-mail addresses, phone numbers, card and IBAN numbers) for
//! the appliance's masking to find.
//!
//! Everything here is deterministic given a seed, so a run can be repeated
//! and each connection gets its own stream without sharing state.

use std::fmt;
use std::io::Write as _;
use std::str::FromStr;

/// xoshiro256** seeded through SplitMix64: a few nanoseconds per number,
/// no dependency, and good enough statistics for picking keys and sizes.
#[derive(Debug, Clone)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    /// A generator whose sequence depends only on `seed`.
    pub fn new(seed: u64) -> Self {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        Self {
            s: [next(), next(), next(), next()],
        }
    }

    /// The next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// A number in `0..n` (`0` when `n` is 0), by multiply-shift: no
    /// division, and a bias below 2^-32 for the ranges used here.
    #[inline]
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// True with probability `p` (clamped to 0..=1).
    #[inline]
    pub fn chance(&mut self, p: f64) -> bool {
        // 53 random bits make a uniform double in [0, 1).
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }

    /// One element of a non-empty slice.
    #[inline]
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// How long written values are: `64` (fixed), `16..4096` (uniform,
/// inclusive) or `exp:256` (exponential with that mean, at least 1 byte,
/// capped at 64 times the mean: many small values and a long tail, as in
/// caches).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ValueSize {
    /// Always this many bytes.
    Fixed(usize),
    /// Uniform in `min..=max`.
    Uniform {
        /// Smallest size.
        min: usize,
        /// Largest size.
        max: usize,
    },
    /// Exponential with this mean.
    Exponential {
        /// Mean size.
        mean: usize,
    },
}

/// Largest value size accepted on the command line: values come from one
/// preallocated buffer of this many bytes per connection at most.
pub const VALUE_BYTES_MAX: usize = 16 << 20;

impl ValueSize {
    /// The largest size this distribution produces.
    pub fn max(&self) -> usize {
        match *self {
            Self::Fixed(n) => n,
            Self::Uniform { max, .. } => max,
            Self::Exponential { mean } => mean.saturating_mul(64).min(VALUE_BYTES_MAX),
        }
    }

    /// Draws one size.
    #[inline]
    pub fn sample(&self, rng: &mut Rng) -> usize {
        match *self {
            Self::Fixed(n) => n,
            Self::Uniform { min, max } => min + rng.below((max - min + 1) as u64) as usize,
            Self::Exponential { mean } => {
                let u = ((rng.next_u64() >> 11) as f64 + 1.0) / ((1u64 << 53) as f64 + 1.0);
                let n = (-u.ln() * mean as f64).round() as usize;
                n.clamp(1, self.max())
            }
        }
    }
}

impl FromStr for ValueSize {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let num = |t: &str| -> Result<usize, String> {
            t.trim()
                .parse::<usize>()
                .map_err(|_| format!("'{t}' is not a byte count"))
        };
        let size = if let Some(mean) = s.strip_prefix("exp:") {
            let mean = num(mean)?;
            if mean == 0 {
                return Err("an exponential mean must be at least 1".into());
            }
            Self::Exponential { mean }
        } else if let Some((a, b)) = s.split_once("..") {
            let (min, max) = (num(a)?, num(b)?);
            if min > max {
                return Err(format!("empty range {s}"));
            }
            Self::Uniform { min, max }
        } else {
            Self::Fixed(num(s)?)
        };
        if size.max() > VALUE_BYTES_MAX {
            return Err(format!(
                "values above {VALUE_BYTES_MAX} bytes are not supported"
            ));
        }
        Ok(size)
    }
}

impl fmt::Display for ValueSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Fixed(n) => write!(f, "{n}"),
            Self::Uniform { min, max } => write!(f, "{min}..{max}"),
            Self::Exponential { mean } => write!(f, "exp:{mean}"),
        }
    }
}

/// Bytes a value is cut from: printable, so that values survive `redis-cli`
/// and SQL text unchanged, and varied, so that compression in between does
/// not flatter the figures.
pub fn value_bytes(len: usize, seed: u64) -> Vec<u8> {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut rng = Rng::new(seed);
    (0..len).map(|_| *rng.pick(ALPHABET)).collect()
}

/// Writes `prefix` and `n` in decimal into `buf` and returns the written
/// part: keys are made without allocating.
#[inline]
pub fn key<'a>(buf: &'a mut [u8; 48], prefix: &str, n: u64) -> &'a [u8] {
    let mut w = &mut buf[..];
    // The buffer holds any 20-digit number after a prefix of up to 28
    // bytes; the prefixes used are short constants.
    let _ = write!(w, "{prefix}{n}");
    let left = w.len();
    &buf[..48 - left]
}

// ---------------------------------------------------------------- agent memory

const FIRST_NAMES: &[&str] = &[
    "Alice", "Bruno", "Chiara", "Dmitri", "Emma", "Farid", "Greta", "Hiroshi", "Ines", "Jonas",
    "Keiko", "Lars", "Maria", "Noah", "Olga", "Pedro", "Quentin", "Rosa", "Sven", "Tanja",
];
const LAST_NAMES: &[&str] = &[
    "Schmidt", "Rossi", "Dubois", "Kowalski", "Novak", "Garcia", "Jensen", "Tanaka", "Müller",
    "Silva", "Okafor", "Larsen", "Moreau", "Petrov", "Keller", "Hansen",
];
const CITIES: &[&str] = &[
    "Berlin", "Lisbon", "Vienna", "Lyon", "Turin", "Gdańsk", "Aarhus", "Ghent", "Porto", "Bern",
];
const STREETS: &[&str] = &[
    "Hauptstraße",
    "Rue de la Paz",
    "Via Roma",
    "Kingsway",
    "Calle Mayor",
    "Nørregade",
];
const TOPICS: &[&str] = &[
    "asked to move the delivery to next week",
    "prefers to be contacted in the evening",
    "reported a failed payment and wants a refund",
    "changed the billing address",
    "is allergic to penicillin, noted for the appointment",
    "wants the contract cancelled at the end of the month",
    "confirmed the booking for two people",
];
const KINDS: &[&str] = &["episodic", "semantic", "preference", "task"];

/// One stored memory of an assistant-style application: who it is about
/// (`agent` is the owning agent, `subject` the person), structured metadata
/// as JSON, and free text with personal data in the formats masking rules
/// look for.
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryRecord {
    /// The agent the memory belongs to, e.g. `agent-7`.
    pub agent: String,
    /// The record's kind (`episodic`, `semantic`, ...).
    pub kind: &'static str,
    /// Metadata as a JSON object.
    pub meta: String,
    /// The text, with a name, e-mail address, phone number, card number,
    /// IBAN and street address in it.
    pub text: String,
}

/// Makes [`MemoryRecord`]s for `agents` agents.
#[derive(Debug, Clone)]
pub struct MemoryGen {
    agents: u64,
}

impl MemoryGen {
    /// Records spread over `agents` agents (at least one).
    pub fn new(agents: u64) -> Self {
        Self {
            agents: agents.max(1),
        }
    }

    /// A random agent's name.
    pub fn agent(&self, rng: &mut Rng) -> String {
        format!("agent-{}", rng.below(self.agents))
    }

    /// A new record.
    pub fn record(&self, rng: &mut Rng) -> MemoryRecord {
        let agent = self.agent(rng);
        let first = *rng.pick(FIRST_NAMES);
        let last = *rng.pick(LAST_NAMES);
        let email = format!(
            "{}.{}{}@example.org",
            first.to_lowercase(),
            ascii_lower(last),
            rng.below(100)
        );
        let phone = format!(
            "+49 {:03} {:07}",
            100 + rng.below(900),
            rng.below(10_000_000)
        );
        let card = luhn_card(rng);
        let iban = iban_de(rng);
        let street = *rng.pick(STREETS);
        let city = *rng.pick(CITIES);
        let topic = *rng.pick(TOPICS);
        let kind = *rng.pick(KINDS);
        let text = format!(
            "{first} {last} ({email}, phone {phone}) {topic}. Card on file {card}, \
             refunds to IBAN {iban}. Address: {street} {}, {city}.",
            1 + rng.below(200)
        );
        let meta = format!(
            "{{\"kind\":\"{kind}\",\"source\":\"chat\",\"turn\":{},\"importance\":{:.2},\"tags\":[\"customer\",\"{}\"]}}",
            rng.below(10_000),
            (rng.below(100) as f64) / 100.0,
            city.to_lowercase()
        );
        MemoryRecord {
            agent,
            kind,
            meta,
            text,
        }
    }
}

fn ascii_lower(s: &str) -> String {
    s.chars()
        .filter(char::is_ascii_alphabetic)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// A 16-digit card number with a valid Luhn check digit, grouped by four:
/// masking detectors validate the check digit, so random digits would not
/// be found.
fn luhn_card(rng: &mut Rng) -> String {
    let mut digits = [0u8; 16];
    digits[0] = 4; // a Visa-style prefix
    for d in digits.iter_mut().take(15).skip(1) {
        *d = rng.below(10) as u8;
    }
    digits[15] = luhn_check_digit(&digits[..15]);
    let mut out = String::with_capacity(19);
    for (i, d) in digits.iter().enumerate() {
        if i > 0 && i % 4 == 0 {
            out.push(' ');
        }
        out.push(char::from(b'0' + d));
    }
    out
}

/// The digit that makes `payload` followed by it pass the Luhn check.
fn luhn_check_digit(payload: &[u8]) -> u8 {
    let sum: u32 = payload
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let d = u32::from(d);
            if i % 2 == 0 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum();
    ((10 - sum % 10) % 10) as u8
}

/// A German IBAN (22 characters) with valid ISO 7064 check digits.
fn iban_de(rng: &mut Rng) -> String {
    let bban: String = (0..18)
        .map(|_| char::from(b'0' + rng.below(10) as u8))
        .collect();
    // Check digits: 98 - (BBAN + "DE00" as digits) mod 97; D=13, E=14.
    let rearranged = format!("{bban}131400");
    let rem = rearranged
        .bytes()
        .fold(0u32, |acc, b| (acc * 10 + u32::from(b - b'0')) % 97);
    format!("DE{:02}{bban}", 98 - rem)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn luhn_valid(digits: &str) -> bool {
        let ds: Vec<u8> = digits
            .bytes()
            .filter(u8::is_ascii_digit)
            .map(|b| b - b'0')
            .collect();
        luhn_check_digit(&ds[..ds.len() - 1]) == ds[ds.len() - 1]
    }

    fn iban_valid(iban: &str) -> bool {
        let (head, rest) = iban.split_at(4);
        let moved = format!("{rest}{head}");
        let rem = moved.chars().fold(0u32, |acc, c| {
            let v = c.to_digit(36).expect("alphanumeric");
            if v >= 10 {
                (acc * 100 + v) % 97
            } else {
                (acc * 10 + v) % 97
            }
        });
        rem == 1
    }

    #[test]
    fn same_seed_same_sequence() {
        let a: Vec<u64> = {
            let mut r = Rng::new(7);
            (0..8).map(|_| r.next_u64()).collect()
        };
        let b: Vec<u64> = {
            let mut r = Rng::new(7);
            (0..8).map(|_| r.next_u64()).collect()
        };
        assert_eq!(a, b);
        let mut c = Rng::new(8);
        assert_ne!(a[0], c.next_u64());
    }

    #[test]
    fn below_stays_in_range_and_covers_it() {
        let mut r = Rng::new(1);
        let mut seen = [0u32; 10];
        for _ in 0..10_000 {
            let x = r.below(10);
            assert!(x < 10);
            seen[x as usize] += 1;
        }
        // Each bucket gets roughly 1000; 700 leaves room for any seed.
        assert!(seen.iter().all(|&n| n > 700), "{seen:?}");
        assert_eq!(r.below(0), 0);
    }

    #[test]
    fn value_size_parsing() {
        let cases: &[(&str, Option<ValueSize>)] = &[
            ("64", Some(ValueSize::Fixed(64))),
            ("0", Some(ValueSize::Fixed(0))),
            ("16..4096", Some(ValueSize::Uniform { min: 16, max: 4096 })),
            ("exp:256", Some(ValueSize::Exponential { mean: 256 })),
            ("exp:0", None),
            ("10..5", None),
            ("abc", None),
            ("99999999999", None),
        ];
        for (text, want) in cases {
            let got = text.parse::<ValueSize>().ok();
            assert_eq!(&got, want, "{text}");
            if let Some(v) = got {
                assert_eq!(v.to_string().parse::<ValueSize>().ok(), Some(v));
            }
        }
    }

    #[test]
    fn value_sizes_stay_within_their_bounds() {
        let mut r = Rng::new(3);
        let uniform = ValueSize::Uniform { min: 10, max: 20 };
        let exp = ValueSize::Exponential { mean: 100 };
        let (mut lo, mut hi, mut sum) = (usize::MAX, 0, 0usize);
        for _ in 0..20_000 {
            let u = uniform.sample(&mut r);
            lo = lo.min(u);
            hi = hi.max(u);
            let e = exp.sample(&mut r);
            assert!((1..=6400).contains(&e));
            sum += e;
        }
        assert_eq!((lo, hi), (10, 20));
        let mean = sum as f64 / 20_000.0;
        assert!((80.0..120.0).contains(&mean), "exponential mean {mean}");
    }

    #[test]
    fn keys_are_written_in_place() {
        let mut buf = [0u8; 48];
        assert_eq!(key(&mut buf, "key:", 0), b"key:0");
        assert_eq!(
            key(&mut buf, "key:", u64::MAX),
            b"key:18446744073709551615".as_slice()
        );
    }

    #[test]
    fn memory_records_carry_valid_personal_data() {
        let generator = MemoryGen::new(10);
        let mut r = Rng::new(11);
        for _ in 0..200 {
            let rec = generator.record(&mut r);
            assert!(rec.agent.starts_with("agent-"));
            let card = rec
                .text
                .split("Card on file ")
                .nth(1)
                .and_then(|t| t.split(',').next())
                .expect("card in text");
            assert_eq!(card.len(), 19, "{card}");
            assert!(luhn_valid(card), "{card}");
            let iban = rec
                .text
                .split("IBAN ")
                .nth(1)
                .and_then(|t| t.split('.').next())
                .expect("iban in text");
            assert_eq!(iban.len(), 22, "{iban}");
            assert!(iban_valid(iban), "{iban}");
            assert!(rec.text.contains("@example.org"));
            assert!(rec.meta.starts_with('{') && rec.meta.ends_with('}'));
        }
    }

    #[test]
    fn luhn_reference_numbers() {
        // Published test card numbers.
        assert!(luhn_valid("4111 1111 1111 1111"));
        assert!(luhn_valid("5555 5555 5555 4444"));
        assert!(!luhn_valid("4111 1111 1111 1112"));
    }
}
