//! Whole frames: [`check`] that one is buffered, [`parse`] it into a tree of
//! views, [`Frame::encode`] it back.
//!
//! `parse` runs `check` first, so an incomplete frame costs no allocation
//! and a complete one is known valid before any vector is sized from its
//! headers.

use super::reader::{FRAME_BYTES_MIN, Head, Reader};
use super::{Error, Limits, Scanner, encode};
use crate::BufRef;

/// One RESP2/RESP3 value whose payloads are views into the parsed buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// `+text`
    Simple(BufRef),
    /// `-text`
    Error(BufRef),
    /// `:n`
    Integer(i64),
    /// `$n` and its payload.
    Bulk(BufRef),
    /// `$-1`, the RESP2 null.
    NullBulk,
    /// `*-1`, the RESP2 null array.
    NullArray,
    /// `_`, the RESP3 null.
    Null,
    /// `#t` / `#f`
    Boolean(bool),
    /// `,text`: the text as sent (validated), so that re-encoding is exact.
    Double(BufRef),
    /// `(digits`: the digits as sent.
    BigNumber(BufRef),
    /// `!n` and its payload.
    BulkError(BufRef),
    /// `=n`: a 3-byte format (`txt`, `mkd`) and the text after its `:`.
    Verbatim {
        /// The 3-byte format.
        format: BufRef,
        /// The text.
        text: BufRef,
    },
    /// `*n`
    Array(Vec<Frame>),
    /// `%n`: key/value pairs in stream order.
    Map(Vec<(Frame, Frame)>),
    /// `~n`
    Set(Vec<Frame>),
    /// `|n`: attribute pairs and the value they annotate.
    Attribute {
        /// The attribute pairs.
        attrs: Vec<(Frame, Frame)>,
        /// The annotated value.
        value: Box<Frame>,
    },
    /// `>n`: out-of-band data (pub/sub messages, invalidations).
    Push(Vec<Frame>),
}

/// Whether `buf` starts with one whole, valid frame (any RESP2/RESP3 type),
/// and its length. No allocation: this is a [`Scanner`] run over `buf`.
pub fn check(buf: &[u8], limits: &Limits) -> Result<Option<usize>, Error> {
    let scan = Scanner::new(*limits).scan(buf)?;
    Ok(scan.complete.then_some(scan.consumed))
}

/// Reads the length line of the header at `buf[at]` (its type byte, `*` or
/// `$` say, then the length and CRLF): the length (`-1` for null) and where
/// the line ends. Canonical decimals only, as every frame check takes them.
/// `Ok(None)` when the line is not wholly in `buf`.
#[inline]
pub fn length_line(buf: &[u8], at: usize) -> Result<Option<(i64, usize)>, Error> {
    if at >= buf.len() {
        return Ok(None);
    }
    let mut r = Reader::new(buf, at + 1);
    Ok(r.length()?.map(|n| (n, r.pos())))
}

/// Parses one whole frame at the start of `buf` into views, with its length.
/// `Ok(None)` when the frame is not wholly buffered yet.
pub fn parse(buf: &[u8], limits: &Limits) -> Result<Option<(Frame, usize)>, Error> {
    let Some(len) = check(buf, limits)? else {
        return Ok(None);
    };
    let mut r = Reader::new(&buf[..len], 0);
    let built = build(&mut r, limits, 0)?;
    debug_assert!(
        built.is_none() || r.pos() == len,
        "check and build disagree on the frame end"
    );
    Ok(built.map(|frame| (frame, r.pos())))
}

