//! Counters and latency histograms, written by shards, read by the control
//! plane.
//!
//! Each shard owns one [`TargetMetrics`] per target and is its only writer,
//! so an increment is a relaxed load and store of a shard-private cache line:
//! no read-modify-write, no lock, no contention. The control plane sums the
//! shards when `/metrics` is scraped. Latency goes into a shard-local
//! hdrhistogram and is merged into the shared one about once a second and at
//! shutdown, so a scrape lags by at most that.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use hdrhistogram::Histogram;

/// Largest latency the histograms resolve, in microseconds (60 s).
const LATENCY_US_MAX: u64 = 60_000_000;
/// Precision of the latency histograms.
const LATENCY_SIGFIG: u8 = 2;
/// Bucket bounds of the exported Prometheus histogram, in seconds.
const BUCKETS_S: [f64; 17] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
];

/// A counter with exactly one writing thread.
#[derive(Default, Debug)]
#[repr(align(64))]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`. Only the owning shard may call this.
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed);
    }

    /// Subtracts `n` (gauges). Only the owning shard may call this.
    #[inline]
    pub fn sub(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_sub(n), Relaxed);
    }

    /// The current value, from any thread.
    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// Why a session ended in error; one counter each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Malformed or oversized input from a client.
    ClientProtocol,
    /// The store could not be reached or went away.
    UpstreamUnavailable,
    /// The store refused the appliance's credential.
    UpstreamAuth,
    /// A command the appliance does not carry (MONITOR, CLIENT REPLY, ...).
    Unsupported,
    /// Connections refused because the shard was at `connections_max`.
    ConnectionsRefused,
    /// A client's token was refused.
    AuthFailed,
}

impl ErrorKind {
    const ALL: [ErrorKind; 6] = [
        ErrorKind::ClientProtocol,
        ErrorKind::UpstreamUnavailable,
        ErrorKind::UpstreamAuth,
        ErrorKind::Unsupported,
        ErrorKind::ConnectionsRefused,
        ErrorKind::AuthFailed,
    ];

    fn label(self) -> &'static str {
        match self {
            ErrorKind::ClientProtocol => "client_protocol",
            ErrorKind::UpstreamUnavailable => "upstream_unavailable",
            ErrorKind::UpstreamAuth => "upstream_auth",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::ConnectionsRefused => "connections_refused",
            ErrorKind::AuthFailed => "auth_failed",
        }
    }
}

/// One shard's figures for one target.
#[derive(Debug)]
pub struct TargetMetrics {
    /// Client connections open now (a gauge).
    pub connections_open: Counter,
    /// Client connections accepted.
    pub connections_total: Counter,
    /// Commands or statements forwarded.
    pub commands: Counter,
    /// Bytes read from clients.
    pub client_bytes_received: Counter,
    /// Bytes written to clients.
    pub client_bytes_sent: Counter,
    /// Replies (Redis frames, PostgreSQL messages) rewritten by masking.
    pub replies_masked: Counter,
    errors: [Counter; ErrorKind::ALL.len()],
    /// Latency merged from the shard's [`LocalLatency`].
    shared: Mutex<Histogram<u64>>,
}

/// A shard's own latency histogram for one target: recorded without any
/// synchronisation, merged into [`TargetMetrics`] by [`LocalLatency::flush`].
pub struct LocalLatency(RefCell<Histogram<u64>>);

impl Default for LocalLatency {
    fn default() -> Self {
        LocalLatency(RefCell::new(new_histogram()))
    }
}

impl LocalLatency {
    /// Records one command's latency.
    #[inline]
    pub fn record_us(&self, us: u64) {
        self.0
            .borrow_mut()
            .saturating_record(us.clamp(1, LATENCY_US_MAX));
    }

    /// Moves what was recorded into `into`, where the control plane sees it.
    pub fn flush(&self, into: &TargetMetrics) {
        let mut local = self.0.borrow_mut();
        if local.is_empty() {
            return;
        }
        let mut shared = into.shared.lock().unwrap_or_else(|p| p.into_inner());
        // Same bounds on both sides, so adding cannot fail.
        let _ = shared.add(&*local);
        local.reset();
    }
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_US_MAX, LATENCY_SIGFIG)
        .expect("static histogram bounds are valid")
}

