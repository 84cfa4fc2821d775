//! Lists that several messages share: length-prefixed values (DataRow,
//! Bind parameters, FunctionCall arguments) and format codes (Bind,
//! FunctionCall, the Copy responses).
//!
//! Both are validated when their message is parsed and then walked lazily,
//! so iterating cannot fail and parsing allocates nothing.

use super::Error;
use super::cursor::Cursor;
use std::fmt;
use std::iter::FusedIterator;
use std::ops::Range;

/// Bytes shown as an escaped string in `Debug` output, so that a logged
/// message reads as text rather than a list of numbers.
pub(crate) struct Shown<'a>(pub(crate) &'a [u8]);

impl fmt::Debug for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{}\"", self.0.escape_ascii())
    }
}

/// A list of values, each an Int32 length (-1 for SQL NULL) and that many
/// bytes, inside one message.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Values<'a> {
    /// The whole message, so that spans are offsets into it.
    msg: &'a [u8],
    /// Offset of the first value's length word.
    start: usize,
    /// One past the last value's last byte.
    end: usize,
    count: u16,
}

impl<'a> Values<'a> {
    /// Reads an Int16 count and that many values at the cursor, which
    /// reads `msg` from its first byte.
    pub(crate) fn read(c: &mut Cursor<'a>, msg: &'a [u8]) -> Result<Self, Error> {
        let count = c.u16()?;
        let start = c.pos();
        c.skip_values(count)?;
        Ok(Self {
            msg,
            start,
            end: c.pos(),
            count,
        })
    }

    /// Number of values.
    #[inline]
    pub fn len(&self) -> usize {
        usize::from(self.count)
    }

    /// Whether there are no values.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The values in order; `None` is SQL NULL.
    #[inline]
    pub fn iter(&self) -> ValuesIter<'a> {
        ValuesIter {
            spans: self.spans(),
        }
    }

    /// Where each value's bytes lie in the message (tag byte at offset 0);
    /// `None` for SQL NULL. The Int32 length of a value is the 4 bytes
    /// before its span.
    #[inline]
    pub fn spans(&self) -> Spans<'a> {
        Spans {
            msg: self.msg,
            pos: self.start,
            left: self.count,
        }
    }

    /// The encoded list after its count: length words and value bytes.
    #[inline]
    pub fn raw(&self) -> &'a [u8] {
        &self.msg[self.start..self.end]
    }

    /// The whole message the list was parsed from.
    #[inline]
    pub fn msg(&self) -> &'a [u8] {
        self.msg
    }
}

impl fmt::Debug for Values<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.iter().map(|v| v.map(Shown)))
            .finish()
    }
}

impl<'a> IntoIterator for &Values<'a> {
    type Item = Option<&'a [u8]>;
    type IntoIter = ValuesIter<'a>;

    fn into_iter(self) -> ValuesIter<'a> {
        self.iter()
    }
}

/// The spans of a [`Values`] list: `Some(range)` of a value's bytes in the
/// message, `None` for SQL NULL.
#[derive(Debug, Clone)]
pub struct Spans<'a> {
    msg: &'a [u8],
    pos: usize,
    left: u16,
}

impl Iterator for Spans<'_> {
    type Item = Option<Range<usize>>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        // The list was validated when the message was parsed; should the
        // words not be there after all, the iteration ends rather than
        // panics.
        let word = self.msg.get(self.pos..)?.first_chunk::<4>()?;
        let len = i32::from_be_bytes(*word);
        self.left -= 1;
        self.pos += 4;
        if len < 0 {
            return Some(None);
        }
        let start = self.pos;
        self.pos += len as usize;
        Some(Some(start..self.pos))
    }

    #[inline]
    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = usize::from(self.left);
        (left, Some(left))
    }
}

impl ExactSizeIterator for Spans<'_> {}
impl FusedIterator for Spans<'_> {}

/// The values of a [`Values`] list: `Some(bytes)`, or `None` for SQL NULL.
#[derive(Debug, Clone)]
pub struct ValuesIter<'a> {
    spans: Spans<'a>,
}

