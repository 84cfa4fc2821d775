//! Messages a server sends.
//!
//! [`parse`] reads one whole message (the bytes [`check`](super::check)
//! measured) into a [`Message`] of views. Every field is validated first,
//! so the lazy views ([`RowDescription::fields`], [`DataRow::values`],
//! [`Fields::iter`], [`Authentication::mechanisms`]) cannot fail, and the
//! proxy can walk a row as often as its masking rules need without
//! re-validating or allocating.

use super::cursor::Cursor;
use super::startup::secret_within;
use super::values::{Formats, Shown, Spans, Values, ValuesIter};
use super::{Error, HEADER_BYTES, Limits, fields_within, header, open};
use std::fmt;
use std::iter::FusedIterator;

/// Type bytes of server messages.
pub mod tag {
    /// An authentication request or result.
    pub const AUTHENTICATION: u8 = b'R';
    /// A run-time parameter's current value.
    pub const PARAMETER_STATUS: u8 = b'S';
    /// Process id and secret, for CancelRequest.
    pub const BACKEND_KEY_DATA: u8 = b'K';
    /// Ready for a new query, with the transaction status.
    pub const READY_FOR_QUERY: u8 = b'Z';
    /// The columns of the rows that follow.
    pub const ROW_DESCRIPTION: u8 = b'T';
    /// One row.
    pub const DATA_ROW: u8 = b'D';
    /// A statement finished.
    pub const COMMAND_COMPLETE: u8 = b'C';
    /// An error.
    pub const ERROR_RESPONSE: u8 = b'E';
    /// A notice (warning, information).
    pub const NOTICE_RESPONSE: u8 = b'N';
    /// A NOTIFY from another session.
    pub const NOTIFICATION_RESPONSE: u8 = b'A';
    /// The parameter types of a prepared statement.
    pub const PARAMETER_DESCRIPTION: u8 = b't';
    /// Parse done.
    pub const PARSE_COMPLETE: u8 = b'1';
    /// Bind done.
    pub const BIND_COMPLETE: u8 = b'2';
    /// Close done.
    pub const CLOSE_COMPLETE: u8 = b'3';
    /// The described statement or portal returns no rows.
    pub const NO_DATA: u8 = b'n';
    /// Execute stopped at its row limit.
    pub const PORTAL_SUSPENDED: u8 = b's';
    /// The query string was empty.
    pub const EMPTY_QUERY_RESPONSE: u8 = b'I';
    /// COPY FROM STDIN starts.
    pub const COPY_IN_RESPONSE: u8 = b'G';
    /// COPY TO STDOUT starts.
    pub const COPY_OUT_RESPONSE: u8 = b'H';
    /// COPY BOTH (replication) starts.
    pub const COPY_BOTH_RESPONSE: u8 = b'W';
    /// CopyData (both directions).
    pub const COPY_DATA: u8 = b'd';
    /// CopyDone (both directions).
    pub const COPY_DONE: u8 = b'c';
    /// The server speaks an older minor version or lacks protocol options.
    pub const NEGOTIATE_PROTOCOL_VERSION: u8 = b'v';
    /// Result of a FunctionCall.
    pub const FUNCTION_CALL_RESPONSE: u8 = b'V';
}

/// Authentication request codes (the Int32 after an `'R'` length).
pub mod auth {
    /// Authentication succeeded.
    pub const OK: u32 = 0;
    /// Kerberos V5 (no longer supported by servers).
    pub const KERBEROS_V5: u32 = 2;
    /// Send the password in clear text.
    pub const CLEARTEXT_PASSWORD: u32 = 3;
    /// Send an MD5 hash of the password with the given salt.
    pub const MD5_PASSWORD: u32 = 5;
    /// Start GSSAPI.
    pub const GSS: u32 = 7;
    /// GSSAPI or SSPI continuation data.
    pub const GSS_CONTINUE: u32 = 8;
    /// Start SSPI.
    pub const SSPI: u32 = 9;
    /// Start SASL, with the mechanisms offered.
    pub const SASL: u32 = 10;
    /// A SASL challenge.
    pub const SASL_CONTINUE: u32 = 11;
    /// SASL outcome data.
    pub const SASL_FINAL: u32 = 12;
}

/// Field codes of ErrorResponse and NoticeResponse.
pub mod field {
    /// Severity, possibly localized.
    pub const SEVERITY: u8 = b'S';
    /// Severity, never localized (servers since 9.6).
    pub const SEVERITY_NONLOCALIZED: u8 = b'V';
    /// SQLSTATE code.
    pub const CODE: u8 = b'C';
    /// Primary message.
    pub const MESSAGE: u8 = b'M';
    /// Detail.
    pub const DETAIL: u8 = b'D';
    /// Hint.
    pub const HINT: u8 = b'H';
    /// Cursor position in the query string.
    pub const POSITION: u8 = b'P';
    /// Position in an internally generated command.
    pub const INTERNAL_POSITION: u8 = b'p';
    /// The internally generated command.
    pub const INTERNAL_QUERY: u8 = b'q';
    /// Context (call stack).
    pub const WHERE: u8 = b'W';
    /// Schema name.
    pub const SCHEMA: u8 = b's';
    /// Table name.
    pub const TABLE: u8 = b't';
    /// Column name.
    pub const COLUMN: u8 = b'c';
    /// Data type name.
    pub const DATA_TYPE: u8 = b'd';
    /// Constraint name.
    pub const CONSTRAINT: u8 = b'n';
    /// Source file.
    pub const FILE: u8 = b'F';
    /// Source line.
    pub const LINE: u8 = b'L';
    /// Source routine.
    pub const ROUTINE: u8 = b'R';
}

