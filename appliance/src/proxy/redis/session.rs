//! One client connection to a Redis target: phases and the two loops.
//!
//! Cancellation: both loops wait on a read raced against the session's
//! wake-up ([`ConnBuf::read_or`]). When the wake-up wins, whatever that read
//! would have returned is discarded. That only happens when the session is
//! ending (or draining with nothing in flight), when unread input is dropped
//! anyway.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use custos_parsers::resp::{self, CommandHead, Frame, HeadStatus, Limits, Scanner};
use monoio::buf::{IoBuf, IoBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRentExt, OwnedReadHalf, OwnedWriteHalf, Splitable};
use monoio::net::TcpStream;
use tracing::{debug, warn};

use super::auth;
use super::commands::{self, Class, FirstWord, PubsubWord};
use super::pending::{Entry, Expect, Pending, Subscriptions};
use super::shared::{self, Inbox, SharedUpstream};
use super::upstream::{self, UpstreamError};
use crate::audit::{Decision, SessionAudit};
use crate::config::AuthMode;
use crate::identity::Identity;
use crate::mask::redis::{Plan, mask_reply, plan_for_command};
use crate::mask::{Scratch, SessionMask};
use crate::metrics::ErrorKind;
use crate::policy::gate::Shared;
use crate::policy::redis::FrameArgs;
use crate::policy::{Decision as PolicyDecision, Gate, RedisGate};
use crate::proxy::auth::{Expiry, session_expiry, sleep_until, verify_token};
use crate::proxy::buffer::ConnBuf;
use crate::proxy::lingering_close;
use crate::runtime::notify::LocalNotify;
use crate::runtime::registry::SessionControl;
use crate::runtime::shard::{ShardCtx, TargetCtx};

/// A one-word command whose reply stands in for one the appliance writes
/// itself, so that the substitute keeps its place among pipelined replies.
const CARRIER: &[u8] = b"*1\r\n$4\r\nPING\r\n";
/// The reply to a client's AUTH under `auth = "none"`.
const AUTH_OK: &[u8] = b"+OK\r\n";
/// In place of a reply too large for masking to check.
const REPLY_TOO_LARGE_TO_MASK: &[u8] =
    b"-ERR custos: reply too large to mask; the session is closed\r\n";
/// Largest reply a masked session rewrites whole (its buffer grows to this
/// only when a reply needs it).
pub const MASKED_REPLY_BYTES_MAX: usize = crate::config::BUFFER_BYTES_MAX_CEILING;
/// Sent for each outstanding command when the store goes away.
const UPSTREAM_UNAVAILABLE: &[u8] = b"-ERR custos: upstream unavailable\r\n";
/// Sent to a client whose session could not open the store because the store
/// refused the appliance's credential.
const UPSTREAM_REFUSED: &[u8] =
    b"-ERR custos: upstream unavailable (upstream refused the appliance's credential)\r\n";
/// The last reply of a session whose token ran out.
const TOKEN_EXPIRED: &[u8] = b"-ERR custos: token expired; authenticate on a new connection\r\n";
/// The reply to every command while `[audit] on_failure = "fail_closed"`
/// and the trail cannot be written.
const AUDIT_UNAVAILABLE: &[u8] = b"-ERR custos: audit trail unavailable\r\n";
/// How long a session whose store is down waits for the client's first
/// command, to answer it with the error.
const FIRST_COMMAND_WAIT: Duration = Duration::from_secs(10);

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The client closed or reset its connection.
    ClientGone,
    /// The store closed or failed.
    UpstreamLost,
    /// The store refused the appliance's re-authentication after RESET.
    UpstreamAuth,
    /// The client sent something that is not RESP, or too large.
    ProtocolError,
    /// The client's token expired.
    Expired,
    /// QUIT was answered.
    Quit,
    /// The shard is stopping and nothing was in flight.
    Drained,
    /// The shard's grace period ran out.
    Aborted,
}

/// State the two loops of a session share. Both run on one thread, in one
/// task, so plain cells suffice.
struct Session {
    shard: Rc<ShardCtx>,
    target: Rc<TargetCtx>,
    /// Who the client is; AUTH with a new token changes it.
    identity: RefCell<Identity>,
    /// The masks that apply to that identity; `None`: replies pass as they are.
    mask: RefCell<Option<Rc<SessionMask>>>,
    /// When the identity's token runs out.
    expiry: Cell<Option<Expiry>>,
    control: Rc<SessionControl>,
    peer: SocketAddr,
    pending: RefCell<Pending>,
    subs: Cell<Subscriptions>,
    /// The protocol the store speaks to this client (2 or 3).
    proto: Cell<u8>,
    end: Cell<Option<End>>,
    /// Error written in place of the reply to a [`Expect::Terminal`] entry.
    terminal: RefCell<Option<Vec<u8>>>,
    /// How the session ends once the terminal error is written.
    terminal_end: Cell<End>,
    /// Wakes the client side when the FIFO has room again.
    space: LocalNotify,
    client_waits_for_space: Cell<bool>,
    /// The session's part of the audit trail.
    audit: Option<SessionAudit>,
    /// Policy: decides each command before it is forwarded.
    gate: RedisGate,
    /// Replies written by the appliance in place of [`Expect::Local`]
    /// entries' replies, oldest first.
    local: RefCell<VecDeque<Vec<u8>>>,
}

impl Session {
    /// Ends the session (the first reason wins) and wakes both loops.
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

    /// Whether the identity's token has run out.
    fn expired(&self) -> bool {
        self.expiry.get().is_some_and(|e| Instant::now() >= e.at)
    }

    /// Checks the shard's requests: abort now, or finish when idle.
    fn check_control(&self) {
        if self.control.abort.get() {
            self.finish(End::Aborted);
        } else if self.control.draining.get() && self.pending.borrow().is_empty() {
            self.finish(End::Drained);
        }
    }
}

/// Serves one client connection of a Redis target until it ends.
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

    let (mut cr, mut cw) = client.into_split();
    // Authentication phase: a token as the password, or under
    // `auth = "none"` the anonymous identity.
    let (identity, leftover) = match target.target.auth {
        AuthMode::None => (Identity::anonymous(), None),
        AuthMode::Token => {
            match auth::authenticate(
                &shard,
                &target,
                &registration.control,
                peer,
                &mut cr,
                &mut cw,
            )
            .await
            {
                Some((identity, buf)) => (identity, Some(buf)),
                None => {
                    drop(registration);
                    m.connections_open.sub(1);
                    return;
                }
            }
        }
    };
    debug!(shard = shard.id, target = %target.target.name, %peer, subject = %identity.subject, "session start");
    let expiry = session_expiry(&shard, &identity);
    let mask = shard
        .shared
        .config
        .masks
        .for_session(&target.target.name, &identity);
    let audit = SessionAudit::start(&shard, &target, peer, &identity);
    let gate = RedisGate::new(shard.policy.clone(), target.index, &identity);

    // Shared store connections carry replies for many sessions; a session
    // whose replies are masked reads its own.
    let (cr, cw, leftover) = if target.target.upstream_sharing && mask.is_none() {
        let shared = shard.shared_upstreams[target.index].clone();
        let pre = leftover.unwrap_or_else(|| ConnBuf::new(target.target.buffer_bytes_max));
        match shared_phase(
            &target,
            &shared,
            &registration.control,
            &gate,
            peer,
            expiry,
            cr,
            cw,
            pre,
            audit.as_ref(),
        )
        .await
        {
            Some(halves) => halves,
            None => {
                drop(registration);
                m.connections_open.sub(1);
                return;
            }
        }
    } else {
        let pre = leftover.unwrap_or_else(|| ConnBuf::new(target.target.buffer_bytes_max));
        (cr, cw, pre)
    };

    match upstream::connect(&target.target, target.upstream_auth.as_deref()).await {
        Ok(up) => {
            let s = Session {
                shard: shard.clone(),
                target: target.clone(),
                identity: RefCell::new(identity),
                mask: RefCell::new(mask),
                expiry: Cell::new(expiry),
                control: registration.control.clone(),
                peer,
                pending: RefCell::new(Pending::default()),
                subs: Cell::new(Subscriptions::default()),
                proto: Cell::new(2),
                end: Cell::new(None),
                terminal: RefCell::new(None),
                terminal_end: Cell::new(End::ProtocolError),
                space: LocalNotify::default(),
                client_waits_for_space: Cell::new(false),
                audit,
                gate,
                local: RefCell::new(VecDeque::new()),
            };
            proxy(&s, cr, cw, up, leftover).await;
            debug!(shard = shard.id, target = %target.target.name, %peer, end = ?s.end.get(), "session end");
            if let Some(a) = &s.audit {
                a.end(end_reason(s.end.get()));
            }
        }
        Err(e) => {
            let reply = match &e {
                UpstreamError::Credential { .. } => {
                    m.error(ErrorKind::UpstreamAuth);
                    UPSTREAM_REFUSED
                }
                UpstreamError::Connect { .. }
                | UpstreamError::Tls { .. }
                | UpstreamError::Refused { .. }
                | UpstreamError::Malformed { .. } => {
                    m.error(ErrorKind::UpstreamUnavailable);
                    UPSTREAM_UNAVAILABLE
                }
            };
            warn!(target = %target.target.name, %peer, error = %e, "cannot open the store for a session");
            if let Some(a) = &audit {
                a.end("upstream unavailable");
            }
            answer_first_command(cr, cw, leftover, reply).await;
        }
    }
    drop(registration);
    m.connections_open.sub(1);
}

