//! What the protocol sessions call: one [`SessionAudit`] per client
//! connection, with hooks for the Redis and PostgreSQL proxies.
//!
//! The hooks are synchronous and cheap: they copy bytes the session already
//! has (a command's first bytes, a reply's first bytes) into a record in
//! the shard's scratch buffer and on into the ring. Parsing Redis commands
//! into arguments, capping and masking happen in the drain thread.
//!
//! What is recorded:
//!
//! - `session_start` and `session_end` (with the reason and the number of
//!   commands), `auth_ok` and `auth_fail` (subject, groups, issuer and `jti`
//!   only: a token never enters a record).
//! - Redis: one `command` record per command, as the client sent it (each
//!   argument cut to [`ARG_BYTES_MAX`](super::ARG_BYTES_MAX), all of them to
//!   [`COMMAND_BYTES_MAX`](super::COMMAND_BYTES_MAX)), except that the
//!   password of `AUTH` and `HELLO ... AUTH` is replaced by `****` here,
//!   before the record is built. One `reply` entry per command, matched
//!   in order (Redis answers in order): status, error code, bytes, and the
//!   first `record_reply_bytes` of the reply. The drain writes the two as
//!   one record (see `drain.rs`): the shard only pushes cheap entries.
//! - PostgreSQL: one `command` record per Query (its SQL) and per Execute
//!   (the SQL of the statement its portal was bound to, detail `extended
//!   protocol`, the number of bound parameters in `count`; their values are
//!   not recorded). Parse and Bind are
//!   not recorded on their own. One `reply` entry per CommandComplete,
//!   EmptyQueryResponse, PortalSuspended or ErrorResponse: the command tag
//!   or SQLSTATE, the rows, and the first `record_reply_bytes` of the row
//!   values (tab-separated) or of the error message. Password messages are
//!   never recorded.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Instant;

use custos_parsers::pgwire::{backend, frontend};
use custos_parsers::resp::{self, Limits, Scanner};

use super::record::{Context, Decision, Encoder, FLAG_RAW_RESP, Head, Kind, Proto, Status, now_ns};
use super::{COMMAND_BYTES_MAX, ShardAudit};
use crate::config::Protocol;
use crate::identity::{Identity, Reject};
use crate::runtime::shard::{ShardCtx, TargetCtx};

/// Bytes of a raw Redis command copied into a record: enough for the
/// capped arguments and their RESP framing.
const RAW_COMMAND_BYTES_MAX: usize = COMMAND_BYTES_MAX + 1024;
/// Named prepared statements and portals remembered per session.
const STATEMENTS_MAX: usize = 1024;
/// What replaces a secret.
const REDACTED: &[u8] = b"****";

/// A client connection's part of the trail.
pub struct SessionAudit {
    shard: Rc<ShardAudit>,
    /// The session id.
    pub id: u64,
    proto: Proto,
    context: RefCell<Context>,
    commands: Cell<u64>,
    replies: Cell<u64>,
    excerpt: RefCell<Vec<u8>>,
    reply_bytes: Cell<u64>,
    rows: Cell<u64>,
    /// Splits the reply stream of the shared phase into replies.
    inbox: RefCell<Option<(Scanner, u8)>>,
    /// When each command of the shared phase still owed a reply was sent.
    shared_sent: RefCell<VecDeque<Instant>>,
    pg: RefCell<PgState>,
}

#[derive(Default)]
struct PgState {
    /// Commands awaiting replies, and sync points.
    queue: VecDeque<PgPending>,
    /// SQL of the unnamed statement.
    unnamed: Vec<u8>,
    /// SQL of named statements.
    named: HashMap<Box<[u8]>, Box<[u8]>>,
    /// SQL and parameter count bound to the unnamed portal.
    portal: Vec<u8>,
    portal_params: u16,
    /// Named portals: their SQL and parameter count.
    portals: HashMap<Box<[u8]>, Bound>,
}

type Bound = (Box<[u8]>, u16);

