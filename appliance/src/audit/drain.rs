//! The drain thread: from the shards' rings to durable, chained, signed
//! segments.
//!
//! One plain thread (never a shard, never the control plane) loops:
//!
//! 1. take what each ring holds (bounded per round), decode it, mask the
//!    command and the reply excerpt, split raw Redis commands into capped
//!    arguments, number and chain it, and frame it for that shard's segment;
//! 2. append each shard's frames with one `write`;
//! 3. fsync: under `async` at most every `flush_interval`, under `sync` as
//!    soon as a round wrote anything (group commit: one fsync covers every
//!    record of the round, from every session of the shard); then publish
//!    how many ring entries of each shard are durable;
//! 4. every `checkpoint_interval` (when anything changed), before each
//!    rotation and at shutdown, sign the heads of every chain into a
//!    checkpoint record appended to every chain;
//! 5. rotate segments by size and age; apply retention once a minute.
//!
//! # One record per command
//!
//! A shard pushes a command entry when it forwards a command and a reply
//! entry when the reply has passed (cheap copies on its hot path). Under
//! `durability = "async"` the drain pairs them ([`Pairing`]): it keeps, per
//! session, a FIFO of masked command bodies whose reply has not come yet
//! (replies come in order per session, pipelines and extended-protocol
//! batches included, and carry their command's number), and writes one
//! record with the command and its reply summary when the reply entry
//! arrives. A command still waiting is written without a summary when its
//! session ends or a later command's reply comes first (status
//! `no_reply`), and before every checkpoint (so before each rotation and at
//! shutdown), or when its session has [`HELD_PER_SESSION_MAX`] waiting or
//! the chain [`HELD_PER_CHAIN_MAX`] (status `unknown`; its reply, if one
//! comes, is then a `reply` record). Nothing is dropped.
//!
//! Under `durability = "sync"` commands are not held: a session releases
//! reply bytes (the first part of a large reply, a COPY or pub/sub stream
//! included) only once every record it pushed is durable, and the durable
//! watermark is a prefix of each ring, so a held command would hold back
//! its own reply and every other session's of the shard. There the command
//! record is written at once and the reply is a `reply` record, as in
//! version 1 trails.
//!
//! When a write or fsync fails (ENOSPC, EIO) the file is cut back to its
//! last whole record, the failure is logged and counted and the shared
//! `failed` flag is raised. Under `fail_closed` the round's records are
//! kept and retried (the shards refuse new commands meanwhile); under
//! `fail_open` they are dropped and counted, and once the disk accepts
//! writes again a `recovery` record says how many were lost, so the chain
//! itself never has a gap.

use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use custos_masking::{Masked, Masker, Span};
use tracing::{error, info, warn};

use super::checkpoint::{self, Head as ChainHead};
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasherDefault;

use super::record::{self, Context, Encoder, FLAG_RAW_RESP, Head, Kind, Proto, Record, Status};
use super::segment::{self, Hash, SegmentWriter};
use super::session::{Arg, split_resp};
use super::sign::SigningKey;
use super::{ARG_BYTES_MAX, AuditShared, COMMAND_BYTES_MAX, Durability, OnFailure, ring};

/// Most bytes of frames built per shard per round, so one busy shard cannot
/// delay the others' fsync for long.
const ROUND_BYTES_MAX: usize = 1024 * 1024;
/// How long a failed trail waits before writing again.
const RETRY_INTERVAL: Duration = Duration::from_millis(100);
/// How often retention runs.
const RETENTION_INTERVAL: Duration = Duration::from_secs(60);
/// Commands of one session held for their replies; beyond, the oldest is
/// written without its reply.
pub const HELD_PER_SESSION_MAX: usize = 1024;
/// Commands held for their replies per chain; beyond, a new command is
/// written without its reply.
pub const HELD_PER_CHAIN_MAX: usize = 16 * 1024;
/// Spare command buffers kept for reuse per chain.
const SPARE_MAX: usize = 1024;