/// The store is unreachable: wait for the client's first command, answer it
/// with `reply`, close. Answering before the client speaks could have the
/// error destroyed by the reset that its later write would trigger.
async fn answer_first_command(
    mut r: ClientRead,
    mut w: ClientWrite,
    leftover: ConnBuf,
    reply: &'static [u8],
) {
    let mut scanner = Scanner::request(Limits::request());
    let mut buf: Vec<u8> = leftover.bytes().to_vec();
    buf.reserve(4096);
    let wait = async {
        loop {
            if !buf.is_empty() {
                match scanner.scan(&buf) {
                    Ok(s) if s.complete => return true,
                    Ok(s) => {
                        buf.drain(..s.consumed);
                        if buf.len() == buf.capacity() {
                            return true;
                        }
                    }
                    Err(_) => return true,
                }
            }
            let len = buf.len();
            let (res, slice) = r.read(buf.slice_mut(len..)).await;
            buf = slice.into_inner();
            match res {
                Ok(0) | Err(_) => return false,
                Ok(_) => {}
            }
        }
    };
    if let Ok(true) = monoio::time::timeout(FIRST_COMMAND_WAIT, wait).await {
        let _ = w.write_all(reply).await;
        lingering_close(r, w).await;
    }
}

/// Most commands one read may carry and still be served on the shared
/// store connection; a deeper pipeline gains nothing from sharing.
const SHARE_BATCH_MAX: usize = 4;

/// What the shared phase does with one planned command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Planned {
    /// Forward the frame as it is.
    Forward,
    /// Forward the RESP form of an inline command.
    Inline,
    /// Answer the client's AUTH itself (`auth = "none"`).
    Auth,
    /// Refused by policy: answered with the refusal, a stand-in forwarded
    /// in its place; `inline` when the frame is the RESP form of an inline
    /// command.
    Refuse {
        decision: PolicyDecision,
        inline: bool,
    },
}

/// How the shared phase serves the whole command `frame` whose first
/// arguments are in `head`, or `None` when only a connection of the
/// session's own can. A refused command never reaches the store, so it is
/// answered here whatever it is, unless the appliance treats it specially
/// (AUTH, HELLO, RESET, QUIT, subscriptions, MONITOR...). `tokens`: AUTH
/// carries a token, which a connection of the session's own checks.
fn shared_kind(
    gate: &RedisGate,
    frame: &[u8],
    head: &CommandHead,
    tokens: bool,
) -> Option<Planned> {
    let verdict = gate.on_shared(frame, head);
    if verdict == Shared::Forward && shared::shareable(head.arg(frame, 0).unwrap_or_default()) {
        return Some(Planned::Forward);
    }
    match (verdict, commands::classify(frame, head)) {
        (Shared::Refuse(decision), Class::Plain) => Some(Planned::Refuse {
            decision,
            inline: false,
        }),
        (_, Class::Auth) if !tokens => Some(Planned::Auth),
        _ => None,
    }
}

/// How a session's time on the shared store connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SharedEnd {
    /// The session needs a store connection of its own from here on.
    Dedicated,
    /// The session is over.
    Closed(End),
}

/// Serves the session on the shard's shared store connection for as long as
/// it sends one shareable command per read. Returns the client halves and
/// the unprocessed input when the session needs its own store connection,
/// `None` when the session ended here.
#[allow(clippy::too_many_arguments)]
async fn shared_phase(
    target: &Rc<TargetCtx>,
    shared: &Rc<SharedUpstream>,
    control: &Rc<SessionControl>,
    gate: &RedisGate,
    peer: SocketAddr,
    expiry: Option<Expiry>,
    cr: ClientRead,
    cw: ClientWrite,
    buf: ConnBuf,
    audit: Option<&SessionAudit>,
) -> Option<(ClientRead, ClientWrite, ConnBuf)> {
    let inbox = Rc::new(Inbox::default());
    let end: Cell<Option<SharedEnd>> = Cell::new(None);
    let stop_reader = LocalNotify::default();
    let settle = |e: SharedEnd| {
        if end.get().is_none() {
            end.set(Some(e));
        }
        inbox.wake.notify();
        stop_reader.notify();
    };
    let reader = shared_reader(
        target,
        shared,
        control,
        gate,
        &inbox,
        &end,
        &settle,
        &stop_reader,
        expiry,
        cr,
        buf,
        audit,
    );
    let writer = shared_writer(target, control, &inbox, &end, &settle, cw, audit);
    let ((cr, buf), cw) = monoio::join!(reader, writer);
    match end.get() {
        Some(SharedEnd::Dedicated) => Some((cr, cw, buf)),
        Some(SharedEnd::Closed(e)) => {
            inbox.gone.set(true);
            debug!(target = %target.target.name, %peer, end = ?e, "session end (shared)");
            if let Some(a) = audit {
                a.end(end_reason(Some(e)));
            }
            if !matches!(e, End::ClientGone | End::Aborted) {
                lingering_close(cr, cw).await;
            }
            None
        }
        None => None,
    }
}

