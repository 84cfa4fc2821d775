//! A small, independent PostgreSQL frontend/backend protocol client.
//!
//! Like [`crate::resp`], it does not use the appliance's parser: the tests
//! check that parser, so this side is deliberately naive (whole messages in
//! memory, no TLS, cleartext passwords only) and only has to agree with what
//! PostgreSQL itself sends. Tests use it for what drivers will not do: send a
//! malformed message, a GSSENCRequest, or a CancelRequest with a chosen key,
//! and read the exact SQLSTATE and severity of an error during startup.

use crate::net::wait_closed;
use std::io::{self, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Protocol 3.0, the version every current driver speaks.
pub const PROTOCOL_VERSION: i32 = 196_608;
/// The request code of an SSLRequest.
pub const SSL_REQUEST_CODE: i32 = 80_877_103;
/// The request code of a GSSENCRequest.
pub const GSSENC_REQUEST_CODE: i32 = 80_877_104;
/// The request code of a CancelRequest.
pub const CANCEL_REQUEST_CODE: i32 = 80_877_102;
/// Largest backend message this client accepts; test replies are far smaller,
/// so anything above it means the stream is out of step.
pub const MESSAGE_BYTES_MAX: usize = 256 * 1024 * 1024;
/// How long a raw connection waits for one message by default.
pub const MESSAGE_TIMEOUT: Duration = Duration::from_secs(60);

/// One backend message: its type byte and its body (without the length).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The type byte, e.g. `b'E'` for ErrorResponse.
    pub tag: u8,
    /// The body after the length word.
    pub body: Vec<u8>,
}

/// The fields of an ErrorResponse or NoticeResponse.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ErrorFields {
    /// Every field, in order, as (field type, value).
    pub fields: Vec<(u8, String)>,
}

impl ErrorFields {
    /// The value of field `code` (e.g. `b'C'`), if present.
    pub fn get(&self, code: u8) -> Option<&str> {
        self.fields
            .iter()
            .find(|(c, _)| *c == code)
            .map(|(_, v)| v.as_str())
    }

    /// The non-localized severity (`V`), falling back to `S`.
    pub fn severity(&self) -> &str {
        self.get(b'V').or_else(|| self.get(b'S')).unwrap_or("")
    }

    /// The SQLSTATE (`C`).
    pub fn code(&self) -> &str {
        self.get(b'C').unwrap_or("")
    }

    /// The primary message (`M`).
    pub fn message(&self) -> &str {
        self.get(b'M').unwrap_or("")
    }

