//! What a run reports: a human summary on stdout, and the same figures as
//! JSON (`--json`) and CSV (`--csv`) for scripts. The JSON shape is
//! documented in `loadtest/README.md` and is stable: fields may be added,
//! none renamed or removed.

use std::io::Write as _;
use std::path::Path;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::Error;

/// The `tool` field of every report.
pub const TOOL: &str = "custos-loadtest";

/// Latency figures in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

impl Latency {
    /// The figures of a histogram of nanoseconds (zeros when empty).
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self {
                p50: 0.0,
                p90: 0.0,
                p99: 0.0,
                p999: 0.0,
                max: 0.0,
                mean: 0.0,
            };
        }
        let us = |ns: u64| round3(ns as f64 / 1000.0);
        Self {
            p50: us(h.value_at_quantile(0.50)),
            p90: us(h.value_at_quantile(0.90)),
            p99: us(h.value_at_quantile(0.99)),
            p999: us(h.value_at_quantile(0.999)),
            max: us(h.max()),
            mean: round3(h.mean() / 1000.0),
        }
    }
}

/// One point of the latency-by-percentile curve.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PercentilePoint {
    /// Percentile, 0..=100.
    pub percentile: f64,
    /// Latency at it, in microseconds.
    pub latency_us: f64,
}

/// Points every tenth of a "nine" from the median to 99.999%, then the
/// maximum: even spacing on the plot's `1/(1-p)` axis.
pub fn percentile_curve(h: &Histogram<u64>) -> Vec<PercentilePoint> {
    if h.is_empty() {
        return Vec::new();
    }
    let mut points: Vec<PercentilePoint> = (0..=50)
        .map(|i| {
            let nines = i as f64 / 10.0;
            let q = 1.0 - 10f64.powf(-nines);
            PercentilePoint {
                percentile: round6(q * 100.0),
                latency_us: round3(h.value_at_quantile(q) as f64 / 1000.0),
            }
        })
        .collect();
    points.push(PercentilePoint {
        percentile: 100.0,
        latency_us: round3(h.max() as f64 / 1000.0),
    });
    points
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

/// One run's report: what `--json` writes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Always `custos-loadtest`.
    pub tool: String,
    /// The harness's version.
    pub version: String,
    /// `redis` or `postgres`.
    pub protocol: String,
    /// The workload's name (`get-set`, `select`, ...).
    pub workload: String,
    /// `host:port`.
    pub target: String,
    /// Whether the connections used TLS.
    pub tls: bool,
    /// Connections (for churn: concurrent connection attempts).
    pub connections: usize,
    /// Worker threads.
    pub threads: usize,
    /// Operations in flight per connection.
    pub pipeline: usize,
    /// `closed` or `open`.
    #[serde(rename = "loop")]
    pub loop_kind: String,
    /// The open loop's target rate (operations per second), else `null`.
    pub rate: Option<f64>,
    /// Warm-up, not measured, in seconds.
    pub warmup_s: f64,
    /// Measured time in seconds: from the end of the warm-up to the last
    /// measured reply.
    pub duration_s: f64,
    /// Measured operations, errors included.
    pub ops: u64,
    /// Measured operations that failed (error replies, lost connections).
    pub errors: u64,
    /// `ops / duration_s`.
    pub ops_per_s: f64,
    /// Latency in microseconds; in open loop measured from each
    /// operation's scheduled send time.
    pub latency_us: Latency,
    /// The latency-by-percentile curve.
    pub percentiles: Vec<PercentilePoint>,
    /// Workload settings (key space, value sizes, query mode, ...).
    pub settings: serde_json::Map<String, serde_json::Value>,
    /// A few distinct error messages.
    pub error_samples: Vec<String>,
    /// When the run started, seconds since the Unix epoch.
    pub started_unix_s: u64,
}

/// The CSV header of [`Report::csv_row`].
pub const CSV_HEADER: &str = "protocol,workload,target,tls,connections,threads,pipeline,loop,rate,\
duration_s,ops,errors,ops_per_s,p50_us,p90_us,p99_us,p999_us,max_us,mean_us";

impl Report {
    /// The report's CSV row (no newline), after [`CSV_HEADER`].
    pub fn csv_row(&self) -> String {
        let l = &self.latency_us;
        format!(
            "{},{},{},{},{},{},{},{},{},{:.3},{},{},{:.1},{},{},{},{},{},{}",
            self.protocol,
            self.workload,
            csv_field(&self.target),
            self.tls,
            self.connections,
            self.threads,
            self.pipeline,
            self.loop_kind,
            self.rate.map(|r| r.to_string()).unwrap_or_default(),
            self.duration_s,
            self.ops,
            self.errors,
            self.ops_per_s,
            l.p50,
            l.p90,
            l.p99,
            l.p999,
            l.max,
            l.mean
        )
    }