/// Reads client commands while they can be shared.
#[allow(clippy::too_many_arguments)]
async fn shared_reader(
    target: &Rc<TargetCtx>,
    shared: &Rc<SharedUpstream>,
    control: &SessionControl,
    gate: &RedisGate,
    inbox: &Rc<Inbox>,
    end: &Cell<Option<SharedEnd>>,
    settle: &impl Fn(SharedEnd),
    stop: &LocalNotify,
    expiry: Option<Expiry>,
    mut cr: ClientRead,
    mut buf: ConnBuf,
    audit: Option<&SessionAudit>,
) -> (ClientRead, ConnBuf) {
    let m = target.metrics();
    let limits = Limits::request();
    let pending_max = target.target.pending_replies_max as u32;
    let tokens = target.target.auth == AuthMode::Token;
    // Input the authentication phase read past the accepted AUTH.
    let mut unprocessed = !buf.bytes().is_empty();
    let mut inline: Vec<u8> = Vec::new();
    // One timer for the session's life, not one per read.
    let mut expiry_timer = std::pin::pin!(sleep_until(expiry));
    loop {
        if end.get().is_some() {
            break;
        }
        if expiry.is_some_and(|e| Instant::now() >= e.at) {
            settle(SharedEnd::Closed(End::Expired));
            break;
        }
        if control.abort.get() {
            settle(SharedEnd::Closed(End::Aborted));
            break;
        }
        if control.draining.get() {
            // Owed replies are still delivered by the writer; it ends the session.
            inbox.wake.notify();
            stop.notified().await;
            continue;
        }
        if let Some(a) = audit {
            // A full audit ring holds new commands back.
            a.ready().await;
            if a.refusing() {
                // Refusals are written on a connection of its own.
                settle(SharedEnd::Dedicated);
                break;
            }
        }
        if unprocessed {
            unprocessed = false;
        } else {
            if !buf.make_room() {
                settle(SharedEnd::Dedicated);
                break;
            }
            let woken = async {
                monoio::select! {
                    _ = control.wake_client_side.notified() => {}
                    _ = stop.notified() => {}
                    _ = &mut expiry_timer => {}
                }
            };
            let Ok(n) = buf.read_or(&mut cr, woken).await else {
                continue;
            };
            if n == 0 {
                settle(SharedEnd::Closed(End::ClientGone));
                break;
            }
            m.client_bytes_received.add(n as u64);
        }
        // A few whole commands, every one shareable: a client waiting for
        // each reply (with perhaps an AUTH in front). Anything else (a
        // pipeline, a large or partial frame, a stateful command, bad input)
        // is served on a connection of its own, which handles every case.
        let data = buf.bytes();
        let mut plan: [(usize, usize, Planned); SHARE_BATCH_MAX] =
            [(0, 0, Planned::Forward); SHARE_BATCH_MAX];
        let mut planned = 0;
        let mut pos = 0;
        let mut shareable = true;
        // Inline commands (health checks send `PING\r\n`) are re-encoded as
        // RESP arrays here, as on a dedicated connection.
        inline.clear();
        while pos < data.len() {
            let frame = &data[pos..];
            if planned == SHARE_BATCH_MAX {
                shareable = false;
                break;
            }
            let head = match resp::command_head(frame, &limits) {
                Ok(HeadStatus::Multibulk(h)) if h.captured >= 1 => h,
                Ok(HeadStatus::Inline { line, len }) => {
                    let args = match resp::split_inline(line.slice(frame)) {
                        Ok(a) if !a.is_empty() => a,
                        _ => {
                            shareable = false;
                            break;
                        }
                    };
                    // Decided in its RESP form, like any other command.
                    let from = inline.len();
                    let refs: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
                    resp::encode::command(&mut inline, &refs);
                    let encoded = &inline[from..];
                    let kind = match resp::command_head(encoded, &limits) {
                        Ok(HeadStatus::Multibulk(h)) => shared_kind(gate, encoded, &h, true),
                        _ => None,
                    };
                    let kind = match kind {
                        Some(Planned::Forward) => Planned::Inline,
                        Some(Planned::Refuse { decision, .. }) => Planned::Refuse {
                            decision,
                            inline: true,
                        },
                        _ => {
                            shareable = false;
                            break;
                        }
                    };
                    plan[planned] = (from, inline.len(), kind);
                    planned += 1;
                    pos += len;
                    continue;
                }
                _ => {
                    shareable = false;
                    break;
                }
            };
            let len = match resp::check(frame, &limits) {
                Ok(Some(len)) => len,
                _ => {
                    shareable = false;
                    break;
                }
            };
            let Some(kind) = shared_kind(gate, &frame[..len], &head, tokens) else {
                shareable = false;
                break;
            };
            plan[planned] = (pos, pos + len, kind);
            planned += 1;
            pos += len;
        }
        if !shareable || inbox.owed.get() + planned as u32 > pending_max {
            settle(SharedEnd::Dedicated);
            break;
        }
        let now = Instant::now();
        for &(from, to, kind) in &plan[..planned] {
            let frame = match kind {
                Planned::Inline | Planned::Refuse { inline: true, .. } => &inline[from..to],
                _ => &data[from..to],
            };
            if let Planned::Refuse { decision, .. } = kind {
                // Decided now, once the batch is known to stay here.
                let Some(Gate::Answer {
                    reply, audit: why, ..
                }) = gate.refuse(decision, frame)
                else {
                    unreachable!("a refusal of a whole command is an answer")
                };
                if let Some(a) = audit {
                    a.redis_command(frame, why.0, Some(why.1.as_bytes()), now);
                    a.redis_shared_sent(now);
                }
                shared.submit(inbox, CARRIER, now, Some(reply.into()));
                continue;
            }
            if let Some(a) = audit {
                a.redis_command(frame, Decision::Allow, None, now);
                a.redis_shared_sent(now);
            }
            match kind {
                Planned::Forward => shared.submit(inbox, &data[from..to], now, None),
                Planned::Inline => shared.submit(inbox, &inline[from..to], now, None),
                // Under `auth = "none"` a client's AUTH is answered here and
                // never forwarded; the carrier keeps the answer in its place.
                Planned::Auth => shared.submit(inbox, CARRIER, now, Some(AUTH_OK.into())),
                Planned::Refuse { .. } => {}
            }
        }
        m.commands.add(planned as u64);
        let len = buf.bytes().len();
        buf.consume(len);
    }
    (cr, buf)
}

/// Writes the replies collected in the inbox to the client.
async fn shared_writer(
    target: &Rc<TargetCtx>,
    control: &SessionControl,
    inbox: &Rc<Inbox>,
    end: &Cell<Option<SharedEnd>>,
    settle: &impl Fn(SharedEnd),
    mut cw: ClientWrite,
    audit: Option<&SessionAudit>,
) -> ClientWrite {
    let m = target.metrics();
    let mut spare: Vec<u8> = Vec::new();
    loop {
        let bytes = std::mem::replace(&mut *inbox.bytes.borrow_mut(), std::mem::take(&mut spare));
        if !bytes.is_empty() {
            inbox.taken();
            if let Some(a) = audit {
                a.redis_inbox(&bytes);
                a.durable().await;
            }
            m.client_bytes_sent.add(bytes.len() as u64);
            // A client that stops reading blocks this write; the shared
            // reader cuts it off (it would hold up every session sharing the
            // connection), which ends the write here.
            let (res, mut bytes) = monoio::select! {
                r = cw.write_all(bytes) => r,
                _ = inbox.evicted.notified() => {
                    settle(SharedEnd::Closed(End::ClientGone));
                    break;
                }
                // Only the shard's abort wakes this side during the shared phase.
                _ = control.wake_upstream_side.notified() => {
                    settle(SharedEnd::Closed(End::Aborted));
                    break;
                }
            };
            bytes.clear();
            spare = bytes;
            if res.is_err() {
                settle(SharedEnd::Closed(End::ClientGone));
                break;
            }
            continue;
        }
        spare = bytes;
        let idle = inbox.owed.get() == 0;
        if inbox.failed.get() && idle {
            settle(SharedEnd::Closed(End::UpstreamLost));
            break;
        }
        if control.abort.get() {
            settle(SharedEnd::Closed(End::Aborted));
            break;
        }
        if control.draining.get() && idle {
            settle(SharedEnd::Closed(End::Drained));
            break;
        }
        match end.get() {
            Some(SharedEnd::Closed(End::Expired)) if idle => {
                let (res, _) = cw.write_all(TOKEN_EXPIRED).await;
                if res.is_ok() {
                    m.client_bytes_sent.add(TOKEN_EXPIRED.len() as u64);
                }
                break;
            }
            // Replies owed to an expired session are still delivered.
            Some(SharedEnd::Closed(End::Expired)) => {}
            Some(SharedEnd::Closed(_)) => break,
            // Every shared reply is delivered: the session may move on.
            Some(SharedEnd::Dedicated) if idle => break,
            _ => {}
        }
        monoio::select! {
            _ = inbox.wake.notified() => {}
            _ = control.wake_upstream_side.notified() => {}
        }
    }
    cw
}