impl Default for TargetMetrics {
    fn default() -> Self {
        TargetMetrics {
            connections_open: Counter::default(),
            connections_total: Counter::default(),
            commands: Counter::default(),
            client_bytes_received: Counter::default(),
            client_bytes_sent: Counter::default(),
            replies_masked: Counter::default(),
            errors: Default::default(),
            shared: Mutex::new(new_histogram()),
        }
    }
}

impl TargetMetrics {
    /// Counts one error. Only the owning shard may call this.
    #[inline]
    pub fn error(&self, kind: ErrorKind) {
        self.errors[kind as usize].add(1);
    }
}

/// A value that one thread sets and any thread reads.
#[derive(Default, Debug)]
pub struct Gauge(AtomicU64);

impl Gauge {
    /// Sets the value.
    #[inline]
    pub fn set(&self, v: u64) {
        self.0.store(v, Relaxed);
    }

    /// The current value.
    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// The audit trail's figures. The drain thread is the only writer of all
/// but `ring_full`, which each shard writes for itself.
#[derive(Debug, Default)]
pub struct AuditMetrics {
    /// Records written to segments.
    pub records: Counter,
    /// Failed writes and fsyncs.
    pub write_errors: Counter,
    /// Records dropped under `on_failure = "fail_open"`.
    pub unrecorded: Counter,
    /// 1 while the trail cannot be written.
    pub failed: Gauge,
    /// Per shard: records that found the ring full (and waited).
    ring_full: Vec<Counter>,
}

impl AuditMetrics {
    /// Figures for `shards` shards.
    pub fn new(shards: usize) -> AuditMetrics {
        AuditMetrics {
            ring_full: (0..shards).map(|_| Counter::default()).collect(),
            ..AuditMetrics::default()
        }
    }

    /// Counts one record that found shard `shard`'s ring full. Only that
    /// shard may call this.
    #[inline]
    pub fn ring_full(&self, shard: usize) {
        if let Some(c) = self.ring_full.get(shard) {
            c.add(1);
        }
    }

    fn render(&self, out: &mut String) {
        let ring_full: u64 = self.ring_full.iter().map(Counter::get).sum();
        for (name, kind, help, v) in [
            (
                "custos_audit_records_total",
                "counter",
                "Audit records written to segments.",
                self.records.get(),
            ),
            (
                "custos_audit_ring_full_total",
                "counter",
                "Audit records that found their shard's ring full (the shard waited).",
                ring_full,
            ),
            (
                "custos_audit_write_errors_total",
                "counter",
                "Failed writes or fsyncs of the audit trail.",
                self.write_errors.get(),
            ),
            (
                "custos_audit_unrecorded_total",
                "counter",
                "Audit records dropped because the trail could not be written (fail_open).",
                self.unrecorded.get(),
            ),
            (
                "custos_audit_failed",
                "gauge",
                "1 while the audit trail cannot be written.",
                self.failed.get(),
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
            );
        }
    }
}

/// Every shard's metrics, indexed `[shard][target]`.
#[derive(Debug)]
pub struct Metrics {
    targets: Vec<String>,
    shards: Vec<Vec<TargetMetrics>>,
    /// The audit trail's figures.
    pub audit: std::sync::Arc<AuditMetrics>,
}

impl Metrics {
    /// Metrics for `shards` shards fronting `targets`.
    pub fn new(shards: usize, targets: Vec<String>) -> Metrics {
        let shards: Vec<Vec<TargetMetrics>> = (0..shards)
            .map(|_| targets.iter().map(|_| TargetMetrics::default()).collect())
            .collect();
        Metrics {
            targets,
            audit: std::sync::Arc::new(AuditMetrics::new(shards.len())),
            shards,
        }
    }

    /// Shard `shard`'s metrics for target index `target`.
    pub fn get(&self, shard: usize, target: usize) -> &TargetMetrics {
        &self.shards[shard][target]
    }