/// Transaction status of ReadyForQuery: idle.
pub const STATUS_IDLE: u8 = b'I';
/// In a transaction block.
pub const STATUS_IN_TRANSACTION: u8 = b'T';
/// In a failed transaction block (queries refused until it ends).
pub const STATUS_FAILED: u8 = b'E';

/// An authentication request (`'R'`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Authentication<'a> {
    /// Authentication succeeded.
    Ok,
    /// Send the password in clear text.
    CleartextPassword,
    /// Send `md5(md5(password + user) + salt)`.
    Md5Password {
        /// The salt.
        salt: [u8; 4],
    },
    /// Start SASL with one of these mechanisms.
    Sasl {
        /// The mechanism names, each followed by its NUL (the list's
        /// closing empty name is not included); see
        /// [`Authentication::mechanisms`].
        mechanisms: &'a [u8],
    },
    /// A SASL challenge.
    SaslContinue(&'a [u8]),
    /// SASL outcome data.
    SaslFinal(&'a [u8]),
    /// Any other request (Kerberos, GSSAPI, SSPI, ...), by its code; the
    /// data after the code is not validated.
    Other(u32),
}

impl<'a> Authentication<'a> {
    /// The mechanisms a [`Authentication::Sasl`] request offers, in
    /// order; nothing for other requests.
    pub fn mechanisms(&self) -> Mechanisms<'a> {
        match self {
            Self::Sasl { mechanisms } => Mechanisms { raw: mechanisms },
            _ => Mechanisms { raw: b"" },
        }
    }

    /// The request's code ([`auth`]).
    pub fn code(&self) -> u32 {
        match self {
            Self::Ok => auth::OK,
            Self::CleartextPassword => auth::CLEARTEXT_PASSWORD,
            Self::Md5Password { .. } => auth::MD5_PASSWORD,
            Self::Sasl { .. } => auth::SASL,
            Self::SaslContinue(_) => auth::SASL_CONTINUE,
            Self::SaslFinal(_) => auth::SASL_FINAL,
            Self::Other(code) => *code,
        }
    }
}

/// The SASL mechanism names of an [`Authentication::Sasl`] request.
#[derive(Debug, Clone)]
pub struct Mechanisms<'a> {
    raw: &'a [u8],
}

impl<'a> Iterator for Mechanisms<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let mut c = Cursor::new(self.raw, 0, "AuthenticationSASL");
        let name = c.cstr().ok()?;
        self.raw = c.rest();
        Some(name)
    }
}

impl FusedIterator for Mechanisms<'_> {}

/// One server message, as views into the parsed bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message<'a> {
    /// An authentication request or result.
    Authentication(Authentication<'a>),
    /// A run-time parameter's current value.
    ParameterStatus {
        /// Parameter name.
        name: &'a [u8],
        /// Its value.
        value: &'a [u8],
    },
    /// What a CancelRequest for this session must carry.
    BackendKeyData {
        /// Backend process id.
        pid: u32,
        /// Secret: 4 bytes in protocol 3.0, 4 to 256 in 3.2.
        secret: &'a [u8],
    },
    /// Ready for a new query.
    ReadyForQuery {
        /// [`STATUS_IDLE`], [`STATUS_IN_TRANSACTION`] or [`STATUS_FAILED`].
        status: u8,
    },
    /// The columns of the rows that follow.
    RowDescription(RowDescription<'a>),
    /// One row.
    DataRow(DataRow<'a>),
    /// A statement finished.
    CommandComplete {
        /// The command tag (`SELECT 3`, `INSERT 0 1`), without its NUL.
        tag: &'a [u8],
    },
    /// An error; the statement (or session, when FATAL) failed.
    ErrorResponse(Fields<'a>),
    /// A notice.
    NoticeResponse(Fields<'a>),
    /// A NOTIFY.
    NotificationResponse {
        /// The notifying backend's process id.
        pid: u32,
        /// Channel name.
        channel: &'a [u8],
        /// Payload.
        payload: &'a [u8],
    },
    /// Parameter types of a prepared statement.
    ParameterDescription {
        /// How many parameters.
        types: u16,
    },
    /// Parse done.
    ParseComplete,
    /// Bind done.
    BindComplete,
    /// Close done.
    CloseComplete,
    /// The described statement or portal returns no rows.
    NoData,
    /// Execute stopped at its row limit.
    PortalSuspended,
    /// The query string was empty.
    EmptyQueryResponse,
    /// COPY FROM STDIN starts.
    CopyInResponse(CopyResponse<'a>),
    /// COPY TO STDOUT starts.
    CopyOutResponse(CopyResponse<'a>),
    /// COPY BOTH starts.
    CopyBothResponse(CopyResponse<'a>),
    /// COPY TO STDOUT data.
    CopyData(&'a [u8]),
    /// End of COPY TO STDOUT data.
    CopyDone,
    /// The server does not speak the requested minor version, or some
    /// `_pq_.` protocol options.
    NegotiateProtocolVersion {
        /// Newest minor version the server supports.
        newest_minor: u32,
        /// How many options it did not recognise.
        unrecognized: u32,
    },
    /// Result of a FunctionCall.
    FunctionCallResponse {
        /// The result; `None` is SQL NULL.
        value: Option<&'a [u8]>,
    },
}

/// The columns of a RowDescription.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct RowDescription<'a> {
    /// The encoded fields after their count.
    raw: &'a [u8],
    count: u16,
}

/// Fixed-size part of each RowDescription field, after its name.
const ROW_FIELD_FIXED_BYTES: usize = 18;

impl<'a> RowDescription<'a> {
    /// Number of columns.
    #[inline]
    pub fn len(&self) -> usize {
        usize::from(self.count)
    }

    /// Whether there are no columns.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The columns in order.
    #[inline]
    pub fn fields(&self) -> RowFields<'a> {
        RowFields {
            raw: self.raw,
            left: self.count,
        }
    }

    /// The encoded fields after their count.
    #[inline]
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }
}

/// One column of a RowDescription.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct RowField<'a> {
    /// Column name (or alias).
    pub name: &'a [u8],
    /// OID of the table the column comes from; 0 for a computed column.
    pub table_oid: u32,
    /// Attribute number of the column in that table; 0 if none.
    pub column: i16,
    /// OID of the column's data type.
    pub type_oid: u32,
    /// Data type size (`pg_type.typlen`); negative for variable width.
    pub type_size: i16,
    /// Type modifier (`pg_attribute.atttypmod`).
    pub type_modifier: i32,
    /// Format code: 0 text, 1 binary (0 in a Describe reply: not yet known).
    pub format: i16,
}

impl fmt::Debug for RowDescription<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.fields()).finish()
    }
}

impl fmt::Debug for RowField<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RowField")
            .field("name", &Shown(self.name))
            .field("table_oid", &self.table_oid)
            .field("column", &self.column)
            .field("type_oid", &self.type_oid)
            .field("type_size", &self.type_size)
            .field("type_modifier", &self.type_modifier)
            .field("format", &self.format)
            .finish()
    }
}

