//! The bounds every PostgreSQL message is held to before the proxy buffers
//! it.
//!
//! The peer controls every length word in the stream. Without a bound per
//! message kind, four bytes (`Q\x7f\xff\xff\xff`) would make the proxy wait
//! for, and buffer, two gigabytes; a TLS ClientHello sent to a plaintext
//! port would look like a message of hundreds of megabytes. PostgreSQL
//! itself bounds messages per kind (`pq_getmessage(.., maxlen)`), and the
//! presets here mirror what the server and libpq accept, so the proxy
//! refuses nothing either end would accept.
//!
//! All lengths are compared with the message's *declared length*, the
//! 32-bit length word, which counts itself and the body but not the type
//! byte: exactly the number PostgreSQL compares with its limits.

/// `PQ_LARGE_MESSAGE_LIMIT` (`MaxAllocSize - 1`): the server's bound on
/// Query, Parse, Bind, FunctionCall and CopyData.
const LARGE_MESSAGE_BYTES_MAX: usize = 0x3fff_fffe;

/// `PQ_SMALL_MESSAGE_LIMIT`: the server's bound on every other message a
/// client sends after authentication (Sync, Describe, Execute, Close, ...).
const FRONTEND_SMALL_MESSAGE_BYTES_MAX: usize = 10_000;

/// libpq refuses backend messages longer than this unless their kind may
/// be long (`VALID_LONG_MESSAGE_TYPE`); the server never sends one.
const BACKEND_SMALL_MESSAGE_BYTES_MAX: usize = 30_000;

/// `PG_MAX_AUTH_TOKEN_LENGTH`: the server's bound on PasswordMessage and
/// the SASL and GSS responses, all tagged `'p'`. Long enough for a bearer
/// token (JWTs with many claims run to 8 KiB and more) in a password.
const AUTH_MESSAGE_BYTES_MAX: usize = 65_535;

/// `MaxTupleAttributeNumber`: no row the server sends has more columns.
const COLUMNS_MAX: usize = 1_664;

/// Parameter counts are unsigned 16-bit on the wire and the server accepts
/// all of them (bulk inserts through drivers do use tens of thousands).
const PARAMS_MAX: usize = u16::MAX as usize;

/// `MAX_STARTUP_PACKET_LENGTH` (10000) bounds the startup packet after its
/// length word; the declared length also counts the word itself.
const STARTUP_BYTES_MAX: usize = 10_000 + 4;

/// Which peer sends the messages: type bytes mean different messages in
/// each direction (`'D'` is Describe from a client and DataRow from a
/// server), and so do their bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Client to server: [`frontend`](super::frontend) messages.
    Frontend,
    /// Server to client: [`backend`](super::backend) messages.
    Backend,
}

/// Bounds on what a PostgreSQL stream may declare. [`header`](super::header),
/// [`check`](super::check), [`startup_len`](super::startup_len) and the
/// `parse_with` functions apply them; the plain `parse` functions check
/// structure only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The direction the limits apply to; it decides which tags are
    /// "large" and which one carries authentication.
    pub direction: Direction,
    /// Largest declared length of a message of a kind that may be long:
    /// from clients Query, Parse, Bind, FunctionCall and CopyData; from
    /// servers RowDescription, DataRow, CopyData, FunctionCallResponse,
    /// ErrorResponse, NoticeResponse, NotificationResponse and
    /// ParameterDescription.
    pub message_bytes_max: usize,
    /// Largest declared length of a message of every other kind.
    pub small_message_bytes_max: usize,
    /// Largest declared length of a client's `'p'` message
    /// (PasswordMessage, SASLInitialResponse, SASLResponse, GSSResponse).
    /// Not used for server messages.
    pub auth_message_bytes_max: usize,
    /// Most columns in a RowDescription, DataRow or Copy response, and most
    /// parameters (or parameter format codes) in a Parse, Bind or
    /// FunctionCall. Applied by the `parse_with` functions.
    pub fields_max: usize,
    /// Largest declared length of a startup-phase message (StartupMessage,
    /// SSLRequest, GSSENCRequest, CancelRequest).
    pub startup_bytes_max: usize,
}