/// One shard's chain as the drain writes it.
struct Chain {
    shard: u16,
    consumer: ring::Consumer,
    writer: Option<SegmentWriter>,
    /// Seq of the next record.
    next_seq: u64,
    /// Hash of record `next_seq - 1`.
    head: Hash,
    /// Frames built and not yet written.
    out: Vec<u8>,
    /// Ring entries represented in `out`.
    out_entries: u64,
    /// Records (ring entries and the drain's own) in `out`.
    out_records: u64,
    /// `(next_seq, head)` before `out`, to roll back a failed write.
    out_base: Option<(u64, Hash)>,
    /// Ring entries written (or given up on under `fail_open`).
    settled: u64,
    /// Written since the last fsync.
    dirty: bool,
    /// Records dropped under `fail_open` since the last successful write.
    unrecorded: u64,
    /// `next_seq` right after the last checkpoint.
    checkpointed: u64,
    /// Commands waiting for their replies.
    pairing: Pairing,
}

impl Chain {
    fn parts(&mut self) -> (Framer<'_>, &mut Pairing) {
        (
            Framer {
                out: &mut self.out,
                next_seq: &mut self.next_seq,
                head: &mut self.head,
                out_base: &mut self.out_base,
                records: &mut self.out_records,
            },
            &mut self.pairing,
        )
    }
}

/// Appends records to a chain's pending bytes: numbers, chains and frames
/// them.
pub struct Framer<'c> {
    /// Frames built and not yet written.
    pub out: &'c mut Vec<u8>,
    /// Seq of the next record.
    pub next_seq: &'c mut u64,
    /// Hash of record `next_seq - 1`.
    pub head: &'c mut Hash,
    /// `(next_seq, head)` before `out`.
    pub out_base: &'c mut Option<(u64, Hash)>,
    /// Records in `out`.
    pub records: &'c mut u64,
}

impl Framer<'_> {
    /// Frames the body that `body` appends as the next record.
    #[inline]
    pub fn frame(&mut self, body: impl FnOnce(&mut Vec<u8>)) {
        if self.out_base.is_none() {
            *self.out_base = Some((*self.next_seq, *self.head));
        }
        *self.head = segment::frame_with(self.out, *self.next_seq, self.head, body);
        *self.next_seq += 1;
        *self.records += 1;
    }
}

/// A masked command body waiting for its reply.
struct Waiting {
    cmd_no: u64,
    body: Vec<u8>,
    /// Offset of the `code` field.
    reply_at: usize,
    /// Offset of the detail bytes.
    detail_at: usize,
    /// Bound parameters of a PostgreSQL Execute (its `count`).
    params: u64,
}

/// Pairs each command with its reply, per session (see the module docs).
#[derive(Default)]
pub struct Pairing {
    sessions: HashMap<u64, VecDeque<Waiting>, BuildHasherDefault<SessionHasher>>,
    held: usize,
    spare: Vec<Vec<u8>>,
}

impl Pairing {
    /// Commands held now.
    pub fn held(&self) -> usize {
        self.held
    }

    /// Takes ring entry `entry` of shard `chain`: holds a command, pairs a
    /// reply with its command, writes anything else (with `pair` false,
    /// every entry is written as it is).
    pub fn take(
        &mut self,
        f: &mut Framer<'_>,
        masker: &Masker,
        s: &mut Scratch,
        chain: usize,
        entry: &[u8],
        pair: bool,
    ) {
        let peeked = if pair { record::peek(entry) } else { None };
        match peeked {
            Some((Kind::Command | Kind::Block | Kind::ApprovalRequested, session, cmd_no))
                if session != 0 && cmd_no != 0 =>
            {
                self.hold(f, masker, s, chain, entry, session, cmd_no)
            }
            Some((Kind::Reply, session, cmd_no)) if session != 0 => {
                self.reply(f, masker, s, chain, entry, session, cmd_no)
            }
            Some((Kind::SessionEnd, session, _)) => {
                self.end(f, session);
                f.frame(|out| masked_body(masker, s, chain, entry, out));
            }
            _ => f.frame(|out| masked_body(masker, s, chain, entry, out)),
        }
    }