async fn proxy(s: &Session, cr: ClientRead, cw: ClientWrite, up: TcpStream, leftover: ConnBuf) {
    let (ur, uw) = up.into_split();
    let (cr, cw) = monoio::join!(client_side(s, cr, uw, leftover), upstream_side(s, ur, cw));
    match s.end.get() {
        Some(End::ClientGone) | Some(End::Aborted) | None => {}
        Some(_) => lingering_close(cr, cw).await,
    }
}

pub(super) type ClientRead = OwnedReadHalf<TcpStream>;
pub(super) type ClientWrite = OwnedWriteHalf<TcpStream>;
type UpstreamRead = OwnedReadHalf<TcpStream>;
type UpstreamWrite = OwnedWriteHalf<TcpStream>;

/// Writes `buf[from..to]` to `w`, giving the buffer back.
async fn send(
    w: &mut OwnedWriteHalf<TcpStream>,
    buf: Vec<u8>,
    from: usize,
    to: usize,
) -> (bool, Vec<u8>) {
    if from == to {
        return (true, buf);
    }
    let (res, slice) = w.write_all(buf.slice(from..to)).await;
    (res.is_ok(), slice.into_inner())
}

/// Reads client commands and forwards them to the store.
async fn client_side(
    s: &Session,
    mut cr: ClientRead,
    mut uw: UpstreamWrite,
    leftover: ConnBuf,
) -> ClientRead {
    let target = &s.target;
    let m = target.metrics();
    let limits = Limits::request();
    let pending_max = target.target.pending_replies_max;
    let mut scanner = Scanner::request(limits);
    // Bytes read before this connection had a store connection of its own
    // (while it shared one) are processed before anything new is read.
    let mut unprocessed = !leftover.bytes().is_empty();
    let mut buf = leftover;
    // Rewritten commands (inline commands, HELLO without AUTH); rare.
    let mut scratch: Vec<u8> = Vec::new();
    // One timer per token, not one per read; a new token (AUTH) resets it.
    let mut timer_for = s.expiry.get();
    let mut expiry_timer = std::pin::pin!(sleep_until(timer_for));
    // The rest of a command refused by policy is dropped, not forwarded.
    let mut discarding = false;

    'read: loop {
        s.check_control();
        if s.ended() {
            break;
        }
        if s.expired() {
            expire(s, &mut uw, scanner.in_frame()).await;
            break;
        }
        if s.control.draining.get() {
            // In flight work finishes on the upstream side; read nothing new.
            wait_for_end(s).await;
            break;
        }
        if let Some(a) = &s.audit {
            // A full audit ring holds new commands back.
            a.ready().await;
        }
        if unprocessed {
            unprocessed = false;
        } else {
            if !buf.make_room() {
                protocol_error(
                    s,
                    &mut uw,
                    "command head larger than buffer_bytes_max",
                    scanner.in_frame(),
                )
                .await;
                break;
            }
            if s.expiry.get() != timer_for {
                timer_for = s.expiry.get();
                expiry_timer.set(sleep_until(timer_for));
            }
            let woken = async {
                monoio::select! {
                    _ = s.control.wake_client_side.notified() => {}
                    _ = &mut expiry_timer => {}
                }
            };
            let Ok(n) = buf.read_or(&mut cr, woken).await else {
                continue 'read;
            };
            if n == 0 {
                s.finish(End::ClientGone);
                break;
            }
            m.client_bytes_received.add(n as u64);
        }

        let now = Instant::now();
        let mut pos = 0usize;
        let mut fwd = 0usize;
        let mut commands = 0u64;
        let mut stop_reading = false;
        loop {
            let data = &buf.bytes()[pos..];
            if data.is_empty() {
                break;
            }
            if scanner.in_frame() {
                match scanner.scan(data) {
                    Ok(sc) => {
                        pos += sc.consumed;
                        if discarding {
                            fwd = pos;
                            discarding = !sc.complete;
                        }
                        if !sc.complete {
                            break;
                        }
                        continue;
                    }
                    Err(e) => {
                        // The store has part of this command: it cannot be
                        // asked for an ordering carrier any more.
                        flush(s, &mut uw, &mut buf, fwd, pos).await;
                        protocol_error(s, &mut uw, &e.to_string(), true).await;
                        break 'read;
                    }
                }
            }
            if s.pending.borrow().len() >= pending_max {
                let ok = flush(s, &mut uw, &mut buf, fwd, pos).await;
                fwd = pos;
                if !ok {
                    break 'read;
                }
                if !wait_for_space(s, pending_max).await {
                    break 'read;
                }
                continue;
            }
            let head = match resp::command_head(data, &limits) {
                Ok(h) => h,
                Err(e) => {
                    refuse(s, &mut uw, &mut buf, fwd, pos, &e.to_string()).await;
                    break 'read;
                }
            };
            match head {
                HeadStatus::Incomplete => break,
                HeadStatus::Empty { len } => {
                    // The store ignores these too; forwarding keeps the stream intact.
                    pos += len;
                }
                HeadStatus::Inline { line, len } => {
                    // Inline commands are re-encoded as RESP arrays so that the
                    // store and everything downstream see one form. A line that
                    // starts with a RESP type byte is a client out of step with
                    // the protocol, not a command: refuse it rather than guess.
                    let split = match line.slice(data).first() {
                        Some(
                            b'$' | b':' | b'+' | b'-' | b'%' | b'~' | b'>' | b'|' | b'#' | b','
                            | b'(' | b'!' | b'=' | b'_',
                        ) => Err("expected an array of bulk strings".to_string()),
                        _ => resp::split_inline(line.slice(data)).map_err(|e| e.to_string()),
                    };
                    let args = match split {
                        Ok(a) => a,
                        Err(e) => {
                            refuse(s, &mut uw, &mut buf, fwd, pos, &e).await;
                            break 'read;
                        }
                    };
                    let ok = flush(s, &mut uw, &mut buf, fwd, pos).await;
                    pos += len;
                    fwd = pos;
                    if !ok {
                        break 'read;
                    }
                    if args.is_empty() {
                        continue;
                    }
                    // Policy hook: inline commands are decided like any other.
                    if let Gate::Answer {
                        carrier,
                        reply,
                        audit,
                    } = s.gate.check_args(&args[..])
                    {
                        if let Some(a) = &s.audit {
                            scratch.clear();
                            let refs: Vec<&[u8]> = args.iter().map(|a| a.as_slice()).collect();
                            resp::encode::command(&mut scratch, &refs);
                            a.redis_command(&scratch, audit.0, Some(audit.1.as_bytes()), now);
                        }
                        commands += 1;
                        if !answer_locally(s, &mut uw, carrier, reply, now).await {
                            break 'read;
                        }
                        continue;
                    }
                    scratch.clear();
                    let refs: Vec<&[u8]> = args.iter().map(|a| a.as_slice()).collect();
                    resp::encode::command(&mut scratch, &refs);
                    let outcome = forward_whole(s, &mut uw, &scratch, now).await;
                    commands += 1;
                    match outcome {
                        Forwarded::Ok => {}
                        Forwarded::Quit => {
                            stop_reading = true;
                            break;
                        }
                        Forwarded::UpstreamLost => {
                            s.finish(End::UpstreamLost);
                            break 'read;
                        }
                    }
                }
                HeadStatus::Multibulk(h) => {
                    // Policy hook: decide before any byte of the command moves.
                    let gate = match s.gate.check_head(data, &h) {
                        Gate::NeedFrame(id) => match resp::check(data, &limits) {
                            Ok(Some(len)) => match FrameArgs::parse(&data[..len]) {
                                Some(args) => s.gate.check_frame(id, &args),
                                None => s
                                    .gate
                                    .refuse_uninspectable(h.arg(data, 0).unwrap_or_default()),
                            },
                            Ok(None) if buf.is_full_at_bound() && pos == 0 => s
                                .gate
                                .refuse_uninspectable(h.arg(data, 0).unwrap_or_default()),
                            Ok(None) => break,
                            Err(e) => {
                                refuse(s, &mut uw, &mut buf, fwd, pos, &e.to_string()).await;
                                break 'read;
                            }
                        },
                        g => g,
                    };
                    if let Gate::Answer {
                        carrier,
                        reply,
                        audit,
                    } = gate
                    {
                        if let Some(a) = &s.audit {
                            // The refused command as far as it is buffered
                            // (the trail caps commands anyway).
                            let len = match resp::check(data, &limits) {
                                Ok(Some(len)) => len,
                                _ => data.len(),
                            };
                            a.redis_command(&data[..len], audit.0, Some(audit.1.as_bytes()), now);
                        }
                        if !flush(s, &mut uw, &mut buf, fwd, pos).await
                            || !answer_locally(s, &mut uw, carrier, reply, now).await
                        {
                            break 'read;
                        }
                        commands += 1;
                        match scanner.scan(&buf.bytes()[pos..]) {
                            Ok(sc) => {
                                pos += sc.consumed;
                                fwd = pos;
                                if !sc.complete {
                                    discarding = true;
                                    break;
                                }
                            }
                            Err(e) => {
                                protocol_error(s, &mut uw, &e.to_string(), false).await;
                                break 'read;
                            }
                        }
                        continue;
                    }
                    let class = classify(s, data, &h);
                    let args = h.argc.saturating_sub(1).min(u32::MAX as usize) as u32;
                    let mut entry = entry_for(class, args, now);
                    if let Some(e) = entry.as_mut() {
                        e.plan = reply_plan(s, data, &h);
                    }
                    if let Some(entry) = entry {
                        // The common path: forward in place.
                        match scanner.scan(data) {
                            Ok(sc) => {
                                s.pending.borrow_mut().push(entry);
                                if let Some(a) = &s.audit {
                                    a.redis_command(
                                        &data[..sc.consumed],
                                        Decision::Allow,
                                        None,
                                        now,
                                    );
                                }
                                commands += 1;
                                pos += sc.consumed;
                                if class == Class::Quit {
                                    // The store ignores what follows QUIT; so do we.
                                    stop_reading = true;
                                    break;
                                }
                                if !sc.complete {
                                    break;
                                }
                            }
                            Err(e) => {
                                refuse(s, &mut uw, &mut buf, fwd, pos, &e.to_string()).await;
                                break 'read;
                            }
                        }
                        continue;
                    }
                    // Commands the appliance rewrites or answers: small, handled whole.
                    let len = match resp::check(data, &limits) {
                        Ok(Some(len)) => len,
                        Ok(None) => {
                            if buf.is_full_at_bound() && pos == 0 {
                                protocol_error(
                                    s,
                                    &mut uw,
                                    "command larger than buffer_bytes_max",
                                    false,
                                )
                                .await;
                                break 'read;
                            }
                            break;
                        }
                        Err(e) => {
                            refuse(s, &mut uw, &mut buf, fwd, pos, &e.to_string()).await;
                            break 'read;
                        }
                    };
                    let ok = flush(s, &mut uw, &mut buf, fwd, pos).await;
                    if !ok {
                        break 'read;
                    }
                    scratch.clear();
                    scratch.extend_from_slice(&buf.bytes()[pos..pos + len]);
                    pos += len;
                    fwd = pos;
                    commands += 1;
                    if let Forwarded::UpstreamLost = forward_whole(s, &mut uw, &scratch, now).await
                    {
                        s.finish(End::UpstreamLost);
                        break 'read;
                    }
                }
            }
        }
        let ok = flush(s, &mut uw, &mut buf, fwd, pos).await;
        m.commands.add(commands);
        if !ok {
            break;
        }
        buf.consume(pos);
        if stop_reading {
            wait_for_end(s).await;
            break;
        }
    }
    cr
}

