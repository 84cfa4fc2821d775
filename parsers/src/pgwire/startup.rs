//! The startup phase: the untagged messages a client sends first.
//!
//! Each is a length word (counting itself), a 32-bit code, and a body that
//! depends on the code: a protocol version and parameters
//! (StartupMessage), nothing (SSLRequest, GSSENCRequest), or a process id
//! and secret (CancelRequest, on a connection of its own).

use super::cursor::Cursor;
use super::{Error, Limits};
use std::iter::FusedIterator;

/// Protocol version 3.0, as a StartupMessage code (`3 << 16`).
pub const PROTOCOL_3_0: u32 = 3 << 16;
/// Protocol version 3.2 (PostgreSQL 18): variable-length cancellation
/// secrets. There is no 3.1.
pub const PROTOCOL_3_2: u32 = 3 << 16 | 2;
/// SSLRequest's code: `1234 << 16 | 5679`.
pub const SSL_REQUEST_CODE: u32 = 80_877_103;
/// GSSENCRequest's code: `1234 << 16 | 5680`.
pub const GSSENC_REQUEST_CODE: u32 = 80_877_104;
/// CancelRequest's code: `1234 << 16 | 5678`.
pub const CANCEL_REQUEST_CODE: u32 = 80_877_102;
/// Shortest cancellation secret: the 4 bytes of protocol 3.0.
pub const CANCEL_SECRET_BYTES_MIN: usize = 4;
/// Longest cancellation secret the protocol allows (3.2).
pub const CANCEL_SECRET_BYTES_MAX: usize = 256;

/// Length word and code.
const STARTUP_BYTES_MIN: u32 = 8;

/// The only protocol major version spoken.
const PROTOCOL_MAJOR: u32 = 3;

/// One startup-phase message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Startup<'a> {
    /// The client asks for TLS; the server answers one byte (`S` or `N`).
    SslRequest,
    /// The client asks for GSSAPI encryption; the server answers `G` or `N`.
    GssEncRequest,
    /// Cancel the query running in another connection.
    Cancel {
        /// The target backend's process id.
        pid: u32,
        /// The target's secret: 4 bytes in protocol 3.0, 4 to 256 in 3.2.
        secret: &'a [u8],
    },
    /// Open a session.
    Startup(StartupMessage<'a>),
}

/// A StartupMessage: protocol version and connection parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StartupMessage<'a> {
    /// Always 3.
    pub major: u16,
    /// Any: the server (or the proxy) answers with
    /// NegotiateProtocolVersion when it speaks an older minor version.
    pub minor: u16,
    /// `name\0value\0` pairs, without the final NUL; validated.
    params: &'a [u8],
}

impl<'a> StartupMessage<'a> {
    /// The parameters in the order sent (`user`, `database`, `options`,
    /// `application_name`, `_pq_.*` protocol options, ...).
    #[inline]
    pub fn params(&self) -> Params<'a> {
        Params { raw: self.params }
    }

    /// The value of the first parameter called `name`.
    pub fn param(&self, name: &[u8]) -> Option<&'a [u8]> {
        self.params().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// The encoded parameters: `name\0value\0` pairs, without the final NUL.
    #[inline]
    pub fn raw_params(&self) -> &'a [u8] {
        self.params
    }

    /// The version as a StartupMessage code (`major << 16 | minor`).
    #[inline]
    pub fn version(&self) -> u32 {
        u32::from(self.major) << 16 | u32::from(self.minor)
    }
}

/// The `(name, value)` pairs of a [`StartupMessage`].
#[derive(Debug, Clone)]
pub struct Params<'a> {
    raw: &'a [u8],
}

impl<'a> Iterator for Params<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        // Validated at parse: every name and value is NUL-terminated.
        let mut c = Cursor::new(self.raw, 0, "StartupMessage");
        let name = c.cstr().ok()?;
        let value = c.cstr().ok()?;
        self.raw = c.rest();
        Some((name, value))
    }
}

impl FusedIterator for Params<'_> {}