#[derive(Clone, Copy)]
enum PgPending {
    /// A Query or FunctionCall: every reply until ReadyForQuery is its.
    Simple(u64, Instant),
    /// An Execute: its reply ends it.
    Extended(u64, Instant),
    /// A point where the store sends ReadyForQuery.
    Sync,
}

impl SessionAudit {
    /// Starts the trail of a session, or `None` when the appliance keeps
    /// none; records `session_start`.
    pub fn start(
        shard: &ShardCtx,
        target: &TargetCtx,
        peer: SocketAddr,
        identity: &Identity,
    ) -> Option<SessionAudit> {
        let audit = shard.audit.as_ref()?.clone();
        let proto = match target.target.protocol {
            Protocol::Redis => Proto::Redis,
            Protocol::Postgres => Proto::Postgres,
        };
        let s = SessionAudit {
            id: audit.next_session(),
            shard: audit,
            proto,
            context: RefCell::new(context(identity, peer, &target.target.name)),
            commands: Cell::new(0),
            replies: Cell::new(0),
            excerpt: RefCell::new(Vec::new()),
            reply_bytes: Cell::new(0),
            rows: Cell::new(0),
            inbox: RefCell::new(None),
            shared_sent: RefCell::new(VecDeque::new()),
            pg: RefCell::new(PgState::default()),
        };
        s.emit(Kind::SessionStart, 0, |e| e.rule(b"").finish(b"", b"", b""));
        Some(s)
    }

    fn head(&self, kind: Kind, cmd_no: u64) -> Head {
        self.head_at(kind, cmd_no, now_ns())
    }

    #[inline]
    fn head_at(&self, kind: Kind, cmd_no: u64, time_ns: u64) -> Head {
        Head {
            kind: Some(kind),
            protocol: self.proto,
            shard: self.shard.shard,
            time_ns,
            session: self.id,
            cmd_no,
            ..Head::default()
        }
    }

