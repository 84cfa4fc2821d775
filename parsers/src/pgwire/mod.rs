//! The PostgreSQL frontend/backend protocol, version 3 (3.0 and 3.2).
//!
//! A connection starts with untagged startup-phase messages (a length word
//! first): [`startup_len`] says when one is buffered and [`parse_startup`]
//! reads it. Every later message is tagged: a type byte, a length word,
//! a body. The proxy's loop over a buffer is the same in both directions:
//!
//! 1. [`check`]: is a whole message buffered, and how long is it? Only the
//!    5-byte [`header`] is read, and its length is held to [`Limits`]
//!    before anything is buffered for it.
//! 2. [`frontend::parse`] or [`backend::parse`] on exactly that many bytes:
//!    a [`frontend::Message`] or [`backend::Message`] of views into the
//!    buffer, fully validated (every count, length and terminator), with
//!    no allocation.
//! 3. Advance the buffer by the length.
//!
//! Type bytes collide between directions (`'D'` is Describe from a client
//! and DataRow from a server, `'E'` Execute and ErrorResponse, `'C'` Close
//! and CommandComplete, `'S'` Sync and ParameterStatus), hence two modules
//! and a [`Direction`] in the limits.
//!
//! [`encode`] writes the messages the proxy produces itself, including a
//! DataRow with some values rewritten ([`encode::data_row_rewrite`]).

pub mod backend;
mod cursor;
pub mod encode;
mod error;
pub mod frontend;
mod limits;
mod startup;
#[cfg(test)]
mod testutil;
mod values;

pub use error::Error;
pub use limits::{Direction, Limits};
pub use startup::{
    CANCEL_REQUEST_CODE, CANCEL_SECRET_BYTES_MAX, CANCEL_SECRET_BYTES_MIN, GSSENC_REQUEST_CODE,
    PROTOCOL_3_0, PROTOCOL_3_2, Params, SSL_REQUEST_CODE, Startup, StartupMessage, parse_startup,
    startup_len,
};
pub use values::{Formats, Spans, Values, ValuesIter};

/// Bytes before the body of a tagged message: the type byte and the
/// length word.
pub const HEADER_BYTES: usize = 5;

/// A regular (tagged) message's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The type byte.
    pub tag: u8,
    /// The whole message: 1 tag byte + 4 length bytes + body.
    pub len: usize,
}

impl Header {
    /// Length of the body, after the type byte and length word.
    #[inline]
    pub fn body_len(&self) -> usize {
        self.len - HEADER_BYTES
    }
}

/// Reads the 5-byte header of a tagged message at the start of `buf`.
///
/// `Ok(None)` when fewer than 5 bytes are buffered. Fails when the declared
/// length is below 4 or above `i32::MAX` ([`Error::BadLength`]), or above
/// the limit for the tag in the limits' direction ([`Error::TooLong`]).
/// The type byte itself is not checked: an unknown one is refused by
/// `parse`, once the message is whole.
#[inline]
pub fn header(buf: &[u8], limits: &Limits) -> Result<Option<Header>, Error> {
    let Some((&tag, rest)) = buf.split_first() else {
        return Ok(None);
    };
    let Some(word) = rest.first_chunk::<4>() else {
        return Ok(None);
    };
    let len = u32::from_be_bytes(*word);
    if !(4..=i32::MAX as u32).contains(&len) {
        return Err(Error::BadLength { tag, len });
    }
    let max = limits.message_bytes_max_for(tag);
    if len as usize > max {
        return Err(Error::TooLong { tag, len, max });
    }
    Ok(Some(Header {
        tag,
        len: len as usize + 1,
    }))
}

/// Length of the whole message at the start of `buf` when all of it is
/// buffered (`Ok(Some(len))`), `Ok(None)` when more bytes are needed. The
/// errors are [`header`]'s, returned as soon as the header is buffered.
#[inline]
pub fn check(buf: &[u8], limits: &Limits) -> Result<Option<usize>, Error> {
    Ok(header(buf, limits)?
        .map(|h| h.len)
        .filter(|&len| len <= buf.len()))
}

