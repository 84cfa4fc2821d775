//! Messages a client sends after the startup phase.
//!
//! [`parse`] reads one whole message (the bytes [`check`](super::check)
//! measured) into a [`Message`] of views. Every field is validated first:
//! counts against the bytes present, lengths, NUL terminators, and no
//! bytes left over, as the server's `pq_getmsgend` demands. The iterators
//! of the views therefore cannot fail.

use super::cursor::Cursor;
use super::values::{Formats, Values};
use super::{Error, HEADER_BYTES, Limits, fields_within, header, open};

/// Type bytes of client messages.
pub mod tag {
    /// Query: one SQL string, simple query protocol.
    pub const QUERY: u8 = b'Q';
    /// Parse: prepare a statement.
    pub const PARSE: u8 = b'P';
    /// Bind: bind parameters to a statement, making a portal.
    pub const BIND: u8 = b'B';
    /// Describe a statement or portal.
    pub const DESCRIBE: u8 = b'D';
    /// Execute a portal.
    pub const EXECUTE: u8 = b'E';
    /// Sync: end of an extended-query batch.
    pub const SYNC: u8 = b'S';
    /// Flush: send what is pending.
    pub const FLUSH: u8 = b'H';
    /// Close a statement or portal.
    pub const CLOSE: u8 = b'C';
    /// CopyData (both directions).
    pub const COPY_DATA: u8 = b'd';
    /// CopyDone (both directions).
    pub const COPY_DONE: u8 = b'c';
    /// CopyFail: abort COPY FROM STDIN.
    pub const COPY_FAIL: u8 = b'f';
    /// FunctionCall (fast path).
    pub const FUNCTION_CALL: u8 = b'F';
    /// Terminate: close the session.
    pub const TERMINATE: u8 = b'X';
    /// PasswordMessage, SASLInitialResponse, SASLResponse, GSSResponse:
    /// which one depends on the authentication request it answers.
    pub const PASSWORD: u8 = b'p';
}

/// Describe and Close target a prepared statement...
pub const KIND_STATEMENT: u8 = b'S';
/// ...or a portal.
pub const KIND_PORTAL: u8 = b'P';

/// One client message, as views into the parsed bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message<'a> {
    /// Simple query: one or more SQL statements.
    Query {
        /// The SQL, without its NUL.
        sql: &'a [u8],
    },
    /// Prepare a statement.
    Parse {
        /// Statement name; empty for the unnamed statement.
        statement: &'a [u8],
        /// The SQL, without its NUL.
        sql: &'a [u8],
        /// How many parameter type OIDs the client specified.
        param_types: u16,
    },
    /// Bind parameters to a statement.
    Bind(Bind<'a>),
    /// Describe a statement or portal.
    Describe {
        /// [`KIND_STATEMENT`] or [`KIND_PORTAL`].
        kind: u8,
        /// Its name; empty for the unnamed one.
        name: &'a [u8],
    },
    /// Run a portal.
    Execute {
        /// Portal name; empty for the unnamed portal.
        portal: &'a [u8],
        /// Most rows to return; 0 for no limit.
        max_rows: u32,
    },
    /// End of an extended-query batch.
    Sync,
    /// Send pending output.
    Flush,
    /// Close a statement or portal.
    Close {
        /// [`KIND_STATEMENT`] or [`KIND_PORTAL`].
        kind: u8,
        /// Its name; empty for the unnamed one.
        name: &'a [u8],
    },
    /// COPY FROM STDIN data.
    CopyData(&'a [u8]),
    /// End of COPY FROM STDIN data.
    CopyDone,
    /// Abort COPY FROM STDIN.
    CopyFail {
        /// Why, without its NUL.
        message: &'a [u8],
    },
    /// Call a function by OID (fast path).
    FunctionCall {
        /// The function's OID.
        oid: u32,
        /// Argument format codes.
        arg_formats: Formats<'a>,
        /// The arguments; `None` is SQL NULL.
        args: Values<'a>,
        /// Format code of the result.
        result_format: i16,
    },
    /// Close the session.
    Terminate,
    /// `'p'`: the body, whose meaning depends on the authentication
    /// exchange; decode it with [`password`] or [`sasl_initial_response`]
    /// (SASLResponse and GSSResponse are the raw body).
    Password(&'a [u8]),
}

/// The fields of a Bind message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bind<'a> {
    /// Destination portal; empty for the unnamed portal.
    pub portal: &'a [u8],
    /// Source statement; empty for the unnamed statement.
    pub statement: &'a [u8],
    /// Parameter format codes (see [`Formats::format_of`]).
    pub param_formats: Formats<'a>,
    /// Parameter values; `None` is SQL NULL. Spans are offsets into the
    /// Bind message.
    pub params: Values<'a>,
    /// Result column format codes.
    pub result_formats: Formats<'a>,
}

impl Message<'_> {
    /// The message's type byte.
    pub fn tag(&self) -> u8 {
        match self {
            Self::Query { .. } => tag::QUERY,
            Self::Parse { .. } => tag::PARSE,
            Self::Bind(_) => tag::BIND,
            Self::Describe { .. } => tag::DESCRIBE,
            Self::Execute { .. } => tag::EXECUTE,
            Self::Sync => tag::SYNC,
            Self::Flush => tag::FLUSH,
            Self::Close { .. } => tag::CLOSE,
            Self::CopyData(_) => tag::COPY_DATA,
            Self::CopyDone => tag::COPY_DONE,
            Self::CopyFail { .. } => tag::COPY_FAIL,
            Self::FunctionCall { .. } => tag::FUNCTION_CALL,
            Self::Terminate => tag::TERMINATE,
            Self::Password(_) => tag::PASSWORD,
        }
    }

    /// The message's name in the protocol documentation.
    pub fn name(&self) -> &'static str {
        name(self.tag()).unwrap_or("unknown")
    }
}

