//! The client's side of the startup phase: TLS negotiation, cancel
//! requests, and the StartupMessage.

use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use custos_parsers::pgwire::{self, Startup, encode};
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use tracing::{debug, info, warn};

use super::sqlstate;
use super::upstream::open_transport;
use crate::metrics::ErrorKind;
use crate::proxy::buffer::ConnBuf;
use crate::proxy::stream::{self, StreamRead, StreamWrite};
use crate::runtime::shard::{ShardCtx, TargetCtx};

/// How long a client may take from connecting to a complete
/// StartupMessage (TLS handshake included); PostgreSQL's own
/// `authentication_timeout` is a minute.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// First byte of a TLS handshake record: a client starting TLS directly.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;
/// How long forwarding a cancel request may take.
const CANCEL_TIMEOUT: Duration = Duration::from_secs(5);
/// Startup parameters the appliance sets itself or refuses; the client's
/// values never reach the store.
const NOT_FORWARDED: [&[u8]; 3] = [b"user", b"database", b"replication"];

/// A client that completed its StartupMessage.
pub struct ClientStart {
    /// The receiving half (under TLS when negotiated).
    pub read: StreamRead,
    /// The sending half.
    pub write: StreamWrite,
    /// Bytes the client sent after its StartupMessage.
    pub buf: ConnBuf,
    /// The user the client named (the person; not the store's user).
    pub user: Vec<u8>,
    /// The database the client asked for.
    pub database: Option<Vec<u8>>,
    /// Parameters to pass on to the store.
    pub params: Vec<(Vec<u8>, Vec<u8>)>,
    /// Minor protocol version the client asked for.
    pub minor: u16,
    /// Protocol options (`_pq_.*`) the appliance does not support.
    pub unrecognized: Vec<Vec<u8>>,
}

/// Runs the client's startup phase. `None` when the connection ended
/// there (a cancel request, a refusal, a client that went away).
pub async fn accept(
    shard: &Rc<ShardCtx>,
    target: &Rc<TargetCtx>,
    tcp: TcpStream,
    peer: SocketAddr,
) -> Option<ClientStart> {
    let run = accept_inner(shard, target, tcp, peer);
    match monoio::time::timeout(STARTUP_TIMEOUT, run).await {
        Ok(r) => r,
        Err(_) => {
            debug!(target = %target.target.name, %peer, "startup timed out");
            None
        }
    }
}