/// Checks that `msg` is exactly one tagged message as its header declares
/// it, without limits, and returns its type byte.
pub(crate) fn open(msg: &[u8]) -> Result<u8, Error> {
    let Some(&[tag, a, b, c, d]) = msg.first_chunk::<HEADER_BYTES>() else {
        return Err(Error::Truncated {
            what: "message header",
        });
    };
    let len = u32::from_be_bytes([a, b, c, d]);
    if !(4..=i32::MAX as u32).contains(&len) {
        return Err(Error::BadLength { tag, len });
    }
    let declared = len as usize + 1;
    if declared != msg.len() {
        return Err(Error::LengthMismatch {
            declared,
            actual: msg.len(),
        });
    }
    Ok(tag)
}

/// Refuses a count above [`Limits::fields_max`].
pub(crate) fn fields_within(
    what: &'static str,
    count: usize,
    limits: &Limits,
) -> Result<(), Error> {
    if count > limits.fields_max {
        return Err(Error::TooManyFields {
            what,
            count,
            max: limits.fields_max,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::testutil::{backend_stream, frontend_stream, walk};
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn header_reads_tag_and_length() {
        let fe = Limits::frontend();
        assert_eq!(header(b"", &fe), Ok(None));
        assert_eq!(header(b"S\0\0\0", &fe), Ok(None));
        assert_eq!(
            header(b"S\0\0\0\x04", &fe),
            Ok(Some(Header { tag: b'S', len: 5 }))
        );
        let h = header(b"Q\0\0\0\x0dSELECT 1\0", &fe).unwrap().unwrap();
        assert_eq!((h.tag, h.len, h.body_len()), (b'Q', 14, 9));
        // Only the header is needed.
        assert_eq!(header(b"Q\0\0\0\x0dSEL", &fe), Ok(Some(h)));
    }

    #[test]
    fn header_refuses_bad_and_excessive_lengths() {
        let fe = Limits::frontend();
        let be = Limits::backend();
        let cases: &[(&[u8], &Limits, Error)] = &[
            (b"S\0\0\0\x03", &fe, Error::BadLength { tag: b'S', len: 3 }),
            (b"S\0\0\0\0", &fe, Error::BadLength { tag: b'S', len: 0 }),
            (
                b"Q\x80\0\0\0",
                &fe,
                Error::BadLength {
                    tag: b'Q',
                    len: 0x8000_0000,
                },
            ),
            (
                b"Q\x40\0\0\0",
                &fe,
                Error::TooLong {
                    tag: b'Q',
                    len: 0x4000_0000,
                    max: 0x3fff_fffe,
                },
            ),
            (
                b"D\0\0\x27\x11",
                &fe,
                Error::TooLong {
                    tag: b'D',
                    len: 10_001,
                    max: 10_000,
                },
            ),
            (
                b"p\0\x01\0\0",
                &fe,
                Error::TooLong {
                    tag: b'p',
                    len: 65_536,
                    max: 65_535,
                },
            ),
            // A TLS record sent where plaintext was expected.
            (
                b"\x16\x03\x01\x02\x00",
                &fe,
                Error::TooLong {
                    tag: 0x16,
                    len: 0x0301_0200,
                    max: 10_000,
                },
            ),
            (
                b"Z\0\0\x75\x31",
                &be,
                Error::TooLong {
                    tag: b'Z',
                    len: 30_001,
                    max: 30_000,
                },
            ),
        ];
        for (input, limits, expected) in cases {
            assert_eq!(header(input, limits), Err(expected.clone()), "{input:?}");
            assert_eq!(check(input, limits), Err(expected.clone()), "{input:?}");
        }
        // The same length is fine for the kinds that may be long.
        assert!(header(b"D\0\0\x27\x11", &be).unwrap().is_some());
        assert!(header(b"p\0\0\xff\xff", &fe).unwrap().is_some());
        assert!(header(b"Q\x3f\xff\xff\xfe", &fe).unwrap().is_some());
    }

    #[test]
    fn check_waits_for_the_whole_message() {
        let fe = Limits::frontend();
        let msg = b"Q\0\0\0\x0dSELECT 1\0";
        for split in 0..msg.len() {
            assert_eq!(check(&msg[..split], &fe), Ok(None), "@{split}");
        }
        assert_eq!(check(msg, &fe), Ok(Some(14)));
        let mut two = msg.to_vec();
        two.extend_from_slice(b"S\0\0\0\x04");
        assert_eq!(check(&two, &fe), Ok(Some(14)));
        assert_eq!(check(&two[14..], &fe), Ok(Some(5)));
    }

    #[test]
    fn open_wants_exactly_one_message() {
        assert_eq!(open(b"S\0\0\0\x04"), Ok(b'S'));
        assert_eq!(
            open(b"S\0\0\0"),
            Err(Error::Truncated {
                what: "message header"
            })
        );
        assert_eq!(
            open(b"S\0\0\0\x04S"),
            Err(Error::LengthMismatch {
                declared: 5,
                actual: 6
            })
        );
        assert_eq!(
            open(b"Q\0\0\0\x06a"),
            Err(Error::LengthMismatch {
                declared: 7,
                actual: 6
            })
        );
        assert_eq!(
            open(b"S\0\0\0\x02"),
            Err(Error::BadLength { tag: b'S', len: 2 })
        );
    }

    /// Feeds each stream prefix by prefix: until a message is whole,
    /// `check` says `Ok(None)`; once it is, the same length and message.
    #[test]
    fn streams_split_at_every_byte() {
        for (stream, ends, direction) in [frontend_stream(), backend_stream()] {
            let limits = match direction {
                Direction::Frontend => Limits::frontend(),
                Direction::Backend => Limits::backend(),
            };
            let whole = walk(&stream, &limits).unwrap();
            assert_eq!(whole.iter().map(|(end, _)| *end).collect::<Vec<_>>(), ends);
            for split in 0..=stream.len() {
                let seen = walk(&stream[..split], &limits).unwrap();
                let expected: Vec<_> = whole
                    .iter()
                    .filter(|(end, _)| *end <= split)
                    .cloned()
                    .collect();
                assert_eq!(seen, expected, "{direction:?} @{split}");
                // The message in progress: its header is known from its
                // fifth byte on, and is the one the whole stream gives.
                let pos = seen.last().map_or(0, |(end, _)| *end);
                if pos == stream.len() {
                    continue;
                }
                if direction == Direction::Frontend && pos == 0 {
                    assert_eq!(startup_len(&stream[..split], &limits), Ok(None));
                    continue;
                }
                let partial = header(&stream[pos..split], &limits).unwrap();
                if split - pos < HEADER_BYTES {
                    assert_eq!(partial, None, "{direction:?} @{split}");
                } else {
                    assert_eq!(partial, header(&stream[pos..], &limits).unwrap());
                    assert!(partial.unwrap().len > split - pos);
                }
            }
        }
    }

    proptest! {
        #[test]
        fn header_and_check_never_panic(noise in prop::collection::vec(any::<u8>(), 0..16)) {
            for limits in [Limits::frontend(), Limits::backend()] {
                let h = header(&noise, &limits);
                let c = check(&noise, &limits);
                match (&h, &c) {
                    (Ok(Some(h)), Ok(Some(len))) => prop_assert_eq!(h.len, *len),
                    (Ok(Some(h)), Ok(None)) => prop_assert!(h.len > noise.len()),
                    (Ok(None), Ok(None)) => prop_assert!(noise.len() < HEADER_BYTES),
                    (Err(a), Err(b)) => prop_assert_eq!(a, b),
                    _ => prop_assert!(false, "{:?} vs {:?}", h, c),
                }
            }
        }
    }
}