    /// The summary printed at the end of a run.
    pub fn summary(&self) -> String {
        let l = &self.latency_us;
        let mode = match self.rate {
            Some(r) => format!("open loop at {r} ops/s"),
            None => "closed loop".into(),
        };
        let mut s = format!(
            "{} {} against {}{}: {} connections, {} threads, pipeline {}, {}, {:.1} s measured\n\
             \x20 ops {}  errors {}  throughput {:.0} ops/s\n\
             \x20 latency (us): p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}  mean {:.1}\n",
            self.protocol,
            self.workload,
            self.target,
            if self.tls { " (TLS)" } else { "" },
            self.connections,
            self.threads,
            self.pipeline,
            mode,
            self.duration_s,
            self.ops,
            self.errors,
            self.ops_per_s,
            l.p50,
            l.p90,
            l.p99,
            l.p999,
            l.max,
            l.mean
        );
        for e in &self.error_samples {
            s.push_str(&format!("  error: {e}\n"));
        }
        s
    }
}

/// Quotes a CSV field when it needs it.
pub fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// Writes `text` to `path`, naming the path in the error.
pub fn write_file(path: &Path, text: &str) -> Result<(), Error> {
    let mut f = std::fs::File::create(path).map_err(|source| Error::Output {
        path: path.to_owned(),
        source,
    })?;
    f.write_all(text.as_bytes())
        .map_err(|source| Error::Output {
            path: path.to_owned(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::new_histogram;

    #[test]
    fn latency_figures_are_ordered_and_in_microseconds() {
        let mut h = new_histogram();
        for us in 1..=10_000u64 {
            h.record(us * 1000).unwrap();
        }
        let l = Latency::of(&h);
        assert!((l.p50 - 5000.0).abs() / 5000.0 < 0.002, "{l:?}");
        assert!((l.p99 - 9900.0).abs() / 9900.0 < 0.002, "{l:?}");
        assert!(l.p50 <= l.p90 && l.p90 <= l.p99 && l.p99 <= l.p999 && l.p999 <= l.max);
        assert!((l.mean - 5000.5).abs() < 10.0, "{l:?}");
    }

    #[test]
    fn empty_histogram_reports_zeros_and_no_curve() {
        let h = new_histogram();
        assert_eq!(Latency::of(&h).max, 0.0);
        assert!(percentile_curve(&h).is_empty());
    }

    #[test]
    fn curve_is_monotonic_and_ends_at_the_maximum() {
        let mut h = new_histogram();
        for i in 0..100_000u64 {
            h.record(1000 + (i * 7919) % 50_000).unwrap();
        }
        let curve = percentile_curve(&h);
        assert_eq!(curve.len(), 52);
        assert_eq!(curve[0].percentile, 0.0);
        assert_eq!(curve[10].percentile, 90.0);
        assert_eq!(curve[20].percentile, 99.0);
        assert_eq!(curve.last().unwrap().percentile, 100.0);
        for pair in curve.windows(2) {
            assert!(pair[0].percentile < pair[1].percentile);
            assert!(pair[0].latency_us <= pair[1].latency_us);
        }
        assert_eq!(
            curve.last().unwrap().latency_us,
            round3(h.max() as f64 / 1000.0)
        );
    }

    #[test]
    fn csv_row_matches_the_header() {
        let r = Report {
            tool: TOOL.into(),
            version: "0".into(),
            protocol: "redis".into(),
            workload: "get-set".into(),
            target: "a,b".into(),
            tls: false,
            connections: 1,
            threads: 1,
            pipeline: 1,
            loop_kind: "closed".into(),
            rate: None,
            warmup_s: 0.0,
            duration_s: 1.0,
            ops: 10,
            errors: 0,
            ops_per_s: 10.0,
            latency_us: Latency::of(&new_histogram()),
            percentiles: Vec::new(),
            settings: serde_json::Map::new(),
            error_samples: Vec::new(),
            started_unix_s: 0,
        };
        let header = CSV_HEADER.split(',').count();
        // The quoted target holds one comma.
        assert_eq!(r.csv_row().split(',').count(), header + 1);
        assert!(r.csv_row().contains("\"a,b\""));
    }
}