/// Reads one frame at `r`, nested inside `depth` aggregates. Recursion is
/// bounded by [`Limits::depth_effective`]; vector capacities are bounded by
/// what the remaining bytes can hold, whatever the headers claim.
fn build(r: &mut Reader<'_>, limits: &Limits, depth: usize) -> Result<Option<Frame>, Error> {
    let Some(head) = r.head(limits)? else {
        return Ok(None);
    };
    let frame = match head {
        Head::Simple(view) => Frame::Simple(view),
        Head::Error(view) => Frame::Error(view),
        Head::Integer(n) => Frame::Integer(n),
        Head::Null => Frame::Null,
        Head::NullBulk => Frame::NullBulk,
        Head::NullArray => Frame::NullArray,
        Head::Boolean(b) => Frame::Boolean(b),
        Head::Double(view) => Frame::Double(view),
        Head::BigNumber(view) => Frame::BigNumber(view),
        Head::Bulk(len) => match r.payload(len)? {
            Some(view) => Frame::Bulk(view),
            None => return Ok(None),
        },
        Head::BulkError(len) => match r.payload(len)? {
            Some(view) => Frame::BulkError(view),
            None => return Ok(None),
        },
        Head::Verbatim(len) => {
            let Some(view) = r.payload(len)? else {
                return Ok(None);
            };
            let text_start = view.start + super::reader::VERBATIM_PREFIX_BYTES;
            // `view` lies within the reader's buffer, which is the caller's.
            if r.byte_at(text_start - 1) != Some(b':') {
                return Err(Error::InvalidVerbatim);
            }
            Frame::Verbatim {
                format: BufRef::new(view.start, text_start - 1),
                text: BufRef::new(text_start, view.end),
            }
        }
        Head::Array(count) | Head::Set(count) | Head::Push(count) => {
            enter(limits, depth)?;
            let Some(items) = build_list(r, limits, depth + 1, count)? else {
                return Ok(None);
            };
            match head {
                Head::Array(_) => Frame::Array(items),
                Head::Set(_) => Frame::Set(items),
                _ => Frame::Push(items),
            }
        }
        Head::Map(pairs) => {
            enter(limits, depth)?;
            let Some(pairs) = build_pairs(r, limits, depth + 1, pairs)? else {
                return Ok(None);
            };
            Frame::Map(pairs)
        }
        Head::Attribute(pairs) => {
            enter(limits, depth)?;
            let Some(attrs) = build_pairs(r, limits, depth + 1, pairs)? else {
                return Ok(None);
            };
            let Some(value) = build(r, limits, depth + 1)? else {
                return Ok(None);
            };
            Frame::Attribute {
                attrs,
                value: Box::new(value),
            }
        }
    };
    Ok(Some(frame))
}

/// Refuses to open an aggregate below `depth` open ones if that exceeds
/// the limit; the [`Scanner`] applies the same rule.
fn enter(limits: &Limits, depth: usize) -> Result<(), Error> {
    let max = limits.depth_effective();
    if depth >= max {
        return Err(Error::NestingTooDeep { max });
    }
    Ok(())
}

/// Capacity for `count` items of at least `item_bytes_min` bytes each in
/// what is left of the reader: a header may claim far more than is there.
fn capacity(r: &Reader<'_>, count: u64, item_bytes_min: usize) -> usize {
    let fits = r.remaining() / item_bytes_min;
    usize::try_from(count).map_or(fits, |count| count.min(fits))
}

fn build_list(
    r: &mut Reader<'_>,
    limits: &Limits,
    depth: usize,
    count: u64,
) -> Result<Option<Vec<Frame>>, Error> {
    let mut items = Vec::with_capacity(capacity(r, count, FRAME_BYTES_MIN));
    for _ in 0..count {
        let Some(item) = build(r, limits, depth)? else {
            return Ok(None);
        };
        items.push(item);
    }
    Ok(Some(items))
}

fn build_pairs(
    r: &mut Reader<'_>,
    limits: &Limits,
    depth: usize,
    count: u64,
) -> Result<Option<Vec<(Frame, Frame)>>, Error> {
    let mut pairs = Vec::with_capacity(capacity(r, count, 2 * FRAME_BYTES_MIN));
    for _ in 0..count {
        let Some(key) = build(r, limits, depth)? else {
            return Ok(None);
        };
        let Some(value) = build(r, limits, depth)? else {
            return Ok(None);
        };
        pairs.push((key, value));
    }
    Ok(Some(pairs))
}

