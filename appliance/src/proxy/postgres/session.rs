//! One client connection to a PostgreSQL target: from the startup phase to
//! the two forwarding loops and the last word.
//!
//! Messages are forwarded whole, straight from the connection's buffer,
//! when they fit in `buffer_bytes_max`; larger ones (COPY data, wide rows,
//! huge statements) stream through as their bytes arrive. The client side
//! counts the points at which the store owes a ReadyForQuery (Query, Sync,
//! FunctionCall); the store side counts them off. That count is the
//! session's notion of "idle", used for draining at shutdown, for latency,
//! and to bound how far a client may pipeline ahead of the store.
//!
//! Cancellation: both loops wait on a read raced against the session's
//! wake-up. When the wake-up wins, what the read would have returned is
//! discarded; that only happens when the session is ending.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use custos_parsers::pgwire::{self, backend, encode, frontend};
use monoio::net::TcpStream;
use tracing::{debug, warn};

use super::cancel;
use super::sqlstate;
use super::startup::{self, ClientStart};
use super::upstream;
use crate::audit::SessionAudit;
use crate::config::AuthMode;
use crate::identity::Identity;
use crate::mask::postgres::{self as pgmask, ColumnIndex, Seen, Tracker};
use crate::mask::{Scratch, SessionMask};
use crate::metrics::ErrorKind;
use crate::policy::SqlGate;
use crate::policy::pg::{StandIns, parse_stand_in, stand_in};
use crate::proxy::auth::{Expiry, session_expiry, sleep_until, verify_token};
use crate::proxy::buffer::ConnBuf;
use crate::proxy::stream::{self, StreamRead, StreamWrite};
use crate::proxy::upstream::UpstreamError;
use crate::runtime::notify::LocalNotify;
use crate::runtime::registry::SessionControl;
use crate::runtime::shard::{ShardCtx, TargetCtx};

/// The refusal of a password message too long to be a token.
const TOKEN_TOO_LARGE: &str = "custos: token refused: token too large";
/// How long ending a session waits to tell the store it is leaving.
const TERMINATE_TIMEOUT: Duration = Duration::from_millis(200);
/// Largest store message a masked session holds whole to rewrite it; a
/// larger one ends the session rather than reach the client unchecked.
pub const MASKED_MESSAGE_BYTES_MAX: usize = crate::config::BUFFER_BYTES_MAX_CEILING;

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The client closed or reset its connection.
    ClientGone,
    /// The client sent Terminate.
    Terminated,
    /// The store closed or failed.
    UpstreamLost,
    /// The client sent something that is not the protocol.
    ProtocolError,
    /// The shard is stopping and the session was idle.
    Drained,
    /// The shard's grace period ran out.
    Aborted,
    /// The client's token ran out.
    Expired,
    /// `[audit] on_failure = "fail_closed"` and the trail cannot be written.
    AuditUnavailable,
}

/// State both loops of a session share (one thread, one task: cells).
struct Session {
    target: Rc<TargetCtx>,
    control: Rc<SessionControl>,
    peer: SocketAddr,
    end: Cell<Option<End>>,
    /// When each sync point whose ReadyForQuery is still owed was sent.
    syncs: RefCell<VecDeque<Instant>>,
    /// Transaction status of the last ReadyForQuery.
    status: Cell<u8>,
    /// A message is partly forwarded to the store / to the client.
    client_mid_message: Cell<bool>,
    store_mid_message: Cell<bool>,
    /// Part of a client message waits in the buffer for the rest.
    client_buffered: Cell<bool>,
    /// The store already told the client why it is ending the session.
    store_said_fatal: Cell<bool>,
    /// The protocol error to report to the client.
    protocol_error: RefCell<Option<String>>,
    /// Wakes the client side when a ReadyForQuery frees room.
    space: LocalNotify,
    /// When the identity's token runs out.
    expiry: Option<Expiry>,
    /// The masks that apply to the identity; `None`: replies pass as they are.
    mask: Option<Rc<SessionMask>>,
    /// Masked columns resolved in the store's catalog.
    columns: ColumnIndex,
    /// Follows both directions to know the shape of each row (masked
    /// sessions only).
    tracker: RefCell<Tracker>,
    /// The session's part of the audit trail.
    audit: Option<SessionAudit>,
    /// Policy: decides each Query and Parse before it is forwarded.
    gate: SqlGate,
    /// The store's replies to refused Parses that the client must not see.
    stand_ins: StandIns,
}

impl Session {
    fn finish(&self, end: End) {
        if self.end.get().is_none() {
            self.end.set(Some(end));
        }
        self.control.wake_client_side.notify();
        self.control.wake_upstream_side.notify();
        self.space.notify();
    }

