//! A connection's read buffer: small when idle, grown up to a bound when
//! traffic needs it, never more.
//!
//! Payloads are forwarded straight out of this buffer (it is handed to the
//! kernel for the write and handed back), so nothing is copied on the way
//! through. A frame larger than the bound streams through in pieces; the
//! bound only has to hold a command head or a reply header line.

use std::future::Future;

use monoio::buf::{IoBufMut, SliceMut};
use monoio::io::AsyncReadRent;

use crate::config::BUFFER_BYTES_INITIAL;

/// Reads in a row that used less than an eighth of the buffer before an
/// oversized buffer is given back.
const SMALL_READS_BEFORE_SHRINK: u32 = 64;

/// A read buffer with a size bound.
pub struct ConnBuf {
    buf: Vec<u8>,
    max: usize,
    small_reads: u32,
}

impl ConnBuf {
    /// An empty buffer that never grows past `max` bytes.
    pub fn new(max: usize) -> ConnBuf {
        ConnBuf {
            buf: Vec::with_capacity(BUFFER_BYTES_INITIAL.min(max)),
            max,
            small_reads: 0,
        }
    }

    /// Lets the buffer grow up to `max` (never lowers the bound).
    pub fn raise_bound(&mut self, max: usize) {
        self.max = self.max.max(max);
    }

    /// Makes room for a read: grows a full buffer (doubling) up to the bound.
    /// Returns `false` when the buffer is full at its bound.
    pub fn make_room(&mut self) -> bool {
        let (len, cap) = (self.buf.len(), self.buf.capacity());
        if len < cap {
            return true;
        }
        if cap >= self.max {
            return false;
        }
        let want = (cap * 2).clamp(BUFFER_BYTES_INITIAL, self.max);
        self.buf.reserve_exact(want - len);
        true
    }

    /// The buffer's free tail, to be filled by a read. Take it back with
    /// [`restore`](Self::restore).
    pub fn spare(&mut self) -> SliceMut<Vec<u8>> {
        let v = std::mem::take(&mut self.buf);
        let len = v.len();
        v.slice_mut(len..)
    }

    /// Puts the buffer back after a read of `n` bytes.
    pub fn restore(&mut self, slice: SliceMut<Vec<u8>>, n: usize) {
        self.buf = slice.into_inner();
        if n < self.buf.capacity() / 8 {
            self.small_reads = self.small_reads.saturating_add(1);
        } else {
            self.small_reads = 0;
        }
    }

    /// Fills the free tail from a synchronous source (decrypted TLS data):
    /// `f` gets up to `at_most` bytes of the tail (which are zeroed first:
    /// keep `at_most` near what the source can deliver), returns how many
    /// bytes it wrote.
    pub fn fill_with(
        &mut self,
        at_most: usize,
        f: impl FnOnce(&mut [u8]) -> std::io::Result<usize>,
    ) -> std::io::Result<usize> {
        let len = self.buf.len();
        let cap = self.buf.capacity();
        self.buf.resize(cap.min(len + at_most), 0);
        let res = f(&mut self.buf[len..]);
        let n = *res.as_ref().unwrap_or(&0);
        self.buf.truncate(len + n);
        if n > 0 {
            if n < cap / 8 {
                self.small_reads = self.small_reads.saturating_add(1);
            } else {
                self.small_reads = 0;
            }
        }
        res
    }

    /// Puts the buffer back after a write that borrowed it whole.
    pub fn put(&mut self, v: Vec<u8>) {
        self.buf = v;
    }

    /// Takes the whole buffer, e.g. to hand it to a write.
    pub fn take(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }

    /// Reads from `r` into the free tail, unless `other` completes first.
    /// `Ok(n)`: `n` bytes arrived (0 for the end of the stream or an error).
    /// `Err(o)`: `other` won with `o`; the read is abandoned, the runtime
    /// keeps its buffer until the kernel lets go of it, and whatever it
    /// would have returned is discarded along with the unprocessed bytes,
    /// so callers race a read only against the end of their connection.
    pub async fn read_or<R: AsyncReadRent, F: Future>(
        &mut self,
        r: &mut R,
        other: F,
    ) -> Result<usize, F::Output> {
        let read = r.read(self.spare());
        let outcome = monoio::select! {
            res = read => Ok(res),
            o = other => Err(o),
        };
        match outcome {
            Ok((res, slice)) => {
                let n = res.unwrap_or(0);
                self.restore(slice, n);
                Ok(n)
            }
            Err(o) => {
                self.reset();
                Err(o)
            }
        }
    }

    /// Replaces a buffer lost to a cancelled read.
    pub fn reset(&mut self) {
        self.buf = Vec::with_capacity(BUFFER_BYTES_INITIAL.min(self.max));
        self.small_reads = 0;
    }

    /// The buffered bytes.
    #[inline]
    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Whether the buffer is at its bound and full.
    pub fn is_full_at_bound(&self) -> bool {
        self.buf.len() == self.buf.capacity() && self.buf.capacity() >= self.max
    }

    /// Drops the first `n` bytes (processed), keeps the rest at the front;
    /// gives memory back after a run of small reads.
    pub fn consume(&mut self, n: usize) {
        if n == self.buf.len() {
            self.buf.clear();
            if self.buf.capacity() > BUFFER_BYTES_INITIAL
                && self.small_reads >= SMALL_READS_BEFORE_SHRINK
            {
                self.buf = Vec::with_capacity(BUFFER_BYTES_INITIAL.min(self.max));
                self.small_reads = 0;
            }
        } else if n > 0 {
            self.buf.drain(..n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_the_bound_and_no_further() {
        let mut b = ConnBuf::new(16 * 1024);
        assert!(b.make_room());
        let cap0 = b.buf.capacity();
        b.buf.resize(cap0, 0);
        assert!(b.make_room());
        assert!(b.buf.capacity() > cap0);
        let cap = b.buf.capacity();
        b.buf.resize(cap, 0);
        while b.make_room() {
            let cap = b.buf.capacity();
            b.buf.resize(cap, 0);
        }
        assert!(b.buf.capacity() >= 16 * 1024 && b.buf.capacity() < 32 * 1024);
        assert!(b.is_full_at_bound());
        b.consume(10);
        assert!(b.make_room(), "consuming frees room");
    }

    #[test]
    fn consume_keeps_the_unprocessed_tail() {
        let mut b = ConnBuf::new(16 * 1024);
        b.buf.extend_from_slice(b"abcdef");
        b.consume(4);
        assert_eq!(b.bytes(), b"ef");
        b.consume(2);
        assert!(b.bytes().is_empty());
    }
}