    /// The Prometheus text exposition of every target, summed over shards.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        type Get = fn(&TargetMetrics) -> u64;
        let simple: [(&str, &str, &str, Get); 6] = [
            (
                "custos_connections_open",
                "gauge",
                "Client connections open.",
                |m| m.connections_open.get(),
            ),
            (
                "custos_connections_total",
                "counter",
                "Client connections accepted.",
                |m| m.connections_total.get(),
            ),
            (
                "custos_commands_total",
                "counter",
                "Commands and statements forwarded to the store.",
                |m| m.commands.get(),
            ),
            (
                "custos_client_bytes_received_total",
                "counter",
                "Bytes read from clients.",
                |m| m.client_bytes_received.get(),
            ),
            (
                "custos_client_bytes_sent_total",
                "counter",
                "Bytes written to clients.",
                |m| m.client_bytes_sent.get(),
            ),
            (
                "custos_replies_masked_total",
                "counter",
                "Replies rewritten because masking found something to hide.",
                |m| m.replies_masked.get(),
            ),
        ];
        for (name, kind, help, get) in simple {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (t, tname) in self.targets.iter().enumerate() {
                let v: u64 = self
                    .shards
                    .iter()
                    .map(|s| get(&s[t]))
                    .fold(0u64, u64::wrapping_add);
                // Gauges are kept as wrapping u64; a transiently negative sum cannot
                // happen because each shard's own gauge never goes below zero.
                let _ = writeln!(out, "{name}{{target=\"{tname}\"}} {v}");
            }
        }

        let name = "custos_shards";
        let _ = writeln!(
            out,
            "# HELP {name} Data-plane shards.\n# TYPE {name} gauge\n{name} {}",
            self.shards.len()
        );

        let name = "custos_errors_total";
        let _ = writeln!(out, "# HELP {name} Errors by kind.\n# TYPE {name} counter");
        for (t, tname) in self.targets.iter().enumerate() {
            for kind in ErrorKind::ALL {
                let v: u64 = self
                    .shards
                    .iter()
                    .map(|s| s[t].errors[kind as usize].get())
                    .sum();
                let _ = writeln!(
                    out,
                    "{name}{{target=\"{tname}\",kind=\"{}\"}} {v}",
                    kind.label()
                );
            }
        }

        let name = "custos_command_duration_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Time from forwarding a command to the end of its reply.\n# TYPE {name} histogram"
        );
        for (t, tname) in self.targets.iter().enumerate() {
            let mut h = new_histogram();
            for s in &self.shards {
                let shared = s[t].shared.lock().unwrap_or_else(|p| p.into_inner());
                let _ = h.add(&*shared);
            }
            for le in BUCKETS_S {
                let le_us = (le * 1e6) as u64;
                let c = h.count_between(0, le_us);
                let _ = writeln!(out, "{name}_bucket{{target=\"{tname}\",le=\"{le}\"}} {c}");
            }
            let n = h.len();
            let _ = writeln!(out, "{name}_bucket{{target=\"{tname}\",le=\"+Inf\"}} {n}");
            // hdrhistogram keeps no exact sum; mean times count is within the
            // histogram's precision (1%).
            let sum_s = h.mean() * n as f64 / 1e6;
            let _ = writeln!(out, "{name}_sum{{target=\"{tname}\"}} {sum_s}");
            let _ = writeln!(out, "{name}_count{{target=\"{tname}\"}} {n}");
        }
        self.audit.render(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_shards_and_exports_histogram() {
        let m = Metrics::new(2, vec!["cache".into()]);
        m.get(0, 0).commands.add(3);
        m.get(1, 0).commands.add(4);
        m.get(0, 0).connections_open.add(2);
        m.get(0, 0).connections_open.sub(1);
        m.get(1, 0).error(ErrorKind::UpstreamAuth);
        let (l0, l1) = (LocalLatency::default(), LocalLatency::default());
        l0.record_us(80);
        l0.record_us(3_000);
        l1.record_us(2_000_000);
        let before = m.render();
        assert!(
            before.contains("custos_command_duration_seconds_count{target=\"cache\"} 0"),
            "{before}"
        );
        l0.flush(m.get(0, 0));
        l1.flush(m.get(1, 0));
        let text = m.render();
        assert!(
            text.contains("custos_commands_total{target=\"cache\"} 7"),
            "{text}"
        );
        assert!(
            text.contains("custos_connections_open{target=\"cache\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("custos_errors_total{target=\"cache\",kind=\"upstream_auth\"} 1"),
            "{text}"
        );
        assert!(
            text.contains(
                "custos_command_duration_seconds_bucket{target=\"cache\",le=\"0.0001\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "custos_command_duration_seconds_bucket{target=\"cache\",le=\"0.005\"} 2"
            ),
            "{text}"
        );
        assert!(
            text.contains("custos_command_duration_seconds_bucket{target=\"cache\",le=\"+Inf\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("custos_command_duration_seconds_count{target=\"cache\"} 3"),
            "{text}"
        );
    }
}
