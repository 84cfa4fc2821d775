//! Resumable frame-boundary tracking in constant memory.
//!
//! The proxy relays bytes as they arrive and only needs to know where each
//! top-level frame ends (to pair replies with commands and to cut the audit
//! record). [`Scanner`] keeps one counter per open aggregate in a fixed
//! array and the number of payload bytes still to skip, so a reply of any
//! size passes through without being buffered or allocated for.

use super::reader::{Head, Reader, VERBATIM_PREFIX_BYTES};
use super::{Error, Limits};

/// What one [`Scanner::scan`] call consumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scan {
    /// Bytes of the input that belong to the current frame and were
    /// accounted for. The caller may forward them and must start the next
    /// call at `buf[consumed..]`.
    pub consumed: usize,
    /// Whether the frame ended: `consumed` then stops just after its last
    /// byte.
    pub complete: bool,
}

impl Scan {
    #[inline]
    fn partial(consumed: usize) -> Self {
        Self {
            consumed,
            complete: false,
        }
    }

    #[inline]
    fn complete(consumed: usize) -> Self {
        Self {
            consumed,
            complete: true,
        }
    }
}

/// Tracks frame boundaries in a RESP stream, across reads, without heap
/// memory.
///
/// Header lines (type byte, length, CRLF) are consumed whole or not at all;
/// bulk payloads may be consumed in part, so the caller never has to buffer
/// more than one header line (bounded by [`Limits::line_bytes_max`]) to make
/// progress. After an error the stream cannot be resynchronised: drop the
/// connection, or [`reset`](Scanner::reset) before reuse.
#[derive(Debug, Clone)]
pub struct Scanner {
    limits: Limits,
    /// `limits.depth_effective()`, cached for the hot loop.
    depth_max: usize,
    /// Client commands (arrays of bulk strings, or inline lines) rather than
    /// any RESP2/RESP3 reply.
    request: bool,
    /// Number of open aggregates; `stack[..depth]` are in use.
    depth: usize,
    /// Frames still expected by each open aggregate, innermost last.
    stack: [u64; Limits::DEPTH_CAP],
    /// Inside a bulk payload: `payload_bytes_left` bytes, then CRLF.
    in_payload: bool,
    payload_bytes_left: u64,
}

impl Scanner {
    /// A scanner for replies: any RESP2 or RESP3 frame, streamed types
    /// excepted.
    pub fn new(limits: Limits) -> Self {
        Self::with_mode(limits, false)
    }

    /// A scanner for client commands: each frame is either an array of bulk
    /// strings (`*0` and `*-1` are empty commands that the server ignores)
    /// or an inline command, a line that does not start with `*`, ended by
    /// `\n` with an optional `\r` before it.
    pub fn request(limits: Limits) -> Self {
        Self::with_mode(limits, true)
    }

    fn with_mode(limits: Limits, request: bool) -> Self {
        Self {
            limits,
            depth_max: limits.depth_effective(),
            request,
            depth: 0,
            stack: [0; Limits::DEPTH_CAP],
            in_payload: false,
            payload_bytes_left: 0,
        }
    }

    /// Whether some bytes of the current frame have been consumed and its
    /// end has not been reached.
    #[inline]
    pub fn in_frame(&self) -> bool {
        self.depth > 0 || self.in_payload
    }

    /// Forgets the current frame, e.g. after an error or when the caller
    /// drops a partial frame.
    #[inline]
    pub fn reset(&mut self) {
        self.depth = 0;
        self.in_payload = false;
        self.payload_bytes_left = 0;
    }

