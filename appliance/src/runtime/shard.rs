//! One data-plane shard: a monoio runtime on one pinned thread.
//!
//! A shard binds its own `SO_REUSEPORT` listener for every target, so the
//! kernel spreads new connections over shards, and every connection lives
//! and dies here: its upstream connection, buffers and counters are local,
//! and nothing on the per-command path takes a lock or an atomic
//! read-modify-write.

use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use monoio::io::Canceller;
use monoio::net::{ListenerOpts, TcpListener};
use tracing::{debug, info, warn};

use super::registry::Registry;
use super::{Driver, Shared};
use crate::config::{Protocol, Target};
use crate::metrics::{ErrorKind, LocalLatency, TargetMetrics};
use crate::proxy::redis::shared::SharedUpstream;

/// io_uring submission queue entries per shard.
const URING_ENTRIES: u32 = 4096;
/// Verified tokens kept per shard.
const TOKEN_CACHE_ENTRIES: usize = 4096;
/// Listen backlog per shard and target.
const LISTEN_BACKLOG: i32 = 4096;
/// How often a shard looks at the stop flag.
const STOP_POLL: Duration = Duration::from_millis(25);
/// How often shard-local latency is published to the control plane.
const LATENCY_FLUSH: Duration = Duration::from_secs(1);
/// After the grace period, how long aborted sessions get to unwind.
const ABORT_UNWIND: Duration = Duration::from_millis(500);

/// What a shard knows about one target.
pub struct TargetCtx {
    /// The target's configuration.
    pub target: Target,
    /// Index of the target in the configuration (and in metrics).
    pub index: usize,
    /// The pre-encoded AUTH the appliance sends to the store.
    pub upstream_auth: Option<Box<[u8]>>,
    /// Shard-local latency histogram.
    pub latency: LocalLatency,
    /// PostgreSQL: SCRAM keys derived from the appliance's credential.
    pub scram: crate::proxy::postgres::scram::KeyCache,
    shared: Arc<Shared>,
    shard: usize,
}

impl TargetCtx {
    /// This shard's counters for this target.
    #[inline]
    pub fn metrics(&self) -> &TargetMetrics {
        self.shared.metrics.get(self.shard, self.index)
    }
}

/// A shard's own state, shared by its tasks through `Rc`.
pub struct ShardCtx {
    /// Shard number.
    pub id: usize,
    /// Sessions being served.
    pub registry: Rc<Registry>,
    /// Process-wide state.
    pub shared: Arc<Shared>,
    /// Per target (by index): the store connection shared by simple sessions.
    pub shared_upstreams: Vec<Rc<SharedUpstream>>,
    /// Tokens this shard verified, until they expire.
    pub token_cache: crate::identity::cache::TokenCache,
    /// This shard's end of the audit trail; `None` without `[audit]`.
    pub audit: Option<Rc<crate::audit::ShardAudit>>,
    /// This shard's view of the policy.
    pub policy: Rc<crate::policy::ShardPolicy>,
}

/// Runs shard `id` on the current thread until the process stops. `started`
/// is called once the listeners are bound (or could not be).
pub fn run(
    id: usize,
    core: Option<core_affinity::CoreId>,
    shared: Arc<Shared>,
    audit: Option<crate::audit::ShardAudit>,
    started: impl FnOnce(Result<(), String>),
) {
    if let Some(core) = core
        && !core_affinity::set_for_current(core)
    {
        warn!(
            shard = id,
            core = core.id,
            "could not pin shard to its core"
        );
    }
    match shared.driver {
        Driver::IoUring => match monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
            .uring_builder(uring_builder())
            .with_entries(URING_ENTRIES)
            .enable_timer()
            .build()
        {
            Ok(mut rt) => rt.block_on(shard_main(id, shared, audit, started)),
            Err(e) => started(Err(format!("cannot build the io_uring runtime: {e}"))),
        },
        Driver::Epoll => match monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
        {
            Ok(mut rt) => rt.block_on(shard_main(id, shared, audit, started)),
            Err(e) => started(Err(format!("cannot build the epoll runtime: {e}"))),
        },
    }
}

/// The io_uring set-up every shard uses. Each ring is created and used by
/// its shard's thread alone (single issuer), and completions are processed
/// only when the shard has run out of ready work and asks for more
/// (cooperative, deferred task running): no inter-processor interrupt per
/// completion, and a whole batch of completions per wait.
fn uring_builder() -> io_uring::Builder {
    let mut b = io_uring::IoUring::builder();
    b.setup_coop_taskrun()
        .setup_single_issuer()
        .setup_defer_taskrun();
    b
}

/// Whether io_uring with the shards' set-up works here (kernel 6.1 or later,
/// and not refused by a sandbox).
pub fn uring_usable() -> Result<(), String> {
    if !monoio::utils::detect_uring() {
        return Err("the kernel refuses io_uring or lacks the operations used".into());
    }
    uring_builder()
        .build(8)
        .map(drop)
        .map_err(|e| format!("cannot set up a ring: {e}"))
}

