//! The audit trail: who connected, every command, every decision, what was
//! returned (masked), in a form an auditor can trust.
//!
//! # Shape
//!
//! ```text
//! shard ─▶ SessionAudit ─▶ ShardAudit ─▶ ring (SPSC) ─▶ drain thread ─▶ segments
//!          (per session)   (per shard:    (ring.rs)     (drain.rs: mask,  (segment.rs,
//!                           scratch,                     seq, chain, CRC,  checkpoint.rs)
//!                           spill)                       fsync, rotate)
//! ```
//!
//! - A session builds each record in its shard's reusable scratch buffer
//!   ([`record::Encoder`]) and copies it into the shard's ring: no
//!   formatting, no allocation, no lock. Secrets that must never be kept
//!   (Redis `AUTH` passwords, PostgreSQL password messages, tokens) never
//!   enter a record at all; values policy may want masked are masked by the
//!   drain thread, off the hot path.
//! - A full ring does not drop: the record goes to the shard's spill queue
//!   and every session of the shard stops reading new commands
//!   ([`SessionAudit::ready`]) until the drain has made room.
//! - The drain thread numbers each shard's records, chains them with
//!   SHA-256, appends them to that shard's segment, fsyncs in groups, signs
//!   the heads of every chain in checkpoints, rotates segments, removes
//!   expired ones ([`retention`]) and publishes per shard how many records
//!   are durable, which `durability = "sync"` sessions wait for before they
//!   release replies.
//! - At start [`recover`] cuts torn tails left by a crash and notes it.
//! - The command line reads the segments back: [`verify`], [`replay`],
//!   [`search`], [`export`].

pub mod checkpoint;
pub mod config;
pub mod drain;
pub mod export;
pub mod reader;
pub mod record;
pub mod recover;
pub mod replay;
pub mod retention;
pub mod ring;
pub mod search;
pub mod segment;
pub mod session;
pub mod sign;
pub mod verify;

#[cfg(test)]
mod tests;

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub use config::{AuditConfig, Durability, OnFailure};
pub use record::{Decision, Kind};
pub use session::SessionAudit;

use crate::metrics::AuditMetrics;

/// How long a session waits between looks at a full ring or at the
/// durable watermark.
const WAIT_POLL: Duration = Duration::from_micros(200);

/// How long a shard maps instants to wall-clock time from one reading of
/// both clocks: a step of the wall clock shows in records within this.
const CLOCK_ANCHOR_MAX: Duration = Duration::from_secs(1);

/// What the shards and the drain thread share.
pub struct AuditShared {
    /// The settings.
    pub config: AuditConfig,
    /// Per shard: ring entries the drain has made durable (or, under
    /// `fail_open`, given up on).
    pub durable: Vec<AtomicU64>,
    /// The trail cannot be written now.
    pub failed: AtomicBool,
    /// Counters for `/metrics`.
    pub metrics: Arc<AuditMetrics>,
    drain_thread: std::sync::OnceLock<std::thread::Thread>,
}

impl std::fmt::Debug for AuditShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditShared")
            .field("dir", &self.config.dir)
            .field("failed", &self.failed.load(Ordering::Relaxed))
            .finish()
    }
}

impl AuditShared {
    /// State for `shards` shards.
    pub fn new(config: AuditConfig, shards: usize, metrics: Arc<AuditMetrics>) -> AuditShared {
        AuditShared {
            config,
            durable: (0..shards).map(|_| AtomicU64::new(0)).collect(),
            failed: AtomicBool::new(false),
            metrics,
            drain_thread: std::sync::OnceLock::new(),
        }
    }

    /// Wakes the drain thread (it also wakes on its own every
    /// `flush_interval`).
    pub fn wake_drain(&self) {
        if let Some(t) = self.drain_thread.get() {
            t.unpark();
        }
    }

    pub(crate) fn set_drain_thread(&self, t: std::thread::Thread) {
        let _ = self.drain_thread.set(t);
    }

    /// Whether new commands must be refused (`fail_closed` and the trail is
    /// not writable).
    #[inline]
    pub fn refusing(&self) -> bool {
        self.config.on_failure == OnFailure::FailClosed && self.failed.load(Ordering::Relaxed)
    }
}

