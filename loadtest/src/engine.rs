//! The load generator: worker threads, each with a single-threaded tokio
//! runtime driving its share of the connections, in closed loop (the next
//! batch goes out when the last one is answered) or open loop (batches go
//! out on a fixed schedule, whatever the server does).
//!
//! Latency is recorded per operation into one HdrHistogram per connection,
//! merged at the end: no lock or shared cache line on the hot path except
//! one relaxed counter per batch for the progress display.
//!
//! Open loop corrects for coordinated omission: each operation's latency
//! runs from the time it was *scheduled* to go out, not from when the
//! client got round to sending it, so a server stall shows up as latency
//! for every request that should have been sent during it (as in wrk2).
//! The schedule's wake-ups come from tokio's timer, which ticks every
//! millisecond; that slack is part of the open-loop figures.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::Error;
use crate::net::Stream;

/// Longest latency the histograms hold (an hour, in nanoseconds); longer
/// ones are recorded as this.
const LATENCY_NS_MAX: u64 = 3_600_000_000_000;
/// Significant decimal digits kept by the histograms: 0.1% resolution.
const LATENCY_SIGFIG: u8 = 3;
/// Initial read buffer per connection; it grows only for PostgreSQL
/// messages longer than this (RESP payloads stream through).
const READ_BUFFER_BYTES: usize = 64 * 1024;
/// Error messages kept per connection for the report.
const ERROR_SAMPLES_MAX: usize = 4;
/// Pause before a connection that failed mid-run reconnects.
const RECONNECT_PAUSE: Duration = Duration::from_millis(100);

/// One reply, as much as the engine needs to know of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// The operation succeeded.
    Ok,
    /// The server answered with an error (the operation still counts as
    /// completed, and as an error).
    Error(String),
}

/// What [`Codec::decode`] made of the front of the read buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// Bytes to drop from the front of the buffer.
    pub consumed: usize,
    /// The reply that those bytes completed, if any.
    pub reply: Option<Reply>,
}

/// A protocol's per-connection request writer and reply reader. One
/// operation is one request and exactly one reply.
pub trait Codec {
    /// Appends the requests of `n` operations to `out`.
    fn encode(&mut self, n: usize, out: &mut Vec<u8>);

    /// Reads from the front of `buf` up to the end of one reply, or as much
    /// as can be consumed without it (a partial payload); bytes it cannot
    /// consume yet are left for the next call with more behind them.
    fn decode(&mut self, buf: &[u8]) -> Result<Decoded, Error>;

    /// Appends what tells the server the connection is being closed on
    /// purpose (PostgreSQL's Terminate), if the protocol has such a thing.
    fn goodbye(&self, _out: &mut Vec<u8>) {}
}

/// A protocol client: opens ready-to-use connections to one endpoint.
/// Shared by every worker thread.
pub trait Client: Send + Sync + 'static {
    /// The per-connection state.
    type Codec: Codec;

    /// Connects, authenticates and prepares connection number `id` (which
    /// also seeds its random choices).
    fn connect(&self, id: u64) -> impl Future<Output = Result<(Stream, Self::Codec), Error>>;

    /// Whether each operation is a connection of its own (connect,
    /// authenticate, one command, close).
    fn churn(&self) -> bool;
}

/// How a run is shaped.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Concurrent connections (for churn: concurrent connection attempts).
    pub connections: usize,
    /// Worker threads, each driving `connections / threads` of them.
    pub threads: usize,
    /// Operations in flight per connection.
    pub pipeline: usize,
    /// Time before measuring starts (operations run but are not counted).
    pub warmup: Duration,
    /// Measured time.
    pub duration: Duration,
    /// Open loop at this many operations per second over all connections;
    /// `None` runs closed loop, as fast as the server answers.
    pub rate: Option<f64>,
}

/// What a run measured.
#[derive(Debug)]
pub struct Outcome {
    /// Latency of every measured operation, in nanoseconds.
    pub histogram: Histogram<u64>,
    /// Measured operations (errors included).
    pub ops: u64,
    /// Measured operations that failed.
    pub errors: u64,
    /// The measured time: from the end of the warm-up until the last
    /// measured reply.
    pub elapsed: Duration,
    /// A few distinct error messages.
    pub error_samples: Vec<String>,
}

/// Counters the progress display reads while a run goes on.
#[derive(Debug, Default)]
pub struct Progress {
    /// Completed operations, warm-up included.
    pub ops: AtomicU64,
    /// Failed operations, warm-up included.
    pub errors: AtomicU64,
}

/// Per-connection tallies, merged per thread and then per run.
struct Tally {
    histogram: Histogram<u64>,
    ops: u64,
    errors: u64,
    last_reply: Option<Instant>,
    error_samples: Vec<String>,
}