    #[inline]
    fn ended(&self) -> bool {
        self.end.get().is_some()
    }

    /// No statement in flight, no transaction open, no message half sent.
    fn idle(&self) -> bool {
        self.syncs.borrow().is_empty()
            && self.status.get() == b'I'
            && !self.client_mid_message.get()
            && !self.client_buffered.get()
            && !self.store_mid_message.get()
    }

    /// Checks the shard's requests: abort now, or end when idle.
    fn check_control(&self) {
        if self.control.abort.get() {
            self.finish(End::Aborted);
        } else if self.control.draining.get() && self.idle() {
            self.finish(End::Drained);
        }
    }
}

/// Serves one client connection of a PostgreSQL target until it ends.
pub async fn serve(
    shard: Rc<ShardCtx>,
    target: Rc<TargetCtx>,
    client: TcpStream,
    peer: SocketAddr,
) {
    let m = target.metrics();
    m.connections_open.add(1);
    m.connections_total.add(1);
    let registration = shard.registry.register();
    // The startup phase ends early when the shard stops.
    let start = monoio::select! {
        s = startup::accept(&shard, &target, client, peer) => s,
        _ = registration.control.wake_client_side.notified() => None,
    };
    if let Some(start) = start {
        run(&shard, &target, &registration.control, peer, start).await;
    }
    drop(registration);
    m.connections_open.sub(1);
}

async fn run(
    shard: &ShardCtx,
    target: &Rc<TargetCtx>,
    control: &Rc<SessionControl>,
    peer: SocketAddr,
    start: ClientStart,
) {
    let ClientStart {
        mut read,
        mut write,
        mut buf,
        user,
        database,
        params,
        minor,
        unrecognized,
    } = start;

    // Authentication phase: the token is the password (asked for in clear,
    // which the startup phase allowed only over TLS unless the target says
    // otherwise); under `auth = "none"` the client is the anonymous identity.
    let identity = match target.target.auth {
        AuthMode::None => Identity::anonymous(),
        AuthMode::Token => {
            match password_phase(shard, target, peer, &mut read, &mut write, &mut buf, &user).await
            {
                Ok(identity) => identity,
                Err((code, message)) => {
                    if let Some(message) = message {
                        startup::refuse(target, read, write, code, &message).await;
                    }
                    return;
                }
            }
        }
    };
    let expiry = session_expiry(shard, &identity);
    let audit = SessionAudit::start(shard, target, peer, &identity);
    let gate = SqlGate::new(shard.policy.clone(), target.index, &identity);
    debug!(
        shard = shard.id,
        target = %target.target.name,
        %peer,
        subject = %identity.subject,
        user = %String::from_utf8_lossy(&user),
        "session start"
    );

    let mask = shard
        .shared
        .config
        .masks
        .for_session(&target.target.name, &identity);
    let mut up = match upstream::connect(target, &params, database.as_deref()).await {
        Ok(up) => up,
        Err(e) => {
            warn!(target = %target.target.name, %peer, error = %e, "cannot open the store for a session");
            if let Some(a) = &audit {
                a.end("upstream unavailable");
            }
            let m = target.metrics();
            match e {
                UpstreamError::Refused { error, .. } => {
                    m.error(ErrorKind::UpstreamUnavailable);
                    let _ = write.write_vec(error).await;
                    stream::lingering_close(read, write).await;
                }
                UpstreamError::Credential { .. } => {
                    m.error(ErrorKind::UpstreamAuth);
                    startup::refuse(
                        target,
                        read,
                        write,
                        sqlstate::CONNECTION_FAILURE,
                        "custos: upstream unavailable (the store refused the appliance's credential)",
                    )
                    .await;
                }
                UpstreamError::Connect { .. }
                | UpstreamError::Tls { .. }
                | UpstreamError::Malformed { .. } => {
                    startup::refuse(
                        target,
                        read,
                        write,
                        sqlstate::CONNECTION_FAILURE,
                        "custos: upstream unavailable",
                    )
                    .await;
                }
            }
            return;
        }
    };

    // Masked columns are found by table OID and attribute number, which
    // only the store's catalog knows. A session whose masks cannot be
    // resolved is not served: it would see the values in clear.
    let mut columns = ColumnIndex::default();
    if let Some(sql) = mask.as_deref().and_then(pgmask::catalog_query) {
        match upstream::own_query(&mut up, &sql).await {
            Ok(rows) => {
                for row in &rows {
                    let values: Vec<Option<&[u8]>> = row.iter().map(|v| v.as_deref()).collect();
                    pgmask::add_catalog_row(&mut columns, &values);
                }
            }
            Err(e) => {
                warn!(target = %target.target.name, %peer, error = %e, "cannot resolve masked columns; refusing the session");
                startup::refuse(
                    target,
                    read,
                    write,
                    sqlstate::CONNECTION_FAILURE,
                    "custos: upstream unavailable (masked columns cannot be resolved)",
                )
                .await;
                return;
            }
        }
    }
    if mask.is_some() {
        // A masked row is rewritten whole, so it must be held whole.
        up.buf.raise_bound(MASKED_MESSAGE_BYTES_MAX);
    }

    // The client's key stands for the store connection's; the store's own
    // key never leaves the appliance.
    let key = shard.shared.cancel_keys.issue(cancel::Upstream {
        target: target.index,
        pid: up.pid,
        secret: up.secret.clone().into_boxed_slice(),
    });
    let mut hello = Vec::with_capacity(256 + up.relay.len());
    if minor > 0 || !unrecognized.is_empty() {
        let names: Vec<&[u8]> = unrecognized.iter().map(Vec::as_slice).collect();
        encode::negotiate_protocol_version(&mut hello, 0, &names);
    }
    encode::authentication_ok(&mut hello);
    hello.extend_from_slice(&up.relay);
    if let Some(k) = &key {
        encode::backend_key_data(&mut hello, k.pid, &k.secret);
    }
    encode::ready_for_query(&mut hello, up.status);
    target.metrics().client_bytes_sent.add(hello.len() as u64);
    let (res, _) = write.write_vec(hello).await;
    if res.is_err() {
        return;
    }

    let s = Session {
        target: target.clone(),
        control: control.clone(),
        peer,
        end: Cell::new(None),
        syncs: RefCell::new(VecDeque::new()),
        status: Cell::new(up.status),
        client_mid_message: Cell::new(false),
        store_mid_message: Cell::new(false),
        client_buffered: Cell::new(false),
        store_said_fatal: Cell::new(false),
        protocol_error: RefCell::new(None),
        space: LocalNotify::default(),
        expiry,
        mask,
        columns,
        tracker: RefCell::new(Tracker::default()),
        audit,
        gate,
        stand_ins: StandIns::default(),
    };
    let (uread, uwrite, ubuf) = (up.read, up.write, up.buf);
    let ((cread, uwrite), (uread, cwrite)) = monoio::join!(
        client_side(&s, read, uwrite, buf),
        upstream_side(&s, uread, write, ubuf)
    );
    drop((key, uread));
    let end = s.end.get();
    debug!(shard = shard.id, target = %target.target.name, %peer, ?end, "session end");
    if let Some(a) = &s.audit {
        a.end(end_reason(end));
    }
    last_words(&s, end, cread, cwrite, uwrite).await;
}

