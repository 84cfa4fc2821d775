//! Bounds-checked reads of RESP header lines and payload terminators.
//!
//! Every parser in this module reads through [`Reader`], so they accept and
//! refuse exactly the same bytes, with the same error, whatever the parser.
//! A read either completes and advances the reader, returns `Ok(None)`
//! without moving (the bytes are not all buffered yet), or fails with the
//! error the complete input would give: errors never depend on where the
//! stream was split.

use super::{Error, Limits};
use crate::BufRef;

/// The decoded header of one RESP element: its type byte and line.
///
/// Values that fit on the header line are complete; blobs and aggregates
/// announce what follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Head {
    /// `+text`
    Simple(BufRef),
    /// `-text`
    Error(BufRef),
    /// `:n`
    Integer(i64),
    /// `_`
    Null,
    /// `$-1`
    NullBulk,
    /// `*-1`
    NullArray,
    /// `#t`, `#f`
    Boolean(bool),
    /// `,text`, validated
    Double(BufRef),
    /// `(digits`, validated
    BigNumber(BufRef),
    /// `$n`: n payload bytes and CRLF follow.
    Bulk(usize),
    /// `!n`: n payload bytes and CRLF follow.
    BulkError(usize),
    /// `=n`: n payload bytes (at least 4) and CRLF follow.
    Verbatim(usize),
    /// `*n`: n frames follow.
    Array(u64),
    /// `%n`: n key/value pairs follow.
    Map(u64),
    /// `~n`: n frames follow.
    Set(u64),
    /// `>n`: n frames follow.
    Push(u64),
    /// `|n`: n key/value pairs follow, then the annotated value.
    Attribute(u64),
}

/// Minimal encoded size of any frame (`_\r\n`), used to bound allocations
/// by what a buffer can actually hold.
pub(crate) const FRAME_BYTES_MIN: usize = 3;

/// Verbatim payloads start with a 3-byte format and `:`.
pub(crate) const VERBATIM_PREFIX_BYTES: usize = 4;

/// Longest decimal `i64` magnitude.
const DIGITS_MAX: usize = 19;

