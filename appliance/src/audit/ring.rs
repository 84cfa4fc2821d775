//! A bounded single-producer, single-consumer byte ring of length-prefixed
//! entries, without a lock.
//!
//! Each shard owns the [`Producer`] of its ring and the drain thread the
//! [`Consumer`]. An entry is a `u32` length, 4 bytes of padding and the
//! bytes, rounded up to 8 so every header is aligned. An entry never wraps:
//! when it does not fit before the end, the producer writes a skip marker
//! there and starts again at offset 0. Positions are monotonic `u64`
//! counters (they cannot wrap in practice); the offset is the position
//! modulo the power-of-two capacity.
//!
//! Synchronisation is the classic pair: the producer writes the entry, then
//! publishes its tail with `Release`; the consumer reads the tail with
//! `Acquire`, reads the entry, then publishes its head with `Release`, which
//! the producer reads with `Acquire` before reusing the space. Each side
//! caches the other's counter and reloads it only when it seems to lack
//! room or data, so a push is a copy and one store in the common case.
//!
//! A full ring is reported to the caller, who decides (backpressure: the
//! shard waits; it never drops).

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Bytes of an entry header.
const ENTRY_HEADER_BYTES: usize = 8;
/// Length word of the skip marker at the end of the buffer.
const SKIP: u32 = u32::MAX;
/// Smallest accepted capacity.
pub const RING_BYTES_MIN: usize = 64 * 1024;

#[repr(align(64))]
struct Padded(AtomicU64);

struct Inner {
    /// `cap` bytes, 8-aligned; written by the producer only in the free
    /// region and read by the consumer only in the published region.
    ptr: *mut u8,
    cap: usize,
    head: Padded,
    tail: Padded,
}

// SAFETY: the buffer is only written by the single producer between the
// consumer's head and the end of the free space, and only read by the
// single consumer between its head and the published tail; the atomics
// order those accesses (see the module docs).
unsafe impl Send for Inner {}
// SAFETY: as above; `Inner` is shared by exactly one producer and one
// consumer, which never touch the same bytes at the same time.
unsafe impl Sync for Inner {}

impl Drop for Inner {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from `Box::<[u64]>::into_raw` with `cap / 8`
        // words in `channel`, and is freed once, here.
        unsafe {
            drop(Box::from_raw(std::ptr::slice_from_raw_parts_mut(
                self.ptr as *mut u64,
                self.cap / 8,
            )));
        }
    }
}

/// The writing end.
pub struct Producer {
    inner: Arc<Inner>,
    tail: Cell<u64>,
    head_seen: Cell<u64>,
}

/// The reading end.
pub struct Consumer {
    inner: Arc<Inner>,
    head: u64,
    tail_seen: u64,
}

/// A ring of at least `bytes` (rounded up to a power of two, at least
/// [`RING_BYTES_MIN`]).
pub fn channel(bytes: usize) -> (Producer, Consumer) {
    let cap = bytes.max(RING_BYTES_MIN).next_power_of_two();
    let words: Box<[u64]> = vec![0u64; cap / 8].into_boxed_slice();
    let ptr = Box::into_raw(words) as *mut u8;
    let inner = Arc::new(Inner {
        ptr,
        cap,
        head: Padded(AtomicU64::new(0)),
        tail: Padded(AtomicU64::new(0)),
    });
    (
        Producer {
            inner: inner.clone(),
            tail: Cell::new(0),
            head_seen: Cell::new(0),
        },
        Consumer {
            inner,
            head: 0,
            tail_seen: 0,
        },
    )
}

#[inline]
fn padded(len: usize) -> usize {
    ENTRY_HEADER_BYTES + ((len + 7) & !7)
}

impl Producer {
    /// The largest entry the ring takes.
    pub fn entry_bytes_max(&self) -> usize {
        self.inner.cap / 4 - ENTRY_HEADER_BYTES
    }

    /// Appends `data` as one entry; `false` when the ring has no room now
    /// (nothing is written). Entries longer than
    /// [`entry_bytes_max`](Self::entry_bytes_max) are refused with a panic
    /// in debug builds and cut to that length otherwise: callers bound
    /// their records well below it.
    #[inline]
    pub fn push(&self, data: &[u8]) -> bool {
        debug_assert!(data.len() <= self.entry_bytes_max());
        let data = &data[..data.len().min(self.entry_bytes_max())];
        let inner = &*self.inner;
        let cap = inner.cap as u64;
        let need = padded(data.len()) as u64;
        let mut tail = self.tail.get();
        let off = (tail & (cap - 1)) as usize;
        let contiguous = inner.cap - off;
        let wrap = if (contiguous as u64) < need {
            contiguous as u64
        } else {
            0
        };
        if tail + wrap + need - self.head_seen.get() > cap {
            self.head_seen.set(inner.head.0.load(Ordering::Acquire));
            if tail + wrap + need - self.head_seen.get() > cap {
                return false;
            }
        }
        if wrap > 0 {
            // SAFETY: `off` is 8-aligned and at least 8 bytes before the
            // end (entries are multiples of 8), and the space from `off` on
            // is free: checked against the consumer's head above.
            unsafe { (inner.ptr.add(off) as *mut u32).write(SKIP) };
            tail += wrap;
        }
        let off = (tail & (cap - 1)) as usize;
        // SAFETY: `off + need <= cap` (the entry fits before the end after
        // the wrap), the region is free (checked above), `off` is 8-aligned,
        // and `data` cannot overlap the ring's private buffer.
        unsafe {
            (inner.ptr.add(off) as *mut u32).write(data.len() as u32);
            std::ptr::copy_nonoverlapping(
                data.as_ptr(),
                inner.ptr.add(off + ENTRY_HEADER_BYTES),
                data.len(),
            );
        }
        tail += need;
        self.tail.set(tail);
        inner.tail.0.store(tail, Ordering::Release);
        true
    }