/// Tells the client why the session ends (unless it left, or a message to
/// it is half written) and the store that the session is over.
async fn last_words(
    s: &Session,
    end: Option<End>,
    cread: StreamRead,
    mut cwrite: StreamWrite,
    mut uwrite: StreamWrite,
) {
    if !matches!(end, Some(End::UpstreamLost)) && !s.client_mid_message.get() {
        let mut bye = Vec::with_capacity(5);
        frontend_terminate(&mut bye);
        let _ = monoio::time::timeout(TERMINATE_TIMEOUT, uwrite.write_vec(bye)).await;
    }
    drop(uwrite);
    let (code, message) = match end {
        None | Some(End::ClientGone) | Some(End::Terminated) => return,
        Some(End::Drained) | Some(End::Aborted) => (
            sqlstate::ADMIN_SHUTDOWN,
            "terminating connection due to administrator command".to_owned(),
        ),
        Some(End::Expired) => (
            sqlstate::ADMIN_SHUTDOWN,
            "custos: terminating connection because the token expired".to_owned(),
        ),
        Some(End::AuditUnavailable) => (
            sqlstate::AUDIT_UNAVAILABLE,
            "custos: audit trail unavailable".to_owned(),
        ),
        Some(End::UpstreamLost) if s.store_said_fatal.get() => {
            stream::lingering_close(cread, cwrite).await;
            return;
        }
        Some(End::UpstreamLost) => (
            sqlstate::CONNECTION_FAILURE,
            "custos: upstream unavailable (the connection to the store was lost)".to_owned(),
        ),
        Some(End::ProtocolError) => (
            sqlstate::PROTOCOL_VIOLATION,
            s.protocol_error
                .borrow_mut()
                .take()
                .unwrap_or_else(|| "invalid message".to_owned()),
        ),
    };
    if !s.store_mid_message.get() {
        let mut out = Vec::with_capacity(64 + message.len());
        encode::error_response(&mut out, "FATAL", code, &message, None, None);
        s.target.metrics().client_bytes_sent.add(out.len() as u64);
        let _ = cwrite.write_vec(out).await;
    }
    if matches!(end, Some(End::Aborted)) {
        drop((cread, cwrite));
    } else {
        stream::lingering_close(cread, cwrite).await;
    }
}