    /// Consumes as much of `buf` as belongs to the current frame.
    ///
    /// `buf` starts where the previous call's consumed bytes ended. A header
    /// line that is not wholly in `buf` is left unconsumed: the caller keeps
    /// those bytes, reads more and calls again with them at the front. When
    /// the frame completes, `consumed` ends exactly at its last byte and the
    /// scanner is ready for the next frame.
    pub fn scan(&mut self, buf: &[u8]) -> Result<Scan, Error> {
        let mut pos = 0;
        loop {
            if self.in_payload {
                if self.payload_bytes_left > 0 {
                    let available = (buf.len() - pos) as u64;
                    let take = available.min(self.payload_bytes_left);
                    // `take` is at most the buffer length, so it fits.
                    pos += take as usize;
                    self.payload_bytes_left -= take;
                    if self.payload_bytes_left > 0 {
                        return Ok(Scan::partial(pos));
                    }
                }
                let mut r = Reader::new(buf, pos);
                if r.crlf()?.is_none() {
                    return Ok(Scan::partial(pos));
                }
                pos = r.pos();
                self.in_payload = false;
                if self.value_done() {
                    return Ok(Scan::complete(pos));
                }
                continue;
            }

            let Some(&tag) = buf.get(pos) else {
                return Ok(Scan::partial(pos));
            };
            if self.request {
                if self.depth == 0 && tag != b'*' {
                    let mut r = Reader::new(buf, pos);
                    return match r.inline_line(self.limits.line_bytes_max)? {
                        Some(_) => Ok(Scan::complete(r.pos())),
                        None => Ok(Scan::partial(pos)),
                    };
                }
                if self.depth > 0 && tag != b'$' {
                    return Err(Error::ExpectedBulkString);
                }
            }
            let mut r = Reader::new(buf, pos + 1);
            // Bulk strings and arrays make up nearly all traffic: their
            // header readers are inlined here, the others are not.
            let head = match tag {
                b'$' => r.blob_head(tag, &self.limits)?,
                b'*' => r.aggregate_head(tag, &self.limits)?,
                _ => r.head_after(tag, &self.limits)?,
            };
            let Some(head) = head else {
                return Ok(Scan::partial(pos));
            };
            let head_start = pos;
            pos = r.pos();
            let done = match head {
                Head::Bulk(len) | Head::BulkError(len) => {
                    let available = buf.len() - pos;
                    if available >= 2 && available - 2 >= len {
                        // The whole payload is here: skip it at once.
                        let end = pos + len;
                        if buf[end] != b'\r' || buf[end + 1] != b'\n' {
                            return Err(Error::MissingCrlf);
                        }
                        pos = end + 2;
                        self.value_done()
                    } else {
                        self.in_payload = true;
                        self.payload_bytes_left = len as u64;
                        false
                    }
                }
                Head::Verbatim(len) => {
                    // The format prefix is checked before the header is
                    // consumed, so that the rest streams like a bulk.
                    let prefix_end = pos + VERBATIM_PREFIX_BYTES;
                    if buf.len() < prefix_end {
                        return Ok(Scan::partial(head_start));
                    }
                    if buf[prefix_end - 1] != b':' {
                        return Err(Error::InvalidVerbatim);
                    }
                    self.in_payload = true;
                    self.payload_bytes_left = len as u64;
                    false
                }
                Head::NullBulk if self.request => return Err(Error::InvalidLength),
                Head::Simple(_)
                | Head::Error(_)
                | Head::Integer(_)
                | Head::Null
                | Head::NullBulk
                | Head::NullArray
                | Head::Boolean(_)
                | Head::Double(_)
                | Head::BigNumber(_) => self.value_done(),
                Head::Array(count) | Head::Set(count) | Head::Push(count) => self.open(count)?,
                Head::Map(pairs) => self.open(pairs * 2)?,
                // The annotated value follows the pairs and counts once in
                // the enclosing aggregate.
                Head::Attribute(pairs) => self.open(pairs * 2 + 1)?,
            };
            if done {
                return Ok(Scan::complete(pos));
            }
        }
    }

    /// Enters an aggregate of `frames` elements. Returns whether that
    /// completed the top-level frame (an empty aggregate is a whole value).
    #[inline]
    fn open(&mut self, frames: u64) -> Result<bool, Error> {
        if self.depth >= self.depth_max {
            return Err(Error::NestingTooDeep {
                max: self.depth_max,
            });
        }
        if frames == 0 {
            return Ok(self.value_done());
        }
        self.stack[self.depth] = frames;
        self.depth += 1;
        Ok(false)
    }