/// A cursor over a buffer that only advances on complete, valid reads.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader of `buf` positioned at `pos` (at most `buf.len()`).
    #[inline]
    pub(crate) fn new(buf: &'a [u8], pos: usize) -> Self {
        debug_assert!(pos <= buf.len());
        Self { buf, pos }
    }

    /// Offset of the next unread byte.
    #[inline]
    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    /// Number of buffered bytes not read yet.
    #[inline]
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// The byte at absolute offset `index`, if buffered.
    #[inline]
    pub(crate) fn byte_at(&self, index: usize) -> Option<u8> {
        self.buf.get(index).copied()
    }

    /// The next byte, not consumed.
    #[inline]
    pub(crate) fn peek(&self) -> Option<u8> {
        self.buf.get(self.pos).copied()
    }

    /// Reads a length line after its type byte: `-1`, or a canonical
    /// decimal up to `i64::MAX`, then CRLF. `?` (RESP3 streaming) is
    /// refused at once.
    // Always inlined: it is the hot path of the scanner, and inlining lets
    // the result live in registers.
    #[inline(always)]
    pub(crate) fn length(&mut self) -> Result<Option<i64>, Error> {
        let buf = self.buf;
        let mut pos = self.pos;
        // Most lengths in real traffic have one or two digits.
        match &buf[pos..] {
            [d @ b'0'..=b'9', b'\r', b'\n', ..] => {
                self.pos = pos + 3;
                return Ok(Some(i64::from(d - b'0')));
            }
            [d1 @ b'1'..=b'9', d2 @ b'0'..=b'9', b'\r', b'\n', ..] => {
                self.pos = pos + 4;
                return Ok(Some(i64::from(d1 - b'0') * 10 + i64::from(d2 - b'0')));
            }
            _ => {}
        }
        let negative = buf.get(pos) == Some(&b'-');
        if negative {
            pos += 1;
        } else if buf.get(pos) == Some(&b'?') {
            return Err(Error::StreamedTypeUnsupported);
        }
        let digits_start = pos;
        let mut value: u64 = 0;
        loop {
            let Some(&byte) = buf.get(pos) else {
                return Ok(None);
            };
            match byte {
                b'0'..=b'9' => {
                    if pos - digits_start == DIGITS_MAX {
                        return Err(Error::InvalidLength);
                    }
                    value = value * 10 + u64::from(byte - b'0');
                    pos += 1;
                }
                b'\r' => break,
                b'\n' => return Err(Error::MissingCrlf),
                _ => return Err(Error::InvalidLength),
            }
        }
        let digits = pos - digits_start;
        if digits == 0 || (digits > 1 && buf[digits_start] == b'0') || value > i64::MAX as u64 {
            return Err(Error::InvalidLength);
        }
        if negative && value != 1 {
            return Err(Error::InvalidLength);
        }
        match buf.get(pos + 1) {
            None => return Ok(None),
            Some(b'\n') => {}
            Some(_) => return Err(Error::MissingCrlf),
        }
        self.pos = pos + 2;
        Ok(Some(if negative { -1 } else { value as i64 }))
    }

    /// Reads a CRLF-terminated line whose content is at most `max` bytes
    /// and holds neither `\r` nor `\n`. Returns the content.
    pub(crate) fn line(&mut self, max: usize) -> Result<Option<BufRef>, Error> {
        let start = self.pos;
        let rest = &self.buf[start..];
        let window = &rest[..rest.len().min(max.saturating_add(2))];
        match window.iter().position(|&b| b == b'\r' || b == b'\n') {
            Some(i) => {
                if window[i] == b'\n' {
                    return Err(Error::MissingCrlf);
                }
                if i > max {
                    return Err(Error::LineTooLong { max });
                }
                match rest.get(i + 1) {
                    None => Ok(None),
                    Some(b'\n') => {
                        self.pos = start + i + 2;
                        Ok(Some(BufRef::new(start, start + i)))
                    }
                    Some(_) => Err(Error::MissingCrlf),
                }
            }
            None if rest.len() >= max.saturating_add(2) => Err(Error::LineTooLong { max }),
            None => Ok(None),
        }
    }

    /// Reads an inline command line, terminated by `\n` with an optional
    /// `\r` before it, as `redis-server` does. Returns the content without
    /// the terminator; it may hold other `\r` bytes (they separate
    /// arguments).
    pub(crate) fn inline_line(&mut self, max: usize) -> Result<Option<BufRef>, Error> {
        let start = self.pos;
        let rest = &self.buf[start..];
        let window = &rest[..rest.len().min(max.saturating_add(2))];
        match window.iter().position(|&b| b == b'\n') {
            Some(i) => {
                let end = if i > 0 && rest[i - 1] == b'\r' {
                    i - 1
                } else {
                    i
                };
                if end > max {
                    return Err(Error::LineTooLong { max });
                }
                self.pos = start + i + 1;
                Ok(Some(BufRef::new(start, start + end)))
            }
            None if rest.len() >= max.saturating_add(2) => Err(Error::LineTooLong { max }),
            None => Ok(None),
        }
    }

    /// Reads the CRLF that ends a payload.
    #[inline]
    pub(crate) fn crlf(&mut self) -> Result<Option<()>, Error> {
        match (self.buf.get(self.pos), self.buf.get(self.pos + 1)) {
            (Some(b'\r'), Some(b'\n')) => {
                self.pos += 2;
                Ok(Some(()))
            }
            (None, _) | (Some(b'\r'), None) => Ok(None),
            _ => Err(Error::MissingCrlf),
        }
    }

    /// Reads `len` payload bytes and their CRLF. Returns the payload.
    #[inline]
    pub(crate) fn payload(&mut self, len: usize) -> Result<Option<BufRef>, Error> {
        if self.remaining() < len {
            return Ok(None);
        }
        let mut after = Reader::new(self.buf, self.pos + len);
        if after.crlf()?.is_none() {
            return Ok(None);
        }
        let view = BufRef::new(self.pos, self.pos + len);
        self.pos = after.pos;
        Ok(Some(view))
    }

    /// Reads the length line after a `$`, `!` or `=` type byte (`tag`):
    /// [`Head::Bulk`], [`Head::NullBulk`], [`Head::BulkError`] or
    /// [`Head::Verbatim`], the length checked against `limits`.
    #[inline(always)]
    pub(crate) fn blob_head(&mut self, tag: u8, limits: &Limits) -> Result<Option<Head>, Error> {
        let mut r = *self;
        let Some(len) = r.length()? else {
            return Ok(None);
        };
        let head = if len < 0 {
            if tag != b'$' {
                return Err(Error::InvalidLength);
            }
            Head::NullBulk
        } else {
            let len = len as u64;
            if len > limits.bulk_bytes_max as u64 {
                return Err(Error::BulkLengthTooLarge {
                    len,
                    max: limits.bulk_bytes_max,
                });
            }
            let len = len as usize;
            match tag {
                b'$' => Head::Bulk(len),
                b'!' => Head::BulkError(len),
                _ if len < VERBATIM_PREFIX_BYTES => return Err(Error::InvalidVerbatim),
                _ => Head::Verbatim(len),
            }
        };
        *self = r;
        Ok(Some(head))
    }

    /// Reads the count line after a `*`, `%`, `~`, `>` or `|` type byte
    /// (`tag`), the number of frames checked against `limits`.
    #[inline(always)]
    pub(crate) fn aggregate_head(
        &mut self,
        tag: u8,
        limits: &Limits,
    ) -> Result<Option<Head>, Error> {
        let mut r = *self;
        let Some(count) = r.length()? else {
            return Ok(None);
        };
        let head = if count < 0 {
            if tag != b'*' {
                return Err(Error::InvalidLength);
            }
            Head::NullArray
        } else {
            let count = count as u64;
            // Cannot overflow: count <= i64::MAX.
            let frames = if matches!(tag, b'%' | b'|') {
                count * 2
            } else {
                count
            };
            if frames > limits.elements_max as u64 {
                return Err(Error::TooManyElements {
                    count: frames,
                    max: limits.elements_max,
                });
            }
            match tag {
                b'*' => Head::Array(count),
                b'%' => Head::Map(count),
                b'~' => Head::Set(count),
                b'>' => Head::Push(count),
                _ => Head::Attribute(count),
            }
        };
        *self = r;
        Ok(Some(head))
    }

    /// Reads the header of the next element (type byte and line), checking
    /// its syntax and every length against `limits` before anything else
    /// happens with it.
    pub(crate) fn head(&mut self, limits: &Limits) -> Result<Option<Head>, Error> {
        let mut r = *self;
        let Some(tag) = r.peek() else { return Ok(None) };
        r.pos += 1;
        let Some(head) = r.head_after(tag, limits)? else {
            return Ok(None);
        };
        *self = r;
        Ok(Some(head))
    }

    /// [`Reader::head`] once the type byte `tag` has been read.
    pub(crate) fn head_after(&mut self, tag: u8, limits: &Limits) -> Result<Option<Head>, Error> {
        let mut r = *self;
        let head = match tag {
            b'$' | b'!' | b'=' => match r.blob_head(tag, limits)? {
                Some(head) => head,
                None => return Ok(None),
            },
            b'*' | b'%' | b'~' | b'>' | b'|' => match r.aggregate_head(tag, limits)? {
                Some(head) => head,
                None => return Ok(None),
            },
            b'+' | b'-' | b':' | b'_' | b',' | b'#' | b'(' => {
                let Some(line) = r.line(limits.line_bytes_max)? else {
                    return Ok(None);
                };
                let text = line.slice(self.buf);
                match tag {
                    b'+' => Head::Simple(line),
                    b'-' => Head::Error(line),
                    b':' => Head::Integer(parse_integer(text).ok_or(Error::InvalidInteger)?),
                    b'_' if text.is_empty() => Head::Null,
                    b'_' => return Err(Error::InvalidNull),
                    b'#' => match text {
                        b"t" => Head::Boolean(true),
                        b"f" => Head::Boolean(false),
                        _ => return Err(Error::InvalidBoolean),
                    },
                    b',' if is_double(text) => Head::Double(line),
                    b',' => return Err(Error::InvalidDouble),
                    _ if is_canonical_decimal(text) => Head::BigNumber(line),
                    _ => return Err(Error::InvalidInteger),
                }
            }
            b';' | b'.' => return Err(Error::StreamedTypeUnsupported),
            other => return Err(Error::InvalidTypeByte(other)),
        };
        *self = r;
        Ok(Some(head))
    }
}

