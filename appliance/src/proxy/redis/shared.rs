//! Store connections shared by the sessions of a shard that send one simple
//! command at a time.
//!
//! A client that waits for each reply before sending its next command (most
//! request/response code, connection pools, agents) costs a proxy two system
//! calls to the store per command when it has a connection of its own. Here
//! such sessions put their commands on one connection per shard and target,
//! so the store and the appliance read and write them in batches, the way
//! twemproxy does. Replies come back in order and are routed to each
//! session's [`Inbox`] by a FIFO.
//!
//! Only commands that neither depend on nor change connection state, never
//! block, and answer with exactly one reply are shared (see
//! [`shareable`]). The first command of a session that is anything else, or
//! the first read that carries a pipeline, moves the session to a connection
//! of its own for the rest of its life, after every shared reply it is owed
//! has been delivered, so replies stay in order.
//!
//! Memory is bounded: a session's inbox holds at most `buffer_bytes_max`
//! before the reader waits for that client, and a client that holds up other
//! sessions waiting behind it for [`STALL_MAX`] is cut off, as Redis cuts off
//! clients past their output buffer limit.

use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::{Duration, Instant};

use custos_parsers::resp::{Limits, Scanner};
use monoio::io::{AsyncWriteRentExt, OwnedReadHalf, OwnedWriteHalf, Splitable};
use monoio::net::TcpStream;
use tracing::{debug, warn};

use super::upstream::{self, UpstreamError};
use crate::metrics::ErrorKind;
use crate::proxy::buffer::ConnBuf;
use crate::runtime::notify::LocalNotify;
use crate::runtime::shard::TargetCtx;

/// How long a session's full inbox may hold up other sessions waiting on
/// the shared connection.
pub const STALL_MAX: Duration = Duration::from_secs(1);
/// How often a stalled reader looks again.
const STALL_POLL: Duration = Duration::from_millis(50);

/// Sent for each owed reply when the shared connection is lost.
const UPSTREAM_UNAVAILABLE: &[u8] = b"-ERR custos: upstream unavailable\r\n";
/// Sent when the store refuses the appliance's credential.
const UPSTREAM_REFUSED: &[u8] =
    b"-ERR custos: upstream unavailable (upstream refused the appliance's credential)\r\n";

/// Where the replies to one session's shared commands collect.
#[derive(Default)]
pub struct Inbox {
    /// Reply bytes for the client, in order.
    pub bytes: RefCell<Vec<u8>>,
    /// Shared commands whose replies are not complete in `bytes` yet.
    pub owed: Cell<u32>,
    /// Wakes the session when bytes arrive or `owed` drops.
    pub wake: LocalNotify,
    /// The session is gone: replies are dropped.
    pub gone: Cell<bool>,
    /// The shared connection failed: the session must end after writing
    /// what it has.
    pub failed: Cell<bool>,
    /// Wakes the shared reader when the session drained its inbox.
    drained: LocalNotify,
    /// Wakes the session when it is cut off for not reading its replies.
    pub evicted: LocalNotify,
}

impl Inbox {
    /// Tells the shared reader that the session took bytes out.
    pub fn taken(&self) {
        self.drained.notify();
    }
}

/// One shared command awaiting its reply.
struct Routed {
    inbox: Rc<Inbox>,
    started: Instant,
    /// Swallow the store's reply and deliver this instead (a client's AUTH
    /// answered by the appliance, or a command refused by policy, carried
    /// by a PING to keep its place).
    replace: Option<Cow<'static, [u8]>>,
}

/// The shared connection of one target on one shard.
pub struct SharedUpstream {
    target: Rc<TargetCtx>,
    out: RefCell<Vec<u8>>,
    fifo: RefCell<VecDeque<Routed>>,
    wake_writer: LocalNotify,
    running: Cell<bool>,
    /// Part of the oldest reply has been delivered: an error appended to
    /// it would corrupt that client's stream.
    front_partial: Cell<bool>,
}

impl SharedUpstream {
    /// A shared connection for `target`; it connects on first use.
    pub fn new(target: Rc<TargetCtx>) -> Rc<SharedUpstream> {
        Rc::new(SharedUpstream {
            target,
            out: RefCell::new(Vec::new()),
            fifo: RefCell::new(VecDeque::new()),
            wake_writer: LocalNotify::default(),
            running: Cell::new(false),
            front_partial: Cell::new(false),
        })
    }