/// The columns of a [`RowDescription`].
#[derive(Debug, Clone)]
pub struct RowFields<'a> {
    raw: &'a [u8],
    left: u16,
}

impl<'a> Iterator for RowFields<'a> {
    type Item = RowField<'a>;

    fn next(&mut self) -> Option<RowField<'a>> {
        if self.left == 0 {
            return None;
        }
        // Validated at parse: every field is whole.
        let mut c = Cursor::new(self.raw, 0, "RowDescription");
        let field = RowField {
            name: c.cstr().ok()?,
            table_oid: c.u32().ok()?,
            column: c.i16().ok()?,
            type_oid: c.u32().ok()?,
            type_size: c.i16().ok()?,
            type_modifier: c.i32().ok()?,
            format: c.i16().ok()?,
        };
        self.raw = c.rest();
        self.left -= 1;
        Some(field)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = usize::from(self.left);
        (left, Some(left))
    }
}

impl ExactSizeIterator for RowFields<'_> {}
impl FusedIterator for RowFields<'_> {}

/// The values of one row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataRow<'a> {
    values: Values<'a>,
}

impl<'a> DataRow<'a> {
    /// Number of columns.
    #[inline]
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether the row has no columns.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The values in column order; `None` is SQL NULL.
    #[inline]
    pub fn values(&self) -> ValuesIter<'a> {
        self.values.iter()
    }

    /// Where each value's bytes lie in the message (its tag byte at
    /// offset 0), so that a masker can rewrite a value and its length
    /// word, the 4 bytes before the span; `None` for SQL NULL.
    #[inline]
    pub fn spans(&self) -> Spans<'a> {
        self.values.spans()
    }

    /// The values as a [`Values`] list.
    #[inline]
    pub fn as_values(&self) -> Values<'a> {
        self.values
    }

    /// The whole message the row was parsed from, to forward it as is.
    #[inline]
    pub fn msg(&self) -> &'a [u8] {
        self.values.msg()
    }
}

/// The fields of an ErrorResponse or NoticeResponse: (code byte, value)
/// pairs, codes in [`field`].
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Fields<'a> {
    /// Code, value and NUL for each field; the closing NUL not included.
    raw: &'a [u8],
}

impl<'a> Fields<'a> {
    /// The fields in the order sent.
    #[inline]
    pub fn iter(&self) -> FieldsIter<'a> {
        FieldsIter { raw: self.raw }
    }

    /// The value of the first field with `code`.
    pub fn get(&self, code: u8) -> Option<&'a [u8]> {
        self.iter().find(|(c, _)| *c == code).map(|(_, v)| v)
    }

    /// The non-localized severity (`ERROR`, `FATAL`, `PANIC`, `WARNING`,
    /// `NOTICE`, `DEBUG`, `INFO`, `LOG`) when the server sends it, else
    /// the possibly localized one.
    pub fn severity(&self) -> Option<&'a [u8]> {
        self.get(field::SEVERITY_NONLOCALIZED)
            .or_else(|| self.get(field::SEVERITY))
    }

    /// The SQLSTATE code.
    pub fn code(&self) -> Option<&'a [u8]> {
        self.get(field::CODE)
    }

    /// The primary message.
    pub fn message(&self) -> Option<&'a [u8]> {
        self.get(field::MESSAGE)
    }

    /// The detail.
    pub fn detail(&self) -> Option<&'a [u8]> {
        self.get(field::DETAIL)
    }

    /// The hint.
    pub fn hint(&self) -> Option<&'a [u8]> {
        self.get(field::HINT)
    }

    /// The encoded fields, without the closing NUL.
    #[inline]
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }
}

impl fmt::Debug for Fields<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(
                self.iter()
                    .map(|(code, value)| (char::from(code), Shown(value))),
            )
            .finish()
    }
}

impl<'a> IntoIterator for &Fields<'a> {
    type Item = (u8, &'a [u8]);
    type IntoIter = FieldsIter<'a>;

    fn into_iter(self) -> FieldsIter<'a> {
        self.iter()
    }
}

/// The (code, value) pairs of [`Fields`].
#[derive(Debug, Clone)]
pub struct FieldsIter<'a> {
    raw: &'a [u8],
}