/// `-?(0|[1-9][0-9]*)`, without `-0`: the only spelling servers produce,
/// which keeps re-encoding byte-exact.
fn is_canonical_decimal(text: &[u8]) -> bool {
    let digits = text.strip_prefix(b"-").unwrap_or(text);
    match digits {
        [] => false,
        [b'0'] => digits.len() == text.len(),
        [b'1'..=b'9', rest @ ..] => rest.iter().all(u8::is_ascii_digit),
        _ => false,
    }
}

/// A canonical decimal that fits in an `i64`.
fn parse_integer(text: &[u8]) -> Option<i64> {
    if !is_canonical_decimal(text) {
        return None;
    }
    let (negative, digits) = match text.strip_prefix(b"-") {
        Some(digits) => (true, digits),
        None => (false, text),
    };
    if digits.len() > DIGITS_MAX {
        return None;
    }
    // 19 digits always fit in a u64.
    let magnitude = digits
        .iter()
        .fold(0u64, |acc, &d| acc * 10 + u64::from(d - b'0'));
    if negative {
        0i64.checked_sub_unsigned(magnitude)
    } else {
        i64::try_from(magnitude).ok()
    }
}

/// RESP3 double: `[+-]?(inf|nan)` or `[+-]?digits[.digits][(e|E)[+-]digits]`
/// where the mantissa has at least one digit on either side of the point.
fn is_double(text: &[u8]) -> bool {
    let unsigned = match text {
        [b'+' | b'-', rest @ ..] => rest,
        _ => text,
    };
    if unsigned == b"inf" || unsigned == b"nan" {
        return true;
    }
    let digits = |s: &[u8]| s.iter().take_while(|b| b.is_ascii_digit()).count();
    let integral = digits(unsigned);
    let mut rest = &unsigned[integral..];
    let mut fraction = 0;
    if let [b'.', after @ ..] = rest {
        fraction = digits(after);
        rest = &after[fraction..];
    }
    if integral + fraction == 0 {
        return false;
    }
    match rest {
        [] => true,
        [b'e' | b'E', exponent @ ..] => {
            let exponent = match exponent {
                [b'+' | b'-', e @ ..] => e,
                e => e,
            };
            !exponent.is_empty() && digits(exponent) == exponent.len()
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a read returns.
    type Read<T> = Result<Option<T>, Error>;

    #[test]
    fn lengths() {
        let cases: &[(&[u8], Read<i64>)] = &[
            (b"0\r\n", Ok(Some(0))),
            (b"-1\r\n", Ok(Some(-1))),
            (b"42\r\n", Ok(Some(42))),
            (b"9223372036854775807\r\n", Ok(Some(i64::MAX))),
            (b"9223372036854775808\r\n", Err(Error::InvalidLength)),
            (b"99999999999999999999\r\n", Err(Error::InvalidLength)),
            (b"42", Ok(None)),
            (b"42\r", Ok(None)),
            (b"", Ok(None)),
            (b"-", Ok(None)),
            (b"\r\n", Err(Error::InvalidLength)),
            (b"-\r\n", Err(Error::InvalidLength)),
            (b"-0\r\n", Err(Error::InvalidLength)),
            (b"-2\r\n", Err(Error::InvalidLength)),
            (b"01\r\n", Err(Error::InvalidLength)),
            (b"+1\r\n", Err(Error::InvalidLength)),
            (b" 1\r\n", Err(Error::InvalidLength)),
            (b"1 \r\n", Err(Error::InvalidLength)),
            (b"1\n", Err(Error::MissingCrlf)),
            (b"1\rx", Err(Error::MissingCrlf)),
            (b"?\r\n", Err(Error::StreamedTypeUnsupported)),
        ];
        for (input, expected) in cases {
            let mut r = Reader::new(input, 0);
            assert_eq!(
                r.length(),
                *expected,
                "{:?}",
                String::from_utf8_lossy(input)
            );
            if let Ok(Some(_)) = expected {
                assert_eq!(r.pos(), input.len());
            } else {
                assert_eq!(r.pos(), 0, "a failed read must not advance");
            }
        }
    }

    #[test]
    fn lines() {
        let cases: &[(&[u8], usize, Read<BufRef>)] = &[
            (b"OK\r\n", 8, Ok(Some(BufRef::new(0, 2)))),
            (b"\r\n", 8, Ok(Some(BufRef::new(0, 0)))),
            (b"OK", 8, Ok(None)),
            (b"OK\r", 8, Ok(None)),
            (b"OK\n", 8, Err(Error::MissingCrlf)),
            (b"O\rK\r\n", 8, Err(Error::MissingCrlf)),
            (b"12345678\r\n", 8, Ok(Some(BufRef::new(0, 8)))),
            (b"12345678\r", 8, Ok(None)),
            (b"123456789\r\n", 8, Err(Error::LineTooLong { max: 8 })),
            (b"123456789", 8, Ok(None)),
            (b"1234567890", 8, Err(Error::LineTooLong { max: 8 })),
        ];
        for (input, max, expected) in cases {
            let mut r = Reader::new(input, 0);
            assert_eq!(
                r.line(*max),
                *expected,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn inline_lines() {
        let cases: &[(&[u8], usize, Read<BufRef>, usize)] = &[
            (b"PING\r\n", 8, Ok(Some(BufRef::new(0, 4))), 6),
            (b"PING\n", 8, Ok(Some(BufRef::new(0, 4))), 5),
            (b"\n", 8, Ok(Some(BufRef::new(0, 0))), 1),
            (b"\r\n", 8, Ok(Some(BufRef::new(0, 0))), 2),
            (b"a\rb\n", 8, Ok(Some(BufRef::new(0, 3))), 4),
            (b"PING", 8, Ok(None), 0),
            (b"12345678\r\n", 8, Ok(Some(BufRef::new(0, 8))), 10),
            (b"123456789\n", 8, Err(Error::LineTooLong { max: 8 }), 0),
            (b"1234567890", 8, Err(Error::LineTooLong { max: 8 }), 0),
            (b"123456789", 8, Ok(None), 0),
        ];
        for (input, max, expected, pos) in cases {
            let mut r = Reader::new(input, 0);
            assert_eq!(
                r.inline_line(*max),
                *expected,
                "{:?}",
                String::from_utf8_lossy(input)
            );
            assert_eq!(r.pos(), *pos);
        }
    }

    #[test]
    fn integers() {
        let cases: &[(&[u8], Option<i64>)] = &[
            (b"0", Some(0)),
            (b"-1", Some(-1)),
            (b"1000", Some(1000)),
            (b"9223372036854775807", Some(i64::MAX)),
            (b"-9223372036854775808", Some(i64::MIN)),
            (b"9223372036854775808", None),
            (b"-9223372036854775809", None),
            (b"12345678901234567890", None),
            (b"", None),
            (b"-", None),
            (b"-0", None),
            (b"007", None),
            (b"+1", None),
            (b"1.0", None),
            (b"1a", None),
        ];
        for (text, expected) in cases {
            assert_eq!(
                parse_integer(text),
                *expected,
                "{:?}",
                String::from_utf8_lossy(text)
            );
        }
    }

    #[test]
    fn doubles() {
        let valid: &[&[u8]] = &[
            b"0", b"1.5", b"-1.5", b"+2", b"10", b".5", b"5.", b"1e10", b"1E10", b"1.5e-7",
            b"-1e+300", b"inf", b"-inf", b"+inf", b"nan", b"-0",
        ];
        let invalid: &[&[u8]] = &[
            b"",
            b"-",
            b".",
            b"e5",
            b"1e",
            b"1e+",
            b"1.5.2",
            b"1x",
            b"Inf",
            b"infinity",
            b" 1",
        ];
        for text in valid {
            assert!(is_double(text), "{:?}", String::from_utf8_lossy(text));
        }
        for text in invalid {
            assert!(!is_double(text), "{:?}", String::from_utf8_lossy(text));
        }
    }
}