/// How a session's end is named in the audit trail.
fn end_reason(end: Option<End>) -> &'static str {
    match end {
        None | Some(End::ClientGone) => "client closed",
        Some(End::Terminated) => "terminate",
        Some(End::UpstreamLost) => "upstream lost",
        Some(End::ProtocolError) => "client protocol error",
        Some(End::Drained) => "appliance stopping",
        Some(End::Aborted) => "aborted at shutdown",
        Some(End::Expired) => "token expired",
        Some(End::AuditUnavailable) => "audit trail unavailable",
    }
}

fn frontend_terminate(out: &mut Vec<u8>) {
    encode::terminate(out);
}

/// Walks one direction's messages through a connection buffer: a message
/// that fits the buffer waits until it is whole, a larger one streams
/// through as its bytes arrive.
struct Framing {
    limits: pgwire::Limits,
    /// `buffer_bytes_max`.
    bound: usize,
    /// Bytes of a streamed message still to come.
    partial: usize,
}

/// The message at the front of the unprocessed bytes.
enum Next {
    /// All of it is buffered.
    Whole(pgwire::Header),
    /// Larger than the buffer: its buffered part goes now, the rest as it
    /// arrives.
    Streamed(pgwire::Header),
    /// Incomplete: read more.
    Wait,
    /// Not the protocol.
    Bad(pgwire::Error),
}

impl Framing {
    fn new(limits: pgwire::Limits, bound: usize) -> Framing {
        Framing {
            limits,
            bound,
            partial: 0,
        }
    }

    /// How many bytes at the front of `len` new ones continue a streamed
    /// message.
    fn resume(&mut self, len: usize) -> usize {
        let take = self.partial.min(len);
        self.partial -= take;
        take
    }

    /// Whether a streamed message is still coming.
    fn streaming(&self) -> bool {
        self.partial > 0
    }

    fn next(&mut self, data: &[u8]) -> Next {
        match pgwire::header(data, &self.limits) {
            Ok(None) => Next::Wait,
            Err(e) => Next::Bad(e),
            Ok(Some(h)) if h.len <= data.len() => Next::Whole(h),
            Ok(Some(h)) if h.len <= self.bound => Next::Wait,
            Ok(Some(h)) => {
                self.partial = h.len - data.len();
                Next::Streamed(h)
            }
        }
    }
}

/// Whether a frontend tag may appear once the session is established.
fn session_tag(tag: u8) -> bool {
    use frontend::tag::*;
    matches!(
        tag,
        QUERY
            | PARSE
            | BIND
            | DESCRIBE
            | EXECUTE
            | SYNC
            | FLUSH
            | CLOSE
            | COPY_DATA
            | COPY_DONE
            | COPY_FAIL
            | FUNCTION_CALL
            | TERMINATE
    )
}