async fn shard_main(
    id: usize,
    shared: Arc<Shared>,
    audit: Option<crate::audit::ShardAudit>,
    started: impl FnOnce(Result<(), String>),
) {
    let config = shared.config.clone();
    let mut listeners = Vec::with_capacity(config.targets.len());
    for target in &config.targets {
        let opts = ListenerOpts::new()
            .reuse_port(true)
            .reuse_addr(true)
            .backlog(LISTEN_BACKLOG);
        match TcpListener::bind_with_config(target.listen, &opts) {
            Ok(l) => listeners.push(l),
            Err(e) => {
                started(Err(format!(
                    "target {:?}: cannot listen on {}: {e}",
                    target.name, target.listen
                )));
                return;
            }
        }
    }
    started(Ok(()));

    let targets: Vec<Rc<TargetCtx>> = config
        .targets
        .iter()
        .enumerate()
        .map(|(index, t)| {
            Rc::new(TargetCtx {
                upstream_auth: crate::proxy::redis::upstream::auth_command(t),
                target: t.clone(),
                index,
                latency: LocalLatency::default(),
                scram: Default::default(),
                shared: shared.clone(),
                shard: id,
            })
        })
        .collect();
    let ctx = Rc::new(ShardCtx {
        id,
        token_cache: crate::identity::cache::TokenCache::new(TOKEN_CACHE_ENTRIES),
        audit: audit.map(Rc::new),
        policy: Rc::new(crate::policy::ShardPolicy::new(shared.policy.clone(), id)),
        registry: Rc::new(Registry::default()),
        shared: shared.clone(),
        shared_upstreams: targets
            .iter()
            .map(|t| SharedUpstream::new(t.clone()))
            .collect(),
    });

    let canceller = Canceller::new();
    let mut accepts = Vec::with_capacity(listeners.len());
    for (listener, target) in listeners.into_iter().zip(targets.iter().cloned()) {
        accepts.push(monoio::spawn(accept_loop(
            ctx.clone(),
            target,
            listener,
            canceller.handle(),
        )));
    }
    shared.ready_shards.fetch_add(1, Ordering::AcqRel);
    debug!(shard = id, "accepting");

    let mut last_flush = Instant::now();
    while !shared.stopping.load(Ordering::Acquire) {
        monoio::time::sleep(STOP_POLL).await;
        if last_flush.elapsed() >= LATENCY_FLUSH {
            for t in &targets {
                t.latency.flush(t.metrics());
            }
            last_flush = Instant::now();
        }
    }

    // Stop accepting: the pending accepts are cancelled and the listeners
    // closed, so the kernel refuses new connections to this shard.
    canceller.cancel();
    for a in accepts {
        a.await;
    }
    let live = ctx.registry.live();
    ctx.registry.drain_all();
    let grace = Duration::from_millis(config.server.shutdown_grace_ms);
    let deadline = Instant::now() + grace;
    // Accepting has stopped, so no session can miss the flag set above;
    // each checks it at the top of its loops.
    while ctx.registry.live() > 0 && Instant::now() < deadline {
        monoio::time::sleep(Duration::from_millis(10)).await;
    }
    let left = ctx.registry.live();
    if left > 0 {
        warn!(
            shard = id,
            sessions = left,
            "grace period over; closing sessions with work in flight"
        );
        ctx.registry.abort_all();
        let deadline = Instant::now() + ABORT_UNWIND;
        while ctx.registry.live() > 0 && Instant::now() < deadline {
            monoio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    for t in &targets {
        t.latency.flush(t.metrics());
    }
    // Records that waited for room in the ring go in before the shard
    // exits; the drain is still running and empties the ring.
    if let Some(a) = &ctx.audit
        && monoio::time::timeout(ABORT_UNWIND, a.ready())
            .await
            .is_err()
    {
        warn!(shard = id, "audit trail not accepting records at shutdown");
    }
    info!(
        shard = id,
        drained = live - left.min(live),
        aborted = left,
        "shard stopped"
    );
}

async fn accept_loop(
    ctx: Rc<ShardCtx>,
    target: Rc<TargetCtx>,
    listener: TcpListener,
    cancel: monoio::io::CancelHandle,
) {
    let connections_max = ctx.shared.config.server.connections_max;
    loop {
        let (stream, peer) = match listener.cancelable_accept(cancel.clone()).await {
            Ok(s) => s,
            Err(e) => {
                if ctx.shared.stopping.load(Ordering::Acquire) {
                    return;
                }
                // EMFILE/ENFILE and friends: back off instead of spinning,
                // the kernel keeps the connection queued meanwhile.
                warn!(shard = ctx.id, target = %target.target.name, error = %e, "accept failed");
                monoio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let m = target.metrics();
        if ctx.registry.live() >= connections_max {
            m.error(ErrorKind::ConnectionsRefused);
            debug!(shard = ctx.id, %peer, "connections_max reached; refusing");
            drop(stream);
            continue;
        }
        let _ = stream.set_nodelay(true);
        match target.target.protocol {
            Protocol::Redis => {
                monoio::spawn(crate::proxy::redis::serve(
                    ctx.clone(),
                    target.clone(),
                    stream,
                    peer,
                ));
            }
            Protocol::Postgres => {
                monoio::spawn(crate::proxy::postgres::serve(
                    ctx.clone(),
                    target.clone(),
                    stream,
                    peer,
                ));
            }
        }
    }
}
