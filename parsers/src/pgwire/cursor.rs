//! Bounds-checked reads of the protocol's field types.
//!
//! Every message parser reads through [`Cursor`], so a field that runs past
//! the end of its message, a string without its terminator and bytes left
//! over after the last field are refused the same way, with an error that
//! names the message, whatever the message.

use super::Error;

/// A reader of one message's fields, in network byte order.
#[derive(Debug, Clone)]
pub(crate) struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Cursor<'a> {
    /// A cursor over `buf` (a whole message, or a body) at `pos`, reading
    /// the message called `what` in errors.
    #[inline]
    pub(crate) fn new(buf: &'a [u8], pos: usize, what: &'static str) -> Self {
        debug_assert!(pos <= buf.len());
        Self { buf, pos, what }
    }

    /// Offset of the next unread byte in the buffer.
    #[inline]
    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    /// Bytes not read yet.
    #[inline]
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// The next `n` bytes.
    #[inline]
    pub(crate) fn bytes(&mut self, n: usize) -> Result<&'a [u8], Error> {
        if n > self.remaining() {
            return Err(Error::Truncated { what: self.what });
        }
        let start = self.pos;
        self.pos += n;
        Ok(&self.buf[start..self.pos])
    }

    /// The next `N` bytes as an array.
    #[inline]
    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], Error> {
        match self.buf[self.pos..].first_chunk::<N>() {
            Some(chunk) => {
                self.pos += N;
                Ok(*chunk)
            }
            None => Err(Error::Truncated { what: self.what }),
        }
    }

    /// Byte1
    #[inline]
    pub(crate) fn u8(&mut self) -> Result<u8, Error> {
        Ok(self.array::<1>()?[0])
    }

    /// Int16, read as unsigned: how counts are read on both sides.
    #[inline]
    pub(crate) fn u16(&mut self) -> Result<u16, Error> {
        self.array().map(u16::from_be_bytes)
    }

    /// Int16
    #[inline]
    pub(crate) fn i16(&mut self) -> Result<i16, Error> {
        self.array().map(i16::from_be_bytes)
    }

    /// Int32, read as unsigned (process ids, OIDs, codes).
    #[inline]
    pub(crate) fn u32(&mut self) -> Result<u32, Error> {
        self.array().map(u32::from_be_bytes)
    }

    /// Int32
    #[inline]
    pub(crate) fn i32(&mut self) -> Result<i32, Error> {
        self.array().map(i32::from_be_bytes)
    }

    /// String: the bytes up to the next NUL, which is consumed too.
    #[inline]
    pub(crate) fn cstr(&mut self) -> Result<&'a [u8], Error> {
        let rest = &self.buf[self.pos..];
        match find_nul(rest) {
            Some(i) => {
                self.pos += i + 1;
                Ok(&rest[..i])
            }
            None => Err(Error::MissingTerminator { what: self.what }),
        }
    }

    /// Everything left.
    #[inline]
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        let rest = &self.buf[self.pos..];
        self.pos = self.buf.len();
        rest
    }

    /// Skips a list of `count` values, each an Int32 length (-1 for NULL)
    /// and that many bytes, as in DataRow, Bind and FunctionCall.
    #[inline]
    pub(crate) fn skip_values(&mut self, count: u16) -> Result<(), Error> {
        for _ in 0..count {
            match self.i32()? {
                -1 => {}
                len if len < 0 => {
                    return Err(Error::BadValueLength {
                        what: self.what,
                        len,
                    });
                }
                len => {
                    self.bytes(len as usize)?;
                }
            }
        }
        Ok(())
    }

    /// Refuses bytes after the last field.
    #[inline]
    pub(crate) fn finish(self) -> Result<(), Error> {
        match self.remaining() {
            0 => Ok(()),
            count => Err(Error::TrailingBytes {
                what: self.what,
                count,
            }),
        }
    }
}

/// Offset of the first NUL byte in `hay`.
///
/// Query and Parse carry SQL texts of any length whose terminator is the
/// last byte, so this runs over whole statements: eight bytes are tested
/// at a time with the classic "has a zero byte" word trick, in safe code.
#[inline]
pub(crate) fn find_nul(hay: &[u8]) -> Option<usize> {
    const LOW: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut chunks = hay.chunks_exact(8);
    let mut offset = 0;
    for chunk in chunks.by_ref() {
        let Some(&bytes) = chunk.first_chunk::<8>() else {
            break;
        };
        let word = u64::from_le_bytes(bytes);
        if word.wrapping_sub(LOW) & !word & HIGH != 0 {
            break;
        }
        offset += 8;
    }
    hay[offset..]
        .iter()
        .position(|&b| b == 0)
        .map(|i| offset + i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reads_each_field_type() {
        let buf = b"\x01\x00\x02\xff\xfe\x00\x00\x00\x03\xff\xff\xff\xffab\0rest";
        let mut c = Cursor::new(buf, 0, "Test");
        assert_eq!(c.u8(), Ok(1));
        assert_eq!(c.u16(), Ok(2));
        assert_eq!(c.i16(), Ok(-2));
        assert_eq!(c.u32(), Ok(3));
        assert_eq!(c.i32(), Ok(-1));
        assert_eq!(c.cstr(), Ok(&b"ab"[..]));
        assert_eq!(c.pos(), 16);
        assert_eq!(
            c.clone().finish(),
            Err(Error::TrailingBytes {
                what: "Test",
                count: 4
            })
        );
        assert_eq!(c.rest(), b"rest");
        assert_eq!(c.finish(), Ok(()));
    }

    #[test]
    fn short_reads_fail_without_moving() {
        let mut c = Cursor::new(b"\x00\x01\x02", 0, "Test");
        assert_eq!(c.u32(), Err(Error::Truncated { what: "Test" }));
        assert_eq!(c.bytes(4), Err(Error::Truncated { what: "Test" }));
        assert_eq!(c.pos(), 0);
        assert_eq!(c.cstr(), Ok(&b""[..]));
        assert_eq!(c.cstr(), Err(Error::MissingTerminator { what: "Test" }));
        assert_eq!(c.pos(), 1);
        assert_eq!(c.bytes(2), Ok(&b"\x01\x02"[..]));
        assert_eq!(c.u8(), Err(Error::Truncated { what: "Test" }));
    }

    #[test]
    fn value_lists() {
        let buf = b"\xff\xff\xff\xff\x00\x00\x00\x02ab\x00\x00\x00\x00";
        assert_eq!(Cursor::new(buf, 0, "T").skip_values(3), Ok(()));
        let mut c = Cursor::new(buf, 0, "T");
        assert_eq!(c.skip_values(4), Err(Error::Truncated { what: "T" }));
        let bad = b"\xff\xff\xff\xfe";
        assert_eq!(
            Cursor::new(bad, 0, "T").skip_values(1),
            Err(Error::BadValueLength { what: "T", len: -2 })
        );
        let long = b"\x00\x00\x00\x05abc";
        assert_eq!(
            Cursor::new(long, 0, "T").skip_values(1),
            Err(Error::Truncated { what: "T" })
        );
    }

    proptest! {
        #[test]
        fn find_nul_matches_position(hay in prop::collection::vec(
            prop_oneof![Just(0u8), Just(1u8), Just(0x80u8), Just(0xffu8), any::<u8>()], 0..40)
        ) {
            prop_assert_eq!(find_nul(&hay), hay.iter().position(|&b| b == 0));
        }
    }
}