impl Frame {
    /// Appends the encoding of this frame, whose views point into `src`, to
    /// `out`. For a frame that [`parse`] produced from `src`, this writes
    /// back exactly the parsed bytes.
    ///
    /// Simple strings and errors are written through [`encode::simple`] and
    /// [`encode::error`], so views that contain CR or LF (never the case for
    /// parsed frames) have them replaced by spaces.
    pub fn encode(&self, src: &[u8], out: &mut Vec<u8>) {
        match self {
            Self::Simple(view) => encode::simple(out, view.slice(src)),
            Self::Error(view) => encode::error(out, view.slice(src)),
            Self::Integer(n) => encode::integer(out, *n),
            Self::Bulk(view) => encode::bulk(out, view.slice(src)),
            Self::NullBulk => encode::null_bulk(out),
            Self::NullArray => encode::null_array(out),
            Self::Null => encode::null(out),
            Self::Boolean(b) => encode::boolean(out, *b),
            Self::Double(view) => encode::line(out, b',', view.slice(src)),
            Self::BigNumber(view) => encode::line(out, b'(', view.slice(src)),
            Self::BulkError(view) => encode::bulk_error(out, view.slice(src)),
            Self::Verbatim { format, text } => {
                encode::verbatim_raw(out, format.slice(src), text.slice(src));
            }
            Self::Array(items) => {
                encode::array_header(out, items.len());
                items.iter().for_each(|item| item.encode(src, out));
            }
            Self::Set(items) => {
                encode::set_header(out, items.len());
                items.iter().for_each(|item| item.encode(src, out));
            }
            Self::Push(items) => {
                encode::push_header(out, items.len());
                items.iter().for_each(|item| item.encode(src, out));
            }
            Self::Map(pairs) => {
                encode::map_header(out, pairs.len());
                encode_pairs(pairs, src, out);
            }
            Self::Attribute { attrs, value } => {
                encode::attribute_header(out, attrs.len());
                encode_pairs(attrs, src, out);
                value.encode(src, out);
            }
        }
    }

    /// The bytes of a Simple, Error, Bulk, BulkError, BigNumber or Double
    /// view, or of a Verbatim string's text; `None` for other frames.
    pub fn bytes<'a>(&self, src: &'a [u8]) -> Option<&'a [u8]> {
        match self {
            Self::Simple(view)
            | Self::Error(view)
            | Self::Bulk(view)
            | Self::BulkError(view)
            | Self::BigNumber(view)
            | Self::Double(view)
            | Self::Verbatim { text: view, .. } => Some(view.slice(src)),
            _ => None,
        }
    }
}

