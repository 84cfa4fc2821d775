//! Opening the store connection of a session, as the appliance.
//!
//! TCP, then TLS when the target asks for it (SSLRequest, then the
//! handshake), then a StartupMessage naming the appliance's user and the
//! client's parameters, then whichever password exchange the store asks for:
//! SCRAM-SHA-256, md5 or cleartext. What the store says until its first
//! ReadyForQuery (parameter statuses, notices, its cancel key) is collected
//! for the client, who sees the store's parameters but never its key or the
//! credential.

use std::io;
use std::time::Duration;

use custos_parsers::pgwire::{self, backend, encode};
use monoio::io::AsyncWriteRentExt;
use monoio::net::TcpStream;

use super::scram;
use crate::config::Target;
use crate::proxy::buffer::ConnBuf;
use crate::proxy::stream::{self, StreamRead, StreamWrite};
use crate::proxy::upstream::{UpstreamError, within_connect_timeout};
use crate::runtime::shard::TargetCtx;

/// A store connection ready for the client's first query.
pub struct Upstream {
    /// The receiving half.
    pub read: StreamRead,
    /// The sending half.
    pub write: StreamWrite,
    /// Bytes the store sent after its first ReadyForQuery (usually none).
    pub buf: ConnBuf,
    /// ParameterStatus and NoticeResponse messages of the startup, whole,
    /// in order: relayed to the client.
    pub relay: Vec<u8>,
    /// The store connection's process id.
    pub pid: u32,
    /// The store connection's cancel secret.
    pub secret: Vec<u8>,
    /// Transaction status of the first ReadyForQuery.
    pub status: u8,
}

/// A TCP connection to the target's store, under TLS when configured.
pub async fn open_transport(
    target: &Target,
) -> Result<(TcpStream, Option<rustls::Connection>), UpstreamError> {
    let connect_err = |e: io::Error| UpstreamError::Connect {
        addr: target.upstream.clone(),
        reason: e.to_string(),
    };
    let mut tcp = TcpStream::connect(target.upstream.as_str())
        .await
        .map_err(connect_err)?;
    tcp.set_nodelay(true).map_err(connect_err)?;
    let Some(tls) = &target.upstream_tls else {
        return Ok((tcp, None));
    };
    let tls_err = |reason: String| UpstreamError::Tls {
        addr: target.upstream.clone(),
        reason,
    };
    let mut req = Vec::with_capacity(8);
    encode::ssl_request(&mut req);
    let (res, _) = tcp.write_all(req).await;
    res.map_err(connect_err)?;
    // One byte: the handshake must not be read along with the answer.
    let (res, answer) = monoio::io::AsyncReadRent::read(&mut tcp, Vec::with_capacity(1)).await;
    let n = res.map_err(connect_err)?;
    match answer.first() {
        Some(b'S') if n == 1 => {}
        Some(b'N') => return Err(tls_err("the store does not offer TLS".into())),
        _ => return Err(tls_err("unexpected answer to SSLRequest".into())),
    }
    let name = crate::tls::server_name(&target.upstream).map_err(tls_err)?;
    let mut conn = stream::connect_state(&tls.config, name).map_err(|e| tls_err(e.to_string()))?;
    stream::handshake(
        &mut tcp,
        &mut conn,
        &[],
        Duration::from_millis(target.connect_timeout_ms),
    )
    .await
    .map_err(|e| tls_err(e.to_string()))?;
    Ok((tcp, Some(conn)))
}

/// Connects and logs in, bounded by the target's `connect_timeout_ms` as a
/// whole. `params` are the client's startup parameters to pass on; the
/// user and database are the appliance's business.
pub async fn connect(
    ctx: &TargetCtx,
    params: &[(Vec<u8>, Vec<u8>)],
    database: Option<&[u8]>,
) -> Result<Upstream, UpstreamError> {
    within_connect_timeout(&ctx.target, connect_inner(ctx, params, database)).await
}