impl<'a> Iterator for FieldsIter<'a> {
    type Item = (u8, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        // Validated at parse: every code is non-zero and every value
        // NUL-terminated.
        let mut c = Cursor::new(self.raw, 0, "ErrorResponse");
        let code = c.u8().ok()?;
        let value = c.cstr().ok()?;
        self.raw = c.rest();
        Some((code, value))
    }
}

impl FusedIterator for FieldsIter<'_> {}

/// The body of CopyInResponse, CopyOutResponse and CopyBothResponse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyResponse<'a> {
    /// Overall format: 0 textual, 1 binary.
    pub format: u8,
    /// One format code per column (all 0 when `format` is 0).
    pub column_formats: Formats<'a>,
}

impl Message<'_> {
    /// The message's type byte.
    pub fn tag(&self) -> u8 {
        match self {
            Self::Authentication(_) => tag::AUTHENTICATION,
            Self::ParameterStatus { .. } => tag::PARAMETER_STATUS,
            Self::BackendKeyData { .. } => tag::BACKEND_KEY_DATA,
            Self::ReadyForQuery { .. } => tag::READY_FOR_QUERY,
            Self::RowDescription(_) => tag::ROW_DESCRIPTION,
            Self::DataRow(_) => tag::DATA_ROW,
            Self::CommandComplete { .. } => tag::COMMAND_COMPLETE,
            Self::ErrorResponse(_) => tag::ERROR_RESPONSE,
            Self::NoticeResponse(_) => tag::NOTICE_RESPONSE,
            Self::NotificationResponse { .. } => tag::NOTIFICATION_RESPONSE,
            Self::ParameterDescription { .. } => tag::PARAMETER_DESCRIPTION,
            Self::ParseComplete => tag::PARSE_COMPLETE,
            Self::BindComplete => tag::BIND_COMPLETE,
            Self::CloseComplete => tag::CLOSE_COMPLETE,
            Self::NoData => tag::NO_DATA,
            Self::PortalSuspended => tag::PORTAL_SUSPENDED,
            Self::EmptyQueryResponse => tag::EMPTY_QUERY_RESPONSE,
            Self::CopyInResponse(_) => tag::COPY_IN_RESPONSE,
            Self::CopyOutResponse(_) => tag::COPY_OUT_RESPONSE,
            Self::CopyBothResponse(_) => tag::COPY_BOTH_RESPONSE,
            Self::CopyData(_) => tag::COPY_DATA,
            Self::CopyDone => tag::COPY_DONE,
            Self::NegotiateProtocolVersion { .. } => tag::NEGOTIATE_PROTOCOL_VERSION,
            Self::FunctionCallResponse { .. } => tag::FUNCTION_CALL_RESPONSE,
        }
    }

    /// The message's name in the protocol documentation.
    pub fn name(&self) -> &'static str {
        name(self.tag()).unwrap_or("unknown")
    }
}

/// The protocol documentation's name for a server message type.
pub fn name(tag: u8) -> Option<&'static str> {
    Some(match tag {
        tag::AUTHENTICATION => "Authentication",
        tag::PARAMETER_STATUS => "ParameterStatus",
        tag::BACKEND_KEY_DATA => "BackendKeyData",
        tag::READY_FOR_QUERY => "ReadyForQuery",
        tag::ROW_DESCRIPTION => "RowDescription",
        tag::DATA_ROW => "DataRow",
        tag::COMMAND_COMPLETE => "CommandComplete",
        tag::ERROR_RESPONSE => "ErrorResponse",
        tag::NOTICE_RESPONSE => "NoticeResponse",
        tag::NOTIFICATION_RESPONSE => "NotificationResponse",
        tag::PARAMETER_DESCRIPTION => "ParameterDescription",
        tag::PARSE_COMPLETE => "ParseComplete",
        tag::BIND_COMPLETE => "BindComplete",
        tag::CLOSE_COMPLETE => "CloseComplete",
        tag::NO_DATA => "NoData",
        tag::PORTAL_SUSPENDED => "PortalSuspended",
        tag::EMPTY_QUERY_RESPONSE => "EmptyQueryResponse",
        tag::COPY_IN_RESPONSE => "CopyInResponse",
        tag::COPY_OUT_RESPONSE => "CopyOutResponse",
        tag::COPY_BOTH_RESPONSE => "CopyBothResponse",
        tag::COPY_DATA => "CopyData",
        tag::COPY_DONE => "CopyDone",
        tag::NEGOTIATE_PROTOCOL_VERSION => "NegotiateProtocolVersion",
        tag::FUNCTION_CALL_RESPONSE => "FunctionCallResponse",
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
        tag::AUTHENTICATION => Message::Authentication(authentication(&mut c, msg)?),
        tag::PARAMETER_STATUS => Message::ParameterStatus {
            name: c.cstr()?,
            value: c.cstr()?,
        },
        tag::BACKEND_KEY_DATA => {
            let pid = c.u32()?;
            let secret = c.rest();
            secret_within(secret)?;
            Message::BackendKeyData { pid, secret }
        }
        tag::READY_FOR_QUERY => match c.u8()? {
            status @ (STATUS_IDLE | STATUS_IN_TRANSACTION | STATUS_FAILED) => {
                Message::ReadyForQuery { status }
            }
            byte => {
                return Err(Error::UnexpectedByte {
                    what: "ReadyForQuery status",
                    byte,
                });
            }
        },
        tag::ROW_DESCRIPTION => {
            let count = c.u16()?;
            let start = c.pos();
            for _ in 0..count {
                c.cstr()?;
                c.bytes(ROW_FIELD_FIXED_BYTES)?;
            }
            Message::RowDescription(RowDescription {
                raw: &msg[start..c.pos()],
                count,
            })
        }
        tag::DATA_ROW => Message::DataRow(DataRow {
            values: Values::read(&mut c, msg)?,
        }),
        tag::COMMAND_COMPLETE => Message::CommandComplete { tag: c.cstr()? },
        tag::ERROR_RESPONSE => Message::ErrorResponse(fields(&mut c, msg)?),
        tag::NOTICE_RESPONSE => Message::NoticeResponse(fields(&mut c, msg)?),
        tag::NOTIFICATION_RESPONSE => Message::NotificationResponse {
            pid: c.u32()?,
            channel: c.cstr()?,
            payload: c.cstr()?,
        },
        tag::PARAMETER_DESCRIPTION => {
            let types = c.u16()?;
            c.bytes(usize::from(types) * 4)?;
            Message::ParameterDescription { types }
        }
        tag::PARSE_COMPLETE => Message::ParseComplete,
        tag::BIND_COMPLETE => Message::BindComplete,
        tag::CLOSE_COMPLETE => Message::CloseComplete,
        tag::NO_DATA => Message::NoData,
        tag::PORTAL_SUSPENDED => Message::PortalSuspended,
        tag::EMPTY_QUERY_RESPONSE => Message::EmptyQueryResponse,
        tag::COPY_IN_RESPONSE => Message::CopyInResponse(copy_response(&mut c)?),
        tag::COPY_OUT_RESPONSE => Message::CopyOutResponse(copy_response(&mut c)?),
        tag::COPY_BOTH_RESPONSE => Message::CopyBothResponse(copy_response(&mut c)?),
        tag::COPY_DATA => Message::CopyData(c.rest()),
        tag::COPY_DONE => Message::CopyDone,
        tag::NEGOTIATE_PROTOCOL_VERSION => {
            let newest_minor = c.u32()?;
            let unrecognized = c.u32()?;
            // Each name takes at least its NUL, so a huge count fails at
            // the end of the message rather than looping on.
            for _ in 0..unrecognized {
                c.cstr()?;
            }
            Message::NegotiateProtocolVersion {
                newest_minor,
                unrecognized,
            }
        }
        tag::FUNCTION_CALL_RESPONSE => Message::FunctionCallResponse {
            value: match c.i32()? {
                -1 => None,
                len if len < 0 => return Err(Error::BadValueLength { what, len }),
                len => Some(c.bytes(len as usize)?),
            },
        },
        _ => return Err(Error::UnknownTag(tag)),
    };
    c.finish()?;
    Ok(message)
}