/// The protocol documentation's name for a client message type.
pub fn name(tag: u8) -> Option<&'static str> {
    Some(match tag {
        tag::QUERY => "Query",
        tag::PARSE => "Parse",
        tag::BIND => "Bind",
        tag::DESCRIBE => "Describe",
        tag::EXECUTE => "Execute",
        tag::SYNC => "Sync",
        tag::FLUSH => "Flush",
        tag::CLOSE => "Close",
        tag::COPY_DATA => "CopyData",
        tag::COPY_DONE => "CopyDone",
        tag::COPY_FAIL => "CopyFail",
        tag::FUNCTION_CALL => "FunctionCall",
        tag::TERMINATE => "Terminate",
        tag::PASSWORD => "PasswordMessage",
        _ => return None,
    })
}

/// Parses one whole tagged message: exactly the [`Header::len`] bytes
/// [`check`](super::check) returned. Structure only; [`parse_with`] also
/// applies [`Limits`].
///
/// [`Header::len`]: super::Header::len
pub fn parse(msg: &[u8]) -> Result<Message<'_>, Error> {
    let tag = open(msg)?;
    let what = name(tag).ok_or(Error::UnknownTag(tag))?;
    let mut c = Cursor::new(msg, HEADER_BYTES, what);
    let message = match tag {
        tag::QUERY => Message::Query { sql: c.cstr()? },
        tag::PARSE => {
            let statement = c.cstr()?;
            let sql = c.cstr()?;
            let param_types = c.u16()?;
            c.bytes(usize::from(param_types) * 4)?;
            Message::Parse {
                statement,
                sql,
                param_types,
            }
        }
        tag::BIND => Message::Bind(Bind {
            portal: c.cstr()?,
            statement: c.cstr()?,
            param_formats: Formats::read(&mut c)?,
            params: Values::read(&mut c, msg)?,
            result_formats: Formats::read(&mut c)?,
        }),
        tag::DESCRIBE => Message::Describe {
            kind: kind(&mut c, "Describe kind")?,
            name: c.cstr()?,
        },
        tag::EXECUTE => Message::Execute {
            portal: c.cstr()?,
            max_rows: c.u32()?,
        },
        tag::SYNC => Message::Sync,
        tag::FLUSH => Message::Flush,
        tag::CLOSE => Message::Close {
            kind: kind(&mut c, "Close kind")?,
            name: c.cstr()?,
        },
        tag::COPY_DATA => Message::CopyData(c.rest()),
        tag::COPY_DONE => Message::CopyDone,
        tag::COPY_FAIL => Message::CopyFail { message: c.cstr()? },
        tag::FUNCTION_CALL => Message::FunctionCall {
            oid: c.u32()?,
            arg_formats: Formats::read(&mut c)?,
            args: Values::read(&mut c, msg)?,
            result_format: c.i16()?,
        },
        tag::TERMINATE => Message::Terminate,
        tag::PASSWORD => Message::Password(c.rest()),
        _ => return Err(Error::UnknownTag(tag)),
    };
    c.finish()?;
    Ok(message)
}