    /// Every field value joined, for "does not contain" checks.
    pub fn all_text(&self) -> String {
        self.fields
            .iter()
            .map(|(_, v)| v.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Message {
    /// The fields, when this is an ErrorResponse (`E`) or NoticeResponse (`N`).
    pub fn error_fields(&self) -> Option<ErrorFields> {
        if self.tag != b'E' && self.tag != b'N' {
            return None;
        }
        let mut fields = Vec::new();
        let mut rest = self.body.as_slice();
        while let Some((&code, after)) = rest.split_first() {
            if code == 0 {
                break;
            }
            let end = after.iter().position(|&b| b == 0)?;
            fields.push((code, String::from_utf8_lossy(&after[..end]).into_owned()));
            rest = &after[end + 1..];
        }
        Some(ErrorFields { fields })
    }

    /// The columns of a DataRow (`D`) as text; `None` for SQL NULL.
    pub fn data_row(&self) -> Option<Vec<Option<String>>> {
        if self.tag != b'D' {
            return None;
        }
        let count = u16::from_be_bytes(self.body.get(..2)?.try_into().ok()?);
        let mut rest = &self.body[2..];
        let mut row = Vec::with_capacity(usize::from(count));
        for _ in 0..count {
            let len = i32::from_be_bytes(rest.get(..4)?.try_into().ok()?);
            rest = &rest[4..];
            if len < 0 {
                row.push(None);
            } else {
                let len = usize::try_from(len).ok()?;
                row.push(Some(String::from_utf8_lossy(rest.get(..len)?).into_owned()));
                rest = &rest[len..];
            }
        }
        Some(row)
    }

    /// The (process id, secret key) of a BackendKeyData (`K`).
    pub fn backend_key(&self) -> Option<(i32, i32)> {
        if self.tag != b'K' || self.body.len() != 8 {
            return None;
        }
        let pid = i32::from_be_bytes(self.body[..4].try_into().ok()?);
        let key = i32::from_be_bytes(self.body[4..8].try_into().ok()?);
        Some((pid, key))
    }

    /// The (name, value) of a ParameterStatus (`S`).
    pub fn parameter(&self) -> Option<(String, String)> {
        if self.tag != b'S' {
            return None;
        }
        let mut parts = self.body.split(|&b| b == 0);
        let name = String::from_utf8_lossy(parts.next()?).into_owned();
        let value = String::from_utf8_lossy(parts.next()?).into_owned();
        Some((name, value))
    }

    /// The authentication request code of an Authentication message (`R`).
    pub fn auth_code(&self) -> Option<i32> {
        if self.tag != b'R' {
            return None;
        }
        Some(i32::from_be_bytes(self.body.get(..4)?.try_into().ok()?))
    }
}

// ---- frontend messages, built by hand ----

fn untyped(code_or_version: i32, payload: &[u8]) -> Vec<u8> {
    let len = i32::try_from(8 + payload.len()).expect("startup packet fits i32");
    let mut out = Vec::with_capacity(8 + payload.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&code_or_version.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// A StartupMessage (protocol 3.0) with `params` (e.g. `user`, `database`).
pub fn startup_message(params: &[(&str, &str)]) -> Vec<u8> {
    let mut payload = Vec::new();
    for (k, v) in params {
        payload.extend_from_slice(k.as_bytes());
        payload.push(0);
        payload.extend_from_slice(v.as_bytes());
        payload.push(0);
    }
    payload.push(0);
    untyped(PROTOCOL_VERSION, &payload)
}

/// An SSLRequest.
pub fn ssl_request() -> Vec<u8> {
    untyped(SSL_REQUEST_CODE, &[])
}

/// A GSSENCRequest.
pub fn gssenc_request() -> Vec<u8> {
    untyped(GSSENC_REQUEST_CODE, &[])
}

/// A CancelRequest for backend `pid` with secret `key`.
pub fn cancel_request(pid: i32, key: i32) -> Vec<u8> {
    let mut payload = Vec::with_capacity(8);
    payload.extend_from_slice(&pid.to_be_bytes());
    payload.extend_from_slice(&key.to_be_bytes());
    untyped(CANCEL_REQUEST_CODE, &payload)
}

/// A typed frontend message: `tag`, length, `body`.
pub fn typed(tag: u8, body: &[u8]) -> Vec<u8> {
    let len = i32::try_from(4 + body.len()).expect("message fits i32");
    let mut out = Vec::with_capacity(5 + body.len());
    out.push(tag);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// A simple Query (`Q`).
pub fn query(sql: &str) -> Vec<u8> {
    let mut body = sql.as_bytes().to_vec();
    body.push(0);
    typed(b'Q', &body)
}

/// A PasswordMessage (`p`) carrying a cleartext password.
pub fn password_message(password: &str) -> Vec<u8> {
    let mut body = password.as_bytes().to_vec();
    body.push(0);
    typed(b'p', &body)
}

/// A Terminate (`X`).
pub fn terminate() -> Vec<u8> {
    typed(b'X', &[])
}

/// What startup produced.
#[derive(Debug, Clone, Default)]
pub struct Startup {
    /// BackendKeyData (pid, key), if the server sent one.
    pub backend_key: Option<(i32, i32)>,
    /// Every ParameterStatus, in order.
    pub parameters: Vec<(String, String)>,
    /// The transaction status of the first ReadyForQuery.
    pub status: u8,
}

/// What a simple query produced, up to and including ReadyForQuery.
#[derive(Debug, Clone, Default)]
pub struct QueryResult {
    /// Every DataRow, as text.
    pub rows: Vec<Vec<Option<String>>>,
    /// Every CommandComplete tag.
    pub tags: Vec<String>,
    /// The ErrorResponse, if any.
    pub error: Option<ErrorFields>,
    /// Every NoticeResponse.
    pub notices: Vec<ErrorFields>,
    /// The transaction status byte of ReadyForQuery (`I`, `T` or `E`).
    pub status: u8,
}

/// A connection that speaks the PostgreSQL protocol message by message.
#[derive(Debug)]
pub struct PgRaw {
    reader: BufReader<TcpStream>,
}

impl PgRaw {
    /// Connects to 127.0.0.1:`port`.
    pub fn connect(port: u16) -> io::Result<Self> {
        let stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(MESSAGE_TIMEOUT))?;
        stream.set_write_timeout(Some(MESSAGE_TIMEOUT))?;
        Ok(PgRaw {
            reader: BufReader::with_capacity(64 * 1024, stream),
        })
    }

    /// Connects, panicking on failure.
    pub fn open(port: u16) -> Self {
        Self::connect(port).unwrap_or_else(|e| panic!("connect to 127.0.0.1:{port}: {e}"))
    }

    /// Connects and completes startup as `user` on `database` with no
    /// password, panicking unless the server ends up ready for queries.
    pub fn session(port: u16, user: &str, database: &str) -> (Self, Startup) {
        let mut c = Self::open(port);
        let startup = c
            .startup(&[("user", user), ("database", database)], None)
            .unwrap_or_else(|e| panic!("startup on 127.0.0.1:{port}: {e}"));
        (c, startup)
    }

    /// The underlying socket.
    pub fn stream(&self) -> &TcpStream {
        self.reader.get_ref()
    }

    /// Writes raw bytes.
    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.reader.get_mut().write_all(bytes)
    }

    /// Reads one byte (the answer to an SSLRequest or GSSENCRequest).
    pub fn read_byte(&mut self) -> io::Result<u8> {
        let mut b = [0u8; 1];
        self.reader.read_exact(&mut b)?;
        Ok(b[0])
    }

    /// Reads one backend message.
    pub fn read(&mut self) -> io::Result<Message> {
        let mut head = [0u8; 5];
        self.reader.read_exact(&mut head)?;
        let len = i32::from_be_bytes([head[1], head[2], head[3], head[4]]);
        let body_len = usize::try_from(len)
            .ok()
            .and_then(|l| l.checked_sub(4))
            .filter(|&l| l <= MESSAGE_BYTES_MAX)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("message {:?} with length {len}", char::from(head[0])),
                )
            })?;
        let mut body = vec![0u8; body_len];
        self.reader.read_exact(&mut body)?;
        Ok(Message { tag: head[0], body })
    }

    /// Sends a StartupMessage with `params` and reads until ReadyForQuery.
    /// Answers a cleartext password request with `password`. An
    /// ErrorResponse, any other authentication request, or EOF is an `Err`
    /// carrying what was received.
    pub fn startup(
        &mut self,
        params: &[(&str, &str)],
        password: Option<&str>,
    ) -> Result<Startup, StartupError> {
        self.send(&startup_message(params))
            .map_err(StartupError::Io)?;
        let mut out = Startup::default();
        loop {
            let m = self.read().map_err(StartupError::Io)?;
            match m.tag {
                b'R' => match (m.auth_code(), password) {
                    (Some(0), _) => {}
                    (Some(3), Some(pw)) => {
                        self.send(&password_message(pw)).map_err(StartupError::Io)?;
                    }
                    (code, _) => return Err(StartupError::Auth(code.unwrap_or(-1))),
                },
                b'K' => out.backend_key = m.backend_key(),
                b'S' => out.parameters.extend(m.parameter()),
                b'N' => {}
                b'E' => {
                    return Err(StartupError::Server(
                        m.error_fields().expect("ErrorResponse fields"),
                    ));
                }
                b'Z' => {
                    out.status = m.body.first().copied().unwrap_or(0);
                    return Ok(out);
                }
                other => return Err(StartupError::Unexpected(other)),
            }
        }
    }

    /// Reads messages until an ErrorResponse arrives, skipping others (e.g.
    /// ParameterStatus); EOF or any I/O error is an `Err`.
    pub fn read_error(&mut self) -> io::Result<ErrorFields> {
        loop {
            let m = self.read()?;
            if m.tag == b'E' {
                return Ok(m.error_fields().expect("ErrorResponse fields"));
            }
        }
    }

    /// Sends a simple query and reads everything up to ReadyForQuery.
    pub fn simple_query(&mut self, sql: &str) -> io::Result<QueryResult> {
        self.send(&query(sql))?;
        self.read_query_result()
    }

    /// Reads the results of a query already sent, up to ReadyForQuery.
    pub fn read_query_result(&mut self) -> io::Result<QueryResult> {
        let mut out = QueryResult::default();
        loop {
            let m = self.read()?;
            match m.tag {
                b'D' => out.rows.extend(m.data_row()),
                b'C' => out.tags.push(
                    String::from_utf8_lossy(m.body.strip_suffix(&[0]).unwrap_or(&m.body))
                        .into_owned(),
                ),
                b'E' => out.error = m.error_fields(),
                b'N' => out.notices.extend(m.error_fields()),
                b'Z' => {
                    out.status = m.body.first().copied().unwrap_or(0);
                    return Ok(out);
                }
                _ => {}
            }
        }
    }

    /// Sends a simple query and returns the first column of every row,
    /// panicking on an error or a NULL.
    pub fn column(&mut self, sql: &str) -> Vec<String> {
        let r = self
            .simple_query(sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        if let Some(e) = &r.error {
            panic!("{sql}: {} {}", e.code(), e.message());
        }
        r.rows
            .into_iter()
            .map(|row| {
                row.into_iter()
                    .next()
                    .flatten()
                    .unwrap_or_else(|| panic!("{sql}: a NULL or empty row"))
            })
            .collect()
    }

    /// Whether bytes (or EOF) are ready to read now, without consuming them.
    pub fn readable_now(&mut self) -> bool {
        use std::io::BufRead;
        if !self.reader.buffer().is_empty() {
            return true;
        }
        let _ = self
            .reader
            .get_ref()
            .set_read_timeout(Some(Duration::from_millis(1)));
        let ready = match self.reader.fill_buf() {
            Ok(_) => true,
            Err(e) => !matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ),
        };
        let _ = self
            .reader
            .get_ref()
            .set_read_timeout(Some(MESSAGE_TIMEOUT));
        ready
    }

    /// Waits up to `timeout` for the peer to close the connection; see
    /// [`crate::net::wait_closed`].
    pub fn wait_closed(&mut self, timeout: Duration) -> Result<(), String> {
        wait_closed(&mut self.reader, timeout, MESSAGE_TIMEOUT)
    }
}

/// Why startup did not reach ReadyForQuery.
#[derive(Debug)]
pub enum StartupError {
    /// The socket failed or closed.
    Io(io::Error),
    /// The server sent an ErrorResponse.
    Server(ErrorFields),
    /// The server asked for an authentication method this client lacks.
    Auth(i32),
    /// A message that has no place in startup.
    Unexpected(u8),
}

impl std::fmt::Display for StartupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartupError::Io(e) => write!(f, "I/O: {e}"),
            StartupError::Server(e) => {
                write!(f, "{} {}: {}", e.severity(), e.code(), e.message())
            }
            StartupError::Auth(code) => write!(f, "unsupported authentication request {code}"),
            StartupError::Unexpected(tag) => {
                write!(
                    f,
                    "unexpected message {:?} during startup",
                    char::from(*tag)
                )
            }
        }
    }
}