async fn connect_inner(
    ctx: &TargetCtx,
    params: &[(Vec<u8>, Vec<u8>)],
    database: Option<&[u8]>,
) -> Result<Upstream, UpstreamError> {
    let target = &ctx.target;
    let addr = || target.upstream.clone();
    let broken = |e: io::Error| UpstreamError::Connect {
        addr: addr(),
        reason: e.to_string(),
    };
    let malformed = |what: String| UpstreamError::Malformed { addr: addr(), what };
    let (tcp, tls) = open_transport(target).await?;
    let (mut read, mut write) = stream::split(tcp, tls);

    let user = target
        .upstream_user
        .as_deref()
        .unwrap_or_default()
        .as_bytes();
    let mut startup: Vec<(&[u8], &[u8])> = Vec::with_capacity(params.len() + 2);
    startup.push((b"user", user));
    if let Some(db) = target
        .upstream_database
        .as_deref()
        .map(str::as_bytes)
        .or(database)
    {
        startup.push((b"database", db));
    }
    startup.extend(params.iter().map(|(k, v)| (k.as_slice(), v.as_slice())));
    let mut out = Vec::with_capacity(256);
    encode::startup_message(&mut out, 3, 0, &startup);
    let (res, mut out) = write.write_vec(out).await;
    res.map_err(broken)?;

    let password = target.upstream_password.as_ref().map(|p| p.expose());
    let limits = pgwire::Limits::backend();
    let mut buf = ConnBuf::new(target.buffer_bytes_max);
    let mut relay = Vec::new();
    let mut key: Option<(u32, Vec<u8>)> = None;
    let mut sasl: Option<scram::Client<'_>> = None;
    loop {
        let len = loop {
            match pgwire::check(buf.bytes(), &limits) {
                Ok(Some(len)) => break len,
                Ok(None) => {
                    if !buf.make_room() {
                        return Err(malformed(
                            "startup message larger than buffer_bytes_max".into(),
                        ));
                    }
                    if read.read(&mut buf).await.map_err(broken)? == 0 {
                        return Err(broken(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "closed the connection during startup",
                        )));
                    }
                }
                Err(e) => return Err(malformed(e.to_string())),
            }
        };
        let msg = &buf.bytes()[..len];
        out.clear();
        let mut done = None;
        match backend::parse(msg).map_err(|e| malformed(e.to_string()))? {
            backend::Message::Authentication(a) => {
                let need_password = || {
                    password.ok_or_else(|| UpstreamError::Credential {
                        addr: addr(),
                        user: String::from_utf8_lossy(user).into_owned(),
                        message: "the store asks for a password and the target has none".into(),
                    })
                };
                match a {
                    backend::Authentication::Ok => {}
                    backend::Authentication::CleartextPassword => {
                        encode::password_message(&mut out, need_password()?);
                    }
                    backend::Authentication::Md5Password { salt } => {
                        let answer = scram::md5_password(user, need_password()?, salt);
                        encode::password_message(&mut out, &answer);
                    }
                    backend::Authentication::Sasl { .. } => {
                        if !a.mechanisms().any(|m| m == scram::MECHANISM.as_bytes()) {
                            return Err(malformed(
                                "no SASL mechanism the appliance supports".into(),
                            ));
                        }
                        let (client, first) = scram::Client::start(need_password()?)
                            .map_err(|e| malformed(e.to_string()))?;
                        sasl = Some(client);
                        encode::sasl_initial_response(&mut out, scram::MECHANISM, &first);
                    }
                    backend::Authentication::SaslContinue(data) => {
                        let client = sasl
                            .as_mut()
                            .ok_or_else(|| malformed("SASL continue before SASL".into()))?;
                        let answer = client
                            .respond(data, &ctx.scram)
                            .map_err(|e| malformed(e.to_string()))?;
                        encode::sasl_response(&mut out, &answer);
                    }
                    backend::Authentication::SaslFinal(data) => {
                        let client = sasl
                            .as_ref()
                            .ok_or_else(|| malformed("SASL final before SASL".into()))?;
                        client.finish(data).map_err(|e| malformed(e.to_string()))?;
                    }
                    backend::Authentication::Other(code) => {
                        return Err(malformed(format!(
                            "authentication method {code} is not supported; \
                             use scram-sha-256, md5 or password for the appliance's user"
                        )));
                    }
                }
            }
            backend::Message::ParameterStatus { .. } | backend::Message::NoticeResponse(_) => {
                relay.extend_from_slice(msg);
            }
            backend::Message::BackendKeyData { pid, secret } => {
                key = Some((pid, secret.to_vec()));
            }
            backend::Message::ReadyForQuery { status } => done = Some(status),
            backend::Message::NegotiateProtocolVersion { .. } => {}
            backend::Message::ErrorResponse(fields) => {
                let code = fields.code().unwrap_or_default();
                let message =
                    String::from_utf8_lossy(fields.message().unwrap_or_default()).into_owned();
                // Class 28: invalid authorization (a wrong password, no
                // pg_hba.conf entry for the appliance's user).
                return Err(if code.starts_with(b"28") {
                    UpstreamError::Credential {
                        addr: addr(),
                        user: String::from_utf8_lossy(user).into_owned(),
                        message,
                    }
                } else {
                    UpstreamError::Refused {
                        addr: addr(),
                        message,
                        error: msg.to_vec(),
                    }
                });
            }
            _ => {
                return Err(malformed(format!(
                    "unexpected message {:?} during startup",
                    char::from(msg[0])
                )));
            }
        }
        buf.consume(len);
        if !out.is_empty() {
            let (res, o) = write.write_vec(std::mem::take(&mut out)).await;
            out = o;
            res.map_err(broken)?;
        }
        if let Some(status) = done {
            let (pid, secret) = key.unwrap_or_default();
            return Ok(Upstream {
                read,
                write,
                buf,
                relay,
                pid,
                secret,
                status,
            });
        }
    }
}