    /// Queues one complete command for the store; its reply goes to `inbox`.
    pub fn submit(
        self: &Rc<Self>,
        inbox: &Rc<Inbox>,
        frame: &[u8],
        now: Instant,
        replace: Option<Cow<'static, [u8]>>,
    ) {
        self.out.borrow_mut().extend_from_slice(frame);
        self.fifo.borrow_mut().push_back(Routed {
            inbox: inbox.clone(),
            started: now,
            replace,
        });
        inbox.owed.set(inbox.owed.get() + 1);
        self.wake_writer.notify();
        if !self.running.replace(true) {
            monoio::spawn(self.clone().run());
        }
    }

    /// Connects, then writes and reads until the connection fails; runs
    /// again when there is new work.
    async fn run(self: Rc<Self>) {
        let t = &self.target;
        loop {
            match upstream::connect(&t.target, t.upstream_auth.as_deref()).await {
                Ok(conn) => {
                    debug!(target = %t.target.name, "shared upstream connection open");
                    let (r, w) = conn.into_split();
                    let lost = Cell::new(false);
                    let lost_wake = LocalNotify::default();
                    let ((), end) = monoio::join!(
                        self.writer(w, &lost, &lost_wake),
                        self.reader(r, &lost, &lost_wake)
                    );
                    if end == ReaderEnd::Lost {
                        t.metrics().error(ErrorKind::UpstreamUnavailable);
                        warn!(target = %t.target.name, "shared upstream connection lost");
                    }
                    self.fail_all(UPSTREAM_UNAVAILABLE);
                }
                Err(e) => {
                    let reply = match e {
                        UpstreamError::Credential { .. } => {
                            t.metrics().error(ErrorKind::UpstreamAuth);
                            UPSTREAM_REFUSED
                        }
                        _ => {
                            t.metrics().error(ErrorKind::UpstreamUnavailable);
                            UPSTREAM_UNAVAILABLE
                        }
                    };
                    warn!(target = %t.target.name, error = %e, "cannot open the shared store connection");
                    self.fail_all(reply);
                }
            }
            if self.fifo.borrow().is_empty() {
                self.running.set(false);
                return;
            }
        }
    }

    /// Answers every owed reply with `reply` and ends those sessions.
    fn fail_all(&self, reply: &'static [u8]) {
        self.out.borrow_mut().clear();
        let routed: Vec<Routed> = self.fifo.borrow_mut().drain(..).collect();
        let partial = self.front_partial.replace(false);
        for (i, r) in routed.into_iter().enumerate() {
            // The first reply may be partly delivered already; an error
            // after it would corrupt that client's stream.
            let cut_mid_reply = i == 0 && partial;
            if !(r.inbox.gone.get() || cut_mid_reply) {
                r.inbox.bytes.borrow_mut().extend_from_slice(reply);
            }
            r.inbox.failed.set(true);
            r.inbox.owed.set(r.inbox.owed.get().saturating_sub(1));
            r.inbox.wake.notify();
        }
    }

    async fn writer(
        &self,
        mut w: OwnedWriteHalf<TcpStream>,
        lost: &Cell<bool>,
        lost_wake: &LocalNotify,
    ) {
        let mut spare: Vec<u8> = Vec::new();
        loop {
            while self.out.borrow().is_empty() {
                if lost.get() {
                    return;
                }
                monoio::select! {
                    _ = self.wake_writer.notified() => {}
                    _ = lost_wake.notified() => {}
                }
                if self.fifo.borrow().is_empty() && self.out.borrow().is_empty() && lost.get() {
                    return;
                }
            }
            let batch = std::mem::replace(&mut *self.out.borrow_mut(), std::mem::take(&mut spare));
            let (res, mut batch) = w.write_all(batch).await;
            batch.clear();
            spare = batch;
            if res.is_err() {
                lost.set(true);
                lost_wake.notify();
                return;
            }
        }
    }