async fn accept_inner(
    shard: &Rc<ShardCtx>,
    target: &Rc<TargetCtx>,
    mut tcp: TcpStream,
    peer: SocketAddr,
) -> Option<ClientStart> {
    let limits = pgwire::Limits::frontend();
    let mut buf = ConnBuf::new(target.target.buffer_bytes_max);
    let mut tls: Option<rustls::Connection> = None;
    let mut declined_gss = false;

    // In clear: requests to start TLS or GSSAPI encryption, a cancel
    // request, or the StartupMessage itself.
    loop {
        if buf.bytes().first() == Some(&TLS_HANDSHAKE_RECORD) {
            let config = target.target.client_tls.as_ref()?;
            let mut conn = stream::accept_state(config).ok()?;
            let received = buf.take();
            if let Err(e) = stream::handshake(&mut tcp, &mut conn, &received, STARTUP_TIMEOUT).await
            {
                debug!(target = %target.target.name, %peer, error = %e, "direct TLS handshake failed");
                return None;
            }
            buf.reset();
            // Direct TLS is only for clients that say they speak
            // PostgreSQL inside it.
            if conn.alpn_protocol() != Some(crate::tls::ALPN_POSTGRESQL) {
                debug!(target = %target.target.name, %peer, "direct TLS without ALPN postgresql");
                return None;
            }
            tls = Some(conn);
            break;
        }
        let len = match pgwire::startup_len(buf.bytes(), &limits) {
            Ok(Some(len)) => len,
            Ok(None) => {
                if !buf.make_room() {
                    return None;
                }
                let (res, slice) = tcp.read(buf.spare()).await;
                let n = *res.as_ref().unwrap_or(&0);
                buf.restore(slice, n);
                if n == 0 {
                    return None;
                }
                continue;
            }
            Err(e) => {
                let (r, w) = stream::split(tcp, None);
                refuse(
                    target,
                    r,
                    w,
                    sqlstate::PROTOCOL_VIOLATION,
                    &format!("invalid startup packet: {e}"),
                )
                .await;
                return None;
            }
        };
        let parsed = pgwire::parse_startup(&buf.bytes()[..len]);
        match parsed {
            Ok(Startup::SslRequest) => {
                buf.consume(len);
                // Bytes after the request would be read as if they had come
                // through TLS: refuse them (CVE-2021-23214).
                if !buf.bytes().is_empty() {
                    warn!(target = %target.target.name, %peer, "data after SSLRequest; closing");
                    target.metrics().error(ErrorKind::ClientProtocol);
                    return None;
                }
                let Some(config) = &target.target.client_tls else {
                    write_plain(&mut tcp, b"N").await.ok()?;
                    continue;
                };
                write_plain(&mut tcp, b"S").await.ok()?;
                let mut conn = stream::accept_state(config).ok()?;
                if let Err(e) = stream::handshake(&mut tcp, &mut conn, &[], STARTUP_TIMEOUT).await {
                    debug!(target = %target.target.name, %peer, error = %e, "TLS handshake failed");
                    return None;
                }
                tls = Some(conn);
                break;
            }
            Ok(Startup::GssEncRequest) if !declined_gss => {
                buf.consume(len);
                declined_gss = true;
                write_plain(&mut tcp, b"N").await.ok()?;
            }
            Ok(Startup::Cancel { pid, secret }) => {
                let secret = secret.to_vec();
                drop(tcp);
                cancel(shard, target, peer, pid, &secret).await;
                return None;
            }
            Ok(Startup::Startup(_)) => break,
            Ok(Startup::GssEncRequest) | Err(_) => {
                let code = if matches!(parsed, Err(pgwire::Error::BadStartupCode(_))) {
                    sqlstate::FEATURE_NOT_SUPPORTED
                } else {
                    sqlstate::PROTOCOL_VIOLATION
                };
                let why = match parsed {
                    Err(e) => format!("invalid startup packet: {e}"),
                    _ => "GSSENCRequest repeated".to_owned(),
                };
                let (r, w) = stream::split(tcp, None);
                refuse(target, r, w, code, &why).await;
                return None;
            }
        }
    }

    // The StartupMessage, under TLS when it was negotiated.
    let (mut read, write) = stream::split(tcp, tls);
    let len = loop {
        match pgwire::startup_len(buf.bytes(), &limits) {
            Ok(Some(len)) => break len,
            Ok(None) => {
                if !buf.make_room() || read.read(&mut buf).await.ok()? == 0 {
                    return None;
                }
            }
            Err(e) => {
                refuse(
                    target,
                    read,
                    write,
                    sqlstate::PROTOCOL_VIOLATION,
                    &format!("invalid startup packet: {e}"),
                )
                .await;
                return None;
            }
        }
    };
    let msg = match pgwire::parse_startup(&buf.bytes()[..len]) {
        Ok(Startup::Startup(m)) => m,
        Ok(Startup::Cancel { pid, secret }) => {
            let secret = secret.to_vec();
            drop((read, write));
            cancel(shard, target, peer, pid, &secret).await;
            return None;
        }
        Ok(_) => {
            refuse(
                target,
                read,
                write,
                sqlstate::PROTOCOL_VIOLATION,
                "encryption requested twice",
            )
            .await;
            return None;
        }
        Err(e) => {
            let code = if matches!(e, pgwire::Error::BadStartupCode(_)) {
                sqlstate::FEATURE_NOT_SUPPORTED
            } else {
                sqlstate::PROTOCOL_VIOLATION
            };
            refuse(
                target,
                read,
                write,
                code,
                &format!("invalid startup packet: {e}"),
            )
            .await;
            return None;
        }
    };

    let mut user = None;
    let mut database = None;
    let mut replication = false;
    let mut params = Vec::new();
    let mut unrecognized = Vec::new();
    for (name, value) in msg.params() {
        match name {
            b"user" => user = Some(value.to_vec()),
            b"database" => database = Some(value.to_vec()),
            b"replication" => {
                replication = !matches!(
                    value.to_ascii_lowercase().as_slice(),
                    b"false" | b"off" | b"no" | b"0"
                );
            }
            n if n.starts_with(b"_pq_.") => unrecognized.push(n.to_vec()),
            n if NOT_FORWARDED.contains(&n) => {}
            _ => params.push((name.to_vec(), value.to_vec())),
        }
    }
    let minor = msg.minor;
    buf.consume(len);
    let Some(user) = user.filter(|u| !u.is_empty()) else {
        refuse(
            target,
            read,
            write,
            sqlstate::INVALID_AUTHORIZATION,
            "no PostgreSQL user name specified in startup packet",
        )
        .await;
        return None;
    };
    if replication {
        refuse(
            target,
            read,
            write,
            sqlstate::INSUFFICIENT_PRIVILEGE,
            "custos: replication connections are not allowed through the appliance",
        )
        .await;
        return None;
    }
    if !read.is_tls() && !target.target.allow_plaintext_auth {
        refuse(
            target,
            read,
            write,
            sqlstate::INVALID_AUTHORIZATION,
            "custos: this target requires TLS; connect with sslmode=require",
        )
        .await;
        return None;
    }
    Some(ClientStart {
        read,
        write,
        buf,
        user,
        database,
        params,
        minor,
        unrecognized,
    })
}