/// Reads client messages and forwards them to the store.
async fn client_side(
    s: &Session,
    mut cread: StreamRead,
    mut uwrite: StreamWrite,
    mut buf: ConnBuf,
) -> (StreamRead, StreamWrite) {
    use frontend::tag;
    let m = s.target.metrics();
    let mut framing = Framing::new(pgwire::Limits::frontend(), s.target.target.buffer_bytes_max);
    let pending_max = s.target.target.pending_replies_max;
    let mut unprocessed = !buf.bytes().is_empty();
    // One timer for the session's life, not one per read.
    let mut expiry_timer = std::pin::pin!(sleep_until(s.expiry));
    // The rest of a refused message too large to inspect is dropped.
    let mut dropping = false;
    loop {
        s.check_control();
        if s.ended() {
            break;
        }
        if s.expiry.is_some_and(|e| Instant::now() >= e.at) {
            expire(s).await;
            break;
        }
        if let Some(a) = &s.audit {
            // A full audit ring holds new statements back.
            a.ready().await;
        }
        if unprocessed {
            unprocessed = false;
        } else {
            if !buf.make_room() {
                // Only an incomplete message that fits the bound is kept,
                // so a full buffer cannot happen; refuse rather than spin.
                protocol_error(s, "message larger than the connection's buffer");
                break;
            }
            let n = monoio::select! {
                r = cread.read(&mut buf) => r.unwrap_or(0),
                _ = until_end(s, &s.control.wake_client_side) => break,
                _ = &mut expiry_timer => continue,
            };
            if n == 0 {
                s.finish(End::ClientGone);
                break;
            }
            m.client_bytes_received.add(n as u64);
        }

        let mut pos = 0;
        let mut fwd = 0;
        let mut terminate = false;
        let mut bad: Option<String> = None;
        let mut unrecordable = false;
        let now = Instant::now();
        pos += framing.resume(buf.bytes().len());
        if dropping {
            fwd = pos;
            dropping = framing.streaming();
        }
        'scan: loop {
            let data = buf.bytes();
            // Policy hook: a refused Query or Parse is replaced by a stand-in.
            let mut refused: Option<(usize, usize, Vec<u8>)> = None;
            // Masking hook: a Describe the appliance sends in front of the
            // Execute that ends at `pos`.
            let mut describe: Option<Box<[u8]>> = None;
            while !framing.streaming() && pos < data.len() {
                let (h, whole) = match framing.next(&data[pos..]) {
                    Next::Whole(h) => (h, true),
                    Next::Streamed(h) => (h, false),
                    Next::Wait => break,
                    Next::Bad(e) => {
                        bad = Some(format!("invalid message: {e}"));
                        break;
                    }
                };
                if !session_tag(h.tag) {
                    bad = Some(format!(
                        "invalid frontend message type {:?}",
                        char::from(h.tag)
                    ));
                    break;
                }
                let end = pos + h.len.min(data.len() - pos);
                if let Some(a) = &s.audit
                    && a.refusing()
                    && matches!(
                        h.tag,
                        tag::QUERY | tag::PARSE | tag::EXECUTE | tag::FUNCTION_CALL
                    )
                {
                    // What came before is forwarded and answered; this and
                    // everything after it is refused with the session.
                    unrecordable = true;
                    break;
                }
                let replacement = policy_check(s, &data[pos..], h, framing.streaming());
                if let Some(a) = &s.audit {
                    let refusal = replacement.as_ref().and_then(|_| s.gate.take_refusal());
                    let decided = refusal.as_ref().map(|(d, r)| (*d, r.as_bytes()));
                    a.pg_frontend_decided(&data[pos..end], whole, now, decided);
                }
                if let Some(replacement) = replacement {
                    if h.tag == tag::QUERY {
                        m.commands.add(1);
                        s.syncs.borrow_mut().push_back(now);
                        if s.mask.is_some() {
                            // The stand-in is a Query too: its answer ends
                            // at a ReadyForQuery like the refused one's.
                            s.tracker.borrow_mut().frontend_streamed(tag::QUERY);
                        }
                    }
                    refused = Some((pos, h.len, replacement));
                    break;
                }
                s.stand_ins.client_message(h.tag);
                match h.tag {
                    tag::QUERY | tag::FUNCTION_CALL => {
                        m.commands.add(1);
                        s.syncs.borrow_mut().push_back(now);
                    }
                    tag::SYNC => s.syncs.borrow_mut().push_back(now),
                    tag::EXECUTE => m.commands.add(1),
                    tag::TERMINATE => terminate = true,
                    _ => {}
                }
                if s.mask.is_some() {
                    let mut tracker = s.tracker.borrow_mut();
                    if whole {
                        describe = tracker.frontend(&data[pos..end]);
                    } else {
                        tracker.frontend_streamed(h.tag);
                    }
                }
                if describe.is_some() {
                    // The Execute itself goes out after the Describe.
                    let at = pos;
                    pos = end;
                    let portal = describe.take().unwrap_or_default();
                    let ok = forward_range(&mut uwrite, &mut buf, fwd, at).await && {
                        let mut d = Vec::with_capacity(16 + portal.len());
                        pgmask::describe_portal(&mut d, &portal);
                        uwrite.write_vec(d).await.0.is_ok()
                    };
                    if !ok {
                        s.finish(End::UpstreamLost);
                        return (cread, uwrite);
                    }
                    fwd = at;
                    continue 'scan;
                }
                pos = end;
                if terminate {
                    break;
                }
            }
            if let Some((at, len, replacement)) = refused {
                // What came before goes first, then the stand-in; the refused
                // bytes never leave the buffer.
                let ok = forward_range(&mut uwrite, &mut buf, fwd, at).await
                    && uwrite.write_vec(replacement).await.0.is_ok();
                if !ok {
                    s.finish(End::UpstreamLost);
                    return (cread, uwrite);
                }
                pos = at + len.min(buf.bytes().len() - at);
                fwd = pos;
                dropping = framing.streaming();
                continue 'scan;
            }
            break;
        }
        s.client_mid_message.set(framing.streaming() && !dropping);
        s.client_buffered.set(pos < buf.bytes().len());

        if pos > 0 {
            let ok = forward_range(&mut uwrite, &mut buf, fwd, pos).await;
            buf.consume(pos);
            if !ok {
                s.finish(End::UpstreamLost);
                break;
            }
        }
        if terminate {
            s.finish(End::Terminated);
            break;
        }
        if let Some(why) = bad {
            // What came before the bad message is answered first, as the
            // store would have answered it before reading further.
            wait_for_replies(s).await;
            protocol_error(s, &why);
            break;
        }
        if unrecordable {
            wait_for_replies(s).await;
            s.finish(End::AuditUnavailable);
            break;
        }
        if s.syncs.borrow().len() >= pending_max && !wait_for_space(s, pending_max).await {
            break;
        }
    }
    (cread, uwrite)
}

