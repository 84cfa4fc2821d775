//! Opening the connection to the store, as the appliance.
//!
//! Each client connection gets its own upstream connection, authenticated
//! with the appliance's credential (`upstream_user`, `upstream_password_*`),
//! which the client never sees. The AUTH command is encoded once per target
//! and kept, like the credential, out of every log line and error.

use custos_parsers::resp::{self, Frame, Limits};
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;

use crate::config::Target;
pub use crate::proxy::upstream::UpstreamError;
use crate::proxy::upstream::within_connect_timeout;

/// Largest reply to the appliance's AUTH that is read.
const AUTH_REPLY_BYTES_MAX: usize = 4096;

/// The pre-encoded `AUTH user password` command for a target, or `None`
/// when the store needs no credential.
pub fn auth_command(target: &Target) -> Option<Box<[u8]>> {
    let pw = target.upstream_password.as_ref()?;
    let mut out = Vec::with_capacity(64 + pw.expose().len());
    match &target.upstream_user {
        Some(user) => resp::encode::command(&mut out, &[b"AUTH", user.as_bytes(), pw.expose()]),
        None => resp::encode::command(&mut out, &[b"AUTH", pw.expose()]),
    }
    Some(out.into_boxed_slice())
}

/// Connects to the store and authenticates; bounded by the target's
/// `connect_timeout_ms` as a whole.
pub async fn connect(target: &Target, auth: Option<&[u8]>) -> Result<TcpStream, UpstreamError> {
    within_connect_timeout(target, connect_inner(target, auth)).await
}

async fn connect_inner(target: &Target, auth: Option<&[u8]>) -> Result<TcpStream, UpstreamError> {
    let connect_err = |e: std::io::Error| UpstreamError::Connect {
        addr: target.upstream.clone(),
        reason: e.to_string(),
    };
    let mut stream = TcpStream::connect(target.upstream.as_str())
        .await
        .map_err(connect_err)?;
    stream.set_nodelay(true).map_err(connect_err)?;
    let Some(auth) = auth else {
        return Ok(stream);
    };
    // The command is copied into an owned buffer because the write gives the
    // buffer to the kernel; this happens once per connection.
    let (res, _) = stream.write_all(auth.to_vec()).await;
    res.map_err(connect_err)?;

    let mut buf: Vec<u8> = Vec::with_capacity(256);
    loop {
        if buf.len() == buf.capacity() {
            if buf.len() >= AUTH_REPLY_BYTES_MAX {
                return Err(UpstreamError::Malformed {
                    addr: target.upstream.clone(),
                    what: format!("a reply to AUTH longer than {AUTH_REPLY_BYTES_MAX} bytes"),
                });
            }
            buf.reserve(buf.len());
        }
        let len = buf.len();
        let (res, slice) = stream
            .read(monoio::buf::IoBufMut::slice_mut(buf, len..))
            .await;
        buf = slice.into_inner();
        match res {
            Ok(0) => {
                return Err(UpstreamError::Connect {
                    addr: target.upstream.clone(),
                    reason: "closed the connection during authentication".into(),
                });
            }
            Ok(_) => {}
            Err(e) => return Err(connect_err(e)),
        }
        match resp::parse(&buf, &Limits::reply()) {
            Ok(None) => continue,
            Ok(Some((frame, _))) => {
                return match frame {
                    Frame::Simple(_) => Ok(stream),
                    Frame::Error(m) | Frame::BulkError(m) => Err(UpstreamError::Credential {
                        addr: target.upstream.clone(),
                        user: target
                            .upstream_user
                            .clone()
                            .unwrap_or_else(|| "default".into()),
                        message: String::from_utf8_lossy(m.slice(&buf)).into_owned(),
                    }),
                    _ => Err(UpstreamError::Malformed {
                        addr: target.upstream.clone(),
                        what: "a malformed reply to AUTH".into(),
                    }),
                };
            }
            Err(_) => {
                return Err(UpstreamError::Malformed {
                    addr: target.upstream.clone(),
                    what: "a malformed reply to AUTH".into(),
                });
            }
        }
    }
}