impl Tally {
    fn new() -> Self {
        Self {
            histogram: new_histogram(),
            ops: 0,
            errors: 0,
            last_reply: None,
            error_samples: Vec::new(),
        }
    }

    fn sample_error(&mut self, message: String) {
        if self.error_samples.len() < ERROR_SAMPLES_MAX && !self.error_samples.contains(&message) {
            self.error_samples.push(message);
        }
    }

    fn merge(&mut self, other: Tally) {
        // Both histograms have the same bounds, so adding cannot fail.
        let _ = self.histogram.add(&other.histogram);
        self.ops += other.ops;
        self.errors += other.errors;
        self.last_reply = self.last_reply.max(other.last_reply);
        for e in other.error_samples {
            self.sample_error(e);
        }
    }
}

/// An empty latency histogram with the run's bounds.
pub fn new_histogram() -> Histogram<u64> {
    // The bounds are constants that hdrhistogram accepts.
    Histogram::new_with_bounds(1, LATENCY_NS_MAX, LATENCY_SIGFIG)
        .unwrap_or_else(|_| unreachable!("valid histogram bounds"))
}

/// The times every connection agrees on.
#[derive(Debug, Clone, Copy)]
struct Clock {
    start: Instant,
    measure_from: Instant,
    end: Instant,
}

/// Runs `plan` against `client`: connects everything first (a failure
/// there ends the run with that error), then starts the clock on all
/// threads at once.
pub fn run<C: Client>(
    client: Arc<C>,
    plan: &Plan,
    progress: Arc<Progress>,
) -> Result<Outcome, Error> {
    let threads = plan.threads.clamp(1, plan.connections.max(1));
    let (ready_tx, ready_rx) = mpsc::channel::<Result<(), Error>>();
    let mut go_txs = Vec::with_capacity(threads);
    let mut handles = Vec::with_capacity(threads);
    let abort = Arc::new(AtomicBool::new(false));

    for t in 0..threads {
        // Connection ids t, t + threads, ...: an even spread.
        let ids: Vec<u64> = (t..plan.connections)
            .step_by(threads)
            .map(|i| i as u64)
            .collect();
        let (go_tx, go_rx) = mpsc::channel::<Option<Clock>>();
        go_txs.push(go_tx);
        let client = client.clone();
        let plan = plan.clone();
        let ready_tx = ready_tx.clone();
        let progress = progress.clone();
        let abort = abort.clone();
        let handle = std::thread::Builder::new()
            .name(format!("loadtest-{t}"))
            .spawn(move || worker(client, plan, ids, ready_tx, go_rx, progress, abort))
            .map_err(Error::Io)?;
        handles.push(handle);
    }
    drop(ready_tx);

    let mut first_error = None;
    for _ in 0..threads {
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                first_error.get_or_insert(e);
            }
            Err(_) => {
                first_error.get_or_insert(Error::Protocol("a worker thread died".into()));
            }
        }
    }
    let clock = first_error.is_none().then(|| {
        let start = Instant::now();
        let measure_from = start + plan.warmup;
        Clock {
            start,
            measure_from,
            end: measure_from + plan.duration,
        }
    });
    if clock.is_none() {
        abort.store(true, Ordering::Relaxed);
    }
    for tx in &go_txs {
        // A worker that already exited has nothing to start.
        let _ = tx.send(clock);
    }

    let mut total = Tally::new();
    for handle in handles {
        match handle.join() {
            Ok(Some(tally)) => total.merge(tally),
            Ok(None) => {}
            Err(_) => {
                first_error.get_or_insert(Error::Protocol("a worker thread panicked".into()));
            }
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    let clock = clock.unwrap_or_else(|| unreachable!("set when no error"));
    let last = total.last_reply.unwrap_or(clock.end).max(clock.end);
    Ok(Outcome {
        histogram: total.histogram,
        ops: total.ops,
        errors: total.errors,
        elapsed: last.saturating_duration_since(clock.measure_from),
        error_samples: total.error_samples,
    })
}

fn worker<C: Client>(
    client: Arc<C>,
    plan: Plan,
    ids: Vec<u64>,
    ready_tx: mpsc::Sender<Result<(), Error>>,
    go_rx: mpsc::Receiver<Option<Clock>>,
    progress: Arc<Progress>,
    abort: Arc<AtomicBool>,
) -> Option<Tally> {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready_tx.send(Err(Error::Io(e)));
            return None;
        }
    };
    let local = tokio::task::LocalSet::new();
    let churn = client.churn();

    // Connect everything before the clock starts, so that the measured
    // time holds no handshakes (except in the churn workload, where the
    // handshake is the operation).
    let connected = if churn {
        Ok(Vec::new())
    } else {
        local.block_on(&rt, async {
            let mut conns = Vec::with_capacity(ids.len());
            for &id in &ids {
                conns.push((id, client.connect(id).await?));
            }
            Ok::<_, Error>(conns)
        })
    };
    let conns = match connected {
        Ok(conns) => {
            let _ = ready_tx.send(Ok(()));
            conns
        }
        Err(e) => {
            let _ = ready_tx.send(Err(e));
            return None;
        }
    };
    drop(ready_tx);
    let clock = go_rx.recv().ok().flatten()?;
    if abort.load(Ordering::Relaxed) {
        return None;
    }

    let conn_count = plan.connections.max(1);
    let tallies = local.block_on(&rt, async {
        let mut tasks = Vec::new();
        if churn {
            for &id in &ids {
                let client = client.clone();
                let plan = plan.clone();
                let progress = progress.clone();
                tasks.push(tokio::task::spawn_local(async move {
                    churn_loop(&*client, id, conn_count, &plan, clock, &progress).await
                }));
            }
        } else {
            for (id, (stream, codec)) in conns {
                let client = client.clone();
                let plan = plan.clone();
                let progress = progress.clone();
                tasks.push(tokio::task::spawn_local(async move {
                    conn_loop(
                        &*client, id, stream, codec, conn_count, &plan, clock, &progress,
                    )
                    .await
                }));
            }
        }
        let mut tallies = Vec::with_capacity(tasks.len());
        for task in tasks {
            if let Ok(t) = task.await {
                tallies.push(t);
            }
        }
        tallies
    });
    let mut total = Tally::new();
    for t in tallies {
        total.merge(t);
    }
    Some(total)
}