    async fn reader(
        &self,
        mut r: OwnedReadHalf<TcpStream>,
        lost: &Cell<bool>,
        lost_wake: &LocalNotify,
    ) -> ReaderEnd {
        let t = &self.target;
        let limits = Limits::reply();
        let mut scanner = Scanner::new(limits);
        let mut buf = ConnBuf::new(t.target.buffer_bytes_max);
        let inbox_max = t.target.buffer_bytes_max;
        // An idle shared connection is closed after this long, so that the
        // store does not keep a connection for sessions that are gone.
        let idle = Duration::from_secs(30);
        loop {
            if !buf.make_room() {
                warn!(target = %t.target.name, "reply header larger than buffer_bytes_max on the shared connection");
                break;
            }
            // An idle timer is armed only while nothing is owed.
            let owed = !self.fifo.borrow().is_empty();
            let woken = async {
                monoio::select! {
                    _ = lost_wake.notified() => Wake::Lost,
                    _ = monoio::time::sleep(idle), if !owed => Wake::Idle,
                }
            };
            let n = match buf.read_or(&mut r, woken).await {
                Ok(n) => n,
                Err(Wake::Lost) => break,
                Err(Wake::Idle) => {
                    if self.fifo.borrow().is_empty() && self.out.borrow().is_empty() {
                        debug!(target = %t.target.name, "closing idle shared upstream connection");
                        lost.set(true);
                        lost_wake.notify();
                        self.wake_writer.notify();
                        return ReaderEnd::Idle;
                    }
                    continue;
                }
            };
            if n == 0 {
                break;
            }
            let now = Instant::now();
            let mut pos = 0;
            while pos < buf.bytes().len() {
                let start = pos;
                let sc = match scanner.scan(&buf.bytes()[pos..]) {
                    Ok(sc) => sc,
                    Err(e) => {
                        warn!(target = %t.target.name, error = %e, "malformed reply on the shared connection");
                        lost.set(true);
                        lost_wake.notify();
                        return ReaderEnd::Lost;
                    }
                };
                pos += sc.consumed;
                let Some(front) = self
                    .fifo
                    .borrow()
                    .front()
                    .map(|f| (f.inbox.clone(), f.replace.is_some()))
                else {
                    // A reply nobody asked for: the stream cannot be trusted.
                    warn!(target = %t.target.name, "unexpected reply on the shared connection");
                    lost.set(true);
                    lost_wake.notify();
                    return ReaderEnd::Lost;
                };
                let (inbox, replaced) = front;
                if !replaced && !inbox.gone.get() {
                    inbox
                        .bytes
                        .borrow_mut()
                        .extend_from_slice(&buf.bytes()[start..pos]);
                    inbox.wake.notify();
                    // Backpressure: a large reply waits for its client, for a while.
                    if inbox.bytes.borrow().len() > inbox_max
                        && !wait_drained(&inbox, inbox_max, &self.fifo).await
                    {
                        warn!(target = %t.target.name, "client not reading its reply; closing that session");
                        inbox.gone.set(true);
                        inbox.failed.set(true);
                        inbox.bytes.borrow_mut().clear();
                        inbox.wake.notify();
                        inbox.evicted.notify();
                    }
                }
                if !sc.complete {
                    self.front_partial.set(pos > start && !replaced);
                    break;
                }
                self.front_partial.set(false);
                let routed = self.fifo.borrow_mut().pop_front();
                if let Some(routed) = routed {
                    let inbox = &routed.inbox;
                    if let Some(reply) = routed.replace
                        && !inbox.gone.get()
                    {
                        inbox.bytes.borrow_mut().extend_from_slice(&reply);
                    }
                    inbox.owed.set(inbox.owed.get().saturating_sub(1));
                    inbox.wake.notify();
                    t.latency.record_us(now.saturating_duration_since(routed.started).as_micros() as u64);
                }
            }
            buf.consume(pos);
        }
        lost.set(true);
        lost_wake.notify();
        ReaderEnd::Lost
    }
}

/// What interrupted the shared connection's read.
enum Wake {
    /// The writer lost the connection.
    Lost,
    /// Nothing was owed for the idle period.
    Idle,
}

/// Why the shared connection's reader stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReaderEnd {
    /// Nothing was owed for a while; the connection is closed on purpose.
    Idle,
    /// The store closed, failed or sent something it should not have.
    Lost,
}