impl<'a> Iterator for ValuesIter<'a> {
    type Item = Option<&'a [u8]>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        let msg = self.spans.msg;
        match self.spans.next()? {
            None => Some(None),
            Some(span) => Some(Some(msg.get(span)?)),
        }
    }

    #[inline]
    fn size_hint(&self) -> (usize, Option<usize>) {
        self.spans.size_hint()
    }
}

impl ExactSizeIterator for ValuesIter<'_> {}
impl FusedIterator for ValuesIter<'_> {}

/// Format codes: 0 for text, 1 for binary (others are passed on as sent;
/// the server refuses them).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Formats<'a> {
    /// Two bytes per code.
    raw: &'a [u8],
}

impl<'a> Formats<'a> {
    /// Text format.
    pub const TEXT: i16 = 0;
    /// Binary format.
    pub const BINARY: i16 = 1;

    /// Reads an Int16 count and that many Int16 codes at the cursor.
    pub(crate) fn read(c: &mut Cursor<'a>) -> Result<Self, Error> {
        let count = c.u16()?;
        let raw = c.bytes(usize::from(count) * 2)?;
        Ok(Self { raw })
    }

    /// Number of codes.
    #[inline]
    pub fn len(&self) -> usize {
        self.raw.len() / 2
    }

    /// Whether there are no codes.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// The code at `index`, as sent.
    #[inline]
    pub fn get(&self, index: usize) -> Option<i16> {
        let at = index.checked_mul(2)?;
        let pair = self.raw.get(at..)?.first_chunk::<2>()?;
        Some(i16::from_be_bytes(*pair))
    }

    /// The codes in order.
    #[inline]
    pub fn iter(&self) -> impl ExactSizeIterator<Item = i16> + 'a {
        self.raw
            .chunks_exact(2)
            .map(|pair| i16::from_be_bytes([pair[0], pair[1]]))
    }

    /// The format of value `index` of a list, under the protocol's rule:
    /// no codes means every value is text, a single code applies to every
    /// value, otherwise each value has its own code. `None` when there are
    /// several codes and none for `index` (the server refuses such a
    /// message).
    #[inline]
    pub fn format_of(&self, index: usize) -> Option<i16> {
        match self.len() {
            0 => Some(Self::TEXT),
            1 => self.get(0),
            _ => self.get(index),
        }
    }

    /// The encoded codes after their count.
    #[inline]
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }
}

impl fmt::Debug for Formats<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIST: &[u8] = b"\x00\x03\xff\xff\xff\xff\x00\x00\x00\x02ab\x00\x00\x00\x00";

    #[test]
    fn values_and_spans() {
        let mut c = Cursor::new(LIST, 0, "T");
        let values = Values::read(&mut c, LIST).unwrap();
        assert_eq!(c.remaining(), 0);
        assert_eq!(values.len(), 3);
        assert!(!values.is_empty());
        assert_eq!(
            values.iter().collect::<Vec<_>>(),
            [None, Some(&b"ab"[..]), Some(&b""[..])]
        );
        assert_eq!(
            values.spans().collect::<Vec<_>>(),
            [None, Some(10..12), Some(16..16)]
        );
        assert_eq!(values.iter().len(), 3);
        assert_eq!(values.raw(), &LIST[2..]);
        assert_eq!((&values).into_iter().count(), 3);
        assert_eq!(format!("{values:?}"), r#"[None, Some("ab"), Some("")]"#);
    }

    #[test]
    fn formats_follow_the_protocol_rule() {
        let none = Formats { raw: b"" };
        assert_eq!(none.format_of(7), Some(0));
        let one = Formats { raw: b"\x00\x01" };
        assert_eq!(one.format_of(7), Some(1));
        let each = Formats {
            raw: b"\x00\x01\x00\x00",
        };
        assert_eq!(each.format_of(0), Some(1));
        assert_eq!(each.format_of(1), Some(0));
        assert_eq!(each.format_of(2), None);
        assert_eq!(each.get(usize::MAX), None);
        assert_eq!(each.iter().collect::<Vec<_>>(), [1, 0]);
        assert_eq!(format!("{each:?}"), "[1, 0]");
        let mut c = Cursor::new(b"\x00\x02\x00\x01", 0, "T");
        assert_eq!(Formats::read(&mut c), Err(Error::Truncated { what: "T" }));
    }
}
