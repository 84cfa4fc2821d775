//! The scanner's one prefilter pass: the trigger bytes of every built-in
//! detector that starts from a single byte, found 64 bytes at a time.
//!
//! A block's [`Classes`] are bit masks, bit `k` for byte `base + k`:
//! digits (cards, SSNs, IBANs, phone numbers, IPv4), `@` (e-mail), `:`
//! (IPv6) and `_`/`-` (API key prefixes such as `sk_live_`, `xoxb-`).
//! [`next_block`] skips blocks holding none of them, so clean text costs a
//! handful of vector compares per 64 bytes and nothing else.
//!
//! This is the crate's only `unsafe` code: unaligned vector loads and
//! calling AVX2 code after runtime detection. Every load reads from a
//! `&[u8; 64]`, so it is in bounds by type. x86-64 uses AVX2 when the CPU
//! has it and SSE2 (always present) otherwise; other targets use the scalar
//! version, which the tests also compare every vector version against.

/// Bytes per block, one bit per byte in a `u64`.
pub(crate) const BLOCK: usize = 64;

/// Trigger masks of one block; bits past the end of the scanned range are
/// zero.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Classes {
    /// ASCII digits.
    pub digits: u64,
    /// `@`.
    pub ats: u64,
    /// `:`.
    pub colons: u64,
    /// `_` and `-`.
    pub seps: u64,
}

impl Classes {
    fn is_empty(&self) -> bool {
        self.digits | self.ats | self.colons | self.seps == 0
    }
}

/// The first block of `hay[pos..end]` (blocks start at `pos`, `pos + 64`,
/// ...) holding a trigger byte: its start and its masks. The last block may
/// be shorter than [`BLOCK`].
pub(crate) fn next_block(hay: &[u8], pos: usize, end: usize) -> Option<(usize, Classes)> {
    assert!(end <= hay.len());
    #[cfg(target_arch = "x86_64")]
    let pos = {
        let (pos, found) = if std::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, checked just above.
            unsafe { x86::skip_avx2(hay, pos, end) }
        } else {
            // SAFETY: SSE2 is part of the x86-64 baseline.
            unsafe { x86::skip_sse2(hay, pos, end) }
        };
        if found.is_some() {
            return found;
        }
        pos
    };
    scalar::next_block(hay, pos, end)
}

/// The plain version: the reference for the vector ones, the whole scan on
/// targets without one, and the short last block everywhere.
pub(crate) mod scalar {
    use super::{BLOCK, Classes};

    /// Masks of up to [`BLOCK`] bytes.
    pub(crate) fn classify(block: &[u8]) -> Classes {
        debug_assert!(block.len() <= BLOCK);
        let mut c = Classes::default();
        for (k, &b) in block.iter().enumerate() {
            let bit = 1u64 << k;
            if b.is_ascii_digit() {
                c.digits |= bit;
            }
            match b {
                b'@' => c.ats |= bit,
                b':' => c.colons |= bit,
                b'_' | b'-' => c.seps |= bit,
                _ => {}
            }
        }
        c
    }

