//! Wire protocol parsing for custos: RESP2/RESP3 (Redis, [`resp`]) and the
//! PostgreSQL frontend/backend protocol, versions 3.0 and 3.2 ([`pgwire`]).
//!
//! Everything here is pure: bytes in, views out. No I/O, no runtime, no
//! `unsafe`. Payloads are never copied: the RESP parsers return offsets
//! into the caller's buffer ([`BufRef`]), which outlive a borrow of it; the
//! PostgreSQL parsers return slices borrowed from one whole message, which
//! the proxy handles and drops before it advances its buffer. All of them
//! separate "need more bytes" (`Ok(None)` / incomplete) from "invalid" (an
//! error with a name).
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod pgwire;
pub mod resp;

/// A view into a buffer: the half-open byte range `start..end`.
///
/// Frames hold these instead of slices so that they can outlive a borrow of
/// the buffer and so that no structure is self-referential.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct BufRef {
    /// First byte of the view.
    pub start: usize,
    /// One past the last byte of the view.
    pub end: usize,
}

impl BufRef {
    /// A view of `start..end`.
    #[inline]
    pub const fn new(start: usize, end: usize) -> Self {
        Self { start, end }
    }

    /// Length of the view in bytes.
    #[inline]
    pub const fn len(&self) -> usize {
        self.end - self.start
    }

    /// Whether the view is empty.
    #[inline]
    pub const fn is_empty(&self) -> bool {
        self.end == self.start
    }

    /// The viewed bytes of `buf`.
    #[inline]
    pub fn slice<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        &buf[self.start..self.end]
    }

    /// The same view moved `by` bytes towards the start of the buffer, for
    /// when the caller compacts its buffer.
    #[inline]
    pub const fn shift_down(self, by: usize) -> Self {
        Self {
            start: self.start - by,
            end: self.end - by,
        }
    }
}