impl StartupError {
    /// The ErrorResponse, panicking with what happened instead.
    pub fn into_server_error(self) -> ErrorFields {
        match self {
            StartupError::Server(e) => e,
            other => panic!("expected an ErrorResponse during startup, got {other}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_and_parses_messages() {
        assert_eq!(ssl_request(), [0, 0, 0, 8, 4, 210, 22, 47]);
        assert_eq!(gssenc_request(), [0, 0, 0, 8, 4, 210, 22, 48]);
        assert_eq!(
            cancel_request(7, -1),
            [0, 0, 0, 16, 4, 210, 22, 46, 0, 0, 0, 7, 255, 255, 255, 255]
        );
        assert_eq!(query("SELECT 1"), b"Q\0\0\0\x0dSELECT 1\0");
        let s = startup_message(&[("user", "a")]);
        assert_eq!(&s[..8], [0, 0, 0, 16, 0, 3, 0, 0]);
        assert_eq!(&s[8..], b"user\0a\0\0");

        let e = Message {
            tag: b'E',
            body: b"SFATAL\0VFATAL\0C08006\0Mcustos: upstream unavailable\0\0".to_vec(),
        };
        let f = e.error_fields().expect("fields");
        assert_eq!(f.severity(), "FATAL");
        assert_eq!(f.code(), "08006");
        assert_eq!(f.message(), "custos: upstream unavailable");

        let d = Message {
            tag: b'D',
            body: vec![0, 2, 0, 0, 0, 1, b'1', 255, 255, 255, 255],
        };
        assert_eq!(d.data_row(), Some(vec![Some("1".into()), None]));
        let k = Message {
            tag: b'K',
            body: vec![0, 0, 0, 42, 255, 255, 255, 254],
        };
        assert_eq!(k.backend_key(), Some((42, -2)));
    }
}