/// Answers a command refused by policy: `carrier` goes to the store in its
/// place and its reply is replaced by `reply`, which so keeps its order
/// among pipelined replies. `false` (and the session ended) when the store
/// is gone.
async fn answer_locally(
    s: &Session,
    uw: &mut UpstreamWrite,
    carrier: &'static [u8],
    reply: Vec<u8>,
    now: Instant,
) -> bool {
    s.local.borrow_mut().push_back(reply);
    s.pending.borrow_mut().push(Entry::one(Expect::Local, now));
    let (res, _) = uw.write_all(carrier).await;
    if res.is_err() {
        s.finish(End::UpstreamLost);
    }
    res.is_ok()
}

/// Forwards `buf[from..to]` to the store; `false` (and the session ended)
/// when the store is gone.
async fn flush(
    s: &Session,
    uw: &mut UpstreamWrite,
    buf: &mut ConnBuf,
    from: usize,
    to: usize,
) -> bool {
    let (ok, b) = send(uw, buf.take(), from, to).await;
    buf.put(b);
    if !ok {
        s.finish(End::UpstreamLost);
    }
    ok
}

/// Forwards the commands before a malformed one, then reports it.
async fn refuse(
    s: &Session,
    uw: &mut UpstreamWrite,
    buf: &mut ConnBuf,
    from: usize,
    to: usize,
    why: &str,
) {
    if flush(s, uw, buf, from, to).await {
        protocol_error(s, uw, why, false).await;
    }
}

/// The pending entry for a forwarded command of class `class` with `args`
/// arguments; `None` for the classes the appliance rewrites or answers.
fn entry_for(class: Class, args: u32, now: Instant) -> Option<Entry> {
    match class {
        Class::Plain => Some(Entry::one(Expect::Plain, now)),
        Class::Quit => Some(Entry::one(Expect::Quit, now)),
        // One confirmation per channel named (or one error for none).
        Class::Subscribe(_) => Some(Entry {
            expect: Expect::Subscription,
            left: args.max(1),
            started: now,
            plan: Plan::Detect,
        }),
        Class::Unsubscribe(_) if args > 0 => Some(Entry {
            expect: Expect::Subscription,
            left: args,
            started: now,
            plan: Plan::Detect,
        }),
        Class::Unsubscribe(k) => Some(Entry {
            expect: Expect::UnsubscribeAll(k),
            left: 0,
            started: now,
            plan: Plan::Detect,
        }),
        Class::Auth | Class::Hello | Class::Reset | Class::Refused(_) => None,
    }
}

/// What became of a command handled whole.
enum Forwarded {
    Ok,
    Quit,
    UpstreamLost,
}