    /// [`super::next_block`] one byte at a time.
    pub(crate) fn next_block(hay: &[u8], mut pos: usize, end: usize) -> Option<(usize, Classes)> {
        while pos < end {
            let block = &hay[pos..end.min(pos + BLOCK)];
            let c = classify(block);
            if !c.is_empty() {
                return Some((pos, c));
            }
            pos += block.len();
        }
        None
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod x86 {
    use std::arch::x86_64::*;

    use super::{BLOCK, Classes};

    /// Digits are the bytes `b` with `b - b'0' < 10` unsigned; adding
    /// `0x80 - b'0'` moves that range to the bottom of the signed range,
    /// where one signed compare finds it.
    const DIGIT_SHIFT: i8 = (0x80u8 - b'0') as i8;
    const DIGIT_BOUND: i8 = i8::MIN + 10;

    /// Walks whole blocks of `hay[pos..end]` with SSE2. Returns where the
    /// unwalked rest starts (less than a block) and the first block with a
    /// trigger, if one was found before it.
    #[target_feature(enable = "sse2")]
    pub(crate) fn skip_sse2(
        hay: &[u8],
        mut pos: usize,
        end: usize,
    ) -> (usize, Option<(usize, Classes)>) {
        assert!(end <= hay.len());
        while let Some(block) = hay[pos.min(end)..end].first_chunk::<BLOCK>() {
            let mut c = Classes::default();
            let mut any = _mm_setzero_si128();
            let mut masks = [[0u64; 4]; 4];
            for (lane, m) in masks.iter_mut().enumerate() {
                // SAFETY: `block` is a `&[u8; 64]` and this reads bytes
                // `16 * lane .. 16 * lane + 16` of it, `lane < 4`; the load
                // has no alignment requirement.
                let v = unsafe { _mm_loadu_si128(block.as_ptr().add(16 * lane).cast()) };
                let digits = _mm_cmplt_epi8(
                    _mm_add_epi8(v, _mm_set1_epi8(DIGIT_SHIFT)),
                    _mm_set1_epi8(DIGIT_BOUND),
                );
                let ats = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'@' as i8));
                let colons = _mm_cmpeq_epi8(v, _mm_set1_epi8(b':' as i8));
                let seps = _mm_or_si128(
                    _mm_cmpeq_epi8(v, _mm_set1_epi8(b'_' as i8)),
                    _mm_cmpeq_epi8(v, _mm_set1_epi8(b'-' as i8)),
                );
                any = _mm_or_si128(
                    any,
                    _mm_or_si128(_mm_or_si128(digits, ats), _mm_or_si128(colons, seps)),
                );
                let mask = |x: __m128i| u64::from(_mm_movemask_epi8(x) as u16);
                *m = [mask(digits), mask(ats), mask(colons), mask(seps)];
            }
            if _mm_movemask_epi8(any) != 0 {
                for (lane, m) in masks.iter().enumerate() {
                    c.digits |= m[0] << (16 * lane);
                    c.ats |= m[1] << (16 * lane);
                    c.colons |= m[2] << (16 * lane);
                    c.seps |= m[3] << (16 * lane);
                }
                return (pos + BLOCK, Some((pos, c)));
            }
            pos += BLOCK;
        }
        (pos, None)
    }

