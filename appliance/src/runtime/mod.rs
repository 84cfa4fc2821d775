//! The process: one control-plane thread and one data-plane shard per core.
//!
//! [`run`] starts the control plane (tokio: admin API, signals), then the
//! shards (monoio: each on its own pinned thread with its own `SO_REUSEPORT`
//! listener per target), waits for a stop signal, and shuts down in order:
//! stop accepting, let in-flight commands finish up to
//! `server.shutdown_grace_ms`, close what is left, exit.

pub mod notify;
pub mod registry;
pub mod shard;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::Context as _;
use tracing::{error, info, warn};

use crate::config::{Config, IoDriver};
use crate::identity::verify::Verifier;
use crate::metrics::Metrics;
use crate::policy::{PolicyHandle, PolicyState};
use crate::proxy::postgres::cancel::CancelKeys;

/// State every thread sees. Written rarely (start, stop); read by the
/// control plane and polled by the shards.
#[derive(Debug)]
pub struct Shared {
    /// The configuration the process started with.
    pub config: Arc<Config>,
    /// Counters and histograms, `[shard][target]`.
    pub metrics: Metrics,
    /// Number of shards.
    pub shards: usize,
    /// Shards whose listeners are bound and accepting.
    pub ready_shards: AtomicUsize,
    /// Set once: stop accepting and drain.
    pub stopping: AtomicBool,
    /// Which I/O driver the shards use.
    pub driver: Driver,
    /// PostgreSQL cancel keys issued to clients, whichever shard serves them.
    pub cancel_keys: Arc<CancelKeys>,
    /// Verifies client tokens; `None` without an `[identity]` section.
    pub verifier: Option<Arc<Verifier>>,
    /// The policy in force; SIGHUP replaces it.
    pub policy: Arc<PolicyHandle>,
}

/// The I/O driver the shards run on, decided once at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    /// io_uring, with cooperative, deferred task running on a single issuer.
    IoUring,
    /// epoll.
    Epoll,
}

impl Driver {
    /// Name for logs.
    pub fn name(self) -> &'static str {
        match self {
            Driver::IoUring => "io_uring",
            Driver::Epoll => "epoll",
        }
    }
}