/// Waits until the session has taken its inbox below `max`. Gives up
/// (`false`) when the session went away, or when it has held up other
/// sessions waiting behind it for [`STALL_MAX`]; a client alone on the
/// connection may read as slowly as it likes.
async fn wait_drained(inbox: &Rc<Inbox>, max: usize, fifo: &RefCell<VecDeque<Routed>>) -> bool {
    let mut blocking_others = Duration::ZERO;
    while inbox.bytes.borrow().len() > max {
        if inbox.gone.get() {
            return false;
        }
        let others = fifo.borrow().iter().any(|r| !Rc::ptr_eq(&r.inbox, inbox));
        if others {
            if blocking_others >= STALL_MAX {
                return false;
            }
            blocking_others += STALL_POLL;
        } else {
            blocking_others = Duration::ZERO;
        }
        let _ = monoio::time::timeout(STALL_POLL, inbox.drained.notified()).await;
    }
    true
}

/// The commands [`shareable`] accepts, sorted for binary search.
const SHAREABLE: &[&[u8]] = &[
    b"APPEND",
    b"BITCOUNT",
    b"DECR",
    b"DECRBY",
    b"DEL",
    b"ECHO",
    b"EXISTS",
    b"EXPIRE",
    b"EXPIREAT",
    b"GET",
    b"GETBIT",
    b"GETDEL",
    b"GETEX",
    b"GETRANGE",
    b"GETSET",
    b"HDEL",
    b"HEXISTS",
    b"HGET",
    b"HGETALL",
    b"HINCRBY",
    b"HINCRBYFLOAT",
    b"HKEYS",
    b"HLEN",
    b"HMGET",
    b"HMSET",
    b"HSET",
    b"HSETNX",
    b"HSTRLEN",
    b"HVALS",
    b"INCR",
    b"INCRBY",
    b"INCRBYFLOAT",
    b"LINDEX",
    b"LLEN",
    b"LPOP",
    b"LPUSH",
    b"LPUSHX",
    b"LRANGE",
    b"LREM",
    b"LSET",
    b"LTRIM",
    b"MGET",
    b"MSET",
    b"MSETNX",
    b"PERSIST",
    b"PEXPIRE",
    b"PEXPIREAT",
    b"PFADD",
    b"PFCOUNT",
    b"PING",
    b"PSETEX",
    b"PTTL",
    b"RPOP",
    b"RPUSH",
    b"RPUSHX",
    b"SADD",
    b"SCARD",
    b"SET",
    b"SETBIT",
    b"SETEX",
    b"SETNX",
    b"SETRANGE",
    b"SISMEMBER",
    b"SMEMBERS",
    b"SMISMEMBER",
    b"SREM",
    b"STRLEN",
    b"TTL",
    b"TYPE",
    b"UNLINK",
    b"XADD",
    b"XLEN",
    b"XRANGE",
    b"XREVRANGE",
    b"ZADD",
    b"ZCARD",
    b"ZCOUNT",
    b"ZINCRBY",
    b"ZMSCORE",
    b"ZRANGE",
    b"ZRANGEBYSCORE",
    b"ZRANK",
    b"ZREM",
    b"ZREVRANGE",
    b"ZREVRANK",
    b"ZSCORE",
];

/// Whether a command may go on a shared connection: it neither depends on
/// nor changes connection state (database, protocol, transaction, client
/// name, subscriptions), never blocks, and has exactly one reply.
pub fn shareable(name: &[u8]) -> bool {
    if name.len() > 13 {
        return false;
    }
    let mut upper = [0u8; 13];
    let upper = &mut upper[..name.len()];
    upper.copy_from_slice(name);
    upper.make_ascii_uppercase();
    SHAREABLE.binary_search(&&*upper).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_sorted_and_matches_any_case() {
        assert!(
            SHAREABLE.windows(2).all(|w| w[0] < w[1]),
            "sorted, no duplicates"
        );
        assert!(
            shareable(b"get") && shareable(b"GET") && shareable(b"hGetAll") && shareable(b"ZSCORE")
        );
        for stateful in [
            &b"SELECT"[..],
            b"MULTI",
            b"EXEC",
            b"WATCH",
            b"BLPOP",
            b"XREAD",
            b"SUBSCRIBE",
            b"HELLO",
            b"CLIENT",
            b"AUTH",
            b"RESET",
            b"QUIT",
            b"EVAL",
            b"WAIT",
            b"MONITOR",
            b"READONLY",
            b"SCAN",
            b"KEYS",
        ] {
            assert!(
                !shareable(stateful),
                "{}",
                String::from_utf8_lossy(stateful)
            );
        }
        assert!(!shareable(b"AVERYLONGCOMMANDNAME"));
    }
}