impl Limits {
    /// Limits for what clients send, as the PostgreSQL server enforces
    /// them: 1 GiB - 2 bytes for the large kinds, 10000 bytes for the
    /// others, 65535 for authentication messages, 65535 parameters, and
    /// 10000 bytes of startup packet after its length word.
    pub const fn frontend() -> Self {
        Self {
            direction: Direction::Frontend,
            message_bytes_max: LARGE_MESSAGE_BYTES_MAX,
            small_message_bytes_max: FRONTEND_SMALL_MESSAGE_BYTES_MAX,
            auth_message_bytes_max: AUTH_MESSAGE_BYTES_MAX,
            fields_max: PARAMS_MAX,
            startup_bytes_max: STARTUP_BYTES_MAX,
        }
    }

    /// Limits for what servers send, as libpq enforces them: 1 GiB - 2
    /// bytes for the kinds that may be long (libpq's list, plus
    /// ParameterDescription, which a statement with more than 7499
    /// parameters makes longer than libpq's bound), 30000 bytes for the
    /// others, and 1664 columns per row.
    pub const fn backend() -> Self {
        Self {
            direction: Direction::Backend,
            message_bytes_max: LARGE_MESSAGE_BYTES_MAX,
            small_message_bytes_max: BACKEND_SMALL_MESSAGE_BYTES_MAX,
            auth_message_bytes_max: AUTH_MESSAGE_BYTES_MAX,
            fields_max: COLUMNS_MAX,
            startup_bytes_max: STARTUP_BYTES_MAX,
        }
    }

    /// The largest declared length allowed for a message tagged `tag` in
    /// this direction. Unknown tags get the small bound: they are refused
    /// when parsed, and should not make the proxy buffer much first.
    #[inline]
    pub const fn message_bytes_max_for(&self, tag: u8) -> usize {
        match self.direction {
            Direction::Frontend => match tag {
                b'Q' | b'P' | b'B' | b'F' | b'd' => self.message_bytes_max,
                b'p' => self.auth_message_bytes_max,
                _ => self.small_message_bytes_max,
            },
            Direction::Backend => match tag {
                b'T' | b'D' | b'd' | b'V' | b'E' | b'N' | b'A' | b't' => self.message_bytes_max,
                _ => self.small_message_bytes_max,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Direction, Limits};

    #[test]
    fn presets_match_the_server_and_libpq() {
        let fe = Limits::frontend();
        assert_eq!(fe.direction, Direction::Frontend);
        assert_eq!(fe.message_bytes_max, (1 << 30) - 2);
        assert_eq!(fe.startup_bytes_max, 10_004);
        assert_eq!(fe.fields_max, 65_535);
        let be = Limits::backend();
        assert_eq!(be.direction, Direction::Backend);
        assert_eq!(be.fields_max, 1_664);
    }

    #[test]
    fn colliding_tags_get_their_direction_s_bound() {
        let fe = Limits::frontend();
        let be = Limits::backend();
        // 'D': Describe (small) from clients, DataRow (large) from servers.
        assert_eq!(fe.message_bytes_max_for(b'D'), 10_000);
        assert_eq!(be.message_bytes_max_for(b'D'), (1 << 30) - 2);
        // 'E': Execute vs ErrorResponse.
        assert_eq!(fe.message_bytes_max_for(b'E'), 10_000);
        assert_eq!(be.message_bytes_max_for(b'E'), (1 << 30) - 2);
        // 'S': Sync vs ParameterStatus, both small.
        assert_eq!(fe.message_bytes_max_for(b'S'), 10_000);
        assert_eq!(be.message_bytes_max_for(b'S'), 30_000);
        assert_eq!(fe.message_bytes_max_for(b'p'), 65_535);
        assert_eq!(be.message_bytes_max_for(b'p'), 30_000);
        for tag in [b'Q', b'P', b'B', b'F', b'd'] {
            assert_eq!(fe.message_bytes_max_for(tag), (1 << 30) - 2);
        }
        assert_eq!(fe.message_bytes_max_for(0x16), 10_000);
    }
}