/// Messages to the main thread.
enum Event {
    /// A shard bound its listeners, or could not.
    ShardStarted(usize, Result<(), String>),
    /// A shard thread ended.
    ShardExited(usize),
    /// SIGTERM or SIGINT arrived.
    Signal(&'static str),
    /// The control plane failed.
    ControlFailed(String),
}

/// Runs the appliance until SIGTERM or SIGINT.
pub fn run(config: Config) -> anyhow::Result<()> {
    let config = Arc::new(config);
    let driver = match (config.server.io_driver, shard::uring_usable()) {
        (IoDriver::Epoll, _) => Driver::Epoll,
        (IoDriver::Auto | IoDriver::IoUring, Ok(())) => Driver::IoUring,
        (IoDriver::IoUring, Err(e)) => {
            anyhow::bail!("server.io_driver = \"io_uring\", but io_uring cannot be used here: {e}")
        }
        (IoDriver::Auto, Err(e)) => {
            warn!(reason = %e, "io_uring is unavailable on this kernel or sandbox; falling back to epoll");
            Driver::Epoll
        }
    };
    // The provider's keys are loaded before any client can connect: a
    // token must never meet an appliance that cannot check it.
    let verifier = match &config.identity {
        Some(identity) => {
            let verifier = Arc::new(Verifier::new(identity.clone()));
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start a runtime to load the signing keys")?
                .block_on(crate::identity::keys::load_initial(&verifier))
                .map_err(|e| anyhow::anyhow!("identity: cannot load the signing keys: {e}"))?;
            info!(
                keys = verifier.keys().len(),
                "identity provider keys loaded"
            );
            Some(verifier)
        }
        None => None,
    };
    // Policy decides with the stores' own command tables: read them before
    // any client can connect.
    let policy = Arc::new(PolicyHandle::new(PolicyState {
        policy: config.policy.clone(),
        tables: crate::policy::redis::fetch::fetch_all(&config),
    }));
    info!(rules = config.policy.rules.len(), "policy loaded");
    info!(
        driver = driver.name(),
        shards = config.server.workers,
        "data plane starting"
    );
    let shared = Arc::new(Shared {
        metrics: Metrics::new(
            config.server.workers,
            config.targets.iter().map(|t| t.name.clone()).collect(),
        ),
        shards: config.server.workers,
        ready_shards: AtomicUsize::new(0),
        stopping: AtomicBool::new(false),
        driver,
        config: config.clone(),
        cancel_keys: Arc::new(CancelKeys::default()),
        verifier,
        policy,
    });

    // The trail opens before any client can connect: a command must never
    // run on an appliance that cannot record it.
    let (audit_ends, audit_drain) = match &config.audit {
        Some(a) => {
            let masker = Arc::new(config.masks.audit_masker());
            let (_, ends, drain) = crate::audit::start(
                a.clone(),
                shared.shards,
                shared.metrics.audit.clone(),
                masker,
            )
            .map_err(|e| anyhow::anyhow!("audit: {e}"))?;
            info!(dir = %a.dir.display(), durability = ?a.durability, public_key = %drain.public_key(), "audit trail open");
            (ends.into_iter().map(Some).collect::<Vec<_>>(), Some(drain))
        }
        None => ((0..shared.shards).map(|_| None).collect(), None),
    };
    let mut audit_ends = audit_ends.into_iter();

    let (tx, rx) = mpsc::channel::<Event>();

    // Control plane first: signal handlers are installed before any client
    // can connect, and a taken admin port is reported before shards start.
    let admin = match config.server.admin_listen {
        Some(addr) => Some(
            crate::admin::bind(addr)
                .with_context(|| format!("server.admin_listen: cannot bind {addr}"))?,
        ),
        None => None,
    };
    let (stop_control_tx, stop_control_rx) = tokio::sync::oneshot::channel::<()>();
    let control = {
        let shared = shared.clone();
        let tx = tx.clone();
        std::thread::Builder::new()
            .name("custos-control".into())
            .spawn(move || control_plane(shared, admin, tx, stop_control_rx))
            .context("cannot start the control-plane thread")?
    };

    let cores = if config.server.pin_cores {
        core_affinity::get_core_ids().unwrap_or_default()
    } else {
        Vec::new()
    };
    let mut shard_threads = Vec::with_capacity(shared.shards);
    for id in 0..shared.shards {
        let core = if cores.is_empty() {
            None
        } else {
            Some(cores[id % cores.len()])
        };
        let shared = shared.clone();
        let tx = tx.clone();
        let audit = audit_ends.next().flatten();
        let handle = std::thread::Builder::new()
            .name(format!("custos-shard-{id}"))
            .spawn(move || {
                let started = tx.clone();
                shard::run(id, core, shared, audit, move |r| {
                    let _ = started.send(Event::ShardStarted(id, r));
                });
                let _ = tx.send(Event::ShardExited(id));
            })
            .context("cannot start a shard thread")?;
        shard_threads.push(handle);
    }
    drop(tx);

    let mut started = 0;
    let mut failure: Option<anyhow::Error> = None;
    let mut exited = 0;
    while started < shared.shards && failure.is_none() {
        match rx.recv() {
            Ok(Event::ShardStarted(_, Ok(()))) => started += 1,
            Ok(Event::ShardStarted(id, Err(e))) => {
                failure = Some(anyhow::anyhow!("shard {id}: {e}"))
            }
            Ok(Event::ShardExited(id)) => {
                exited += 1;
                failure = Some(anyhow::anyhow!("shard {id} stopped during start"));
            }
            Ok(Event::Signal(sig)) => {
                info!(signal = sig, "stop requested during start");
                failure = Some(anyhow::anyhow!("stopped by {sig} during start"));
            }
            Ok(Event::ControlFailed(e)) => failure = Some(anyhow::anyhow!("control plane: {e}")),
            Err(_) => failure = Some(anyhow::anyhow!("all threads ended during start")),
        }
    }
    if failure.is_none() {
        let listen: Vec<String> = config
            .targets
            .iter()
            .map(|t| format!("{}={}", t.name, t.listen))
            .collect();
        info!(shards = shared.shards, driver = driver.name(), targets = %listen.join(","), "accepting");
        loop {
            match rx.recv() {
                Ok(Event::Signal(sig)) => {
                    info!(
                        signal = sig,
                        grace_ms = config.server.shutdown_grace_ms,
                        "stopping: no new connections, draining"
                    );
                    break;
                }
                Ok(Event::ShardExited(id)) => {
                    exited += 1;
                    failure = Some(anyhow::anyhow!("shard {id} stopped unexpectedly"));
                    break;
                }
                Ok(Event::ControlFailed(e)) => {
                    failure = Some(anyhow::anyhow!("control plane: {e}"));
                    break;
                }
                Ok(Event::ShardStarted(..)) => {}
                Err(_) => break,
            }
        }
    }

    shared.stopping.store(true, Ordering::Release);
    // Shards enforce the grace period themselves; the extra second here only
    // guards against a shard that cannot make progress at all.
    let hard = Duration::from_millis(config.server.shutdown_grace_ms) + Duration::from_secs(2);
    let deadline = std::time::Instant::now() + hard;
    while exited < shared.shards {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(Event::ShardExited(_)) => exited += 1,
            Ok(_) => {}
            Err(_) => {
                error!(
                    exited,
                    shards = shared.shards,
                    "shards did not stop within the grace period"
                );
                return Err(failure.unwrap_or_else(|| anyhow::anyhow!("shutdown timed out")));
            }
        }
    }
    for t in shard_threads {
        let _ = t.join();
    }
    // Every shard has stopped: the drain takes what is left in the rings,
    // signs a last checkpoint and fsyncs.
    if let Some(d) = audit_drain {
        d.stop();
    }
    let _ = stop_control_tx.send(());
    let _ = control.join();
    match failure {
        Some(e) => Err(e),
        None => {
            info!("stopped");
            Ok(())
        }
    }
}