/// Writes `buf[from..to]` to the store; `false` when the store is gone.
async fn forward_range(
    uwrite: &mut StreamWrite,
    buf: &mut ConnBuf,
    from: usize,
    to: usize,
) -> bool {
    if from >= to {
        return true;
    }
    let v = buf.take();
    let (res, v) = uwrite.write_range(v, from, to).await;
    buf.put(v);
    res.is_ok()
}

/// Policy hook: the messages to send instead of the Query or Parse at the
/// start of `msg` when policy refuses it; `None` to forward it. A message
/// still streaming in (larger than the buffer) cannot be inspected and is
/// refused.
fn policy_check(s: &Session, msg: &[u8], h: pgwire::Header, streaming: bool) -> Option<Vec<u8>> {
    use frontend::tag;
    if h.tag != tag::QUERY && h.tag != tag::PARSE {
        return None;
    }
    let carrier = if streaming {
        Some(stand_in(
            "custos: statement too large to inspect (rule unclassified)",
            None,
        ))
    } else {
        match frontend::parse(&msg[..h.len]) {
            Ok(frontend::Message::Query { sql }) => s.gate.check(sql),
            Ok(frontend::Message::Parse { sql, .. }) => s.gate.check(sql),
            // Malformed: the store refuses it the same way it would.
            _ => None,
        }
    }?;
    let mut out = Vec::with_capacity(carrier.len() + 32);
    if h.tag == tag::QUERY {
        encode::query(&mut out, carrier.as_bytes());
        s.stand_ins.client_message(tag::QUERY);
    } else {
        parse_stand_in(&mut out, &carrier);
        s.stand_ins.client_stand_in();
    }
    Some(out)
}

/// Completes when the session is to end; wake-ups that do not end it (a
/// drain request while statements are in flight) are absorbed, so the read
/// raced against this is never abandoned with input still to process.
async fn until_end(s: &Session, wake: &LocalNotify) {
    loop {
        wake.notified().await;
        s.check_control();
        if s.ended() {
            return;
        }
    }
}

/// The token ran out: nothing new is read; statements in flight get the
/// configured grace to finish, then the session ends.
async fn expire(s: &Session) {
    debug!(target = %s.target.target.name, peer = %s.peer, "token expired; ending the session");
    let grace = s.expiry.map_or(Duration::ZERO, |e| e.grace);
    let _ = monoio::time::timeout(grace, wait_for_replies(s)).await;
    s.finish(End::Expired);
}