/// The open-loop schedule of one connection: batch `k` is due at
/// `first + k * interval`.
struct Schedule {
    next: Instant,
    interval: Duration,
}

impl Schedule {
    /// `None` for closed loop. Connections start spread over one interval
    /// so that they do not all send at the same instant.
    fn new(plan: &Plan, id: u64, connections: usize, clock: Clock) -> Option<Self> {
        let rate = plan.rate?;
        let per_conn = rate / connections as f64;
        let interval = Duration::from_secs_f64(plan.pipeline as f64 / per_conn);
        let offset = interval.mul_f64(id as f64 / connections as f64);
        Some(Self {
            next: clock.start + offset,
            interval,
        })
    }

    fn take(&mut self) -> Instant {
        let due = self.next;
        self.next += self.interval;
        due
    }
}

/// When the next batch is due: now in closed loop; in open loop the
/// schedule's next slot, after sleeping until it if it is ahead.
async fn next_due(schedule: &mut Option<Schedule>) -> Instant {
    match schedule {
        None => Instant::now(),
        Some(s) => {
            let due = s.take();
            if due > Instant::now() {
                tokio::time::sleep_until(due.into()).await;
            }
            due
        }
    }
}

#[allow(clippy::too_many_arguments)] // one call site; a struct would only rename them
async fn conn_loop<C: Client>(
    client: &C,
    id: u64,
    mut stream: Stream,
    mut codec: C::Codec,
    connections: usize,
    plan: &Plan,
    clock: Clock,
    progress: &Progress,
) -> Tally {
    let mut tally = Tally::new();
    let mut schedule = Schedule::new(plan, id, connections, clock);
    let mut wbuf = Vec::with_capacity(4096);
    let mut rbuf = ReadBuffer::new();
    loop {
        let due = next_due(&mut schedule).await;
        if due >= clock.end {
            break;
        }
        wbuf.clear();
        codec.encode(plan.pipeline, &mut wbuf);
        let result = exchange(
            &mut stream,
            &mut codec,
            &wbuf,
            &mut rbuf,
            plan.pipeline,
            due,
            clock,
            &mut tally,
            progress,
        )
        .await;
        if let Err((e, unanswered)) = result {
            // The connection is unusable: its unanswered operations failed.
            record_failures(&mut tally, progress, unanswered, due, clock, &e);
            loop {
                tokio::time::sleep(RECONNECT_PAUSE).await;
                if Instant::now() >= clock.end {
                    return tally;
                }
                match client.connect(id).await {
                    Ok((s, c)) => {
                        stream = s;
                        codec = c;
                        rbuf = ReadBuffer::new();
                        break;
                    }
                    Err(e) => record_failures(&mut tally, progress, 1, Instant::now(), clock, &e),
                }
            }
        }
    }
    tally
}