/// [`parse`], holding the message to frontend `limits` as well: its
/// declared length ([`header`]'s errors) and its parameter
/// counts ([`Error::TooManyFields`]).
pub fn parse_with<'a>(msg: &'a [u8], limits: &Limits) -> Result<Message<'a>, Error> {
    header(msg, limits)?;
    let message = parse(msg)?;
    match &message {
        Message::Parse { param_types, .. } => {
            fields_within("Parse", usize::from(*param_types), limits)?;
        }
        Message::Bind(bind) => {
            let most = bind
                .params
                .len()
                .max(bind.param_formats.len())
                .max(bind.result_formats.len());
            fields_within("Bind", most, limits)?;
        }
        Message::FunctionCall {
            arg_formats, args, ..
        } => fields_within("FunctionCall", args.len().max(arg_formats.len()), limits)?,
        _ => {}
    }
    Ok(message)
}

/// Reads a Describe or Close kind byte.
fn kind(c: &mut Cursor<'_>, what: &'static str) -> Result<u8, Error> {
    match c.u8()? {
        byte @ (KIND_STATEMENT | KIND_PORTAL) => Ok(byte),
        byte => Err(Error::UnexpectedByte { what, byte }),
    }
}

/// The body of a `'p'` message read as a cleartext PasswordMessage: the
/// password without its NUL.
pub fn password(body: &[u8]) -> Result<&[u8], Error> {
    let mut c = Cursor::new(body, 0, "PasswordMessage");
    let password = c.cstr()?;
    c.finish()?;
    Ok(password)
}