/// Asks for the password, which is the token, and verifies it. On refusal,
/// the SQLSTATE and message to answer with (`None`: the client left).
async fn password_phase(
    shard: &ShardCtx,
    target: &TargetCtx,
    peer: SocketAddr,
    read: &mut StreamRead,
    write: &mut StreamWrite,
    buf: &mut ConnBuf,
    user: &[u8],
) -> Result<Identity, (&'static str, Option<String>)> {
    let mut ask = Vec::with_capacity(9);
    encode::authentication_cleartext_password(&mut ask);
    let (res, _) = write.write_vec(ask).await;
    res.map_err(|_| (sqlstate::PROTOCOL_VIOLATION, None))?;
    let limits = pgwire::Limits::frontend();
    let read_one = async {
        loop {
            match pgwire::check(buf.bytes(), &limits) {
                Ok(Some(len)) => return Ok(len),
                Ok(None) => {
                    if !buf.make_room() || read.read(buf).await.unwrap_or(0) == 0 {
                        return Err(None);
                    }
                }
                // A password message longer than the protocol allows is a
                // token no provider issues.
                Err(pgwire::Error::TooLong { tag, .. }) if tag == frontend::tag::PASSWORD => {
                    return Err(Some(TOKEN_TOO_LARGE.to_owned()));
                }
                Err(e) => return Err(Some(format!("invalid password message: {e}"))),
            }
        }
    };
    let len = match monoio::time::timeout(startup::STARTUP_TIMEOUT, read_one).await {
        Ok(Ok(len)) => len,
        Ok(Err(Some(why))) if why == TOKEN_TOO_LARGE => {
            target
                .metrics()
                .error(crate::metrics::ErrorKind::AuthFailed);
            warn!(event = "auth_fail", target = %target.target.name, %peer, reason = "token too large", "token refused");
            crate::audit::session::auth_event(
                shard,
                target,
                peer,
                &Err(crate::identity::Reject::TooLarge),
            );
            return Err((sqlstate::INVALID_PASSWORD, Some(why)));
        }
        Ok(Err(why)) => return Err((sqlstate::PROTOCOL_VIOLATION, why)),
        Err(_) => return Err((sqlstate::PROTOCOL_VIOLATION, None)),
    };
    let msg = &buf.bytes()[..len];
    if msg[0] != frontend::tag::PASSWORD {
        let why = format!(
            "expected a password response, got message type {:?}",
            char::from(msg[0])
        );
        return Err((sqlstate::PROTOCOL_VIOLATION, Some(why)));
    }
    let token = frontend::password(&msg[pgwire::HEADER_BYTES..])
        .map_err(|e| {
            (
                sqlstate::PROTOCOL_VIOLATION,
                Some(format!("invalid password message: {e}")),
            )
        })?
        .to_vec();
    buf.consume(len);
    let identity = verify_token(shard, target, peer, &token)
        .await
        .map_err(|reject| {
            (
                sqlstate::INVALID_PASSWORD,
                Some(format!("custos: token refused: {}", reject.class())),
            )
        })?;
    let must_match = shard
        .shared
        .verifier
        .as_deref()
        .is_some_and(|v| v.config().match_user);
    if must_match && user != identity.subject.as_bytes() {
        return Err((
            sqlstate::INVALID_AUTHORIZATION,
            Some(format!(
                "custos: user \"{}\" does not match the token's subject",
                String::from_utf8_lossy(user)
            )),
        ));
    }
    Ok(identity)
}

fn protocol_error(s: &Session, why: &str) {
    s.target.metrics().error(ErrorKind::ClientProtocol);
    debug!(target = %s.target.target.name, peer = %s.peer, error = why, "client protocol error");
    *s.protocol_error.borrow_mut() = Some(why.to_owned());
    s.finish(End::ProtocolError);
}

/// Waits until every ReadyForQuery owed has arrived, or the session ends.
async fn wait_for_replies(s: &Session) {
    while !s.ended() && !s.syncs.borrow().is_empty() {
        monoio::select! {
            _ = s.space.notified() => {}
            _ = s.control.wake_client_side.notified() => s.check_control(),
        }
    }
}

/// Waits for the store to catch up; `false` when the session ended instead.
async fn wait_for_space(s: &Session, pending_max: usize) -> bool {
    loop {
        if s.ended() {
            return false;
        }
        if s.syncs.borrow().len() < pending_max {
            return true;
        }
        monoio::select! {
            _ = s.space.notified() => {}
            _ = s.control.wake_client_side.notified() => s.check_control(),
        }
    }
}