/// A shard's end of the trail.
pub struct ShardAudit {
    /// Shard number.
    pub shard: u16,
    /// Shared state.
    pub shared: Arc<AuditShared>,
    producer: ring::Producer,
    /// Where records are built.
    scratch: RefCell<Vec<u8>>,
    /// Records that did not fit the ring, in order, to go before any new one.
    spill: RefCell<VecDeque<Box<[u8]>>>,
    /// Records pushed into the ring.
    pushed: Cell<u64>,
    /// Sessions started on this shard.
    sessions: Cell<u64>,
    /// Ring position when the pushed bytes last crossed a
    /// [`NUDGE_BYTES`] step, and when that was.
    stepped: Cell<(u64, Instant)>,
    /// An instant and the wall-clock time (Unix ns) read with it.
    clock_anchor: Cell<(Instant, u64)>,
    /// `record_reply_bytes`.
    pub(crate) reply_bytes: usize,
}

/// Ring bytes between two looks at whether to wake the drain early.
const NUDGE_BYTES: u64 = 64 * 1024;
/// A shard that pushes [`NUDGE_BYTES`] within this (32 MB/s) wakes the
/// drain for them.
const NUDGE_FAST: Duration = Duration::from_millis(2);

/// Bytes of each Redis argument kept in a record.
pub const ARG_BYTES_MAX: usize = 256;
/// Bytes of a command (all arguments) or statement kept in a record.
pub const COMMAND_BYTES_MAX: usize = 4096;

impl ShardAudit {
    /// The shard's end of a ring made by [`ring::channel`].
    pub fn new(shard: u16, shared: Arc<AuditShared>, producer: ring::Producer) -> ShardAudit {
        let reply_bytes = shared.config.record_reply_bytes;
        ShardAudit {
            shard,
            shared,
            producer,
            scratch: RefCell::new(Vec::with_capacity(16 * 1024)),
            spill: RefCell::new(VecDeque::new()),
            pushed: Cell::new(0),
            sessions: Cell::new(0),
            stepped: Cell::new((0, Instant::now())),
            clock_anchor: Cell::new((Instant::now(), record::now_ns())),
            reply_bytes,
        }
    }

    /// A new session id: the shard in the top 16 bits, a counter below,
    /// unique within one run of the appliance.
    pub fn next_session(&self) -> u64 {
        let n = self.sessions.get() + 1;
        self.sessions.set(n);
        ((self.shard as u64) << 48) | (n & ((1 << 48) - 1))
    }

    /// The wall-clock time (Unix ns) of `at`, an instant the session read
    /// for a whole batch of commands or replies anyway: records take their
    /// time from it instead of reading the clock each.
    #[inline]
    pub fn wall_ns(&self, at: Instant) -> u64 {
        let (instant, wall) = self.clock_anchor.get();
        match at.checked_duration_since(instant) {
            Some(d) if d < CLOCK_ANCHOR_MAX => wall + duration_ns(d),
            Some(_) => {
                let anchor = (Instant::now(), record::now_ns());
                self.clock_anchor.set(anchor);
                anchor
                    .1
                    .saturating_sub(duration_ns(anchor.0.saturating_duration_since(at)))
            }
            None => wall.saturating_sub(duration_ns(instant - at)),
        }
    }

    /// Builds a record in the scratch buffer with `build` and queues it.
    #[inline]
    pub fn emit(&self, build: impl FnOnce(&mut Vec<u8>)) {
        let mut scratch = self.scratch.borrow_mut();
        build(&mut scratch);
        let max = self.producer.entry_bytes_max();
        if scratch.len() > max {
            // Bounded by the callers' caps; a record this large is a bug,
            // but it is cut (and so refused by decode) rather than lost.
            scratch.truncate(max);
        }
        let spilling = !self.spill.borrow().is_empty();
        if !spilling && self.producer.push(&scratch) {
            self.pushed.set(self.pushed.get() + 1);
            self.nudge_drain();
            return;
        }
        self.shared.metrics.ring_full(self.shard as usize);
        self.spill.borrow_mut().push_back(scratch.as_slice().into());
        self.shared.wake_drain();
    }