/// Forwards (or answers) one complete command held in `frame`: the slow path
/// for commands the appliance rewrites, refuses or answers itself.
async fn forward_whole(
    s: &Session,
    uw: &mut UpstreamWrite,
    frame: &[u8],
    now: Instant,
) -> Forwarded {
    let limits = Limits::request();
    let head = match resp::command_head(frame, &limits) {
        Ok(HeadStatus::Multibulk(h)) => h,
        _ => return Forwarded::Ok,
    };
    let class = classify(s, frame, &head);
    if let Some(a) = &s.audit {
        // A command refused because the trail is down is not recorded (it
        // could not be); it does not run either.
        match class {
            Class::Refused(AUDIT_UNAVAILABLE) => {}
            Class::Refused(_) => a.redis_command(frame, Decision::Block, None, now),
            // AUTH and HELLO passwords are replaced before the record is built.
            _ => a.redis_command(frame, Decision::Allow, None, now),
        }
    }
    let args = head.argc.saturating_sub(1).min(u32::MAX as usize) as u32;
    let write = |bytes: Vec<u8>, entries: &[Entry]| {
        for e in entries {
            s.pending.borrow_mut().push(*e);
        }
        bytes
    };
    if let Some(mut entry) = entry_for(class, args, now) {
        entry.plan = reply_plan(s, frame, &head);
        s.pending.borrow_mut().push(entry);
        let (res, _) = uw.write_all(frame.to_vec()).await;
        return match (res, class) {
            (Err(_), _) => Forwarded::UpstreamLost,
            (Ok(_), Class::Quit) => Forwarded::Quit,
            (Ok(_), _) => Forwarded::Ok,
        };
    }
    let (bytes, result) = match class {
        // Forwarded above; listed so that a new class is a compile error here.
        Class::Plain | Class::Quit | Class::Subscribe(_) | Class::Unsubscribe(_) => (
            write(frame.to_vec(), &[Entry::one(Expect::Plain, now)]),
            Forwarded::Ok,
        ),
        Class::Auth => {
            // Never forwarded: the store's session stays the appliance's.
            // Under `auth = "none"` any credential is accepted; with tokens
            // a valid one switches the session's identity.
            let reply = match reauthenticate(s, frame).await {
                Ok(()) => AUTH_OK,
                Err(reject) => auth::wrongpass(&reject),
            };
            (
                write(CARRIER.to_vec(), &[Entry::one(Expect::Replace(reply), now)]),
                Forwarded::Ok,
            )
        }
        Class::Refused(msg) => {
            if msg != AUDIT_UNAVAILABLE {
                s.target.metrics().error(ErrorKind::Unsupported);
            }
            (
                write(CARRIER.to_vec(), &[Entry::one(Expect::Replace(msg), now)]),
                Forwarded::Ok,
            )
        }
        Class::Reset => {
            let mut out = frame.to_vec();
            let mut entries = vec![Entry::one(Expect::Reset, now)];
            if let Some(auth) = &s.target.upstream_auth {
                // RESET logs the connection out; the appliance logs back in
                // right behind it, before any later command runs.
                out.extend_from_slice(auth);
                entries.push(Entry::one(Expect::InternalAuth, now));
            }
            (write(out, &entries), Forwarded::Ok)
        }
        Class::Hello => match reauthenticate(s, frame).await {
            Ok(()) => {
                let (out, proto) = rewrite_hello(frame);
                (
                    write(out, &[Entry::one(Expect::Hello(proto), now)]),
                    Forwarded::Ok,
                )
            }
            Err(reject) => (
                write(
                    CARRIER.to_vec(),
                    &[Entry::one(Expect::Replace(auth::wrongpass(&reject)), now)],
                ),
                Forwarded::Ok,
            ),
        },
    };
    let (res, _) = uw.write_all(bytes).await;
    if res.is_err() {
        Forwarded::UpstreamLost
    } else {
        result
    }
}

/// Checks the token of an AUTH or HELLO ... AUTH command of an
/// authenticated session and, when valid, makes it the session's identity
/// (a pool handing the connection to another user, or a fresh token before
/// the old one expires). Commands without a token, and every command under
/// `auth = "none"`, change nothing.
async fn reauthenticate(s: &Session, frame: &[u8]) -> Result<(), crate::identity::Reject> {
    if s.target.target.auth != AuthMode::Token {
        return Ok(());
    }
    let Ok(Some((Frame::Array(items), _))) = resp::parse(frame, &Limits::request()) else {
        return Err(crate::identity::Reject::Malformed);
    };
    let args: Vec<&[u8]> = items.iter().filter_map(|f| f.bytes(frame)).collect();
    let Some(token) = auth::token_of(&args) else {
        return Ok(());
    };
    let identity = verify_token(&s.shard, &s.target, s.peer, token).await?;
    let previous = s.identity.replace(identity);
    let now = s.identity.borrow();
    if previous.subject != now.subject {
        tracing::info!(
            event = "identity_switch",
            target = %s.target.target.name,
            peer = %s.peer,
            from = %previous.subject,
            to = %now.subject,
            "session identity changed by AUTH"
        );
    }
    s.expiry.set(session_expiry(&s.shard, &now));
    let mask = s
        .shard
        .shared
        .config
        .masks
        .for_session(&s.target.target.name, &now);
    s.mask.replace(mask);
    if let Some(a) = &s.audit {
        a.set_identity(&now, s.peer, &s.target.target.name);
    }
    // Policy hook: the new identity's groups decide from the next command.
    s.gate.set_identity(&now);
    Ok(())
}

/// Which parts of a command's reply are masked whole; only sessions with
/// key or field masks look at the arguments.
#[inline]
fn reply_plan(s: &Session, buf: &[u8], head: &resp::CommandHead) -> Plan {
    match s.mask.borrow().as_deref() {
        Some(m) if m.has_keys || m.has_fields => plan_for_command(m, buf, head),
        _ => Plan::Detect,
    }
}

/// The command's class, or a refusal while the audit trail cannot record
/// it under `fail_closed`.
fn classify(s: &Session, frame: &[u8], head: &resp::CommandHead) -> Class {
    if s.audit.as_ref().is_some_and(SessionAudit::refusing) {
        return Class::Refused(AUDIT_UNAVAILABLE);
    }
    commands::classify(frame, head)
}

/// How a session's end is named in the audit trail.
fn end_reason(end: Option<End>) -> &'static str {
    match end {
        None | Some(End::ClientGone) => "client closed",
        Some(End::UpstreamLost) => "upstream lost",
        Some(End::UpstreamAuth) => "upstream refused the appliance's credential",
        Some(End::ProtocolError) => "client protocol error",
        Some(End::Expired) => "token expired",
        Some(End::Quit) => "quit",
        Some(End::Drained) => "appliance stopping",
        Some(End::Aborted) => "aborted at shutdown",
    }
}

/// HELLO without its `AUTH user pass` part (the client's credential never
/// reaches the store), and the protocol version it asks for.
fn rewrite_hello(frame: &[u8]) -> (Vec<u8>, Option<u8>) {
    let Ok(Some((Frame::Array(items), _))) = resp::parse(frame, &Limits::request()) else {
        return (frame.to_vec(), None);
    };
    let args: Vec<&[u8]> = items.iter().filter_map(|f| f.bytes(frame)).collect();
    let proto = args
        .get(1)
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.parse::<u8>().ok());
    let mut kept: Vec<&[u8]> = Vec::with_capacity(args.len());
    let mut i = 0;
    while i < args.len() {
        if i >= 2 && args[i].eq_ignore_ascii_case(b"AUTH") && i + 2 < args.len() {
            i += 3;
            continue;
        }
        kept.push(args[i]);
        i += 1;
    }
    let mut out = Vec::with_capacity(frame.len());
    resp::encode::command(&mut out, &kept);
    (out, proto)
}

/// Reports a malformed or oversized command: the commands before it are
/// answered, then this error, then the connection closes. When the bad
/// bytes came in the middle of a command already partly forwarded, the store
/// is mid-frame and cannot be asked for an ordering carrier; the error is
/// written as soon as the upstream side is between replies.
async fn protocol_error(s: &Session, uw: &mut UpstreamWrite, why: &str, mid_frame: bool) {
    s.target.metrics().error(ErrorKind::ClientProtocol);
    debug!(target = %s.target.target.name, peer = %s.peer, error = why, "client protocol error");
    let mut reply = Vec::with_capacity(64 + why.len());
    reply.extend_from_slice(b"-ERR custos: protocol error: ");
    reply.extend(
        why.bytes()
            .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
    );
    reply.extend_from_slice(b"\r\n");
    terminate(s, uw, reply, mid_frame, End::ProtocolError).await;
}