    /// Records that one value ended, closing every aggregate it completes.
    /// Returns whether the top-level frame ended.
    #[inline]
    fn value_done(&mut self) -> bool {
        while let Some(top) = self.depth.checked_sub(1) {
            self.stack[top] -= 1;
            if self.stack[top] != 0 {
                return false;
            }
            self.depth = top;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resp::testutil::{self, drive, frame_strategy, request_strategy};
    use proptest::prelude::*;

    fn scan_all(scanner: &mut Scanner, input: &[u8]) -> Result<Vec<usize>, Error> {
        drive(scanner, &[input])
    }

    #[test]
    fn every_valid_reply_whole_and_split_at_every_byte() {
        for input in testutil::VALID_REPLIES {
            let name = String::from_utf8_lossy(input);
            let mut scanner = Scanner::new(Limits::reply());
            assert_eq!(
                scan_all(&mut scanner, input),
                Ok(vec![input.len()]),
                "{name}"
            );
            assert!(!scanner.in_frame());
            for split in 0..=input.len() {
                let (head, tail) = input.split_at(split);
                let mut scanner = Scanner::new(Limits::reply());
                assert_eq!(
                    drive(&mut scanner, &[head, tail]),
                    Ok(vec![input.len()]),
                    "{name} @{split}"
                );
            }
            // One byte at a time.
            let bytes: Vec<&[u8]> = input.chunks(1).collect();
            let mut scanner = Scanner::new(Limits::reply());
            assert_eq!(
                drive(&mut scanner, &bytes),
                Ok(vec![input.len()]),
                "{name} bytewise"
            );
        }
    }

    #[test]
    fn every_invalid_reply_fails_with_its_error_whatever_the_split() {
        for (input, expected) in testutil::INVALID_REPLIES {
            let name = String::from_utf8_lossy(input);
            let mut scanner = Scanner::new(Limits::reply());
            assert_eq!(
                scan_all(&mut scanner, input),
                Err(expected.clone()),
                "{name}"
            );
            for split in 0..=input.len() {
                let (head, tail) = input.split_at(split);
                let mut scanner = Scanner::new(Limits::reply());
                assert_eq!(
                    drive(&mut scanner, &[head, tail]),
                    Err(expected.clone()),
                    "{name} @{split}"
                );
            }
        }
    }

    #[test]
    fn header_lines_are_consumed_whole_and_payloads_in_part() {
        let mut scanner = Scanner::new(Limits::reply());
        let steps: &[(&[u8], Scan, bool)] = &[
            (
                b"*2\r",
                Scan {
                    consumed: 0,
                    complete: false,
                },
                false,
            ),
            (
                b"*2\r\n$10\r\n0123",
                Scan {
                    consumed: 13,
                    complete: false,
                },
                true,
            ),
            (
                b"456789\r",
                Scan {
                    consumed: 6,
                    complete: false,
                },
                true,
            ),
            (
                b"\r\n:1",
                Scan {
                    consumed: 2,
                    complete: false,
                },
                true,
            ),
            (
                b":1\r\n+next\r\n",
                Scan {
                    consumed: 4,
                    complete: true,
                },
                false,
            ),
        ];
        for (input, expected, in_frame) in steps {
            assert_eq!(
                scanner.scan(input),
                Ok(*expected),
                "{:?}",
                String::from_utf8_lossy(input)
            );
            assert_eq!(scanner.in_frame(), *in_frame);
        }
    }

    #[test]
    fn pipelines_of_many_frames() {
        let mut stream = Vec::new();
        let mut ends = Vec::new();
        for _ in 0..50 {
            for frame in testutil::VALID_REPLIES {
                stream.extend_from_slice(frame);
                ends.push(stream.len());
            }
        }
        for chunk in [1, 2, 3, 7, 64, 4096, stream.len()] {
            let chunks: Vec<&[u8]> = stream.chunks(chunk).collect();
            let mut scanner = Scanner::new(Limits::reply());
            assert_eq!(
                drive(&mut scanner, &chunks),
                Ok(ends.clone()),
                "chunks of {chunk}"
            );
        }
    }

    #[test]
    fn requests_whole_and_split() {
        for (input, ends) in testutil::VALID_REQUESTS {
            let name = String::from_utf8_lossy(input);
            for split in 0..=input.len() {
                let (head, tail) = input.split_at(split);
                let mut scanner = Scanner::request(Limits::request());
                assert_eq!(
                    drive(&mut scanner, &[head, tail]).as_deref(),
                    Ok(*ends),
                    "{name} @{split}"
                );
            }
        }
    }

    #[test]
    fn invalid_requests() {
        for (input, expected) in testutil::INVALID_REQUESTS {
            let name = String::from_utf8_lossy(input);
            for split in 0..=input.len() {
                let (head, tail) = input.split_at(split);
                let mut scanner = Scanner::request(Limits::request());
                assert_eq!(
                    drive(&mut scanner, &[head, tail]),
                    Err(expected.clone()),
                    "{name} @{split}"
                );
            }
        }
    }

    #[test]
    fn limits_are_enforced_at_the_header() {
        let tight = Limits {
            bulk_bytes_max: 4,
            elements_max: 2,
            depth_max: 2,
            line_bytes_max: 8,
        };
        let cases: &[(&[u8], Error)] = &[
            (b"$5\r\n", Error::BulkLengthTooLarge { len: 5, max: 4 }),
            (b"!5\r\n", Error::BulkLengthTooLarge { len: 5, max: 4 }),
            (b"=5\r\n", Error::BulkLengthTooLarge { len: 5, max: 4 }),
            (b"*3\r\n", Error::TooManyElements { count: 3, max: 2 }),
            (b"~3\r\n", Error::TooManyElements { count: 3, max: 2 }),
            (b">3\r\n", Error::TooManyElements { count: 3, max: 2 }),
            (b"%2\r\n", Error::TooManyElements { count: 4, max: 2 }),
            (b"|2\r\n", Error::TooManyElements { count: 4, max: 2 }),
            (b"*1\r\n*1\r\n*1\r\n", Error::NestingTooDeep { max: 2 }),
            (b"*1\r\n*1\r\n*0\r\n", Error::NestingTooDeep { max: 2 }),
            (
                b"*1\r\n|1\r\n+a\r\n+b\r\n*1\r\n",
                Error::NestingTooDeep { max: 2 },
            ),
            (b"+1234567890", Error::LineTooLong { max: 8 }),
            (b"+123456789\r\n", Error::LineTooLong { max: 8 }),
            (b"-1234567890", Error::LineTooLong { max: 8 }),
        ];
        for (input, expected) in cases {
            let mut scanner = Scanner::new(tight);
            assert_eq!(
                scanner.scan(input),
                Err(expected.clone()),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
        // At the limits exactly, everything passes.
        let ok: &[&[u8]] = &[
            b"$4\r\nabcd\r\n",
            b"*2\r\n*2\r\n:1\r\n:2\r\n:3\r\n",
            b"%1\r\n+k\r\n+v\r\n",
            b"+12345678\r\n",
        ];
        for input in ok {
            let mut scanner = Scanner::new(tight);
            assert_eq!(
                scanner.scan(input),
                Ok(Scan {
                    consumed: input.len(),
                    complete: true
                })
            );
        }
    }

    #[test]
    fn reply_limits_refuse_huge_headers_without_waiting_for_payload() {
        let mut scanner = Scanner::new(Limits::reply());
        assert_eq!(
            scanner.scan(b"$536870913\r\n"),
            Err(Error::BulkLengthTooLarge {
                len: 536_870_913,
                max: 512 * 1024 * 1024
            })
        );
        let mut scanner = Scanner::new(Limits::reply());
        assert_eq!(
            scanner.scan(b"*4294967296\r\n"),
            Err(Error::TooManyElements {
                count: 4_294_967_296,
                max: u32::MAX as usize
            })
        );
        // A huge but allowed count is tracked with a counter, not memory.
        let mut scanner = Scanner::new(Limits::reply());
        assert_eq!(
            scanner.scan(b"*4294967295\r\n:1\r\n"),
            Ok(Scan {
                consumed: 17,
                complete: false
            })
        );
        assert!(scanner.in_frame());
        let deep = b"*1\r\n".repeat(33);
        let mut scanner = Scanner::new(Limits::reply());
        assert_eq!(scanner.scan(&deep), Err(Error::NestingTooDeep { max: 32 }));
    }

    #[test]
    fn request_lines_are_bounded() {
        let limits = Limits::request();
        let long = vec![b'a'; limits.line_bytes_max + 2];
        let mut scanner = Scanner::request(limits);
        assert_eq!(
            scanner.scan(&long),
            Err(Error::LineTooLong {
                max: limits.line_bytes_max
            })
        );
        let mut scanner = Scanner::request(limits);
        assert_eq!(
            scanner.scan(&long[..limits.line_bytes_max + 1]),
            Ok(Scan {
                consumed: 0,
                complete: false
            })
        );
        let mut line = vec![b'a'; limits.line_bytes_max];
        line.extend_from_slice(b"\r\n");
        let mut scanner = Scanner::request(limits);
        assert_eq!(
            scanner.scan(&line),
            Ok(Scan {
                consumed: line.len(),
                complete: true
            })
        );
    }

    #[test]
    fn reset_forgets_a_partial_frame() {
        let mut scanner = Scanner::new(Limits::reply());
        assert_eq!(
            scanner.scan(b"*2\r\n$3\r\nab"),
            Ok(Scan {
                consumed: 10,
                complete: false
            })
        );
        assert!(scanner.in_frame());
        scanner.reset();
        assert!(!scanner.in_frame());
        assert_eq!(
            scanner.scan(b"+OK\r\n"),
            Ok(Scan {
                consumed: 5,
                complete: true
            })
        );
    }

    proptest! {
        #[test]
        fn random_chunkings_find_the_same_boundaries(
            frames in prop::collection::vec(frame_strategy(), 1..8),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..12),
        ) {
            let mut stream = Vec::new();
            let mut ends = Vec::new();
            for frame in &frames {
                testutil::encode_model(frame, &mut stream);
                ends.push(stream.len());
            }
            let chunks = testutil::cut(&stream, &cuts);
            let mut scanner = Scanner::new(Limits::reply());
            prop_assert_eq!(drive(&mut scanner, &chunks), Ok(ends));
        }

        #[test]
        fn random_chunkings_of_command_pipelines(
            commands in prop::collection::vec(request_strategy(), 1..8),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..12),
        ) {
            let mut stream = Vec::new();
            let mut ends = Vec::new();
            for args in &commands {
                testutil::encode_command(args, &mut stream);
                ends.push(stream.len());
            }
            let chunks = testutil::cut(&stream, &cuts);
            let mut scanner = Scanner::request(Limits::request());
            prop_assert_eq!(drive(&mut scanner, &chunks), Ok(ends));
        }
    }
}