    /// Under `async` the drain sleeps between fsyncs while records gather.
    /// A shard pushing records fast wakes it every [`NUDGE_BYTES`], so it
    /// takes them in short rounds while they are still in the cache and
    /// never holds a core for long; a slow shard leaves it asleep until
    /// the fsync is due, so each round frames, writes and fsyncs a large
    /// batch. Either way a ring a quarter full wakes it.
    #[inline]
    fn nudge_drain(&self) {
        let at = self.producer.position();
        let (last, last_at) = self.stepped.get();
        let cap = self.producer.capacity() as u64;
        let step = NUDGE_BYTES.min(cap / 8);
        if at - last < step {
            return;
        }
        let now = Instant::now();
        self.stepped.set((at, now));
        let fast = now.saturating_duration_since(last_at) < NUDGE_FAST;
        if (fast && self.producer.backlog_above(step)) || self.producer.backlog_above(cap / 4) {
            self.shared.wake_drain();
        }
    }

    /// Moves spilled records into the ring; `true` when none is left.
    fn unspill(&self) -> bool {
        let mut spill = self.spill.borrow_mut();
        while let Some(front) = spill.front() {
            if !self.producer.push(front) {
                return false;
            }
            self.pushed.set(self.pushed.get() + 1);
            spill.pop_front();
        }
        true
    }

    /// Completes when the shard's records all fit in the ring: sessions
    /// await this before reading new commands, so a drain that falls behind
    /// slows clients down instead of losing records.
    pub async fn ready(&self) {
        if self.spill.borrow().is_empty() {
            return;
        }
        while !self.unspill() {
            if self.refusing() {
                // The drain takes nothing while the trail is down under
                // fail_closed: sessions go on, to refuse their commands.
                return;
            }
            self.shared.wake_drain();
            monoio::time::sleep(WAIT_POLL).await;
        }
    }

    /// Under `durability = "sync"`: completes when every record pushed so
    /// far is on disk (or the trail has failed, when waiting longer would
    /// only hold replies whose commands already ran).
    pub async fn durable(&self) {
        if self.shared.config.durability != Durability::Sync {
            return;
        }
        self.ready().await;
        let want = self.pushed.get();
        let done = &self.shared.durable[self.shard as usize];
        if done.load(Ordering::Acquire) >= want {
            return;
        }
        self.shared.wake_drain();
        while done.load(Ordering::Acquire) < want && !self.shared.failed.load(Ordering::Relaxed) {
            monoio::time::sleep(WAIT_POLL).await;
        }
    }

    /// Whether new commands must be refused now.
    #[inline]
    pub fn refusing(&self) -> bool {
        self.shared.refusing()
    }
}

#[inline]
fn duration_ns(d: Duration) -> u64 {
    d.as_secs() * 1_000_000_000 + d.subsec_nanos() as u64
}

/// Starts the trail: recovers the segments, loads or creates the signing
/// key, spawns the drain thread. Returns each shard's end and the handle
/// that stops the drain.
pub fn start(
    config: AuditConfig,
    shards: usize,
    metrics: Arc<AuditMetrics>,
    masker: Arc<custos_masking::Masker>,
) -> Result<(Arc<AuditShared>, Vec<ShardAudit>, drain::DrainHandle), String> {
    let shared = Arc::new(AuditShared::new(config, shards, metrics));
    let mut producers = Vec::with_capacity(shards);
    let mut consumers = Vec::with_capacity(shards);
    for _ in 0..shards {
        let (p, c) = ring::channel(shared.config.ring_bytes);
        producers.push(p);
        consumers.push(c);
    }
    let handle = drain::Drain::start(shared.clone(), consumers, masker)?;
    let ends = producers
        .into_iter()
        .enumerate()
        .map(|(i, p)| ShardAudit::new(i as u16, shared.clone(), p))
        .collect();
    Ok((shared, ends, handle))
}

/// The masker the trail uses unless the masking configuration gives a
/// richer one: every built-in detector, values redacted.
pub fn default_masker() -> custos_masking::Masker {
    custos_masking::Masker::new(
        custos_masking::Scanner::default(),
        custos_masking::Style::Redact { keep_length: false },
    )
    .unwrap_or_else(|_| unreachable!("built-in detectors with redaction always build"))
}