async fn write_plain(tcp: &mut TcpStream, bytes: &'static [u8]) -> io::Result<()> {
    let (res, _) = tcp.write_all(bytes).await;
    res.map(drop)
}

/// Answers with a FATAL error and closes.
pub async fn refuse(
    target: &TargetCtx,
    read: StreamRead,
    mut write: StreamWrite,
    code: &str,
    message: &str,
) {
    target.metrics().error(match code {
        sqlstate::PROTOCOL_VIOLATION | sqlstate::FEATURE_NOT_SUPPORTED => ErrorKind::ClientProtocol,
        sqlstate::CONNECTION_FAILURE => ErrorKind::UpstreamUnavailable,
        _ => ErrorKind::Unsupported,
    });
    debug!(target = %target.target.name, code, message, "refusing session");
    let mut out = Vec::with_capacity(64 + message.len());
    encode::error_response(&mut out, "FATAL", code, message, None, None);
    let _ = write.write_vec(out).await;
    stream::lingering_close(read, write).await;
}

/// Passes a client's cancel request to the store connection its key
/// stands for. Nothing is answered either way, as PostgreSQL does.
async fn cancel(shard: &ShardCtx, target: &TargetCtx, peer: SocketAddr, pid: u32, secret: &[u8]) {
    let Some(up) = shard.shared.cancel_keys.lookup(pid, secret) else {
        info!(target = %target.target.name, %peer, pid, "cancel request with an unknown key; ignored");
        return;
    };
    let Some(store) = shard.shared.config.targets.get(up.target) else {
        return;
    };
    let send = async {
        let (tcp, tls) = open_transport(store).await.map_err(|e| e.to_string())?;
        let (mut r, mut w) = stream::split(tcp, tls);
        let mut out = Vec::with_capacity(16 + up.secret.len());
        encode::cancel_request(&mut out, up.pid, &up.secret);
        let (res, _) = w.write_vec(out).await;
        res.map_err(|e| e.to_string())?;
        // The store closes the connection once it has the request.
        let mut buf = ConnBuf::new(4096);
        let _ = r.read(&mut buf).await;
        Ok::<(), String>(())
    };
    match monoio::time::timeout(CANCEL_TIMEOUT, send).await {
        Ok(Ok(())) => debug!(target = %store.name, %peer, "cancel request passed to the store"),
        Ok(Err(e)) => {
            warn!(target = %store.name, %peer, error = %e, "cannot pass a cancel request to the store")
        }
        Err(_) => {
            warn!(target = %store.name, %peer, "passing a cancel request to the store timed out")
        }
    }
}