/// Length of the whole startup-phase message at the start of `buf` when
/// all of it is buffered (`Ok(Some(len))`), `Ok(None)` when more bytes are
/// needed. Fails on a declared length below 8 or above `i32::MAX`
/// ([`Error::BadStartupLength`]) or above [`Limits::startup_bytes_max`]
/// ([`Error::StartupTooLong`]) as soon as the length word is buffered.
#[inline]
pub fn startup_len(buf: &[u8], limits: &Limits) -> Result<Option<usize>, Error> {
    let Some(word) = buf.first_chunk::<4>() else {
        return Ok(None);
    };
    let len = u32::from_be_bytes(*word);
    if !(STARTUP_BYTES_MIN..=i32::MAX as u32).contains(&len) {
        return Err(Error::BadStartupLength { len });
    }
    let max = limits.startup_bytes_max;
    if len as usize > max {
        return Err(Error::StartupTooLong { len, max });
    }
    let len = len as usize;
    Ok((len <= buf.len()).then_some(len))
}

/// Parses one whole startup-phase message: exactly the `len` bytes
/// [`startup_len`] returned.
///
/// The StartupMessage must have major version 3 (any minor version) and
/// end with the empty name that closes its parameter list, as the server
/// requires; other codes are [`Error::BadStartupCode`].
pub fn parse_startup(msg: &[u8]) -> Result<Startup<'_>, Error> {
    let mut c = Cursor::new(msg, 0, "startup packet");
    let len = c.u32()?;
    if len < STARTUP_BYTES_MIN {
        return Err(Error::BadStartupLength { len });
    }
    if len as usize != msg.len() {
        return Err(Error::LengthMismatch {
            declared: len as usize,
            actual: msg.len(),
        });
    }
    let code = c.u32()?;
    let startup = match code {
        SSL_REQUEST_CODE => {
            Cursor::new(msg, c.pos(), "SSLRequest").finish()?;
            Startup::SslRequest
        }
        GSSENC_REQUEST_CODE => {
            Cursor::new(msg, c.pos(), "GSSENCRequest").finish()?;
            Startup::GssEncRequest
        }
        CANCEL_REQUEST_CODE => {
            let mut c = Cursor::new(msg, c.pos(), "CancelRequest");
            let pid = c.u32()?;
            let secret = c.rest();
            secret_within(secret)?;
            Startup::Cancel { pid, secret }
        }
        _ if code >> 16 == PROTOCOL_MAJOR => {
            let mut c = Cursor::new(msg, c.pos(), "StartupMessage");
            let start = c.pos();
            loop {
                if c.cstr()?.is_empty() {
                    break;
                }
                c.cstr()?;
            }
            let params = &msg[start..c.pos() - 1];
            c.finish()?;
            Startup::Startup(StartupMessage {
                major: PROTOCOL_MAJOR as u16,
                minor: code as u16,
                params,
            })
        }
        _ => return Err(Error::BadStartupCode(code)),
    };
    Ok(startup)
}