    // The drain's parts come borrowed apart (a chain's framer, the masker,
    // the scratch buffers) and the entry's peeked header with them.
    #[allow(clippy::too_many_arguments)]
    fn hold(
        &mut self,
        f: &mut Framer<'_>,
        masker: &Masker,
        s: &mut Scratch,
        chain: usize,
        entry: &[u8],
        session: u64,
        cmd_no: u64,
    ) {
        if self.held >= HELD_PER_CHAIN_MAX {
            f.frame(|out| {
                let at = out.len();
                masked_body(masker, s, chain, entry, out);
                out[at + record::offset::STATUS] = Status::Unknown as u8;
            });
            return;
        }
        let mut body = self.spare.pop().unwrap_or_default();
        body.clear();
        let Some(reply_at) = masked_body_at(masker, s, chain, entry, &mut body) else {
            f.frame(|out| out.extend_from_slice(&body));
            recycle(&mut self.spare, body);
            return;
        };
        let len_at = |at: usize, n: usize| {
            let mut w = [0u8; 4];
            w[..n].copy_from_slice(&body[at..at + n]);
            u32::from_le_bytes(w) as usize
        };
        let excerpt_at = reply_at + 2 + len_at(reply_at, 2);
        let detail_at = excerpt_at + 4 + len_at(excerpt_at, 4) + 4;
        let params = if body[record::offset::PROTOCOL] == Proto::Postgres as u8 {
            record::u64_at(&body, record::offset::COUNT)
        } else {
            0
        };
        let q = self.sessions.entry(session).or_default();
        if q.len() >= HELD_PER_SESSION_MAX
            && let Some(old) = q.pop_front()
        {
            self.held -= 1;
            unanswered(f, &old, Status::Unknown);
            recycle(&mut self.spare, old.body);
        }
        q.push_back(Waiting {
            cmd_no,
            body,
            reply_at,
            detail_at,
            params,
        });
        self.held += 1;
    }

    // As `hold`.
    #[allow(clippy::too_many_arguments)]
    fn reply(
        &mut self,
        f: &mut Framer<'_>,
        masker: &Masker,
        s: &mut Scratch,
        chain: usize,
        entry: &[u8],
        session: u64,
        cmd_no: u64,
    ) {
        let mut paired = None;
        if let Some(q) = self.sessions.get_mut(&session) {
            // Commands before this reply's got none (a PostgreSQL statement
            // refused at Parse, a reply the appliance answered itself).
            while let Some(w) = q.front() {
                if w.cmd_no >= cmd_no {
                    break;
                }
                let w = q.pop_front().expect("a front");
                self.held -= 1;
                unanswered(f, &w, Status::NoReply);
                recycle(&mut self.spare, w.body);
            }
            if q.front().is_some_and(|w| w.cmd_no == cmd_no) {
                paired = q.pop_front();
                self.held -= 1;
            }
        }
        let Some(w) = paired else {
            // Its command was written already (or there is none): the
            // reply stands alone.
            f.frame(|out| masked_body(masker, s, chain, entry, out));
            return;
        };
        match Record::decode(entry) {
            Ok(r) => f.frame(|out| {
                record::append_with_reply(
                    out,
                    &w.body,
                    w.reply_at,
                    (r.status, r.latency_us, r.count, r.code),
                    |out| mask(masker, r.excerpt, out, &mut s.spans),
                    |out| detail(out, &w),
                )
            }),
            Err(_) => {
                unanswered(f, &w, Status::NoReply);
                f.frame(|out| masked_body(masker, s, chain, entry, out));
            }
        }
        recycle(&mut self.spare, w.body);
    }

    /// Session `session` ended: its waiting commands got no reply.
    fn end(&mut self, f: &mut Framer<'_>, session: u64) {
        if let Some(q) = self.sessions.remove(&session) {
            for w in q {
                self.held -= 1;
                unanswered(f, &w, Status::NoReply);
                recycle(&mut self.spare, w.body);
            }
        }
    }

    /// Writes every waiting command without its reply.
    pub fn flush(&mut self, f: &mut Framer<'_>, status: Status) {
        if self.held == 0 {
            return;
        }
        for q in self.sessions.values_mut() {
            for w in q.drain(..) {
                unanswered(f, &w, status);
                recycle(&mut self.spare, w.body);
            }
        }
        self.held = 0;
    }
}

/// Hashes session ids, which the appliance numbers itself (no
/// adversary chooses them): one multiplication spreads a counter over the
/// table.
#[derive(Default)]
pub struct SessionHasher(u64);