/// Reads the store's messages and forwards them to the client.
async fn upstream_side(
    s: &Session,
    mut uread: StreamRead,
    mut cwrite: StreamWrite,
    mut buf: ConnBuf,
) -> (StreamRead, StreamWrite) {
    use backend::tag;
    let m = s.target.metrics();
    // A masked message is rewritten whole, so masked sessions hold whole
    // messages up to the masking bound instead of streaming them.
    let bound = match s.mask {
        Some(_) => s
            .target
            .target
            .buffer_bytes_max
            .max(MASKED_MESSAGE_BYTES_MAX),
        None => s.target.target.buffer_bytes_max,
    };
    let mut framing = Framing::new(pgwire::Limits::backend(), bound);
    let mut unprocessed = !buf.bytes().is_empty();
    let mut scratch = Scratch::default();
    let mut one: Vec<u8> = Vec::new();
    let mut out: Vec<u8> = Vec::new();
    let mut copy_text = false;
    loop {
        if s.control.abort.get() {
            s.finish(End::Aborted);
        }
        if s.ended() {
            break;
        }
        if unprocessed {
            unprocessed = false;
        } else {
            if !buf.make_room() {
                warn!(target = %s.target.target.name, "store message larger than the connection's buffer");
                s.finish(End::UpstreamLost);
                break;
            }
            let n = monoio::select! {
                r = uread.read(&mut buf) => r.unwrap_or(0),
                _ = until_end(s, &s.control.wake_upstream_side) => break,
            };
            if n == 0 {
                s.finish(End::UpstreamLost);
                break;
            }
        }

        let data = buf.bytes();
        let mut pos = 0;
        let mut fwd = 0;
        let mut ready = false;
        let mut broken = false;
        pos += framing.resume(data.len());
        while !framing.streaming() && pos < data.len() {
            let h = match framing.next(&data[pos..]) {
                Next::Whole(h) => h,
                Next::Streamed(h) if s.mask.is_some() => {
                    // Too large to check: it does not reach the client.
                    warn!(target = %s.target.target.name, peer = %s.peer, bytes = h.len, bound, "store message too large to mask; closing session");
                    m.error(ErrorKind::UpstreamUnavailable);
                    broken = true;
                    break;
                }
                Next::Streamed(h) => {
                    if let Some(a) = &s.audit {
                        a.pg_backend_streamed(h.tag);
                    }
                    pos = data.len();
                    break;
                }
                Next::Wait => break,
                Next::Bad(e) => {
                    warn!(target = %s.target.target.name, error = %e, "the store broke the protocol");
                    broken = true;
                    break;
                }
            };
            let msg = &data[pos..pos + h.len];
            if let Some(a) = &s.audit {
                a.pg_backend(msg);
            }
            match h.tag {
                tag::READY_FOR_QUERY => {
                    if let Ok(backend::Message::ReadyForQuery { status }) = backend::parse(msg) {
                        s.status.set(status);
                    }
                    if let Some(sent) = s.syncs.borrow_mut().pop_front() {
                        s.target
                            .latency
                            .record_us(sent.elapsed().as_micros() as u64);
                    }
                    ready = true;
                }
                tag::ERROR_RESPONSE => {
                    if let Ok(backend::Message::ErrorResponse(f)) = backend::parse(msg)
                        && f.severity().is_some_and(|v| v == b"FATAL" || v == b"PANIC")
                    {
                        s.store_said_fatal.set(true);
                    }
                }
                _ => {}
            }
            // Replies to policy stand-ins the client did not send are kept
            // from it.
            let stand_in = s.stand_ins.store_message(h.tag);
            if stand_in {
                out.extend_from_slice(&data[fwd..pos]);
                fwd = pos + h.len;
            }
            if let Some(mask) = s.mask.as_deref().filter(|_| !stand_in) {
                one.clear();
                let seen = s.tracker.borrow_mut().backend(msg, mask, &s.columns);
                let rewritten = match seen {
                    Seen::Swallow => None,
                    Seen::Row(shape) => {
                        pgmask::mask_data_row(mask, shape.as_deref(), msg, &mut scratch, &mut one)
                            .then_some(true)
                            .or(Some(false))
                    }
                    Seen::Forward => Some(match h.tag {
                        tag::ERROR_RESPONSE | tag::NOTICE_RESPONSE => {
                            pgmask::mask_fields(mask, msg, &mut scratch, &mut one)
                        }
                        tag::NOTIFICATION_RESPONSE => {
                            pgmask::mask_notification(mask, msg, &mut scratch, &mut one)
                        }
                        tag::COPY_OUT_RESPONSE | tag::COPY_BOTH_RESPONSE => {
                            copy_text = msg.get(pgwire::HEADER_BYTES) == Some(&0);
                            false
                        }
                        tag::COPY_DATA if copy_text => {
                            pgmask::mask_copy_data(mask, msg, &mut scratch, &mut one)
                        }
                        _ => false,
                    }),
                };
                // `None`: swallowed; `Some(true)`: replaced by `one`.
                if rewritten != Some(false) {
                    out.extend_from_slice(&data[fwd..pos]);
                    out.extend_from_slice(&one);
                    fwd = pos + h.len;
                    if rewritten == Some(true) {
                        m.replies_masked.add(1);
                    }
                }
            }
            pos += h.len;
        }
        s.store_mid_message.set(framing.streaming());

        if pos > 0 {
            if let Some(a) = &s.audit {
                // durability = "sync": replies wait for their records.
                a.durable().await;
            }
            let res = if fwd == 0 {
                let v = buf.take();
                let (res, v) = cwrite.write_range(v, 0, pos).await;
                buf.put(v);
                m.client_bytes_sent.add(pos as u64);
                res.map(|_| ())
            } else {
                out.extend_from_slice(&data[fwd..pos]);
                let batch = std::mem::take(&mut out);
                m.client_bytes_sent.add(batch.len() as u64);
                let (res, mut batch) = if batch.is_empty() {
                    (Ok(()), batch)
                } else {
                    cwrite.write_vec(batch).await
                };
                batch.clear();
                out = batch;
                res.map(|_| ())
            };
            buf.consume(pos);
            if res.is_err() {
                s.finish(End::ClientGone);
                break;
            }
        }
        if broken {
            s.finish(End::UpstreamLost);
            break;
        }
        if ready {
            s.space.notify();
            if s.control.draining.get() && s.idle() {
                s.finish(End::Drained);
                break;
            }
        }
    }
    (uread, cwrite)
}