    /// [`skip_sse2`] with AVX2.
    #[target_feature(enable = "avx2")]
    pub(crate) fn skip_avx2(
        hay: &[u8],
        mut pos: usize,
        end: usize,
    ) -> (usize, Option<(usize, Classes)>) {
        assert!(end <= hay.len());
        while let Some(block) = hay[pos.min(end)..end].first_chunk::<BLOCK>() {
            // SAFETY: `block` is a `&[u8; 64]`; the two loads read bytes
            // 0..32 and 32..64 of it, without alignment requirement.
            let (lo, hi) = unsafe {
                (
                    _mm256_loadu_si256(block.as_ptr().cast()),
                    _mm256_loadu_si256(block.as_ptr().add(32).cast()),
                )
            };
            let classes = |v: __m256i| {
                let digits = _mm256_cmpgt_epi8(
                    _mm256_set1_epi8(DIGIT_BOUND),
                    _mm256_add_epi8(v, _mm256_set1_epi8(DIGIT_SHIFT)),
                );
                let ats = _mm256_cmpeq_epi8(v, _mm256_set1_epi8(b'@' as i8));
                let colons = _mm256_cmpeq_epi8(v, _mm256_set1_epi8(b':' as i8));
                let seps = _mm256_or_si256(
                    _mm256_cmpeq_epi8(v, _mm256_set1_epi8(b'_' as i8)),
                    _mm256_cmpeq_epi8(v, _mm256_set1_epi8(b'-' as i8)),
                );
                [digits, ats, colons, seps]
            };
            let (l, h) = (classes(lo), classes(hi));
            let any = _mm256_or_si256(
                _mm256_or_si256(_mm256_or_si256(l[0], l[1]), _mm256_or_si256(l[2], l[3])),
                _mm256_or_si256(_mm256_or_si256(h[0], h[1]), _mm256_or_si256(h[2], h[3])),
            );
            if _mm256_testz_si256(any, any) == 0 {
                let mask = |a: __m256i, b: __m256i| {
                    u64::from(_mm256_movemask_epi8(a) as u32)
                        | u64::from(_mm256_movemask_epi8(b) as u32) << 32
                };
                let c = Classes {
                    digits: mask(l[0], h[0]),
                    ats: mask(l[1], h[1]),
                    colons: mask(l[2], h[2]),
                    seps: mask(l[3], h[3]),
                };
                return (pos + BLOCK, Some((pos, c)));
            }
            pos += BLOCK;
        }
        (pos, None)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Every block the given walker reports, in order, until the end.
    fn blocks(
        hay: &[u8],
        from: usize,
        end: usize,
        next: impl Fn(&[u8], usize, usize) -> Option<(usize, Classes)>,
    ) -> Vec<(usize, Classes)> {
        let mut out = Vec::new();
        let mut pos = from;
        while let Some((base, c)) = next(hay, pos, end) {
            assert!(base >= pos && (base - pos).is_multiple_of(BLOCK));
            out.push((base, c));
            pos = base + BLOCK;
        }
        out
    }

    /// Every vector version the CPU can run, as a whole walk: the skip
    /// loop, then the scalar version for the short rest.
    #[allow(clippy::type_complexity)]
    fn walkers() -> Vec<(
        &'static str,
        fn(&[u8], usize, usize) -> Option<(usize, Classes)>,
    )> {
        #[allow(unused_mut)]
        let mut v: Vec<(
            &'static str,
            fn(&[u8], usize, usize) -> Option<(usize, Classes)>,
        )> = vec![("dispatch", next_block)];
        #[cfg(target_arch = "x86_64")]
        {
            v.push(("sse2", |hay, pos, end| {
                // SAFETY: SSE2 is part of the x86-64 baseline.
                match unsafe { x86::skip_sse2(hay, pos, end) } {
                    (_, Some(found)) => Some(found),
                    (pos, None) => scalar::next_block(hay, pos, end),
                }
            }));
            if std::is_x86_feature_detected!("avx2") {
                v.push(("avx2", |hay, pos, end| {
                    // SAFETY: AVX2 support was checked before this walker
                    // was listed.
                    match unsafe { x86::skip_avx2(hay, pos, end) } {
                        (_, Some(found)) => Some(found),
                        (pos, None) => scalar::next_block(hay, pos, end),
                    }
                }));
            }
        }
        v
    }

    fn check(hay: &[u8], from: usize, end: usize) {
        let want = blocks(hay, from, end, scalar::next_block);
        for (name, walk) in walkers() {
            assert_eq!(blocks(hay, from, end, walk), want, "{name} {from}..{end}");
        }
    }

    #[test]
    fn every_byte_in_every_lane() {
        for b in 0..=255u8 {
            for lane in 0..BLOCK {
                let mut hay = [b'x'; BLOCK + 3];
                hay[lane] = b;
                let c = scalar::classify(&hay[..BLOCK]);
                let bit = 1u64 << lane;
                assert_eq!(c.digits, if b.is_ascii_digit() { bit } else { 0 });
                assert_eq!(c.ats, if b == b'@' { bit } else { 0 });
                assert_eq!(c.colons, if b == b':' { bit } else { 0 });
                assert_eq!(c.seps, if matches!(b, b'_' | b'-') { bit } else { 0 });
                check(&hay, 0, BLOCK);
                check(&hay, 0, hay.len());
            }
        }
    }

    #[test]
    fn triggers_at_block_edges() {
        let mut hay = vec![b'a'; 300];
        for (pos, b) in [
            (0, b'1'),
            (15, b'@'),
            (16, b':'),
            (31, b'_'),
            (32, b'-'),
            (63, b'@'),
            (64, b'3'),
            (127, b'5'),
            (128, b'6'),
            (191, b':'),
            (255, b'9'),
            (299, b'8'),
        ] {
            hay[pos] = b;
        }
        for from in [0, 1, 2, 63, 64, 65, 128, 200, 299, 300] {
            for end in [from, 256, 257, 299, 300] {
                if end >= from {
                    check(&hay, from, end);
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

        #[test]
        fn vector_equals_scalar(
            hay in proptest::collection::vec(any::<u8>(), 0..400),
            from in 0usize..400,
            cut in 0usize..400,
        ) {
            let from = from.min(hay.len());
            let end = (from + cut).min(hay.len());
            check(&hay, from, end);
        }

        #[test]
        fn vector_equals_scalar_sparse(
            pieces in proptest::collection::vec(
                prop_oneof![
                    Just(b"the proxy masks ".to_vec()),
                    Just("naïve «café» ".as_bytes().to_vec()),
                    Just(vec![0xFF, 0x80, b' ']),
                    (0..5usize).prop_map(|i| vec![b"0@:_-"[i]]),
                ],
                0..60,
            ),
            from in 0usize..64,
        ) {
            let hay = pieces.concat();
            let from = from.min(hay.len());
            check(&hay, from, hay.len());
        }
    }
}