fn encode_pairs(pairs: &[(Frame, Frame)], src: &[u8], out: &mut Vec<u8>) {
    for (key, value) in pairs {
        key.encode(src, out);
        value.encode(src, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resp::testutil::{self, Model, encode_model, frame_strategy, to_model};
    use proptest::prelude::*;

    fn b(start: usize, end: usize) -> BufRef {
        BufRef::new(start, end)
    }

    #[test]
    fn length_lines_read_as_frames_read_them() {
        let raw = b"*2\r\n$3\r\nGET\r\n$-1\r\n$12345";
        assert_eq!(length_line(raw, 0), Ok(Some((2, 4))));
        assert_eq!(length_line(raw, 4), Ok(Some((3, 8))));
        assert_eq!(length_line(raw, 13), Ok(Some((-1, 18))));
        // Cut short, or nothing there.
        assert_eq!(length_line(raw, 18), Ok(None));
        assert_eq!(length_line(raw, raw.len()), Ok(None));
        assert_eq!(length_line(raw, raw.len() + 5), Ok(None));
        // Not canonical: refused as by every frame check.
        assert_eq!(length_line(b"*03\r\n", 0), Err(Error::InvalidLength));
        assert_eq!(length_line(b"*+3\r\n", 0), Err(Error::InvalidLength));
        assert_eq!(length_line(b"*3\n", 0), Err(Error::MissingCrlf));
    }

    #[test]
    fn every_type_parses_to_its_frame() {
        let cases: Vec<(&[u8], Frame)> = vec![
            (b"+OK\r\n", Frame::Simple(b(1, 3))),
            (b"-ERR no\r\n", Frame::Error(b(1, 7))),
            (b":-42\r\n", Frame::Integer(-42)),
            (b"$5\r\nhello\r\n", Frame::Bulk(b(4, 9))),
            (b"$0\r\n\r\n", Frame::Bulk(b(4, 4))),
            (b"$-1\r\n", Frame::NullBulk),
            (b"*-1\r\n", Frame::NullArray),
            (b"_\r\n", Frame::Null),
            (b"#t\r\n", Frame::Boolean(true)),
            (b"#f\r\n", Frame::Boolean(false)),
            (b",-1.5e3\r\n", Frame::Double(b(1, 7))),
            (b"(12345678901234567890123\r\n", Frame::BigNumber(b(1, 24))),
            (b"!3\r\nbad\r\n", Frame::BulkError(b(4, 7))),
            (
                b"=8\r\ntxt:abcd\r\n",
                Frame::Verbatim {
                    format: b(4, 7),
                    text: b(8, 12),
                },
            ),
            (
                b"*2\r\n:1\r\n$1\r\nx\r\n",
                Frame::Array(vec![Frame::Integer(1), Frame::Bulk(b(12, 13))]),
            ),
            (b"*0\r\n", Frame::Array(vec![])),
            (b"~1\r\n#f\r\n", Frame::Set(vec![Frame::Boolean(false)])),
            (b">1\r\n_\r\n", Frame::Push(vec![Frame::Null])),
            (
                b"%1\r\n+k\r\n:1\r\n",
                Frame::Map(vec![(Frame::Simple(b(5, 6)), Frame::Integer(1))]),
            ),
            (
                b"|1\r\n+a\r\n:1\r\n+v\r\n",
                Frame::Attribute {
                    attrs: vec![(Frame::Simple(b(5, 6)), Frame::Integer(1))],
                    value: Box::new(Frame::Simple(b(13, 14))),
                },
            ),
        ];
        for (input, expected) in cases {
            let name = String::from_utf8_lossy(input);
            assert_eq!(
                parse(input, &Limits::reply()),
                Ok(Some((expected.clone(), input.len()))),
                "{name}"
            );
            let mut out = Vec::new();
            expected.encode(input, &mut out);
            assert_eq!(out, input, "{name} re-encoded");
        }
    }

    #[test]
    fn valid_replies_whole_and_every_prefix() {
        for input in testutil::VALID_REPLIES {
            let name = String::from_utf8_lossy(input);
            let limits = Limits::reply();
            assert_eq!(check(input, &limits), Ok(Some(input.len())), "{name}");
            let (frame, len) = parse(input, &limits).unwrap().unwrap();
            assert_eq!(len, input.len());
            let mut out = Vec::new();
            frame.encode(input, &mut out);
            assert_eq!(out, *input, "{name} re-encoded");
            for split in 0..input.len() {
                assert_eq!(check(&input[..split], &limits), Ok(None), "{name} @{split}");
                assert_eq!(parse(&input[..split], &limits), Ok(None), "{name} @{split}");
            }
            // Trailing bytes belong to the next frame.
            let mut longer = input.to_vec();
            longer.extend_from_slice(b"+next\r\n");
            assert_eq!(
                check(&longer, &limits),
                Ok(Some(input.len())),
                "{name} + next"
            );
        }
    }

    #[test]
    fn invalid_replies_fail_with_their_error_or_are_incomplete() {
        for (input, expected) in testutil::INVALID_REPLIES {
            let name = String::from_utf8_lossy(input);
            let limits = Limits::reply();
            assert_eq!(check(input, &limits), Err(expected.clone()), "{name}");
            assert_eq!(parse(input, &limits), Err(expected.clone()), "{name}");
            for split in 0..input.len() {
                let prefix = &input[..split];
                let result = parse(prefix, &limits);
                assert!(
                    result == Ok(None) || result == Err(expected.clone()),
                    "{name} @{split}: {result:?}"
                );
            }
        }
    }

    #[test]
    fn bytes_of_each_view() {
        let src = b"=8\r\ntxt:abcd\r\n";
        let (frame, _) = parse(src, &Limits::reply()).unwrap().unwrap();
        assert_eq!(frame.bytes(src), Some(&b"abcd"[..]));
        assert_eq!(Frame::Integer(1).bytes(src), None);
        assert_eq!(Frame::Array(vec![]).bytes(src), None);
        assert_eq!(Frame::Simple(b(0, 2)).bytes(src), Some(&b"=8"[..]));
    }

    #[test]
    fn huge_counts_allocate_by_what_is_buffered() {
        let limits = Limits::reply();
        let mut input = b"*4294967295\r\n".to_vec();
        input.extend_from_slice(&b":1\r\n".repeat(10));
        assert_eq!(parse(&input, &limits), Ok(None));
        // The builder on its own, without the check that guards it, sizes
        // the vector from the bytes present, not the header.
        let mut r = Reader::new(&input, 0);
        assert_eq!(build(&mut r, &limits, 0), Ok(None));
        let r = Reader::new(&input, 13);
        assert_eq!(capacity(&r, 4_294_967_295, FRAME_BYTES_MIN), 40 / 3);
        assert_eq!(capacity(&r, 2, FRAME_BYTES_MIN), 2);
        assert_eq!(capacity(&r, u64::MAX, 2 * FRAME_BYTES_MIN), 40 / 6);
    }

    #[test]
    fn nesting_is_bounded() {
        let limits = Limits::reply();
        let mut ok = b"*1\r\n".repeat(32);
        ok.extend_from_slice(b":1\r\n");
        let (frame, len) = parse(&ok, &limits).unwrap().unwrap();
        assert_eq!(len, ok.len());
        let mut out = Vec::new();
        frame.encode(&ok, &mut out);
        assert_eq!(out, ok);
        let mut deep = b"*1\r\n".repeat(33);
        deep.extend_from_slice(b":1\r\n");
        assert_eq!(
            parse(&deep, &limits),
            Err(Error::NestingTooDeep { max: 32 })
        );
        assert_eq!(
            check(&deep, &limits),
            Err(Error::NestingTooDeep { max: 32 })
        );
        // The builder enforces the bound by itself too.
        let mut r = Reader::new(&deep, 0);
        assert_eq!(
            build(&mut r, &limits, 0),
            Err(Error::NestingTooDeep { max: 32 })
        );
        // Attributes are a level: their value is nested inside them.
        let mut attributed = b"*1\r\n".repeat(31);
        attributed.extend_from_slice(b"|0\r\n*0\r\n");
        assert_eq!(
            parse(&attributed, &limits),
            Err(Error::NestingTooDeep { max: 32 })
        );
    }

    #[test]
    fn limits_refuse_before_payload_arrives() {
        let tight = Limits {
            bulk_bytes_max: 4,
            elements_max: 2,
            depth_max: 4,
            line_bytes_max: 8,
        };
        let cases: &[(&[u8], Error)] = &[
            (b"$5\r\n", Error::BulkLengthTooLarge { len: 5, max: 4 }),
            (b"*3\r\n", Error::TooManyElements { count: 3, max: 2 }),
            (b"%2\r\n", Error::TooManyElements { count: 4, max: 2 }),
            (b"+1234567890", Error::LineTooLong { max: 8 }),
        ];
        for (input, expected) in cases {
            assert_eq!(parse(input, &tight), Err(expected.clone()));
            assert_eq!(check(input, &tight), Err(expected.clone()));
        }
    }

    proptest! {
        #[test]
        fn parse_matches_the_reference_encoding(model in frame_strategy()) {
            let mut encoded = Vec::new();
            encode_model(&model, &mut encoded);
            let limits = Limits::reply();
            prop_assert_eq!(check(&encoded, &limits), Ok(Some(encoded.len())));
            let (frame, len) = parse(&encoded, &limits).unwrap().unwrap();
            prop_assert_eq!(len, encoded.len());
            prop_assert_eq!(to_model(&frame, &encoded), model);
            let mut again = Vec::new();
            frame.encode(&encoded, &mut again);
            prop_assert_eq!(again, encoded.clone());
            // Any strict prefix is incomplete, never an error.
            let cut = encoded.len() / 2;
            prop_assert_eq!(parse(&encoded[..cut], &limits), Ok(None));
        }

        #[test]
        fn parse_never_panics_on_noise(noise in prop::collection::vec(any::<u8>(), 0..64)) {
            let limits = Limits::reply();
            let checked = check(&noise, &limits);
            let parsed = parse(&noise, &limits).map(|p| p.map(|(_, len)| len));
            prop_assert_eq!(checked, parsed);
        }

        #[test]
        fn parse_never_panics_on_mutated_frames(
            model in frame_strategy(),
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
        ) {
            let mut encoded = Vec::new();
            encode_model(&model, &mut encoded);
            let i = at.index(encoded.len());
            encoded[i] = byte;
            let limits = Limits::reply();
            let checked = check(&encoded, &limits);
            let parsed = parse(&encoded, &limits).map(|p| p.map(|(_, len)| len));
            prop_assert_eq!(checked, parsed);
        }
    }

    #[test]
    fn models_cover_every_type() {
        // Guards the property test: the reference encoder and `to_model`
        // agree with the hand-written cases.
        let src = b"*2\r\n=5\r\ntxt:x\r\n|0\r\n_\r\n";
        let (frame, _) = parse(src, &Limits::reply()).unwrap().unwrap();
        let model = Model::Array(vec![
            Model::Verbatim(*b"txt", b"x".to_vec()),
            Model::Attribute(vec![], Box::new(Model::Null)),
        ]);
        assert_eq!(to_model(&frame, src), model);
        let mut encoded = Vec::new();
        encode_model(&model, &mut encoded);
        assert_eq!(encoded, src);
    }
}