fn control_plane(
    shared: Arc<Shared>,
    admin: Option<std::net::TcpListener>,
    tx: mpsc::Sender<Event>,
    stop: tokio::sync::oneshot::Receiver<()>,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = tx.send(Event::ControlFailed(e.to_string()));
            return;
        }
    };
    rt.block_on(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (mut term, mut int, mut hup) = match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::hangup()),
        ) {
            (Ok(t), Ok(i), Ok(h)) => (t, i, h),
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
                let _ = tx.send(Event::ControlFailed(format!(
                    "cannot install signal handlers: {e}"
                )));
                return;
            }
        };
        let (admin_stop_tx, admin_stop_rx) = tokio::sync::oneshot::channel::<()>();
        let admin_task = match admin {
            Some(l) => match tokio::net::TcpListener::from_std(l) {
                Ok(l) => {
                    let addr = l.local_addr().ok();
                    info!(listen = ?addr, "admin API listening");
                    let shared = shared.clone();
                    let tx = tx.clone();
                    Some(tokio::spawn(async move {
                        let stop = async move {
                            let _ = admin_stop_rx.await;
                        };
                        if let Err(e) = crate::admin::serve(l, shared, stop).await {
                            let _ = tx.send(Event::ControlFailed(format!("admin API: {e}")));
                        }
                    }))
                }
                Err(e) => {
                    let _ = tx.send(Event::ControlFailed(format!("admin API: {e}")));
                    None
                }
            },
            None => None,
        };
        let (keys_stop_tx, keys_stop_rx) = tokio::sync::oneshot::channel::<()>();
        let keys_task = shared.verifier.clone().map(|v| {
            tokio::spawn(crate::identity::keys::refresh_loop(v, async move {
                let _ = keys_stop_rx.await;
            }))
        });
        let mut stop = stop;
        loop {
            tokio::select! {
                _ = term.recv() => { let _ = tx.send(Event::Signal("SIGTERM")); }
                _ = int.recv() => { let _ = tx.send(Event::Signal("SIGINT")); }
                _ = hup.recv() => reload_policy(&shared).await,
                _ = &mut stop => break,
            }
        }
        let _ = admin_stop_tx.send(());
        let _ = keys_stop_tx.send(());
        if let Some(t) = admin_task {
            let _ = t.await;
        }
        if let Some(t) = keys_task {
            let _ = t.await;
        }
    });
}

/// SIGHUP: re-reads the configuration file and, when it is valid and
/// fronts the same targets, makes its policy current on every shard. Live
/// connections stay; each takes the new policy at its next command. An
/// invalid file changes nothing. Only the policy (`[[rule]]`, targets'
/// `default_action`) and the Redis stores' command tables are reloaded;
/// other changes need a restart, and the log says so.
async fn reload_policy(shared: &Arc<Shared>) {
    let path = shared.config.source.clone();
    info!(config = %path.display(), "SIGHUP: reloading the policy");
    let loaded = tokio::task::spawn_blocking(move || -> Result<_, String> {
        let config = Config::load(&path).map_err(|e| e.to_string())?;
        let tables = crate::policy::redis::fetch::fetch_all(&config);
        Ok((config, tables))
    })
    .await;
    let (config, tables) = match loaded {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            error!(error = %e, "reload refused: the configuration is invalid; the policy in force stays");
            return;
        }
        Err(e) => {
            error!(error = %e, "reload failed; the policy in force stays");
            return;
        }
    };
    let running = &shared.config.targets;
    let same_targets = config.targets.len() == running.len()
        && config
            .targets
            .iter()
            .zip(running)
            .all(|(a, b)| a.name == b.name && a.protocol == b.protocol);
    if !same_targets {
        error!(
            "reload refused: the targets changed (names, order or protocols); restart to change them; the policy in force stays"
        );
        return;
    }
    let rules = config.policy.rules.len();
    shared.policy.publish(PolicyState {
        policy: config.policy.clone(),
        tables,
    });
    info!(
        rules,
        "policy reloaded; settings other than the policy take effect at the next restart"
    );
}
