//! Masking a large value that arrives in chunks (a multi-megabyte Redis bulk
//! string, a PostgreSQL `DataRow` split across reads) without buffering all
//! of it.
//!
//! The stream masker holds back the last [`STREAM_WINDOW_BYTES`] of input:
//! every built-in detector decides a match from at most that many bytes after
//! the match start ([`LOOKAHEAD_BYTES_MAX`](crate::LOOKAHEAD_BYTES_MAX), set by
//! the 16 KiB cap on PEM blocks and JWTs), so a match that starts before the
//! held-back tail is already final and the bytes before it can be emitted.
//! It also keeps [`LOOKBEHIND_BYTES_MAX`](crate::LOOKBEHIND_BYTES_MAX) bytes
//! of already emitted input for the detectors' left-boundary checks. The
//! result is byte-for-byte what [`Masker::mask_into`] produces on the whole
//! value, whatever the chunking.
//!
//! Custom keywords are shorter than the window and keep that guarantee.
//! Custom regular expressions do not: a pattern match longer than the window,
//! or one whose leftmost-first iteration depends on text already emitted, may
//! differ at chunk edges.

use crate::detect::{LOOKAHEAD_BYTES_MAX, LOOKBEHIND_BYTES_MAX, Span};
use crate::mask::Masker;

/// Input held back so that a match split across chunks is still found.
pub const STREAM_WINDOW_BYTES: usize = LOOKAHEAD_BYTES_MAX;
/// Pending input gathered before a scan, so tiny chunks do not rescan the
/// window each time: scanning work stays linear in the input.
const SCAN_BATCH_BYTES: usize = 2 * STREAM_WINDOW_BYTES;

/// Masks a value fed in chunks. Memory use is bounded by about
/// `3 × STREAM_WINDOW_BYTES` (about 48 KiB) plus the largest chunk.
///
/// With [`Style::Null`](crate::Style::Null) the bytes pass through unchanged
/// and [`StreamMasker::spans_found`] tells the caller whether to drop the
/// value.
#[derive(Debug)]
pub struct StreamMasker<'m> {
    masker: &'m Masker,
    /// Already emitted context (`..emitted`), then pending input.
    buf: Vec<u8>,
    emitted: usize,
    spans: Vec<Span>,
    found: usize,
}

impl<'m> StreamMasker<'m> {
    /// A stream masker at the start of a value.
    pub fn new(masker: &'m Masker) -> Self {
        StreamMasker {
            masker,
            buf: Vec::new(),
            emitted: 0,
            spans: Vec::new(),
            found: 0,
        }
    }

    /// Takes the next chunk and appends to `out` whatever output is final.
    /// Returns the number of values masked in the emitted output.
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<u8>) -> usize {
        self.buf.extend_from_slice(chunk);
        if self.buf.len() - self.emitted < SCAN_BATCH_BYTES {
            return 0;
        }
        let limit = self.buf.len() - STREAM_WINDOW_BYTES;
        self.emit(limit, out)
    }

    /// Ends the value: appends all remaining output and resets the masker
    /// for the next value. Returns the number of values masked in it.
    pub fn finish(&mut self, out: &mut Vec<u8>) -> usize {
        let n = self.emit(self.buf.len(), out);
        self.buf.clear();
        self.emitted = 0;
        self.found = 0;
        n
    }

    /// Values found so far in the current value.
    pub fn spans_found(&self) -> usize {
        self.found
    }

    /// Emits output for every match starting before `limit`, and all bytes up
    /// to `limit` or the end of the last such match.
    fn emit(&mut self, limit: usize, out: &mut Vec<u8>) -> usize {
        if limit <= self.emitted {
            return 0;
        }
        // Only matches starting before `limit` are emitted now; the rest of
        // the buffer is scanned again with the next chunk.
        self.masker
            .scanner()
            .find_range(&self.buf, self.emitted, limit, &mut self.spans);
        let committed = self.spans.iter().take_while(|s| s.start < limit).count();
        let emit_to = self.spans[..committed]
            .last()
            .map_or(limit, |s| s.end.max(limit));
        let mut at = self.emitted;
        if self.masker.is_null() {
            out.extend_from_slice(&self.buf[at..emit_to]);
        } else {
            for s in &self.spans[..committed] {
                out.extend_from_slice(&self.buf[at..s.start]);
                self.masker.mask_value(&self.buf[s.start..s.end], out);
                at = s.end;
            }
            out.extend_from_slice(&self.buf[at..emit_to]);
        }
        let keep_from = emit_to.saturating_sub(LOOKBEHIND_BYTES_MAX);
        self.buf.drain(..keep_from);
        self.emitted = emit_to - keep_from;
        self.found += committed;
        committed
    }
}