impl std::hash::Hasher for SessionHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (n ^ (n >> 32)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// Keeps a written command's buffer for the next one, up to [`SPARE_MAX`].
fn recycle(spare: &mut Vec<Vec<u8>>, body: Vec<u8>) {
    if spare.len() < SPARE_MAX {
        spare.push(body);
    }
}

/// A held command's detail, with a PostgreSQL Execute's bound parameter
/// count (its `count` holds the reply's rows once written).
fn detail(out: &mut Vec<u8>, w: &Waiting) {
    let d = &w.body[w.detail_at..];
    out.extend_from_slice(d);
    if w.params > 0 {
        let sep = if d.is_empty() { "" } else { ", " };
        let _ = write!(out, "{sep}{} bound parameters", w.params);
    }
}

/// Writes a held command without a reply summary.
fn unanswered(f: &mut Framer<'_>, w: &Waiting, status: Status) {
    f.frame(|out| {
        record::append_with_reply(
            out,
            &w.body,
            w.reply_at,
            (status, 0, 0, b""),
            |_| {},
            |out| detail(out, w),
        )
    });
}

/// Stops the drain thread.
pub struct DrainHandle {
    stop: Arc<AtomicBool>,
    shared: Arc<AuditShared>,
    thread: Option<std::thread::JoinHandle<()>>,
    public_key: String,
}

impl DrainHandle {
    /// Drains every ring, writes the final checkpoint, fsyncs and joins
    /// the thread. Call after the shards have stopped.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Release);
        self.shared.wake_drain();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// The public key of the signing key, as auditors receive it.
    pub fn public_key(&self) -> &str {
        &self.public_key
    }
}

impl Drop for DrainHandle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        self.shared.wake_drain();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The drain's state.
pub struct Drain {
    shared: Arc<AuditShared>,
    key: SigningKey,
    masker: Arc<Masker>,
    chains: Vec<Chain>,
    scratch: Scratch,
    /// The last round stopped at `ROUND_BYTES_MAX` with entries left.
    backlog: bool,
    last_sync: Instant,
    last_checkpoint: Instant,
    last_retention: Option<Instant>,
    failure: Option<String>,
}

impl Drain {
    /// Opens `audit.dir` (creating it), recovers each shard's chain, loads or
    /// creates the signing key and starts the thread.
    pub fn start(
        shared: Arc<AuditShared>,
        consumers: Vec<ring::Consumer>,
        masker: Arc<Masker>,
    ) -> Result<DrainHandle, String> {
        let drain = Drain::open(shared.clone(), consumers, masker)?;
        let public_key = drain.key.public_text();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("custos-audit".into())
            .spawn(move || drain.run(&stop2))
            .map_err(|e| format!("cannot start the audit drain thread: {e}"))?;
        shared.set_drain_thread(thread.thread().clone());
        Ok(DrainHandle {
            stop,
            shared,
            thread: Some(thread),
            public_key,
        })
    }

    /// The state [`Drain::start`] runs, without a thread (benchmarks and
    /// tests drive [`Drain::round`] themselves).
    pub fn open(
        shared: Arc<AuditShared>,
        consumers: Vec<ring::Consumer>,
        masker: Arc<Masker>,
    ) -> Result<Drain, String> {
        let config = &shared.config;
        create_dir(&config.dir)?;
        let (key, created) = SigningKey::load_or_create(&config.signing_key)
            .map_err(|e| format!("audit.signing_key: {e}"))?;
        if created {
            info!(key = %config.signing_key.display(), public_key = %key.public_text(), "audit signing key created");
        } else {
            info!(public_key = %key.public_text(), "audit signing key loaded");
        }
        let segments = segment::list(&config.dir)
            .map_err(|e| format!("audit.dir {}: {e}", config.dir.display()))?;
        let mut chains = Vec::with_capacity(consumers.len());
        let mut notes = Vec::new();
        for (i, consumer) in consumers.into_iter().enumerate() {
            let shard = i as u16;
            let mine: &[segment::SegmentName] = segments
                .iter()
                .find(|v| v[0].shard == shard)
                .map_or(&[], |v| v.as_slice());
            let r = super::recover::recover(&config.dir, mine)?;
            if let Some(note) = r.note {
                warn!(shard, note = %note, "audit trail recovered after an unclean stop");
                notes.push((i, note));
            }
            chains.push(Chain {
                shard,
                consumer,
                writer: r.writer,
                next_seq: r.next_seq,
                head: r.head,
                out: Vec::with_capacity(64 * 1024),
                out_entries: 0,
                out_records: 0,
                out_base: None,
                settled: 0,
                dirty: false,
                unrecorded: 0,
                checkpointed: r.next_seq,
                pairing: Pairing::default(),
            });
        }
        let now = Instant::now();
        let mut drain = Drain {
            shared,
            key,
            masker,
            chains,
            scratch: Scratch::default(),
            backlog: false,
            last_sync: now,
            last_checkpoint: now,
            last_retention: None,
            failure: None,
        };
        for (i, note) in notes {
            drain.note(i, Kind::Recovery, &[], note.as_bytes());
        }
        drain.write_all();
        drain.sync_all();
        if drain.failure.is_some() {
            return Err(format!(
                "audit.dir {}: cannot write the trail: {}",
                drain.shared.config.dir.display(),
                drain.failure.as_deref().unwrap_or("")
            ));
        }
        Ok(drain)
    }

    fn run(mut self, stop: &AtomicBool) {
        loop {
            let stopping = stop.load(Ordering::Acquire);
            let took = self.round();
            // At shutdown a trail that cannot be written is not waited for:
            // what is still pending is counted in the log below.
            let pending = self.chains.iter().any(|c| !c.out.is_empty());
            if stopping && !took && (!pending || self.failure.is_some()) {
                if pending {
                    let lost: u64 = self.chains.iter().map(|c| c.out_records).sum();
                    error!(
                        records = lost,
                        "audit trail closed with records that could not be written"
                    );
                }
                break;
            }
            let flush = self.shared.config.flush_interval;
            if !took {
                let wait = if self.failure.is_some() {
                    RETRY_INTERVAL
                } else {
                    flush
                };
                std::thread::park_timeout(wait);
            } else if self.shared.config.durability == Durability::Async
                && !self.backlog
                && !stopping
            {
                // Under async nothing waits for the records: let them
                // gather until the next fsync is due, so each round frames,
                // writes and fsyncs a large batch instead of a handful (a
                // shard whose ring fills up wakes the drain sooner).
                let due = flush.saturating_sub(self.last_sync.elapsed());
                if !due.is_zero() {
                    std::thread::park_timeout(due);
                }
            }
        }
        self.close();
    }

    /// The last word at shutdown: a checkpoint (when the trail is
    /// writable) and an fsync.
    pub fn close(mut self) {
        // Every reply the shards saw is in the rings by now.
        self.flush_held(Status::NoReply);
        self.write_all();
        if self.failure.is_none() {
            self.checkpoint();
        }
        self.sync_all();
        info!("audit trail closed");
    }

    /// One pass: take, write, fsync, checkpoint, rotate, retain. Returns
    /// whether any ring entry was taken.
    pub fn round(&mut self) -> bool {
        let took = self.take_all();
        self.write_all();
        let now = Instant::now();
        let due = match self.shared.config.durability {
            Durability::Sync => true,
            Durability::Async => now - self.last_sync >= self.shared.config.flush_interval,
        };
        if due {
            self.sync_all();
        }
        if self.failure.is_none() {
            // Commands held for their replies count: a checkpoint writes
            // them, so none waits longer than `checkpoint_interval`.
            let changed = self
                .chains
                .iter()
                .any(|c| c.next_seq != c.checkpointed || c.pairing.held() > 0);
            if changed && now - self.last_checkpoint >= self.shared.config.checkpoint_interval {
                self.checkpoint();
            }
            self.rotate_due();
            if self
                .last_retention
                .is_none_or(|t| now - t >= RETENTION_INTERVAL)
            {
                self.last_retention = Some(now);
                self.retain();
            }
        } else {
            self.sync_all();
        }
        self.settle_failure();
        took
    }

    fn take_all(&mut self) -> bool {
        let closed = self.shared.config.on_failure == OnFailure::FailClosed;
        let pair = self.shared.config.durability == Durability::Async;
        let mut took = false;
        self.backlog = false;
        let Drain {
            chains,
            masker,
            scratch,
            backlog,
            ..
        } = self;
        for (i, c) in chains.iter_mut().enumerate() {
            // Under fail_closed a round that could not be written is
            // retried as it is; nothing new is taken until it is.
            if closed && !c.out.is_empty() {
                continue;
            }
            let mut entries = 0;
            {
                let Chain {
                    consumer,
                    out,
                    next_seq,
                    head,
                    out_base,
                    out_records,
                    pairing,
                    ..
                } = c;
                let mut f = Framer {
                    out,
                    next_seq,
                    head,
                    out_base,
                    records: out_records,
                };
                loop {
                    if f.out.len() >= ROUND_BYTES_MAX {
                        *backlog = true;
                        break;
                    }
                    // Each entry is masked and framed straight from the
                    // ring into the chain's pending bytes (or held for its
                    // reply): no copy in between.
                    let got =
                        consumer.pop(|entry| pairing.take(&mut f, masker, scratch, i, entry, pair));
                    if !got {
                        break;
                    }
                    entries += 1;
                }
            }
            if entries > 0 {
                took = true;
                c.out_entries += entries;
            }
        }
        took
    }

    /// Writes every command still waiting for its reply.
    fn flush_held(&mut self, status: Status) {
        for c in &mut self.chains {
            let (mut f, pairing) = c.parts();
            pairing.flush(&mut f, status);
        }
    }

    /// Frames `body` as the next record of `chain`.
    fn frame(&mut self, chain: usize, body: &[u8]) {
        let c = &mut self.chains[chain];
        if c.out_base.is_none() {
            c.out_base = Some((c.next_seq, c.head));
        }
        c.head = segment::frame(&mut c.out, c.next_seq, &c.head, body);
        c.next_seq += 1;
        c.out_records += 1;
    }

    /// Appends a record the drain writes itself (recovery, retention,
    /// checkpoint) to chain `chain`.
    fn note(&mut self, chain: usize, kind: Kind, args: &[&[u8]], detail: &[u8]) {
        let head = Head {
            kind: Some(kind),
            shard: chain as u16,
            time_ns: record::now_ns(),
            ..Head::default()
        };
        let mut body = Vec::with_capacity(128 + detail.len());
        let mut e = Encoder::start(&mut body, &head, &Context::none()).rule(b"");
        for a in args {
            e = e.arg(a);
        }
        e.finish(b"", b"", detail);
        self.frame(chain, &body);
    }

    fn write_all(&mut self) {
        for i in 0..self.chains.len() {
            if self.chains[i].out.is_empty() {
                continue;
            }
            match self.write_chain(i) {
                Ok(()) => {
                    let c = &mut self.chains[i];
                    self.shared.metrics.records.add(c.out_records);
                    c.out.clear();
                    c.settled += c.out_entries;
                    c.out_entries = 0;
                    c.out_records = 0;
                    c.out_base = None;
                    c.dirty = true;
                    if c.unrecorded > 0 {
                        let n = c.unrecorded;
                        c.unrecorded = 0;
                        let note = format!(
                            "{n} records were not recorded while the trail could not be written (on_failure = \"fail_open\")"
                        );
                        // Written with the next round.
                        self.note(i, Kind::Recovery, &[], note.as_bytes());
                    }
                }
                Err(e) => self.failed(i, e),
            }
        }
    }

    /// Lowers the failure flag once nothing is left to retry.
    fn settle_failure(&mut self) {
        if self.failure.is_some() && self.chains.iter().all(|c| c.out.is_empty() && !c.dirty) {
            info!("audit trail writable again");
            self.failure = None;
            self.shared.failed.store(false, Ordering::Release);
            self.shared.metrics.failed.set(0);
        }
    }

    fn write_chain(&mut self, i: usize) -> std::io::Result<()> {
        let dir = self.shared.config.dir.clone();
        let id = self.shared.config.appliance_id.clone();
        let c = &mut self.chains[i];
        if c.writer.is_none() {
            let (first_seq, prev_hash) = c.out_base.unwrap_or((c.next_seq, c.head));
            let header = segment::Header {
                shard: c.shard,
                first_seq,
                created_ns: record::now_ns(),
                prev_hash,
                appliance_id: id,
            };
            c.writer = Some(SegmentWriter::create(&dir, &header)?);
        }
        match c.writer.as_mut() {
            Some(w) => w.append(&c.out),
            None => Ok(()),
        }
    }

    /// A write to chain `i` failed.
    fn failed(&mut self, i: usize, e: std::io::Error) {
        let m = &self.shared.metrics;
        m.write_errors.add(1);
        if self.failure.is_none() {
            error!(shard = i, error = %e, dir = %self.shared.config.dir.display(),
                on_failure = ?self.shared.config.on_failure, "audit trail cannot be written");
        }
        self.failure = Some(e.to_string());
        self.shared.failed.store(true, Ordering::Release);
        m.failed.set(1);
        let c = &mut self.chains[i];
        if self.shared.config.on_failure == OnFailure::FailOpen {
            if let Some((seq, head)) = c.out_base.take() {
                c.next_seq = seq;
                c.head = head;
            }
            c.out.clear();
            c.out_records = 0;
            c.unrecorded += c.out_entries;
            m.unrecorded.add(c.out_entries);
            c.settled += c.out_entries;
            c.out_entries = 0;
            self.shared.durable[i].store(c.settled, Ordering::Release);
        }
    }

    fn sync_all(&mut self) {
        self.last_sync = Instant::now();
        for i in 0..self.chains.len() {
            let c = &mut self.chains[i];
            if !c.dirty {
                if c.out.is_empty() {
                    self.shared.durable[i].store(c.settled, Ordering::Release);
                }
                continue;
            }
            let res = match c.writer.as_mut() {
                Some(w) => w.sync(),
                None => Ok(()),
            };
            match res {
                Ok(()) => {
                    c.dirty = false;
                    self.shared.durable[i].store(c.settled, Ordering::Release);
                }
                Err(e) => self.failed(i, e),
            }
        }
    }

    /// Signs the heads of every chain into a checkpoint on every chain.
    fn checkpoint(&mut self) {
        // Everything taken so far goes first, so the heads are on disk and
        // cover every command taken.
        self.flush_held(Status::Unknown);
        self.write_all();
        if self.failure.is_some() {
            return;
        }
        let heads: Vec<ChainHead> = self
            .chains
            .iter()
            .map(|c| ChainHead {
                shard: c.shard,
                next_seq: c.next_seq,
                hash: c.head,
            })
            .collect();
        let mut detail = Vec::with_capacity(64 + heads.len() * 42);
        let now = record::now_ns();
        checkpoint::encode(
            &mut detail,
            &self.key,
            now,
            &self.shared.config.appliance_id,
            &heads,
        );
        for i in 0..self.chains.len() {
            // A chain that has just been rotated and has nothing new gets no
            // segment holding only a checkpoint: the heads are signed in the
            // other chains, and its sealed segment ends with the last one.
            let c = &self.chains[i];
            if c.writer.is_none() && c.next_seq == c.checkpointed {
                continue;
            }
            self.note(i, Kind::Checkpoint, &[], &detail);
        }
        self.write_all();
        self.sync_all();
        for c in &mut self.chains {
            c.checkpointed = c.next_seq;
        }
        self.last_checkpoint = Instant::now();
    }

    fn rotate_due(&mut self) {
        let cfg = &self.shared.config;
        let now = record::now_ns();
        let age_ns = cfg.segment_age.as_nanos() as u64;
        let due: Vec<usize> = self
            .chains
            .iter()
            .enumerate()
            .filter(|(_, c)| {
                c.writer.as_ref().is_some_and(|w| {
                    w.len >= cfg.segment_bytes_max
                        || (now.saturating_sub(w.created_ns) >= age_ns
                            && c.next_seq != c.checkpointed)
                })
            })
            .map(|(i, _)| i)
            .collect();
        if due.is_empty() {
            return;
        }
        // The sealed segment ends with signed heads.
        self.checkpoint();
        if self.failure.is_some() {
            return;
        }
        for i in due {
            self.chains[i].writer = None;
        }
    }

    fn retain(&mut self) {
        let days = self.shared.config.retention_days;
        if days == 0 {
            return;
        }
        let keep = Duration::from_secs(days * 86_400);
        for i in 0..self.chains.len() {
            let current = self.chains[i].writer.as_ref().map(|w| w.path.clone());
            let removed = super::retention::remove_expired(
                &self.shared.config.dir,
                self.chains[i].shard,
                current.as_deref(),
                keep,
            );
            match removed {
                Ok(list) => {
                    for r in list {
                        info!(file = %r.name, first_seq = r.first_seq, end_seq = r.end_seq, "audit segment removed by retention");
                        let detail = format!(
                            "removed {} (records {}..{}) older than retention_days = {days}",
                            r.name, r.first_seq, r.end_seq
                        );
                        self.note(
                            i,
                            Kind::Retention,
                            &[
                                r.name.as_bytes(),
                                r.first_seq.to_string().as_bytes(),
                                r.end_seq.to_string().as_bytes(),
                            ],
                            detail.as_bytes(),
                        );
                    }
                }
                Err(e) => warn!(error = %e, "audit retention failed"),
            }
        }
    }
}

/// Buffers the drain reuses for every record.
#[derive(Default)]
pub struct Scratch {
    spans: Vec<Span>,
    args: Vec<Arg>,
}

/// Appends the body of the segment record for ring entry `entry` of
/// shard `chain`: the command and the reply excerpt masked, a raw Redis
/// command split into capped arguments.
pub fn masked_body(
    masker: &Masker,
    s: &mut Scratch,
    chain: usize,
    entry: &[u8],
    out: &mut Vec<u8>,
) {
    masked_body_at(masker, s, chain, entry, out);
}

/// [`masked_body`], returning the offset of the body's `code` field from
/// the body's start (`None` when the entry could not be decoded and a
/// `recovery` body was appended instead).
fn masked_body_at(
    masker: &Masker,
    s: &mut Scratch,
    chain: usize,
    entry: &[u8],
    out: &mut Vec<u8>,
) -> Option<usize> {
    let start = out.len();
    let r = match Record::decode(entry) {
        Ok(r) => r,
        Err(e) => {
            // A shard bug, not client input: keep what is known.
            error!(shard = chain, error = %e, "undecodable audit record from a shard");
            let head = Head {
                kind: Some(Kind::Recovery),
                shard: chain as u16,
                time_ns: record::now_ns(),
                ..Head::default()
            };
            let detail = format!("a record of this shard could not be decoded: {e}");
            Encoder::append(out, &head, &Context::none())
                .rule(b"")
                .finish(b"", b"", detail.as_bytes());
            return None;
        }
    };
    let mut e = Encoder::append_raw(out, &entry[..r.context_end], 0).rule(r.rule);
    if r.flags & FLAG_RAW_RESP != 0 {
        let raw = r.args.iter().next().unwrap_or(b"");
        let argc = split_resp(raw, &mut s.args);
        let mut total = 0usize;
        let mut kept = 0usize;
        for a in &s.args {
            if total >= COMMAND_BYTES_MAX {
                break;
            }
            let keep = (a.end - a.start)
                .min(ARG_BYTES_MAX)
                .min(COMMAND_BYTES_MAX - total);
            let value = &raw[a.start..a.start + keep];
            total += keep;
            kept += 1;
            let spans = &mut s.spans;
            e = e.arg_with(|out| {
                mask(masker, value, out, spans);
                if keep < a.declared {
                    let _ = write!(out, "...[{} bytes]", a.declared);
                }
            });
        }
        if argc > kept {
            e = e.arg_with(|out| {
                let _ = write!(out, "...[{} more arguments]", argc - kept);
            });
        }
    } else {
        for a in r.args.iter() {
            e = e.arg_with(|out| mask(masker, a, out, &mut s.spans));
        }
    }
    let reply_at = e.position() - start;
    e.finish_with(
        r.code,
        |out| mask(masker, r.excerpt, out, &mut s.spans),
        r.detail,
    );
    Some(reply_at)
}

fn mask(masker: &Masker, input: &[u8], out: &mut Vec<u8>, spans: &mut Vec<Span>) {
    let start = out.len();
    match masker.mask_into_with(input, out, spans) {
        Masked::Unchanged => out.extend_from_slice(input),
        Masked::Rewritten { .. } => {}
        Masked::Null { .. } => {
            out.truncate(start);
            out.extend_from_slice(b"****");
        }
    }
}

fn create_dir(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("audit.dir {}: {e}", dir.display()))
}