/// [`parse`], holding the message to backend `limits` as well: its
/// declared length ([`header`]'s errors) and its column
/// count ([`Error::TooManyFields`]).
pub fn parse_with<'a>(msg: &'a [u8], limits: &Limits) -> Result<Message<'a>, Error> {
    header(msg, limits)?;
    let message = parse(msg)?;
    match &message {
        Message::RowDescription(row) => fields_within("RowDescription", row.len(), limits)?,
        Message::DataRow(row) => fields_within("DataRow", row.len(), limits)?,
        Message::CopyInResponse(copy)
        | Message::CopyOutResponse(copy)
        | Message::CopyBothResponse(copy) => {
            fields_within(message.name(), copy.column_formats.len(), limits)?;
        }
        _ => {}
    }
    Ok(message)
}

/// The body of an `'R'` message.
fn authentication<'a>(c: &mut Cursor<'a>, msg: &'a [u8]) -> Result<Authentication<'a>, Error> {
    Ok(match c.u32()? {
        auth::OK => Authentication::Ok,
        auth::CLEARTEXT_PASSWORD => Authentication::CleartextPassword,
        auth::MD5_PASSWORD => Authentication::Md5Password { salt: c.array()? },
        auth::SASL => {
            let start = c.pos();
            // The list ends with an empty name.
            while !c.cstr()?.is_empty() {}
            Authentication::Sasl {
                mechanisms: &msg[start..c.pos() - 1],
            }
        }
        auth::SASL_CONTINUE => Authentication::SaslContinue(c.rest()),
        auth::SASL_FINAL => Authentication::SaslFinal(c.rest()),
        code => {
            c.rest();
            Authentication::Other(code)
        }
    })
}

/// ErrorResponse and NoticeResponse fields up to their closing NUL.
fn fields<'a>(c: &mut Cursor<'a>, msg: &'a [u8]) -> Result<Fields<'a>, Error> {
    let start = c.pos();
    while c.u8()? != 0 {
        c.cstr()?;
    }
    Ok(Fields {
        raw: &msg[start..c.pos() - 1],
    })
}

