//! The one error type of the RESP parsers.
//!
//! "Not enough bytes yet" is never an error: the parsers report it as
//! `Ok(None)`, an incomplete [`Scan`](super::Scan) or
//! [`HeadStatus::Incomplete`](super::HeadStatus::Incomplete). Every variant
//! here means the bytes can never become a valid frame, so the connection
//! that sent them cannot be resynchronised and should be closed after
//! replying with the error.

use std::fmt;

/// Why a byte stream is not valid RESP, or is refused by a [`Limits`](super::Limits).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// A frame starts with a byte that is not a RESP2/RESP3 type marker.
    InvalidTypeByte(u8),
    /// A length or element count is not a canonical decimal number, or is
    /// negative where only `-1` (null) is allowed, or `-1` where null is not
    /// allowed (e.g. a `$-1` argument in a command).
    InvalidLength,
    /// An integer (`:`) or big number (`(`) is not a canonical decimal
    /// number (optional `-`, no leading zeros, no `-0`), or an integer does
    /// not fit in 64 bits.
    InvalidInteger,
    /// A double (`,`) is neither a decimal number with optional fraction and
    /// exponent nor `inf`, `-inf` or `nan`.
    InvalidDouble,
    /// A boolean (`#`) is neither `t` nor `f`.
    InvalidBoolean,
    /// A null (`_`) carries data before its line terminator.
    InvalidNull,
    /// A verbatim string (`=`) payload is shorter than 4 bytes or has no `:`
    /// after its 3-byte format.
    InvalidVerbatim,
    /// A line ends with a bare `\n`, a `\r` is followed by something other
    /// than `\n`, or a bulk payload is not followed by `\r\n`.
    MissingCrlf,
    /// A bulk payload is longer than [`Limits::bulk_bytes_max`](super::Limits::bulk_bytes_max).
    BulkLengthTooLarge {
        /// Declared payload length.
        len: u64,
        /// The limit in force.
        max: usize,
    },
    /// An aggregate holds more frames than [`Limits::elements_max`](super::Limits::elements_max)
    /// (a map or attribute of `n` pairs holds `2n` frames).
    TooManyElements {
        /// Number of frames the header announces.
        count: u64,
        /// The limit in force.
        max: usize,
    },
    /// Aggregates are nested deeper than [`Limits::depth_max`](super::Limits::depth_max).
    NestingTooDeep {
        /// The limit in force.
        max: usize,
    },
    /// A line is longer than [`Limits::line_bytes_max`](super::Limits::line_bytes_max)
    /// (or that many bytes arrived without a line terminator).
    LineTooLong {
        /// The limit in force.
        max: usize,
    },
    /// A RESP3 streamed string or aggregate (`$?`, `*?`, `;`, `.`), which
    /// no Redis server sends and this proxy does not relay.
    StreamedTypeUnsupported,
    /// An argument of a client command is not a `$` bulk string.
    ExpectedBulkString,
    /// An inline command has an unterminated quote, or a closing quote
    /// followed by something other than whitespace.
    UnbalancedQuotes,
    /// A command has no arguments where one is required. The parsers
    /// themselves report blank commands as
    /// [`HeadStatus::Empty`](super::HeadStatus::Empty) (the server ignores
    /// them); callers that need a command name use this variant.
    EmptyCommand,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidTypeByte(b) => {
                write!(f, "invalid RESP type byte {:?}", char::from(*b))
            }
            Self::InvalidLength => f.write_str("invalid length"),
            Self::InvalidInteger => f.write_str("invalid integer"),
            Self::InvalidDouble => f.write_str("invalid double"),
            Self::InvalidBoolean => f.write_str("invalid boolean"),
            Self::InvalidNull => f.write_str("invalid null"),
            Self::InvalidVerbatim => f.write_str("invalid verbatim string"),
            Self::MissingCrlf => f.write_str("line not terminated by CRLF"),
            Self::BulkLengthTooLarge { len, max } => {
                write!(f, "bulk length {len} exceeds the limit of {max} bytes")
            }
            Self::TooManyElements { count, max } => {
                write!(f, "{count} elements exceed the limit of {max}")
            }
            Self::NestingTooDeep { max } => {
                write!(f, "aggregates nested deeper than {max} levels")
            }
            Self::LineTooLong { max } => write!(f, "line longer than {max} bytes"),
            Self::StreamedTypeUnsupported => f.write_str("streamed RESP3 types are not supported"),
            Self::ExpectedBulkString => f.write_str("command argument is not a bulk string"),
            Self::UnbalancedQuotes => f.write_str("unbalanced quotes in request"),
            Self::EmptyCommand => f.write_str("empty command"),
        }
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::Error;

    #[test]
    fn display_names_the_limit() {
        let cases: &[(Error, &str)] = &[
            (Error::InvalidTypeByte(b'x'), "invalid RESP type byte 'x'"),
            (
                Error::BulkLengthTooLarge { len: 10, max: 5 },
                "bulk length 10 exceeds the limit of 5 bytes",
            ),
            (
                Error::TooManyElements { count: 3, max: 2 },
                "3 elements exceed the limit of 2",
            ),
            (
                Error::NestingTooDeep { max: 32 },
                "aggregates nested deeper than 32 levels",
            ),
            (Error::LineTooLong { max: 7 }, "line longer than 7 bytes"),
            (Error::UnbalancedQuotes, "unbalanced quotes in request"),
        ];
        for (error, text) in cases {
            assert_eq!(error.to_string(), *text);
        }
    }
}