async fn churn_loop<C: Client>(
    client: &C,
    id: u64,
    connections: usize,
    plan: &Plan,
    clock: Clock,
    progress: &Progress,
) -> Tally {
    let mut tally = Tally::new();
    let mut schedule = Schedule::new(plan, id, connections, clock);
    let mut wbuf = Vec::with_capacity(256);
    let mut rbuf = ReadBuffer::new();
    // Connection ids stay distinct across the run, for distinct seeds.
    let mut seq = id;
    loop {
        let due = next_due(&mut schedule).await;
        if due >= clock.end {
            break;
        }
        seq += connections as u64;
        let (mut stream, mut codec) = match client.connect(seq).await {
            Ok(c) => c,
            Err(e) => {
                record_failures(&mut tally, progress, 1, due, clock, &e);
                continue;
            }
        };
        wbuf.clear();
        codec.encode(1, &mut wbuf);
        rbuf.clear();
        let result = exchange(
            &mut stream,
            &mut codec,
            &wbuf,
            &mut rbuf,
            1,
            due,
            clock,
            &mut tally,
            progress,
        )
        .await;
        if let Err((e, unanswered)) = result {
            record_failures(&mut tally, progress, unanswered, due, clock, &e);
        }
        // An orderly close is part of the operation's cost on the server,
        // but not of its latency: the reply has been recorded already.
        wbuf.clear();
        codec.goodbye(&mut wbuf);
        if !wbuf.is_empty() {
            let _ = stream.write_all(&wbuf).await;
        }
        let _ = stream.shutdown().await;
    }
    tally
}

fn record_failures(
    tally: &mut Tally,
    progress: &Progress,
    n: usize,
    due: Instant,
    clock: Clock,
    e: &Error,
) {
    progress.errors.fetch_add(n as u64, Ordering::Relaxed);
    progress.ops.fetch_add(n as u64, Ordering::Relaxed);
    if due >= clock.measure_from {
        tally.ops += n as u64;
        tally.errors += n as u64;
        tally.sample_error(e.to_string());
    }
}

/// Sends one batch of `n` operations and reads their `n` replies. On
/// failure, returns the error and how many operations got no reply.
#[allow(clippy::too_many_arguments)] // the hot path; kept flat on purpose
async fn exchange<K: Codec>(
    stream: &mut Stream,
    codec: &mut K,
    request: &[u8],
    rbuf: &mut ReadBuffer,
    n: usize,
    due: Instant,
    clock: Clock,
    tally: &mut Tally,
    progress: &Progress,
) -> Result<(), (Error, usize)> {
    stream
        .write_all(request)
        .await
        .map_err(|e| (Error::Io(e), n))?;
    let measured = due >= clock.measure_from;
    let mut left = n;
    let mut errors = 0u64;
    while left > 0 {
        let decoded = codec.decode(rbuf.filled()).map_err(|e| (e, left))?;
        rbuf.consume(decoded.consumed);
        match decoded.reply {
            Some(reply) => {
                left -= 1;
                let now = Instant::now();
                if let Reply::Error(message) = reply {
                    errors += 1;
                    if measured {
                        tally.errors += 1;
                        tally.sample_error(message);
                    }
                }
                if measured {
                    tally.ops += 1;
                    tally.last_reply = Some(now);
                    let ns = u64::try_from(now.duration_since(due).as_nanos()).unwrap_or(u64::MAX);
                    tally
                        .histogram
                        .saturating_record(ns.clamp(1, LATENCY_NS_MAX));
                }
            }
            None => {
                let read = rbuf
                    .read_from(stream)
                    .await
                    .map_err(|e| (Error::Io(e), left))?;
                if read == 0 {
                    return Err((
                        Error::Io(std::io::Error::new(
                            std::io::ErrorKind::UnexpectedEof,
                            "the server closed the connection",
                        )),
                        left,
                    ));
                }
            }
        }
    }
    progress.ops.fetch_add(n as u64, Ordering::Relaxed);
    if errors > 0 {
        progress.errors.fetch_add(errors, Ordering::Relaxed);
    }
    Ok(())
}

/// A read buffer with a consumed front: bytes are appended at the end and
/// taken from the front; the buffer is compacted when the front passes
/// half of it and grows only when one unconsumable item fills it.
struct ReadBuffer {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl ReadBuffer {
    fn new() -> Self {
        Self {
            buf: vec![0; READ_BUFFER_BYTES],
            start: 0,
            end: 0,
        }
    }

    fn clear(&mut self) {
        self.start = 0;
        self.end = 0;
    }

    fn filled(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.end {
            self.clear();
        }
    }

    async fn read_from(&mut self, stream: &mut Stream) -> std::io::Result<usize> {
        if self.end == self.buf.len() {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else {
                // One item larger than the buffer: make room for it.
                let len = self.buf.len() * 2;
                self.buf.resize(len, 0);
            }
        }
        let n = stream.read(&mut self.buf[self.end..]).await?;
        self.end += n;
        Ok(n)
    }
}