/// The token ran out: no new command is read; the replies in flight get the
/// configured grace, then the client is told why the session ends.
async fn expire(s: &Session, uw: &mut UpstreamWrite, mid_frame: bool) {
    debug!(target = %s.target.target.name, peer = %s.peer, subject = %s.identity.borrow().subject, "token expired; ending the session");
    let grace = s.expiry.get().map_or(Duration::ZERO, |e| e.grace);
    let ending = terminate(s, uw, TOKEN_EXPIRED.to_vec(), mid_frame, End::Expired);
    if monoio::time::timeout(grace, ending).await.is_err() {
        s.finish(End::Expired);
    }
}

/// Ends the session with `reply` as the client's last reply, after the
/// replies to the commands before it (unless a command is half forwarded,
/// when the store cannot be asked for an ordering carrier).
async fn terminate(s: &Session, uw: &mut UpstreamWrite, reply: Vec<u8>, mid_frame: bool, end: End) {
    *s.terminal.borrow_mut() = Some(reply);
    s.terminal_end.set(end);
    if mid_frame {
        s.finish(end);
        return;
    }
    s.pending
        .borrow_mut()
        .push(Entry::one(Expect::Terminal, Instant::now()));
    let (res, _) = uw.write_all(CARRIER).await;
    if res.is_err() {
        s.finish(end);
        return;
    }
    wait_for_end(s).await;
}

/// Waits for room in the FIFO; `false` when the session ended instead.
async fn wait_for_space(s: &Session, pending_max: usize) -> bool {
    loop {
        if s.ended() {
            return false;
        }
        if s.pending.borrow().len() < pending_max {
            return true;
        }
        s.client_waits_for_space.set(true);
        monoio::select! {
            _ = s.space.notified() => {}
            _ = s.control.wake_client_side.notified() => {}
        }
        s.check_control();
    }
}

async fn wait_for_end(s: &Session) {
    while !s.ended() {
        s.control.wake_client_side.notified().await;
        s.check_control();
    }
}

/// What the upstream side does with the frame it is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FrameClass {
    /// A pub/sub delivery or RESP3 push: forward, no command owns it.
    OutOfBand,
    /// The reply to the oldest pending command.
    Reply {
        /// Starts with `-` or `!`.
        error: bool,
        /// Swallowed (the appliance writes its own reply instead).
        skip: bool,
    },
}

