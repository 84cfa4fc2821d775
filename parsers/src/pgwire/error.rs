//! The one error type of the PostgreSQL wire protocol parsers.
//!
//! "Not enough bytes yet" is never an error: [`header`](super::header),
//! [`check`](super::check) and [`startup_len`](super::startup_len) report it
//! as `Ok(None)`. Every variant here means the bytes can never become a
//! valid message. Lengths frame the stream, so after an error the stream
//! cannot be resynchronised: the connection should be closed, after an
//! ErrorResponse where the peer is a client.
//!
//! `what` fields name the message (or message part) that was being read,
//! in the protocol documentation's words (`"DataRow"`, `"Bind"`), so that a
//! logged error says where the stream went wrong.

use std::fmt;

/// Why bytes are not a valid PostgreSQL protocol message, or are refused
/// by a [`Limits`](super::Limits).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// A tagged message declares a length below 4 (the length word counts
    /// itself) or above `i32::MAX` (the word is signed on the wire).
    BadLength {
        /// The message's type byte.
        tag: u8,
        /// The declared length.
        len: u32,
    },
    /// A tagged message declares a length above the limit for its tag
    /// ([`Limits::message_bytes_max_for`](super::Limits::message_bytes_max_for)).
    TooLong {
        /// The message's type byte.
        tag: u8,
        /// The declared length (length word and body, not the type byte).
        len: u32,
        /// The limit in force for this tag.
        max: usize,
    },
    /// A startup-phase message declares a length below 8 (length word and
    /// request code) or above `i32::MAX`.
    BadStartupLength {
        /// The declared length.
        len: u32,
    },
    /// A startup-phase message declares a length above
    /// [`Limits::startup_bytes_max`](super::Limits::startup_bytes_max).
    StartupTooLong {
        /// The declared length.
        len: u32,
        /// The limit in force.
        max: usize,
    },
    /// A whole-message parser was handed a slice whose length is not the
    /// message's declared length: the caller did not cut the stream at the
    /// length [`check`](super::check) or [`startup_len`](super::startup_len)
    /// returned.
    LengthMismatch {
        /// The length the message declares, in bytes of the whole message.
        declared: usize,
        /// The length of the slice.
        actual: usize,
    },
    /// A field (or a count of fields) runs past the end of its message.
    Truncated {
        /// What was being read.
        what: &'static str,
    },
    /// A string field has no NUL terminator before the end of its message.
    MissingTerminator {
        /// What was being read.
        what: &'static str,
    },
    /// A message holds bytes after its last field.
    TrailingBytes {
        /// The message.
        what: &'static str,
        /// How many bytes are left over.
        count: usize,
    },
    /// A type byte that no message in this direction has.
    UnknownTag(u8),
    /// A startup-phase request code that is neither a special request nor
    /// protocol major version 3.
    BadStartupCode(u32),
    /// A value length that is negative but not -1 (SQL NULL).
    BadValueLength {
        /// The message.
        what: &'static str,
        /// The declared value length.
        len: i32,
    },
    /// A message carries more columns or parameters than
    /// [`Limits::fields_max`](super::Limits::fields_max).
    TooManyFields {
        /// The message.
        what: &'static str,
        /// The declared count.
        count: usize,
        /// The limit in force.
        max: usize,
    },
    /// A byte that must be one of a few values (Describe or Close kind,
    /// ReadyForQuery status) is not.
    UnexpectedByte {
        /// The field.
        what: &'static str,
        /// The byte found.
        byte: u8,
    },
    /// A cancellation secret (BackendKeyData, CancelRequest) shorter than
    /// [`CANCEL_SECRET_BYTES_MIN`](super::CANCEL_SECRET_BYTES_MIN) or longer
    /// than [`CANCEL_SECRET_BYTES_MAX`](super::CANCEL_SECRET_BYTES_MAX).
    BadSecretLength {
        /// The secret's length.
        len: usize,
    },
}

/// The type byte as a character when printable, else as hex.
struct Tag(u8);

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_ascii_graphic() {
            write!(f, "'{}'", char::from(self.0))
        } else {
            write!(f, "0x{:02x}", self.0)
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadLength { tag, len } => {
                write!(f, "message {} declares invalid length {len}", Tag(*tag))
            }
            Self::TooLong { tag, len, max } => write!(
                f,
                "message {} length {len} exceeds the limit of {max} bytes",
                Tag(*tag)
            ),
            Self::BadStartupLength { len } => {
                write!(f, "startup packet declares invalid length {len}")
            }
            Self::StartupTooLong { len, max } => write!(
                f,
                "startup packet length {len} exceeds the limit of {max} bytes"
            ),
            Self::LengthMismatch { declared, actual } => write!(
                f,
                "message declares {declared} bytes but {actual} were given"
            ),
            Self::Truncated { what } => write!(f, "{what} runs past the end of its message"),
            Self::MissingTerminator { what } => {
                write!(f, "{what} has a string without a NUL terminator")
            }
            Self::TrailingBytes { what, count } => {
                write!(f, "{what} has {count} unexpected trailing bytes")
            }
            Self::UnknownTag(tag) => write!(f, "unknown message type {}", Tag(*tag)),
            Self::BadStartupCode(code) => write!(
                f,
                "unsupported protocol version {}.{} (code {code})",
                code >> 16,
                code & 0xffff
            ),
            Self::BadValueLength { what, len } => {
                write!(f, "{what} has invalid value length {len}")
            }
            Self::TooManyFields { what, count, max } => {
                write!(f, "{what} has {count} fields, more than the limit of {max}")
            }
            Self::UnexpectedByte { what, byte } => {
                write!(f, "invalid {what} {}", Tag(*byte))
            }
            Self::BadSecretLength { len } => {
                write!(
                    f,
                    "cancellation secret of {len} bytes is not 4 to 256 bytes"
                )
            }
        }
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::Error;

    #[test]
    fn display_names_the_message_and_the_limit() {
        let cases: &[(Error, &str)] = &[
            (
                Error::BadLength { tag: b'Q', len: 3 },
                "message 'Q' declares invalid length 3",
            ),
            (
                Error::TooLong {
                    tag: 0x16,
                    len: 50_000,
                    max: 10_000,
                },
                "message 0x16 length 50000 exceeds the limit of 10000 bytes",
            ),
            (
                Error::StartupTooLong {
                    len: 20_000,
                    max: 10_004,
                },
                "startup packet length 20000 exceeds the limit of 10004 bytes",
            ),
            (
                Error::MissingTerminator { what: "Query" },
                "Query has a string without a NUL terminator",
            ),
            (
                Error::TrailingBytes {
                    what: "Sync",
                    count: 2,
                },
                "Sync has 2 unexpected trailing bytes",
            ),
            (Error::UnknownTag(b'!'), "unknown message type '!'"),
            (
                Error::BadStartupCode(2 << 16),
                "unsupported protocol version 2.0 (code 131072)",
            ),
            (
                Error::TooManyFields {
                    what: "DataRow",
                    count: 1665,
                    max: 1664,
                },
                "DataRow has 1665 fields, more than the limit of 1664",
            ),
            (
                Error::UnexpectedByte {
                    what: "Describe kind",
                    byte: b'x',
                },
                "invalid Describe kind 'x'",
            ),
        ];
        for (error, text) in cases {
            assert_eq!(error.to_string(), *text);
        }
    }
}