    #[inline]
    fn emit(&self, kind: Kind, cmd_no: u64, f: impl FnOnce(Encoder<'_>)) {
        let head = self.head(kind, cmd_no);
        self.emit_head(&head, f);
    }

    #[inline]
    fn emit_head(&self, head: &Head, f: impl FnOnce(Encoder<'_>)) {
        let context = self.context.borrow();
        self.shard
            .emit(|out| f(Encoder::start(out, head, &context)));
    }

    /// The client authenticated again (Redis AUTH with a new token): later
    /// records carry the new identity.
    pub fn set_identity(&self, identity: &Identity, peer: SocketAddr, target: &str) {
        *self.context.borrow_mut() = context(identity, peer, target);
    }

    /// Completes when the shard's ring has room; await before reading new
    /// commands (backpressure).
    #[inline]
    pub async fn ready(&self) {
        self.shard.ready().await
    }

    /// Under `durability = "sync"`, completes when every record so far is
    /// on disk; await before releasing reply bytes to the client.
    #[inline]
    pub async fn durable(&self) {
        self.shard.durable().await
    }

    /// Whether new commands must be refused (`fail_closed`, trail down).
    #[inline]
    pub fn refusing(&self) -> bool {
        self.shard.refusing()
    }

    fn next_command(&self) -> u64 {
        let n = self.commands.get() + 1;
        self.commands.set(n);
        n
    }

    /// Records `session_end`.
    pub fn end(&self, reason: &str) {
        let mut head = self.head(Kind::SessionEnd, self.commands.get());
        head.count = self.commands.get();
        self.emit_head(&head, |e| e.rule(b"").finish(b"", b"", reason.as_bytes()));
    }

    // ---------------------------------------------------------------- Redis

    /// A Redis command as the client sent it (`frame` starts at the
    /// command; it may be cut short), with policy's decision; `now` is
    /// when the batch it came in was read.
    #[inline]
    pub fn redis_command(
        &self,
        frame: &[u8],
        decision: Decision,
        rule: Option<&[u8]>,
        now: Instant,
    ) {
        let raw = &frame[..frame.len().min(RAW_COMMAND_BYTES_MAX)];
        if carries_secret(raw) {
            return self.redis_command_redacted(raw, decision, rule);
        }
        let cmd_no = self.next_command();
        let time_ns = self.shard.wall_ns(now);
        let mut head = self.head_at(Kind::for_decision(decision), cmd_no, time_ns);
        head.decision = Some(decision);
        head.flags = FLAG_RAW_RESP;
        self.emit_head(&head, |e| {
            e.rule(rule.unwrap_or(b"")).arg(raw).finish(b"", b"", b"")
        });
    }

    /// `AUTH` and `HELLO ... AUTH`: split here so the password can be
    /// replaced before anything is recorded.
    fn redis_command_redacted(&self, raw: &[u8], decision: Decision, rule: Option<&[u8]>) {
        let mut args = Vec::new();
        split_resp(raw, &mut args);
        let values: Vec<&[u8]> = args.iter().map(|a| &raw[a.start..a.end]).collect();
        let secret = secret_index(&values);
        let cmd_no = self.next_command();
        let mut head = self.head(Kind::for_decision(decision), cmd_no);
        head.decision = Some(decision);
        self.emit_head(&head, |e| {
            let mut e = e.rule(rule.unwrap_or(b""));
            for (i, v) in values.iter().enumerate() {
                e = e.arg(if Some(i) == secret { REDACTED } else { v });
            }
            e.finish(b"", b"", b"")
        });
    }

    /// Part of the reply to the oldest command (its bytes as they pass).
    #[inline]
    pub fn reply_chunk(&self, bytes: &[u8]) {
        self.reply_bytes
            .set(self.reply_bytes.get() + bytes.len() as u64);
        let cap = self.shard.reply_bytes;
        let mut ex = self.excerpt.borrow_mut();
        if ex.len() < cap {
            let take = (cap - ex.len()).min(bytes.len());
            ex.extend_from_slice(&bytes[..take]);
        }
    }

    /// The reply to the oldest command is complete; `replaced` is what the
    /// appliance answered instead of the store, when it did; `now` is when
    /// the batch it came in was read.
    pub fn redis_reply(&self, error: bool, latency_us: u64, replaced: Option<&[u8]>, now: Instant) {
        let cmd_no = self.replies.get() + 1;
        self.replies.set(cmd_no);
        let mut ex = self.excerpt.borrow_mut();
        if let Some(r) = replaced {
            ex.clear();
            ex.extend_from_slice(&r[..r.len().min(self.shard.reply_bytes)]);
            self.reply_bytes.set(r.len() as u64);
        }
        let first = ex.first().copied();
        let error = error || matches!(first, Some(b'-' | b'!')) && replaced.is_some();
        let code: &[u8] = if error {
            let line = ex.get(1..).unwrap_or(b"");
            let end = line
                .iter()
                .position(|&b| b == b' ' || b == b'\r')
                .unwrap_or(line.len());
            &line[..end.min(64)]
        } else {
            b""
        };
        let mut head = self.head_at(Kind::Reply, cmd_no, self.shard.wall_ns(now));
        head.status = if error { Status::Error } else { Status::Ok };
        head.latency_us = latency_us;
        head.count = self.reply_bytes.replace(0);
        self.emit_head(&head, |e| e.rule(b"").finish(code, &ex, b""));
        ex.clear();
    }

    /// The reply the store sent for one of the appliance's own commands:
    /// not a client's reply, not recorded.
    pub fn reply_discard(&self) {
        self.excerpt.borrow_mut().clear();
        self.reply_bytes.set(0);
    }

    /// A command of the shared phase was sent at `at` (for its latency).
    pub fn redis_shared_sent(&self, at: Instant) {
        self.shared_sent.borrow_mut().push_back(at);
    }

    /// Reply bytes of the shared phase, in order: whole replies are
    /// recorded as they complete.
    pub fn redis_inbox(&self, bytes: &[u8]) {
        let now = Instant::now();
        let mut pos = 0;
        while pos < bytes.len() {
            let mut inbox = self.inbox.borrow_mut();
            let (scanner, first) = inbox.get_or_insert_with(|| (Scanner::new(Limits::reply()), 0));
            if !scanner.in_frame() {
                *first = bytes[pos];
            }
            let Ok(sc) = scanner.scan(&bytes[pos..]) else {
                // The shared reader already checked these bytes; give up
                // on splitting rather than guess.
                *inbox = None;
                return;
            };
            let first = *first;
            drop(inbox);
            self.reply_chunk(&bytes[pos..pos + sc.consumed]);
            pos += sc.consumed;
            if !sc.complete {
                break;
            }
            let us = self
                .shared_sent
                .borrow_mut()
                .pop_front()
                .map_or(0, |t| now.saturating_duration_since(t).as_micros() as u64);
            self.redis_reply(matches!(first, b'-' | b'!'), us, None, now);
        }
    }

    // ----------------------------------------------------------- PostgreSQL

    /// A client message (`msg` from its tag; `whole` unless it is larger
    /// than the connection's buffer, when `msg` is its first part).
    pub fn pg_frontend(&self, msg: &[u8], whole: bool, now: Instant) {
        self.pg_frontend_decided(msg, whole, now, None);
    }

    /// [`SessionAudit::pg_frontend`] for a message policy refused: a Query
    /// or Parse recorded as a block or approval record naming its rule
    /// (the store runs a stand-in that raises the refusal).
    pub fn pg_frontend_decided(
        &self,
        msg: &[u8],
        whole: bool,
        now: Instant,
        decided: Option<(Decision, &[u8])>,
    ) {
        use frontend::tag;
        let Some(&t) = msg.first() else { return };
        let parsed = if whole {
            frontend::parse(msg).ok()
        } else {
            None
        };
        let body = msg.get(5..).unwrap_or(b"");
        let cut = |b: &[u8]| b[..b.len().min(COMMAND_BYTES_MAX)].to_vec();
        match t {
            tag::QUERY => {
                let sql = match parsed {
                    Some(frontend::Message::Query { sql }) => sql,
                    _ => body,
                };
                let n = self.pg_command(
                    &sql[..sql.len().min(COMMAND_BYTES_MAX)],
                    None,
                    !whole,
                    decided,
                );
                let mut pg = self.pg.borrow_mut();
                pg.queue.push_back(PgPending::Simple(n, now));
                pg.queue.push_back(PgPending::Sync);
            }
            tag::PARSE if decided.is_some() => {
                let sql = match parsed {
                    Some(frontend::Message::Parse { sql, .. }) => sql,
                    _ => body,
                };
                self.pg_command(
                    &sql[..sql.len().min(COMMAND_BYTES_MAX)],
                    None,
                    !whole,
                    decided,
                );
            }
            tag::PARSE => {
                let mut pg = self.pg.borrow_mut();
                let (name, sql) = match parsed {
                    Some(frontend::Message::Parse { statement, sql, .. }) => (statement, sql),
                    _ => (&b""[..], body),
                };
                if name.is_empty() {
                    pg.unnamed.clear();
                    pg.unnamed
                        .extend_from_slice(&sql[..sql.len().min(COMMAND_BYTES_MAX)]);
                } else if pg.named.len() < STATEMENTS_MAX || pg.named.contains_key(name) {
                    pg.named.insert(name.into(), cut(sql).into());
                }
            }
            tag::BIND => {
                let mut pg = self.pg.borrow_mut();
                let PgState {
                    unnamed,
                    named,
                    portal,
                    portal_params,
                    portals,
                    ..
                } = &mut *pg;
                let Some(frontend::Message::Bind(b)) = parsed else {
                    portal.clear();
                    *portal_params = 0;
                    return;
                };
                let params = b.params.len().min(u16::MAX as usize) as u16;
                let sql: &[u8] = if b.statement.is_empty() {
                    unnamed
                } else {
                    named.get(b.statement).map_or(&[][..], |s| &s[..])
                };
                if b.portal.is_empty() {
                    // The common case (drivers bind the unnamed portal for
                    // each execution): a copy into a reused buffer.
                    portal.clear();
                    portal.extend_from_slice(sql);
                    *portal_params = params;
                } else if portals.len() < STATEMENTS_MAX || portals.contains_key(b.portal) {
                    let bound = (sql.into(), params);
                    portals.insert(b.portal.into(), bound);
                }
            }
            tag::EXECUTE => {
                let portal = match parsed {
                    Some(frontend::Message::Execute { portal, .. }) => portal,
                    _ => b"",
                };
                let n = {
                    let pg = self.pg.borrow();
                    let (sql, params) = if portal.is_empty() {
                        (&pg.portal[..], pg.portal_params)
                    } else {
                        pg.portals
                            .get(portal)
                            .map_or((&[][..], 0), |(s, p)| (&s[..], *p))
                    };
                    self.pg_command(sql, Some(params), false, None)
                };
                self.pg
                    .borrow_mut()
                    .queue
                    .push_back(PgPending::Extended(n, now));
            }
            tag::CLOSE => {
                if let Some(frontend::Message::Close { kind, name }) = parsed
                    && !name.is_empty()
                {
                    let mut pg = self.pg.borrow_mut();
                    if kind == frontend::KIND_STATEMENT {
                        pg.named.remove(name);
                    } else {
                        pg.portals.remove(name);
                    }
                }
            }
            tag::FUNCTION_CALL => {
                let oid = match parsed {
                    Some(frontend::Message::FunctionCall { oid, .. }) => oid,
                    _ => 0,
                };
                let text = format!("function call (oid {oid})");
                let n = self.pg_command(text.as_bytes(), None, false, None);
                let mut pg = self.pg.borrow_mut();
                pg.queue.push_back(PgPending::Simple(n, now));
                pg.queue.push_back(PgPending::Sync);
            }
            tag::SYNC => self.pg.borrow_mut().queue.push_back(PgPending::Sync),
            _ => {}
        }
    }

    fn pg_command(
        &self,
        sql: &[u8],
        params: Option<u16>,
        cut: bool,
        decided: Option<(Decision, &[u8])>,
    ) -> u64 {
        let n = self.next_command();
        let decision = decided.map_or(Decision::Allow, |(d, _)| d);
        let mut head = self.head(Kind::for_decision(decision), n);
        head.decision = Some(decision);
        // The number of bound parameters goes in `count`.
        head.count = params.unwrap_or(0) as u64;
        let detail: &[u8] = match (params, cut) {
            (Some(_), _) => b"extended protocol",
            (None, true) => b"statement larger than the connection buffer; its start",
            (None, false) => b"",
        };
        let rule = decided.map_or(&b""[..], |(_, r)| r);
        self.emit_head(&head, |e| e.rule(rule).arg(sql).finish(b"", b"", detail));
        n
    }

    /// A store message (`msg` from its tag), whole.
    pub fn pg_backend(&self, msg: &[u8]) {
        use backend::tag;
        let Some(&t) = msg.first() else { return };
        match t {
            tag::DATA_ROW => {
                self.rows.set(self.rows.get() + 1);
                let cap = self.shard.reply_bytes;
                let mut ex = self.excerpt.borrow_mut();
                if ex.len() < cap
                    && let Ok(backend::Message::DataRow(row)) = backend::parse(msg)
                {
                    for (i, v) in row.values().enumerate() {
                        if i > 0 {
                            ex.push(b'\t');
                        }
                        ex.extend_from_slice(v.unwrap_or(b"NULL"));
                    }
                    ex.push(b'\n');
                    ex.truncate(cap);
                }
            }
            tag::COMMAND_COMPLETE => {
                let tag = match backend::parse(msg) {
                    Ok(backend::Message::CommandComplete { tag }) => tag,
                    _ => b"",
                };
                self.pg_reply(Status::Ok, tag, None);
            }
            tag::EMPTY_QUERY_RESPONSE => self.pg_reply(Status::Ok, b"EMPTY", None),
            tag::PORTAL_SUSPENDED => self.pg_reply(Status::Ok, b"SUSPENDED", None),
            tag::FUNCTION_CALL_RESPONSE => self.pg_reply(Status::Ok, b"FUNCTION", None),
            tag::ERROR_RESPONSE => {
                if let Ok(backend::Message::ErrorResponse(f)) = backend::parse(msg) {
                    let code = f.code().unwrap_or(b"");
                    self.pg_reply(Status::Error, code, f.message());
                }
            }
            tag::READY_FOR_QUERY => {
                let mut pg = self.pg.borrow_mut();
                while let Some(p) = pg.queue.pop_front() {
                    if let PgPending::Sync = p {
                        break;
                    }
                }
                self.rows.set(0);
                self.excerpt.borrow_mut().clear();
            }
            _ => {}
        }
    }

    /// A store message too large for the buffer (`tag` only).
    pub fn pg_backend_streamed(&self, tag: u8) {
        if tag == backend::tag::DATA_ROW {
            self.rows.set(self.rows.get() + 1);
        }
    }

    fn pg_reply(&self, status: Status, code: &[u8], message: Option<&[u8]>) {
        let (cmd_no, sent) = {
            let mut pg = self.pg.borrow_mut();
            match pg.queue.front().copied() {
                Some(PgPending::Simple(n, t)) => (n, Some(t)),
                Some(PgPending::Extended(n, t)) => {
                    pg.queue.pop_front();
                    (n, Some(t))
                }
                _ => (0, None),
            }
        };
        let mut head = self.head(Kind::Reply, cmd_no);
        head.status = status;
        head.count = self.rows.replace(0);
        head.latency_us = sent.map_or(0, |t| t.elapsed().as_micros() as u64);
        let mut ex = self.excerpt.borrow_mut();
        if let Some(m) = message {
            ex.clear();
            ex.extend_from_slice(&m[..m.len().min(self.shard.reply_bytes)]);
        }
        self.emit_head(&head, |e| e.rule(b"").finish(code, &ex, b""));
        ex.clear();
    }
}

impl Kind {
    /// The record kind of a command with this decision.
    pub fn for_decision(d: Decision) -> Kind {
        match d {
            Decision::Allow => Kind::Command,
            Decision::Block => Kind::Block,
            Decision::Approve => Kind::ApprovalRequested,
        }
    }
}

fn context(identity: &Identity, peer: SocketAddr, target: &str) -> Context {
    Context::new(
        identity.subject.as_bytes(),
        &identity.groups,
        identity.issuer.as_bytes(),
        identity.token_id.as_deref().unwrap_or("").as_bytes(),
        peer.to_string().as_bytes(),
        target.as_bytes(),
    )
}

/// Records a token check (`auth_ok` or `auth_fail`). Session 0: the
/// session's own records follow with its id once it starts.
pub fn auth_event(
    shard: &ShardCtx,
    target: &TargetCtx,
    peer: SocketAddr,
    result: &Result<Identity, Reject>,
) {
    let Some(audit) = shard.audit.as_ref() else {
        return;
    };
    let proto = match target.target.protocol {
        Protocol::Redis => Proto::Redis,
        Protocol::Postgres => Proto::Postgres,
    };
    let (kind, ctx, detail) = match result {
        Ok(id) => (Kind::AuthOk, context(id, peer, &target.target.name), ""),
        Err(reject) => (
            Kind::AuthFail,
            Context::new(
                b"",
                &[] as &[&[u8]],
                b"",
                b"",
                peer.to_string().as_bytes(),
                target.target.name.as_bytes(),
            ),
            reject.class(),
        ),
    };
    let head = Head {
        kind: Some(kind),
        protocol: proto,
        shard: audit.shard,
        time_ns: now_ns(),
        ..Head::default()
    };
    audit.emit(|out| {
        Encoder::start(out, &head, &ctx)
            .rule(b"")
            .finish(b"", b"", detail.as_bytes())
    });
}

/// Whether a raw RESP command is `AUTH` or `HELLO`, whose arguments may
/// hold a password. Looks at the name only, without allocating: this runs
/// for every command.
fn carries_secret(raw: &[u8]) -> bool {
    // `*<n>\r\n$<len>\r\n<name>`: both names are 4 or 5 bytes long.
    let Some(rest) = raw.strip_prefix(b"*") else {
        return false;
    };
    let Some(at) = memchr::memchr(b'\n', rest) else {
        return false;
    };
    let rest = &rest[at + 1..];
    let len = match rest {
        [b'$', b'4', b'\r', b'\n', ..] => 4,
        [b'$', b'5', b'\r', b'\n', ..] => 5,
        _ => return false,
    };
    let Some(name) = rest.get(4..4 + len) else {
        return false;
    };
    name.eq_ignore_ascii_case(b"AUTH") || name.eq_ignore_ascii_case(b"HELLO")
}

/// The index of the password among a command's arguments (name first).
fn secret_index(args: &[&[u8]]) -> Option<usize> {
    let name = args.first()?;
    if name.eq_ignore_ascii_case(b"AUTH") {
        return match args.len() {
            2 => Some(1),
            n if n >= 3 => Some(2),
            _ => None,
        };
    }
    if name.eq_ignore_ascii_case(b"HELLO") {
        let i = args.iter().position(|a| a.eq_ignore_ascii_case(b"AUTH"))?;
        return (i + 2 < args.len()).then_some(i + 2);
    }
    None
}

/// One argument split out of a raw RESP command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arg {
    /// Its first byte in the raw command.
    pub start: usize,
    /// Past its last byte present (it may be cut short).
    pub end: usize,
    /// Its full length as the client sent it.
    pub declared: usize,
}

/// Splits a RESP array of bulk strings, possibly cut short, into its
/// arguments; returns the declared argument count. An argument cut short
/// keeps what is there and its declared length.
pub fn split_resp(raw: &[u8], out: &mut Vec<Arg>) -> usize {
    out.clear();
    let line = |at: usize| resp::length_line(raw, at).ok().flatten();
    if raw.first() != Some(&b'*') {
        return 0;
    }
    let Some((argc, mut at)) = line(0) else {
        return 0;
    };
    let argc = argc.max(0) as usize;
    for _ in 0..argc {
        if raw.get(at) != Some(&b'$') {
            break;
        }
        let Some((len, start)) = line(at) else { break };
        let declared = len.max(0) as usize;
        let end = (start + declared).min(raw.len());
        out.push(Arg {
            start,
            end,
            declared,
        });
        at = start + declared + 2;
        if at > raw.len() {
            break;
        }
    }
    argc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resp_is_split_even_when_cut_short() {
        let raw = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$10\r\n01234";
        let mut args = Vec::new();
        assert_eq!(split_resp(raw, &mut args), 3);
        let got: Vec<(&[u8], usize)> = args
            .iter()
            .map(|a| (&raw[a.start..a.end], a.declared))
            .collect();
        assert_eq!(got, [(&b"SET"[..], 3), (b"k", 1), (b"01234", 10)]);
        assert_eq!(split_resp(b"PING\r\n", &mut args), 0);
        assert_eq!(split_resp(b"*2\r\n$3\r\nGET", &mut args), 2);
        assert_eq!(args.len(), 1);
    }

    #[test]
    fn passwords_are_found_where_redis_takes_them() {
        let t: &[u8] = b"tok";
        assert_eq!(secret_index(&[b"AUTH", t]), Some(1));
        assert_eq!(secret_index(&[b"auth", b"alice", t]), Some(2));
        assert_eq!(
            secret_index(&[b"HELLO", b"3", b"AUTH", b"alice", t]),
            Some(4)
        );
        assert_eq!(secret_index(&[b"HELLO", b"3"]), None);
        assert_eq!(secret_index(&[b"GET", b"k"]), None);
        assert!(carries_secret(b"*2\r\n$4\r\nauth\r\n$3\r\ntok\r\n"));
        assert!(carries_secret(b"*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n"));
        assert!(!carries_secret(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"));
    }
}