/// Reads replies from the store and forwards them to the client.
async fn upstream_side(s: &Session, mut ur: UpstreamRead, mut cw: ClientWrite) -> ClientWrite {
    let target = &s.target;
    let m = target.metrics();
    let limits = Limits::reply();
    let mut scanner = Scanner::new(limits);
    // A masked reply is rewritten whole, so it must fit the buffer: masked
    // sessions may grow theirs up to the masking bound (on demand only).
    let bound = if s.shard.shared.config.masks.apply_to(&target.target.name) {
        target.target.buffer_bytes_max.max(MASKED_REPLY_BYTES_MAX)
    } else {
        target.target.buffer_bytes_max
    };
    let mut buf = ConnBuf::new(bound);
    let mut current = FrameClass::OutOfBand;
    let mut scratch = Scratch::default();
    let mut masked: Vec<u8> = Vec::new();

    'read: loop {
        s.check_control();
        if s.ended() {
            break;
        }
        if !buf.make_room() {
            warn!(target = %target.target.name, "reply header larger than buffer_bytes_max; closing session");
            s.finish(End::UpstreamLost);
            break;
        }
        let Ok(n) = buf
            .read_or(&mut ur, s.control.wake_upstream_side.notified())
            .await
        else {
            continue 'read;
        };
        if n == 0 {
            if !s.ended() {
                m.error(ErrorKind::UpstreamUnavailable);
                warn!(target = %target.target.name, peer = %s.peer, "upstream closed the connection mid-session");
            }
            s.finish(End::UpstreamLost);
            break;
        }

        let now = Instant::now();
        let mut pos = 0usize;
        let mut fwd = 0usize;
        let mut after: Option<End> = None;
        let mut wrote_ok = true;
        loop {
            let data = &buf.bytes()[pos..];
            if data.is_empty() {
                break;
            }
            if !scanner.in_frame() {
                // A frame starts here: decide whose it is before any of it moves.
                let class = match classify_reply(s, data) {
                    Some(c) => c,
                    None => break, // need more bytes to tell
                };
                if let FrameClass::Reply { skip: true, .. } = class {
                    if let Some(a) = &s.audit {
                        a.durable().await;
                    }
                    let (ok, b) = send(&mut cw, buf.take(), fwd, pos).await;
                    buf.put(b);
                    m.client_bytes_sent.add((pos - fwd) as u64);
                    wrote_ok &= ok;
                    fwd = pos;
                }
                current = class;
                // Subscription confirmations carry the count the session tracks.
                if let FrameClass::Reply { error: false, .. } = class
                    && matches!(
                        s.pending.borrow().front().map(|e| e.expect),
                        Some(Expect::Subscription) | Some(Expect::UnsubscribeAll(_))
                    )
                {
                    match resp::check(&buf.bytes()[pos..], &limits) {
                        Ok(Some(len)) => {
                            // An UNSUBSCRIBE-all learns its reply count from the
                            // counts as they were before its first confirmation.
                            let subs = s.subs.get();
                            s.pending.borrow_mut().resolve_front(&subs);
                            track_subscription(s, &buf.bytes()[pos..pos + len]);
                        }
                        Ok(None) => break,
                        Err(_) => {}
                    }
                }
                let mask = s.mask.borrow().clone();
                if let Some(mask) = mask
                    && !matches!(class, FrameClass::Reply { skip: true, .. })
                {
                    let data = &buf.bytes()[pos..];
                    match resp::check(data, &limits) {
                        Ok(Some(len)) => {
                            let plan = match class {
                                FrameClass::Reply { .. } => {
                                    s.pending.borrow().front().map_or(Plan::Detect, |e| e.plan)
                                }
                                FrameClass::OutOfBand => Plan::Detect,
                            };
                            masked.clear();
                            if let Ok(true) =
                                mask_reply(&mask, plan, &data[..len], &mut scratch, &mut masked)
                            {
                                let (ok, b) = send(&mut cw, buf.take(), fwd, pos).await;
                                buf.put(b);
                                m.client_bytes_sent.add((pos - fwd) as u64);
                                let out = std::mem::take(&mut masked);
                                m.client_bytes_sent.add(out.len() as u64);
                                m.replies_masked.add(1);
                                let (res, out) = cw.write_all(out).await;
                                masked = out;
                                wrote_ok &= ok && res.is_ok();
                                // The scan below walks the original frame;
                                // nothing of it is forwarded.
                                fwd = pos + len;
                            }
                        }
                        Ok(None) if buf.is_full_at_bound() && pos == 0 => {
                            // Larger than the masking bound: it cannot be
                            // checked, so it is not forwarded at all.
                            warn!(target = %target.target.name, peer = %s.peer, bound, "reply too large to mask; closing session");
                            m.error(ErrorKind::UpstreamUnavailable);
                            let _ = send_static(&mut cw, REPLY_TOO_LARGE_TO_MASK).await;
                            {
                                let subs = s.subs.get();
                                s.pending.borrow_mut().reply(&subs, true);
                            }
                            s.finish(End::UpstreamLost);
                            break 'read;
                        }
                        // Wait for the rest of the frame before any of it moves.
                        Ok(None) => break,
                        // The scanner reports it below.
                        Err(_) => {}
                    }
                }
            }
            let data = &buf.bytes()[pos..];
            let sc = match scanner.scan(data) {
                Ok(sc) => {
                    if let (Some(a), FrameClass::Reply { skip: false, .. }) = (&s.audit, current) {
                        a.reply_chunk(&data[..sc.consumed]);
                    }
                    sc
                }
                Err(e) => {
                    warn!(target = %target.target.name, error = %e, "malformed reply from upstream; closing session");
                    m.error(ErrorKind::UpstreamUnavailable);
                    let (_, b) = send(&mut cw, buf.take(), fwd, pos).await;
                    buf.put(b);
                    s.finish(End::UpstreamLost);
                    break 'read;
                }
            };
            pos += sc.consumed;
            if let FrameClass::Reply { skip: true, .. } = current {
                fwd = pos;
            }

            if !sc.complete {
                break;
            }
            if let FrameClass::Reply { error, skip } = current {
                let done = {
                    let subs = s.subs.get();
                    s.pending.borrow_mut().reply(&subs, error)
                };
                let Some(entry) = done else { continue };
                if s.client_waits_for_space.get() {
                    s.client_waits_for_space.set(false);
                    s.space.notify();
                }
                let us = now.saturating_duration_since(entry.started).as_micros() as u64;
                target.latency.record_us(us);
                if let Some(a) = &s.audit {
                    match entry.expect {
                        Expect::InternalAuth
                        | Expect::Terminal
                        | Expect::Replace(AUDIT_UNAVAILABLE) => a.reply_discard(),
                        Expect::Replace(reply) if skip => {
                            a.redis_reply(false, us, Some(reply), now)
                        }
                        _ => a.redis_reply(error, us, None, now),
                    }
                }
                match entry.expect {
                    Expect::Plain | Expect::Subscription | Expect::UnsubscribeAll(_) => {}
                    Expect::Hello(proto) => {
                        if !error && let Some(p @ 2..=3) = proto {
                            s.proto.set(p);
                        }
                    }
                    Expect::Reset => {
                        s.proto.set(2);
                        s.subs.set(Subscriptions::default());
                    }
                    Expect::Quit => after = Some(End::Quit),
                    Expect::Replace(reply) if skip => {
                        if let Some(a) = &s.audit {
                            a.durable().await;
                        }
                        let ok = send_static(&mut cw, reply).await;
                        m.client_bytes_sent.add(reply.len() as u64);
                        wrote_ok &= ok;
                    }
                    Expect::InternalAuth if error => {
                        m.error(ErrorKind::UpstreamAuth);
                        warn!(target = %target.target.name, "upstream refused the appliance's credential after RESET");
                        after = Some(End::UpstreamAuth);
                        break;
                    }
                    Expect::Terminal if skip => {
                        let reply = s.terminal.borrow_mut().take();
                        if let Some(reply) = reply {
                            m.client_bytes_sent.add(reply.len() as u64);
                            let (res, _) = cw.write_all(reply).await;
                            wrote_ok &= res.is_ok();
                        }
                        after = Some(s.terminal_end.get());
                        break;
                    }
                    Expect::Local if skip => {
                        let reply = s.local.borrow_mut().pop_front();
                        if let Some(reply) = reply {
                            m.client_bytes_sent.add(reply.len() as u64);
                            let (res, _) = cw.write_all(reply).await;
                            wrote_ok &= res.is_ok();
                        }
                    }
                    Expect::Replace(_)
                    | Expect::InternalAuth
                    | Expect::Terminal
                    | Expect::Local => {}
                }
                if after.is_some() {
                    break;
                }
            }
        }
        if fwd < pos
            && let Some(a) = &s.audit
        {
            // durability = "sync": replies wait for their records.
            a.durable().await;
        }
        let (ok, b) = send(&mut cw, buf.take(), fwd, pos).await;
        buf.put(b);
        wrote_ok &= ok;
        if fwd < pos {
            m.client_bytes_sent.add((pos - fwd) as u64);
        }
        buf.consume(pos);
        if !wrote_ok {
            s.finish(End::ClientGone);
            break;
        }
        if let Some(end) = after {
            if end == End::UpstreamAuth {
                let _ = send_static(&mut cw, UPSTREAM_REFUSED).await;
            }
            s.finish(end);
            break;
        }
    }

    // Tell the client why, when there is something to tell and the reply
    // stream is between frames (an error inside a frame would corrupt it).
    if !scanner.in_frame() {
        match s.end.get() {
            Some(End::UpstreamLost) => {
                let owed = s.pending.borrow().len().max(1);
                let mut out = Vec::with_capacity(owed * UPSTREAM_UNAVAILABLE.len());
                for _ in 0..owed {
                    out.extend_from_slice(UPSTREAM_UNAVAILABLE);
                }
                let _ = cw.write_all(out).await;
            }
            Some(End::ProtocolError) | Some(End::Expired) => {
                let reply = s.terminal.borrow_mut().take();
                if let Some(reply) = reply {
                    let _ = cw.write_all(reply).await;
                }
            }
            _ => {}
        }
    }
    cw
}

async fn send_static(w: &mut ClientWrite, bytes: &'static [u8]) -> bool {
    let (res, _) = w.write_all(bytes).await;
    res.is_ok()
}

/// Decides whose frame starts at `data[0]`; `None` when more bytes are
/// needed to tell.
fn classify_reply(s: &Session, data: &[u8]) -> Option<FrameClass> {
    let b0 = data[0];
    let push = b0 == b'>';
    let front = s.pending.borrow().front().map(|e| e.expect);
    if push || (b0 == b'*' && s.proto.get() == 2 && s.subs.get().any()) {
        let word = match commands::first_word(data) {
            FirstWord::Incomplete => return None,
            FirstWord::Word(w) => commands::pubsub_word(w),
            FirstWord::None => PubsubWord::Other,
        };
        let confirms = matches!(
            front,
            Some(Expect::Subscription) | Some(Expect::UnsubscribeAll(_))
        );
        let reply = match word {
            PubsubWord::Message => false,
            PubsubWord::Subscribed(_) | PubsubWord::Unsubscribed(_) => confirms || !push,
            // RESP2 in subscribed mode answers PING with an array; RESP3
            // pushes that are not confirmations are never replies.
            PubsubWord::Other => !push,
        };
        if !reply {
            return Some(FrameClass::OutOfBand);
        }
    }
    let skip = matches!(
        front,
        Some(Expect::Replace(_))
            | Some(Expect::InternalAuth)
            | Some(Expect::Terminal)
            | Some(Expect::Local)
    );
    Some(FrameClass::Reply {
        error: b0 == b'-' || b0 == b'!',
        skip,
    })
}

/// Updates the subscription counts from a confirmation frame.
fn track_subscription(s: &Session, frame: &[u8]) {
    let Ok(Some((f, _))) = resp::parse(frame, &Limits::reply()) else {
        return;
    };
    let items = match f {
        Frame::Array(items) | Frame::Push(items) => items,
        _ => return,
    };
    let (Some(kind), Some(Frame::Integer(count))) =
        (items.first().and_then(|k| k.bytes(frame)), items.get(2))
    else {
        return;
    };
    let mut subs = s.subs.get();
    match commands::pubsub_word(kind) {
        PubsubWord::Subscribed(k) => subs.confirm(k, true, (*count).max(0) as u64),
        PubsubWord::Unsubscribed(k) => subs.confirm(k, false, (*count).max(0) as u64),
        _ => return,
    }
    s.subs.set(subs);
}