/// Refuses a cancellation secret of a length the protocol does not allow.
pub(crate) fn secret_within(secret: &[u8]) -> Result<(), Error> {
    if !(CANCEL_SECRET_BYTES_MIN..=CANCEL_SECRET_BYTES_MAX).contains(&secret.len()) {
        return Err(Error::BadSecretLength { len: secret.len() });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pgwire::encode;
    use crate::pgwire::testutil::written;
    use proptest::prelude::*;

    #[test]
    fn hand_written_messages() {
        let fe = Limits::frontend();
        let ssl = b"\0\0\0\x08\x04\xd2\x16\x2f";
        assert_eq!(startup_len(ssl, &fe), Ok(Some(8)));
        assert_eq!(parse_startup(ssl), Ok(Startup::SslRequest));
        let gss = b"\0\0\0\x08\x04\xd2\x16\x30";
        assert_eq!(parse_startup(gss), Ok(Startup::GssEncRequest));
        let cancel = b"\0\0\0\x10\x04\xd2\x16\x2e\0\0\x30\x39\xde\xad\xbe\xef";
        assert_eq!(
            parse_startup(cancel),
            Ok(Startup::Cancel {
                pid: 12345,
                secret: b"\xde\xad\xbe\xef"
            })
        );
        let startup = b"\0\0\0\x22\0\x03\0\0user\0alice\0database\0shop\0\0";
        assert_eq!(startup_len(startup, &fe), Ok(Some(34)));
        let Ok(Startup::Startup(m)) = parse_startup(startup) else {
            panic!("{:?}", parse_startup(startup));
        };
        assert_eq!((m.major, m.minor, m.version()), (3, 0, PROTOCOL_3_0));
        assert_eq!(
            m.params().collect::<Vec<_>>(),
            [(&b"user"[..], &b"alice"[..]), (b"database", b"shop")]
        );
        assert_eq!(m.param(b"database"), Some(&b"shop"[..]));
        assert_eq!(m.param(b"options"), None);
        assert_eq!(m.raw_params(), b"user\0alice\0database\0shop\0");
        // An empty parameter list, and an empty value.
        let bare = b"\0\0\0\x09\0\x03\0\x02\0";
        let Ok(Startup::Startup(m)) = parse_startup(bare) else {
            panic!()
        };
        assert_eq!((m.minor, m.params().count()), (2, 0));
        let empty = b"\0\0\0\x0f\0\x03\0\0user\0\0\0";
        let Ok(Startup::Startup(m)) = parse_startup(empty) else {
            panic!()
        };
        assert_eq!(m.param(b"user"), Some(&b""[..]));
    }

    #[test]
    fn encoded_messages_round_trip() {
        let params: &[(&[u8], &[u8])] = &[(b"user", b"bob"), (b"_pq_.x", b"1")];
        let msg = written(|o| encode::startup_message(o, 3, 2, params));
        let Ok(Startup::Startup(m)) = parse_startup(&msg) else {
            panic!()
        };
        assert_eq!(
            (m.version(), m.params().collect::<Vec<_>>()),
            (PROTOCOL_3_2, params.to_vec())
        );
        assert_eq!(
            parse_startup(&written(encode::ssl_request)),
            Ok(Startup::SslRequest)
        );
        assert_eq!(
            parse_startup(&written(encode::gssenc_request)),
            Ok(Startup::GssEncRequest)
        );
        let secret = [7u8; 32];
        assert_eq!(
            parse_startup(&written(|o| encode::cancel_request(o, 42, &secret))),
            Ok(Startup::Cancel {
                pid: 42,
                secret: &secret
            })
        );
    }

    #[test]
    fn malformed_messages_fail_with_their_error() {
        let cases: &[(&[u8], Error)] = &[
            (b"\0\0\0\x04", Error::BadStartupLength { len: 4 }),
            (
                b"\0\0\0",
                Error::Truncated {
                    what: "startup packet",
                },
            ),
            (
                b"\0\0\0\x09\x04\xd2\x16\x2f",
                Error::LengthMismatch {
                    declared: 9,
                    actual: 8,
                },
            ),
            (
                b"\0\0\0\x09\x04\xd2\x16\x2fx",
                Error::TrailingBytes {
                    what: "SSLRequest",
                    count: 1,
                },
            ),
            (
                b"\0\0\0\x09\x04\xd2\x16\x30x",
                Error::TrailingBytes {
                    what: "GSSENCRequest",
                    count: 1,
                },
            ),
            (
                b"\0\0\0\x0e\x04\xd2\x16\x2e\0\0\0\x01ab",
                Error::BadSecretLength { len: 2 },
            ),
            (
                b"\0\0\0\x0a\x04\xd2\x16\x2e\0\0",
                Error::Truncated {
                    what: "CancelRequest",
                },
            ),
            (b"\0\0\0\x08\0\x02\0\0", Error::BadStartupCode(2 << 16)),
            (
                b"\0\0\0\x08\x04\xd2\x16\x31",
                Error::BadStartupCode(80_877_105),
            ),
            (
                b"\0\0\0\x08\0\x03\0\0",
                Error::MissingTerminator {
                    what: "StartupMessage",
                },
            ),
            (
                b"\0\0\0\x0c\0\x03\0\0user",
                Error::MissingTerminator {
                    what: "StartupMessage",
                },
            ),
            // A name with an empty value, then no list terminator.
            (
                b"\0\0\0\x0e\0\x03\0\0user\0\0",
                Error::MissingTerminator {
                    what: "StartupMessage",
                },
            ),
            // Bytes after the list's terminator.
            (
                b"\0\0\0\x0b\0\x03\0\0\0x\0",
                Error::TrailingBytes {
                    what: "StartupMessage",
                    count: 2,
                },
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(parse_startup(input), Err(expected.clone()), "{input:?}");
        }
        let long_secret = written(|o| encode::cancel_request(o, 1, &[0; 257]));
        assert_eq!(
            parse_startup(&long_secret),
            Err(Error::BadSecretLength { len: 257 })
        );
    }

    #[test]
    fn startup_len_bounds_the_length_word() {
        let fe = Limits::frontend();
        assert_eq!(startup_len(b"", &fe), Ok(None));
        assert_eq!(startup_len(b"\0\0\0", &fe), Ok(None));
        assert_eq!(startup_len(b"\0\0\0\x08\x04", &fe), Ok(None));
        assert_eq!(
            startup_len(b"\0\0\0\x07", &fe),
            Err(Error::BadStartupLength { len: 7 })
        );
        assert_eq!(
            startup_len(b"\xff\xff\xff\xff", &fe),
            Err(Error::BadStartupLength { len: u32::MAX })
        );
        assert_eq!(
            startup_len(b"\0\0\x27\x15", &fe),
            Err(Error::StartupTooLong {
                len: 10_005,
                max: 10_004
            })
        );
        assert_eq!(startup_len(b"\0\0\x27\x14", &fe), Ok(None));
        // A TLS ClientHello sent without SSLRequest (direct TLS).
        assert_eq!(
            startup_len(b"\x16\x03\x01\x02\x00\x01", &fe),
            Err(Error::StartupTooLong {
                len: 0x1603_0102,
                max: 10_004
            })
        );
    }

    #[test]
    fn startup_len_split_at_every_byte() {
        let fe = Limits::frontend();
        let mut stream = written(encode::ssl_request);
        let first = stream.len();
        encode::startup_message(&mut stream, 3, 0, &[(b"user", b"u"), (b"database", b"d")]);
        let second = stream.len();
        encode::password_message(&mut stream, b"secret");
        for split in 0..=second {
            let prefix = &stream[..split];
            let got = startup_len(prefix, &fe);
            if split < first {
                assert_eq!(got, Ok(None), "@{split}");
                continue;
            }
            assert_eq!(got, Ok(Some(first)), "@{split}");
            let rest = &prefix[first..];
            let want = if split < second {
                None
            } else {
                Some(second - first)
            };
            assert_eq!(startup_len(rest, &fe), Ok(want), "@{split}");
            if let Some(len) = want {
                assert!(matches!(
                    parse_startup(&rest[..len]),
                    Ok(Startup::Startup(_))
                ));
            }
        }
    }

    proptest! {
        #[test]
        fn params_round_trip(
            minor in any::<u16>(),
            params in prop::collection::vec((
                prop::collection::vec(1u8..=255, 1..12),
                prop::collection::vec(1u8..=255, 0..24),
            ), 0..8),
        ) {
            let pairs: Vec<(&[u8], &[u8])> =
                params.iter().map(|(n, v)| (n.as_slice(), v.as_slice())).collect();
            let msg = written(|o| encode::startup_message(o, 3, minor, &pairs));
            prop_assert_eq!(startup_len(&msg, &Limits::frontend()), Ok(Some(msg.len())));
            let Ok(Startup::Startup(m)) = parse_startup(&msg) else {
                return Err(TestCaseError::fail(format!("{:?}", parse_startup(&msg))));
            };
            prop_assert_eq!(m.minor, minor);
            prop_assert_eq!(m.params().collect::<Vec<_>>(), pairs);
        }

        #[test]
        fn noise_never_panics(noise in prop::collection::vec(any::<u8>(), 0..48)) {
            let _ = startup_len(&noise, &Limits::frontend());
            if let Ok(Startup::Startup(m)) = parse_startup(&noise) {
                let _ = m.params().count();
            }
        }

        #[test]
        fn framed_noise_never_panics(code in any::<u32>(), body in prop::collection::vec(any::<u8>(), 0..32)) {
            let mut msg = ((body.len() + 8) as u32).to_be_bytes().to_vec();
            msg.extend_from_slice(&code.to_be_bytes());
            msg.extend_from_slice(&body);
            if let Ok(Startup::Startup(m)) = parse_startup(&msg) {
                for (name, value) in m.params() {
                    prop_assert!(!name.is_empty() && !name.contains(&0) && !value.contains(&0));
                }
            }
        }
    }
}