/// The body of a Copy response.
fn copy_response<'a>(c: &mut Cursor<'a>) -> Result<CopyResponse<'a>, Error> {
    Ok(CopyResponse {
        format: c.u8()?,
        column_formats: Formats::read(c)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pgwire::encode;
    use crate::pgwire::testutil::written;
    use crate::pgwire::testutil::{backend_samples, mutate_and_parse_backend, render_backend};
    use proptest::prelude::*;

    #[test]
    fn hand_written_messages() {
        let cases: &[(&[u8], Message<'_>)] = &[
            (
                b"R\0\0\0\x08\0\0\0\0",
                Message::Authentication(Authentication::Ok),
            ),
            (
                b"R\0\0\0\x08\0\0\0\x03",
                Message::Authentication(Authentication::CleartextPassword),
            ),
            (
                b"R\0\0\0\x0c\0\0\0\x05\x01\x02\x03\x04",
                Message::Authentication(Authentication::Md5Password { salt: [1, 2, 3, 4] }),
            ),
            (
                b"R\0\0\0\x17\0\0\0\x0aSCRAM-SHA-256\0\0",
                Message::Authentication(Authentication::Sasl {
                    mechanisms: b"SCRAM-SHA-256\0",
                }),
            ),
            (
                b"R\0\0\0\x0b\0\0\0\x0br=x",
                Message::Authentication(Authentication::SaslContinue(b"r=x")),
            ),
            (
                b"R\0\0\0\x0b\0\0\0\x0cv=y",
                Message::Authentication(Authentication::SaslFinal(b"v=y")),
            ),
            (
                b"R\0\0\0\x0a\0\0\0\x08ab",
                Message::Authentication(Authentication::Other(8)),
            ),
            (
                b"S\0\0\0\x19client_encoding\0UTF8\0",
                Message::ParameterStatus {
                    name: b"client_encoding",
                    value: b"UTF8",
                },
            ),
            (
                b"K\0\0\0\x0c\0\0\x30\x39\x01\x02\x03\x04",
                Message::BackendKeyData {
                    pid: 12345,
                    secret: b"\x01\x02\x03\x04",
                },
            ),
            (b"Z\0\0\0\x05I", Message::ReadyForQuery { status: b'I' }),
            (b"Z\0\0\0\x05E", Message::ReadyForQuery { status: b'E' }),
            (
                b"C\0\0\0\x0dSELECT 1\0",
                Message::CommandComplete { tag: b"SELECT 1" },
            ),
            (
                b"A\0\0\0\x0e\0\0\0\x07ch\0hi\0",
                Message::NotificationResponse {
                    pid: 7,
                    channel: b"ch",
                    payload: b"hi",
                },
            ),
            (
                b"t\0\0\0\x0e\0\x02\0\0\0\x17\0\0\0\x19",
                Message::ParameterDescription { types: 2 },
            ),
            (b"1\0\0\0\x04", Message::ParseComplete),
            (b"2\0\0\0\x04", Message::BindComplete),
            (b"3\0\0\0\x04", Message::CloseComplete),
            (b"n\0\0\0\x04", Message::NoData),
            (b"s\0\0\0\x04", Message::PortalSuspended),
            (b"I\0\0\0\x04", Message::EmptyQueryResponse),
            (b"d\0\0\0\x06ab", Message::CopyData(b"ab")),
            (b"c\0\0\0\x04", Message::CopyDone),
            (
                b"v\0\0\0\x13\0\0\0\0\0\0\0\x01_pq_.x\0",
                Message::NegotiateProtocolVersion {
                    newest_minor: 0,
                    unrecognized: 1,
                },
            ),
            (
                b"V\0\0\0\x0a\0\0\0\x02ok",
                Message::FunctionCallResponse { value: Some(b"ok") },
            ),
            (
                b"V\0\0\0\x08\xff\xff\xff\xff",
                Message::FunctionCallResponse { value: None },
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(parse(input), Ok(*expected), "{input:?}");
            assert_eq!(parse_with(input, &Limits::backend()), Ok(*expected));
            assert_eq!(parse(input).unwrap().tag(), input[0]);
        }
    }

    #[test]
    fn hand_written_rows_fields_and_copy() {
        // Two columns: "id" int4 from table 16384 column 1, "name" text.
        let desc = b"T\0\0\0\x32\0\x02\
            id\0\0\0\x40\0\0\x01\0\0\0\x17\0\x04\xff\xff\xff\xff\0\0\
            name\0\0\0\0\0\0\0\0\0\0\x19\xff\xff\xff\xff\xff\xff\0\0";
        let Ok(Message::RowDescription(rd)) = parse(desc) else {
            panic!("{:?}", parse(desc));
        };
        assert_eq!(rd.len(), 2);
        assert_eq!(
            rd.fields().collect::<Vec<_>>(),
            [
                RowField {
                    name: b"id",
                    table_oid: 16384,
                    column: 1,
                    type_oid: 23,
                    type_size: 4,
                    type_modifier: -1,
                    format: 0
                },
                RowField {
                    name: b"name",
                    table_oid: 0,
                    column: 0,
                    type_oid: 25,
                    type_size: -1,
                    type_modifier: -1,
                    format: 0
                }
            ]
        );
        let row = b"D\0\0\0\x14\0\x03\0\0\0\x0242\xff\xff\xff\xff\0\0\0\0";
        let Ok(Message::DataRow(dr)) = parse(row) else {
            panic!("{:?}", parse(row));
        };
        assert_eq!(dr.len(), 3);
        assert_eq!(
            dr.values().collect::<Vec<_>>(),
            [Some(&b"42"[..]), None, Some(&b""[..])]
        );
        assert_eq!(
            dr.spans().collect::<Vec<_>>(),
            [Some(11..13), None, Some(21..21)]
        );
        assert_eq!(dr.msg(), row);
        assert_eq!(
            format!("{dr:?}"),
            r#"DataRow { values: [Some("42"), None, Some("")] }"#
        );
        assert!(format!("{rd:?}").starts_with(r#"[RowField { name: "id", table_oid: 16384,"#));
        let error = b"E\0\0\0\x29SERROR\0VERROR\0C42P01\0Mno such table\0\0";
        let Ok(Message::ErrorResponse(f)) = parse(error) else {
            panic!("{:?}", parse(error));
        };
        assert_eq!(f.severity(), Some(&b"ERROR"[..]));
        assert_eq!(f.code(), Some(&b"42P01"[..]));
        assert_eq!(f.message(), Some(&b"no such table"[..]));
        assert_eq!(f.detail(), None);
        assert_eq!(f.iter().count(), 4);
        assert_eq!(
            format!("{f:?}"),
            r#"{'S': "ERROR", 'V': "ERROR", 'C': "42P01", 'M': "no such table"}"#
        );
        let notice = b"N\0\0\0\x12SAVISO\0Mhola\0\0";
        let Ok(Message::NoticeResponse(f)) = parse(notice) else {
            panic!()
        };
        // No non-localized severity: the localized one is all there is.
        assert_eq!(f.severity(), Some(&b"AVISO"[..]));
        let copy = b"G\0\0\0\x0b\x01\0\x02\0\x01\0\x01";
        let Ok(Message::CopyInResponse(cr)) = parse(copy) else {
            panic!("{:?}", parse(copy));
        };
        assert_eq!(cr.format, 1);
        assert_eq!(cr.column_formats.iter().collect::<Vec<_>>(), [1, 1]);
        let sasl = b"R\0\0\0\x2a\0\0\0\x0aSCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0";
        let Ok(Message::Authentication(a)) = parse(sasl) else {
            panic!("{:?}", parse(sasl));
        };
        assert_eq!(
            a.mechanisms().collect::<Vec<_>>(),
            [&b"SCRAM-SHA-256-PLUS"[..], b"SCRAM-SHA-256"]
        );
        assert_eq!(a.code(), auth::SASL);
        assert_eq!(Authentication::Ok.mechanisms().count(), 0);
    }

    #[test]
    fn every_kind_round_trips_through_encode() {
        let mut tags = Vec::new();
        for (bytes, expected) in backend_samples() {
            let parsed = parse(&bytes).unwrap();
            assert_eq!(render_backend(&parsed), expected, "{}", parsed.name());
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
            (b"Q\0\0\0\x04", Error::UnknownTag(b'Q')),
            (b"p\0\0\0\x04", Error::UnknownTag(b'p')),
            (b"Z\0\0\0\x02", Error::BadLength { tag: b'Z', len: 2 }),
            (
                b"Z\0\0\0\x05X",
                Error::UnexpectedByte {
                    what: "ReadyForQuery status",
                    byte: b'X',
                },
            ),
            (
                b"Z\0\0\0\x06II",
                Error::TrailingBytes {
                    what: "ReadyForQuery",
                    count: 1,
                },
            ),
            (
                b"1\0\0\0\x05x",
                Error::TrailingBytes {
                    what: "ParseComplete",
                    count: 1,
                },
            ),
            (
                b"R\0\0\0\x09\0\0\0\0x",
                Error::TrailingBytes {
                    what: "Authentication",
                    count: 1,
                },
            ),
            (
                b"R\0\0\0\x0b\0\0\0\x05abc",
                Error::Truncated {
                    what: "Authentication",
                },
            ),
            (
                b"R\0\0\0\x0d\0\0\0\x0aSCRAM",
                Error::MissingTerminator {
                    what: "Authentication",
                },
            ),
            (
                b"R\0\0\0\x0e\0\0\0\x0aAB\0\0xy",
                Error::TrailingBytes {
                    what: "Authentication",
                    count: 2,
                },
            ),
            (
                b"K\0\0\0\x0a\0\0\0\x01ab",
                Error::BadSecretLength { len: 2 },
            ),
            (
                b"S\0\0\0\x08name",
                Error::MissingTerminator {
                    what: "ParameterStatus",
                },
            ),
            // Three columns announced, two present.
            (
                b"D\0\0\0\x10\0\x03\0\0\0\x01a\0\0\0\x01b",
                Error::Truncated { what: "DataRow" },
            ),
            // A value running past the end.
            (
                b"D\0\0\0\x0c\0\x01\0\0\0\x03ab",
                Error::Truncated { what: "DataRow" },
            ),
            (
                b"D\0\0\0\x0c\0\x01\0\0\0\x01ab",
                Error::TrailingBytes {
                    what: "DataRow",
                    count: 1,
                },
            ),
            (
                b"D\0\0\0\x0a\0\x01\xff\xff\xff\xfe",
                Error::BadValueLength {
                    what: "DataRow",
                    len: -2,
                },
            ),
            (b"D\0\0\0\x05\0", Error::Truncated { what: "DataRow" }),
            // A field without its 18 fixed bytes.
            (
                b"T\0\0\0\x0b\0\x01ab\0\0\0",
                Error::Truncated {
                    what: "RowDescription",
                },
            ),
            (
                b"T\0\0\0\x08\0\x01ab",
                Error::MissingTerminator {
                    what: "RowDescription",
                },
            ),
            // Fields without their closing NUL.
            (
                b"E\0\0\0\x0bSERROR\0",
                Error::Truncated {
                    what: "ErrorResponse",
                },
            ),
            (
                b"N\0\0\0\x09SWARN",
                Error::MissingTerminator {
                    what: "NoticeResponse",
                },
            ),
            (
                b"t\0\0\0\x0a\0\x02\0\0\0\x17",
                Error::Truncated {
                    what: "ParameterDescription",
                },
            ),
            (
                b"G\0\0\0\x08\0\0\x01\0",
                Error::Truncated {
                    what: "CopyInResponse",
                },
            ),
            (
                b"v\0\0\0\x0c\0\0\0\0\xff\xff\xff\xff",
                Error::MissingTerminator {
                    what: "NegotiateProtocolVersion",
                },
            ),
            (
                b"V\0\0\0\x08\xff\xff\xff\xfe",
                Error::BadValueLength {
                    what: "FunctionCallResponse",
                    len: -2,
                },
            ),
            (
                b"A\0\0\0\x0b\0\0\0\x07ch\0",
                Error::MissingTerminator {
                    what: "NotificationResponse",
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
            ..Limits::backend()
        };
        let row = written(|o| encode::data_row(o, &[None, None, None]));
        assert!(parse(&row).is_ok());
        assert_eq!(
            parse_with(&row, &tight),
            Err(Error::TooManyFields {
                what: "DataRow",
                count: 3,
                max: 2
            })
        );
        let field = RowField {
            name: b"c",
            table_oid: 0,
            column: 0,
            type_oid: 25,
            type_size: -1,
            type_modifier: -1,
            format: 0,
        };
        let desc = written(|o| encode::row_description(o, &[field; 3]));
        assert!(matches!(
            parse_with(&desc, &tight),
            Err(Error::TooManyFields {
                what: "RowDescription",
                count: 3,
                ..
            })
        ));
        let copy = written(|o| encode::copy_out_response(o, 0, &[0, 0, 0]));
        assert!(matches!(
            parse_with(&copy, &tight),
            Err(Error::TooManyFields {
                what: "CopyOutResponse",
                ..
            })
        ));
        assert!(parse_with(&written(|o| encode::data_row(o, &[None; 2])), &tight).is_ok());
        // MaxTupleAttributeNumber by default.
        let wide = written(|o| encode::data_row(o, &[None; 1665]));
        assert!(matches!(
            parse_with(&wide, &Limits::backend()),
            Err(Error::TooManyFields { max: 1664, .. })
        ));
    }

    fn row_field_strategy() -> impl Strategy<Value = (Vec<u8>, [i64; 6])> {
        (
            prop::collection::vec(1u8..=255, 0..16),
            (
                any::<u32>(),
                any::<i16>(),
                any::<u32>(),
                any::<i16>(),
                any::<i32>(),
                any::<i16>(),
            ),
        )
            .prop_map(|(name, (a, b, c, d, e, f))| {
                (
                    name,
                    [
                        i64::from(a),
                        i64::from(b),
                        i64::from(c),
                        i64::from(d),
                        i64::from(e),
                        i64::from(f),
                    ],
                )
            })
    }

    proptest! {
        #[test]
        fn data_rows_round_trip(values in prop::collection::vec(
            prop::option::of(prop::collection::vec(any::<u8>(), 0..40)), 0..16)
        ) {
            let values: Vec<Option<&[u8]>> = values.iter().map(|v| v.as_deref()).collect();
            let msg = written(|o| encode::data_row(o, &values));
            prop_assert_eq!(crate::pgwire::check(&msg, &Limits::backend()), Ok(Some(msg.len())));
            let Ok(Message::DataRow(row)) = parse_with(&msg, &Limits::backend()) else {
                return Err(TestCaseError::fail("not a DataRow"));
            };
            prop_assert_eq!(row.len(), values.len());
            prop_assert_eq!(row.values().collect::<Vec<_>>(), values.clone());
            for (span, value) in row.spans().zip(&values) {
                prop_assert_eq!(span.map(|s| &msg[s]), *value);
            }
        }

        #[test]
        fn row_descriptions_round_trip(fields in prop::collection::vec(row_field_strategy(), 0..10)) {
            let expected: Vec<RowField<'_>> = fields
                .iter()
                .map(|(name, n)| RowField {
                    name,
                    table_oid: n[0] as u32,
                    column: n[1] as i16,
                    type_oid: n[2] as u32,
                    type_size: n[3] as i16,
                    type_modifier: n[4] as i32,
                    format: n[5] as i16,
                })
                .collect();
            let msg = written(|o| encode::row_description(o, &expected));
            let Ok(Message::RowDescription(rd)) = parse_with(&msg, &Limits::backend()) else {
                return Err(TestCaseError::fail("not a RowDescription"));
            };
            prop_assert_eq!(rd.fields().len(), expected.len());
            prop_assert_eq!(rd.fields().collect::<Vec<_>>(), expected);
        }

        #[test]
        fn error_fields_round_trip(fields in prop::collection::vec(
            (1u8..=255, prop::collection::vec(1u8..=255, 0..24)), 0..10)
        ) {
            let pairs: Vec<(u8, &[u8])> = fields.iter().map(|(c, v)| (*c, v.as_slice())).collect();
            let msg = written(|o| encode::error_response_fields(o, &pairs));
            let Ok(Message::ErrorResponse(f)) = parse(&msg) else {
                return Err(TestCaseError::fail("not an ErrorResponse"));
            };
            prop_assert_eq!(f.iter().collect::<Vec<_>>(), pairs.clone());
            for (code, _) in &pairs {
                let first = pairs.iter().find(|(c, _)| c == code).map(|(_, v)| *v);
                prop_assert_eq!(f.get(*code), first);
            }
            let msg = written(|o| encode::notice_response_fields(o, &pairs));
            let Ok(Message::NoticeResponse(f)) = parse(&msg) else {
                return Err(TestCaseError::fail("not a NoticeResponse"));
            };
            prop_assert_eq!(f.iter().collect::<Vec<_>>(), pairs);
        }

        #[test]
        fn noise_never_panics(noise in prop::collection::vec(any::<u8>(), 0..48)) {
            if let Ok(m) = parse(&noise) {
                render_backend(&m);
            }
        }

        #[test]
        fn framed_noise_never_panics(
            tag in prop::sample::select(b"RSKZTDCENAt123nsIGHWdcvVQ".to_vec()),
            body in prop::collection::vec(prop_oneof![Just(0u8), Just(0xffu8), any::<u8>()], 0..40),
        ) {
            let msg = written(|o| encode::message(o, tag, &body));
            if let Ok(m) = parse_with(&msg, &Limits::backend()) {
                render_backend(&m);
            }
        }

        #[test]
        fn mutated_messages_never_panic(
            which in any::<prop::sample::Index>(),
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
        ) {
            mutate_and_parse_backend(which, at, byte);
        }
    }
}