    /// Bytes of the ring.
    pub fn capacity(&self) -> usize {
        self.inner.cap
    }

    /// Bytes pushed so far (a monotonic position).
    pub fn position(&self) -> u64 {
        self.tail.get()
    }

    /// Whether more than `bytes` are pushed and not yet taken. Cheap while
    /// the last known figure is below: the consumer's position is only
    /// loaded again when it seems above.
    #[inline]
    pub fn backlog_above(&self, bytes: u64) -> bool {
        let tail = self.tail.get();
        if tail - self.head_seen.get() <= bytes {
            return false;
        }
        self.head_seen
            .set(self.inner.head.0.load(Ordering::Acquire));
        tail - self.head_seen.get() > bytes
    }

    /// Whether the consumer has taken every entry pushed so far.
    pub fn is_empty(&self) -> bool {
        self.inner.head.0.load(Ordering::Acquire) == self.tail.get()
    }
}

impl Consumer {
    /// Hands the oldest entry to `f` and removes it; `false` when the ring
    /// is empty.
    #[inline]
    pub fn pop(&mut self, f: impl FnOnce(&[u8])) -> bool {
        let inner = &*self.inner;
        let cap = inner.cap as u64;
        loop {
            if self.head == self.tail_seen {
                self.tail_seen = inner.tail.0.load(Ordering::Acquire);
                if self.head == self.tail_seen {
                    return false;
                }
            }
            let off = (self.head & (cap - 1)) as usize;
            // SAFETY: `head < tail_seen`, so the producer published the
            // bytes at `off` (an 8-aligned entry header or skip marker)
            // before its Release store of the tail that we Acquire-loaded.
            let len = unsafe { (inner.ptr.add(off) as *const u32).read() };
            if len == SKIP {
                self.head += (inner.cap - off) as u64;
                continue;
            }
            let len = len as usize;
            // SAFETY: the entry's bytes were published with its header and
            // lie before the end of the buffer (entries never wrap); the
            // producer does not reuse them until the head moves past them.
            let entry =
                unsafe { std::slice::from_raw_parts(inner.ptr.add(off + ENTRY_HEADER_BYTES), len) };
            f(entry);
            self.head += padded(len) as u64;
            inner.head.0.store(self.head, Ordering::Release);
            return true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_come_out_in_order_across_wraps() {
        let (p, mut c) = channel(RING_BYTES_MIN);
        let mut next_in = 0u32;
        let mut next_out = 0u32;
        for round in 0..2000 {
            // Push a varying number of varying-size entries, then pop some.
            for _ in 0..(round % 7) {
                let len = (next_in as usize * 37) % 3000;
                let mut e = vec![(next_in % 251) as u8; len];
                e.extend_from_slice(&next_in.to_le_bytes());
                if !p.push(&e) {
                    break;
                }
                next_in += 1;
            }
            for _ in 0..(round % 5) {
                let got = c.pop(|e| {
                    let n = u32::from_le_bytes(e[e.len() - 4..].try_into().unwrap());
                    assert_eq!(n, next_out);
                    assert_eq!(e.len() - 4, (n as usize * 37) % 3000);
                    assert!(e[..e.len() - 4].iter().all(|&b| b == (n % 251) as u8));
                });
                if !got {
                    break;
                }
                next_out += 1;
            }
        }
        while c.pop(|_| {}) {
            next_out += 1;
        }
        assert_eq!(next_in, next_out);
        assert!(next_in > 1000);
    }

    #[test]
    fn full_ring_refuses_then_accepts_after_pop() {
        let (p, mut c) = channel(RING_BYTES_MIN);
        let e = vec![7u8; 1000];
        let mut n = 0;
        while p.push(&e) {
            n += 1;
        }
        assert!(n >= RING_BYTES_MIN / 1008 - 1, "{n}");
        assert!(c.pop(|got| assert_eq!(got, &e[..])));
        assert!(p.push(&e));
        assert!(!p.is_empty());
    }

    #[test]
    fn threads_see_every_entry_once() {
        let (p, mut c) = channel(RING_BYTES_MIN);
        const N: u64 = 200_000;
        let t = std::thread::spawn(move || {
            for i in 0..N {
                let b = i.to_le_bytes();
                let len = 8 + (i % 40) as usize;
                let mut e = [0u8; 48];
                e[..8].copy_from_slice(&b);
                while !p.push(&e[..len]) {
                    std::hint::spin_loop();
                }
            }
        });
        let mut want = 0u64;
        while want < N {
            c.pop(|e| {
                let i = u64::from_le_bytes(e[..8].try_into().unwrap());
                assert_eq!(i, want);
                assert_eq!(e.len(), 8 + (i % 40) as usize);
                want += 1;
            });
        }
        t.join().unwrap();
    }
}