/// Runs one simple query of the appliance's own on a fresh store connection,
/// before the client's first message, and returns its rows as text. Used
/// for catalog look-ups; an error from the store is returned as its message.
pub async fn own_query(up: &mut Upstream, sql: &str) -> Result<Vec<Vec<Option<Vec<u8>>>>, String> {
    let mut out = Vec::with_capacity(sql.len() + 8);
    encode::query(&mut out, sql.as_bytes());
    let (res, _) = up.write.write_vec(out).await;
    res.map_err(|e| e.to_string())?;
    let limits = pgwire::Limits::backend();
    let mut rows = Vec::new();
    let mut error = None;
    loop {
        let len = loop {
            match pgwire::check(up.buf.bytes(), &limits) {
                Ok(Some(len)) => break len,
                Ok(None) => {
                    if !up.buf.make_room() {
                        return Err("reply larger than buffer_bytes_max".into());
                    }
                    if up.read.read(&mut up.buf).await.map_err(|e| e.to_string())? == 0 {
                        return Err("the store closed the connection".into());
                    }
                }
                Err(e) => return Err(e.to_string()),
            }
        };
        let msg = &up.buf.bytes()[..len];
        let mut ready = false;
        match backend::parse(msg).map_err(|e| e.to_string())? {
            backend::Message::DataRow(row) => {
                rows.push(row.values().map(|v| v.map(<[u8]>::to_vec)).collect());
            }
            backend::Message::ErrorResponse(f) => {
                error = Some(String::from_utf8_lossy(f.get(b'M').unwrap_or_default()).into_owned());
            }
            backend::Message::ReadyForQuery { status } => {
                up.status = status;
                ready = true;
            }
            _ => {}
        }
        up.buf.consume(len);
        if ready {
            return match error {
                Some(e) => Err(e),
                None => Ok(rows),
            };
        }
    }
}