/// The body of a `'p'` message read as a SASLInitialResponse: the chosen
/// mechanism and the initial response (`None` when the client sent -1,
/// no initial response).
pub fn sasl_initial_response(body: &[u8]) -> Result<(&[u8], Option<&[u8]>), Error> {
    let what = "SASLInitialResponse";
    let mut c = Cursor::new(body, 0, what);
    let mechanism = c.cstr()?;
    let data = match c.i32()? {
        -1 => None,
        len if len < 0 => return Err(Error::BadValueLength { what, len }),
        len => Some(c.bytes(len as usize)?),
    };
    c.finish()?;
    Ok((mechanism, data))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pgwire::encode;
    use crate::pgwire::testutil::written;
    use crate::pgwire::testutil::{
        frontend_samples, mutate_and_parse_frontend, render_frontend, visit_frontend,
    };
    use proptest::prelude::*;

    #[test]
    fn hand_written_messages() {
        let cases: &[(&[u8], Message<'_>)] = &[
            (
                b"Q\0\0\0\x0dSELECT 1\0",
                Message::Query { sql: b"SELECT 1" },
            ),
            (b"Q\0\0\0\x05\0", Message::Query { sql: b"" }),
            (
                b"P\0\0\0\x17s1\0SELECT $1\0\0\x01\0\0\0\x17",
                Message::Parse {
                    statement: b"s1",
                    sql: b"SELECT $1",
                    param_types: 1,
                },
            ),
            (
                b"D\0\0\0\x08Ss1\0",
                Message::Describe {
                    kind: b'S',
                    name: b"s1",
                },
            ),
            (
                b"D\0\0\0\x06P\0",
                Message::Describe {
                    kind: b'P',
                    name: b"",
                },
            ),
            (
                b"E\0\0\0\x09\0\0\0\0\x0a",
                Message::Execute {
                    portal: b"",
                    max_rows: 10,
                },
            ),
            (b"S\0\0\0\x04", Message::Sync),
            (b"H\0\0\0\x04", Message::Flush),
            (
                b"C\0\0\0\x08Ss1\0",
                Message::Close {
                    kind: b'S',
                    name: b"s1",
                },
            ),
            (b"d\0\0\0\x07a\tb", Message::CopyData(b"a\tb")),
            (b"d\0\0\0\x04", Message::CopyData(b"")),
            (b"c\0\0\0\x04", Message::CopyDone),
            (b"f\0\0\0\x09oops\0", Message::CopyFail { message: b"oops" }),
            (b"X\0\0\0\x04", Message::Terminate),
            (b"p\0\0\0\x0bsecret\0", Message::Password(b"secret\0")),
        ];
        for (input, expected) in cases {
            assert_eq!(parse(input), Ok(*expected), "{input:?}");
            assert_eq!(parse_with(input, &Limits::frontend()), Ok(*expected));
            assert_eq!(parse(input).unwrap().tag(), input[0]);
        }
    }

    #[test]
    fn hand_written_bind_and_function_call() {
        // Portal "", statement "s1", one format (binary), two params
        // ("ab", NULL), no result formats.
        let bind = b"B\0\0\0\x1a\0s1\0\0\x01\0\x01\0\x02\0\0\0\x02ab\xff\xff\xff\xff\0\0";
        let Ok(Message::Bind(b)) = parse(bind) else {
            panic!("{:?}", parse(bind));
        };
        assert_eq!((b.portal, b.statement), (&b""[..], &b"s1"[..]));
        assert_eq!(b.param_formats.iter().collect::<Vec<_>>(), [1]);
        assert_eq!(b.param_formats.format_of(1), Some(1));
        assert_eq!(
            b.params.iter().collect::<Vec<_>>(),
            [Some(&b"ab"[..]), None]
        );
        assert_eq!(b.params.spans().collect::<Vec<_>>(), [Some(19..21), None]);
        assert!(b.result_formats.is_empty());
        let call = b"F\0\0\0\x15\0\0\x04\xd2\0\0\0\x01\0\0\0\x03xyz\0\x01";
        assert_eq!(
            parse(call).map(|m| match m {
                Message::FunctionCall {
                    oid,
                    arg_formats,
                    args,
                    result_format,
                } => (
                    oid,
                    arg_formats.len(),
                    args.iter().collect::<Vec<_>>(),
                    result_format
                ),
                other => panic!("{other:?}"),
            }),
            Ok((1234, 0, vec![Some(&b"xyz"[..])], 1))
        );
    }

    #[test]
    fn every_kind_round_trips_through_encode() {
        let mut tags = Vec::new();
        for (bytes, expected) in frontend_samples() {
            let parsed = parse(&bytes).unwrap();
            assert_eq!(render_frontend(&parsed), expected, "{}", parsed.name());
            tags.push(parsed.tag());
        }
        // Every message kind is covered.
        for t in 0..=u8::MAX {
            if name(t).is_some() {
                assert!(tags.contains(&t), "no sample of {:?}", char::from(t));
            }
        }
    }

    #[test]
    fn malformed_messages_fail_with_their_error() {
        let cases: &[(&[u8], Error)] = &[
            (b"Y\0\0\0\x04", Error::UnknownTag(b'Y')),
            (b"T\0\0\0\x04", Error::UnknownTag(b'T')),
            (b"Q\0\0\0\x03", Error::BadLength { tag: b'Q', len: 3 }),
            (
                b"Q\0\0\0\x0cSELECT 1",
                Error::MissingTerminator { what: "Query" },
            ),
            (
                b"Q\0\0\0\x0eSELECT 1\0x",
                Error::TrailingBytes {
                    what: "Query",
                    count: 1,
                },
            ),
            (
                b"S\0\0\0\x05x",
                Error::TrailingBytes {
                    what: "Sync",
                    count: 1,
                },
            ),
            (
                b"X\0\0\0\x06\0\0",
                Error::TrailingBytes {
                    what: "Terminate",
                    count: 2,
                },
            ),
            // Two parameter types announced, one present.
            (
                b"P\0\0\0\x0d\0x\0\0\x02\0\0\0\x17",
                Error::Truncated { what: "Parse" },
            ),
            // Two params announced, one present.
            (
                b"B\0\0\0\x11\0\0\0\0\0\x02\0\0\0\x01a\0\0",
                Error::Truncated { what: "Bind" },
            ),
            // A value longer than the message.
            (
                b"B\0\0\0\x0e\0\0\0\0\0\x01\0\0\x01\0",
                Error::Truncated { what: "Bind" },
            ),
            (
                b"B\0\0\0\x10\0\0\0\0\0\x01\xff\xff\xff\xfe\0\0",
                Error::BadValueLength {
                    what: "Bind",
                    len: -2,
                },
            ),
            // Result format count missing.
            (
                b"B\0\0\0\x0a\0\0\0\0\0\0",
                Error::Truncated { what: "Bind" },
            ),
            (
                b"D\0\0\0\x06X\0",
                Error::UnexpectedByte {
                    what: "Describe kind",
                    byte: b'X',
                },
            ),
            (
                b"C\0\0\0\x05\0",
                Error::UnexpectedByte {
                    what: "Close kind",
                    byte: 0,
                },
            ),
            (b"D\0\0\0\x04", Error::Truncated { what: "Describe" }),
            (
                b"D\0\0\0\x06Sx",
                Error::MissingTerminator { what: "Describe" },
            ),
            (b"E\0\0\0\x07\0\0\0", Error::Truncated { what: "Execute" }),
            (
                b"F\0\0\0\x0c\0\0\0\x01\0\0\0\0",
                Error::Truncated {
                    what: "FunctionCall",
                },
            ),
            (
                b"f\0\0\0\x05x",
                Error::MissingTerminator { what: "CopyFail" },
            ),
            (
                b"S\0\0\0\x04S",
                Error::LengthMismatch {
                    declared: 5,
                    actual: 6,
                },
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(parse(input), Err(expected.clone()), "{input:?}");
        }
    }

    #[test]
    fn limits_apply_in_parse_with() {
        let tight = Limits {
            fields_max: 2,
            small_message_bytes_max: 8,
            ..Limits::frontend()
        };
        let bind = written(|o| encode::bind(o, b"", b"", &[], &[None, None, None], &[]));
        assert!(parse(&bind).is_ok());
        assert_eq!(
            parse_with(&bind, &tight),
            Err(Error::TooManyFields {
                what: "Bind",
                count: 3,
                max: 2
            })
        );
        let formats = written(|o| encode::bind(o, b"", b"", &[], &[], &[0, 1, 0]));
        assert!(matches!(
            parse_with(&formats, &tight),
            Err(Error::TooManyFields { what: "Bind", .. })
        ));
        let prepare = written(|o| encode::parse(o, b"", b"SELECT $1, $2, $3", &[0, 0, 0]));
        assert_eq!(
            parse_with(&prepare, &tight),
            Err(Error::TooManyFields {
                what: "Parse",
                count: 3,
                max: 2
            })
        );
        let call = written(|o| encode::function_call(o, 1, &[], &[None; 3], 0));
        assert!(matches!(
            parse_with(&call, &tight),
            Err(Error::TooManyFields {
                what: "FunctionCall",
                ..
            })
        ));
        let describe = written(|o| encode::describe(o, b'S', b"stmt"));
        assert_eq!(
            parse_with(&describe, &tight),
            Err(Error::TooLong {
                tag: b'D',
                len: 10,
                max: 8
            })
        );
        assert!(parse(&describe).is_ok());
    }

    #[test]
    fn password_bodies() {
        assert_eq!(password(b"hunter2\0"), Ok(&b"hunter2"[..]));
        assert_eq!(password(b"\0"), Ok(&b""[..]));
        assert_eq!(
            password(b"hunter2"),
            Err(Error::MissingTerminator {
                what: "PasswordMessage"
            })
        );
        assert_eq!(
            password(b"a\0b"),
            Err(Error::TrailingBytes {
                what: "PasswordMessage",
                count: 1
            })
        );
        let first = b"SCRAM-SHA-256\0\0\0\0\x05n,,n=";
        assert_eq!(
            sasl_initial_response(first),
            Ok((&b"SCRAM-SHA-256"[..], Some(&b"n,,n="[..])))
        );
        assert_eq!(
            sasl_initial_response(b"X\0\xff\xff\xff\xff"),
            Ok((&b"X"[..], None))
        );
        let what = "SASLInitialResponse";
        let cases: &[(&[u8], Error)] = &[
            (b"X", Error::MissingTerminator { what }),
            (b"X\0\0\0", Error::Truncated { what }),
            (b"X\0\0\0\0\x02a", Error::Truncated { what }),
            (b"X\0\0\0\0\x01ab", Error::TrailingBytes { what, count: 1 }),
            (
                b"X\0\xff\xff\xff\xfe",
                Error::BadValueLength { what, len: -2 },
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(
                sasl_initial_response(input),
                Err(expected.clone()),
                "{input:?}"
            );
        }
        // Through the encoders and the message parser.
        let msg = written(|o| encode::sasl_initial_response(o, "SCRAM-SHA-256", b"n,,n=u,r=x"));
        let Ok(Message::Password(body)) = parse(&msg) else {
            panic!()
        };
        assert_eq!(
            sasl_initial_response(body),
            Ok((&b"SCRAM-SHA-256"[..], Some(&b"n,,n=u,r=x"[..])))
        );
        let msg = written(|o| encode::sasl_initial_response_without_data(o, "PLAIN"));
        let Ok(Message::Password(body)) = parse(&msg) else {
            panic!()
        };
        assert_eq!(sasl_initial_response(body), Ok((&b"PLAIN"[..], None)));
        let msg = written(|o| encode::password_message(o, b"pw"));
        let Ok(Message::Password(body)) = parse(&msg) else {
            panic!()
        };
        assert_eq!(password(body), Ok(&b"pw"[..]));
        let msg = written(|o| encode::sasl_response(o, b"c=biws,r=x,p=y"));
        assert_eq!(parse(&msg), Ok(Message::Password(b"c=biws,r=x,p=y")));
    }

    proptest! {
        #[test]
        fn bind_params_round_trip(
            params in prop::collection::vec(
                prop::option::of(prop::collection::vec(any::<u8>(), 0..24)), 0..12),
            formats in prop::collection::vec(0i16..2, 0..4),
            portal in prop::collection::vec(1u8..=255, 0..8),
        ) {
            let values: Vec<Option<&[u8]>> = params.iter().map(|p| p.as_deref()).collect();
            let msg = written(|o| encode::bind(o, &portal, b"stmt", &formats, &values, &formats));
            prop_assert_eq!(crate::pgwire::check(&msg, &Limits::frontend()), Ok(Some(msg.len())));
            let Ok(Message::Bind(b)) = parse_with(&msg, &Limits::frontend()) else {
                return Err(TestCaseError::fail("not a Bind"));
            };
            prop_assert_eq!(b.portal, &portal[..]);
            prop_assert_eq!(b.params.iter().collect::<Vec<_>>(), values.clone());
            for (span, value) in b.params.spans().zip(&values) {
                prop_assert_eq!(span.map(|s| &msg[s]), *value);
            }
            prop_assert_eq!(b.param_formats.iter().collect::<Vec<_>>(), formats.clone());
            prop_assert_eq!(b.result_formats.iter().collect::<Vec<_>>(), formats);
        }

        #[test]
        fn noise_never_panics(noise in prop::collection::vec(any::<u8>(), 0..48)) {
            if let Ok(m) = parse(&noise) {
                visit_frontend(&m);
            }
            let _ = password(&noise);
            let _ = sasl_initial_response(&noise);
        }

        #[test]
        fn framed_noise_never_panics(
            tag in prop::sample::select(b"QPBDESHCdcfFXpY".to_vec()),
            body in prop::collection::vec(prop_oneof![Just(0u8), Just(0xffu8), any::<u8>()], 0..40),
        ) {
            let msg = written(|o| encode::message(o, tag, &body));
            if let Ok(m) = parse_with(&msg, &Limits::frontend()) {
                visit_frontend(&m);
            }
        }

        #[test]
        fn mutated_messages_never_panic(
            which in any::<prop::sample::Index>(),
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
        ) {
            mutate_and_parse_frontend(which, at, byte);
        }
    }
}
