//! `custos-loadtest`: the load-test harness for custos and the stores it
//! fronts. It speaks Redis and PostgreSQL itself (clients built on
//! `custos-parsers`: no driver's overhead or pooling in the figures),
//! drives many pipelined connections from a few threads, and measures
//! latency with HdrHistogram, in closed loop or in open loop at a fixed
//! rate with coordinated omission corrected.
//!
//! ```text
//! custos-loadtest redis    --target HOST:PORT [--user U] [--password P] [--tls] ...
//! custos-loadtest postgres --target HOST:PORT --user U --dbname D ...
//! custos-loadtest compare  --endpoint NAME=URL --endpoint NAME=URL ... --rounds N
//! ```
//!
//! See `loadtest/README.md` for the options, the workloads and the JSON
//! report's shape.

mod cli;
mod compare;
mod data;
mod engine;
mod net;
mod plot;
mod postgres;
mod redis;
mod report;

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser as _;

use crate::engine::{Client, Progress};
use crate::report::{Latency, Report, TOOL, percentile_curve};

/// Everything that can end a run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The command line does not make sense.
    #[error("{0}")]
    Usage(String),
    /// The endpoint cannot be reached.
    #[error("connecting to {addr}: {source}")]
    Connect {
        /// `host:port`.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// A read or write failed.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// TLS could not be set up or negotiated.
    #[error("TLS: {0}")]
    Tls(String),
    /// The server refused the credentials, or the exchange went wrong.
    #[error("authentication failed: {0}")]
    Auth(String),
    /// The server sent something the protocol does not allow.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The server refused a statement the harness needs (table setup,
    /// statement preparation).
    #[error("server error: {0}")]
    Server(String),
    /// An output file could not be written.
    #[error("writing {path}: {source}")]
    Output {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let result = match cli.command {
        cli::Command::Redis(args) => run_redis(&args).map(|_| ()),
        cli::Command::Postgres(args) => run_postgres(&args).map(|_| ()),
        cli::Command::Compare(args) => compare::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("custos-loadtest: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A run's description, for the report.
pub struct Described {
    label: String,
    protocol: &'static str,
    workload: String,
    target: String,
    tls: bool,
    settings: serde_json::Map<String, serde_json::Value>,
}

fn run_redis(args: &cli::RedisArgs) -> Result<Report, Error> {
    let config = args.config()?;
    let described = Described {
        label: format!("redis {}", enum_name(&config.workload)),
        protocol: "redis",
        workload: enum_name(&config.workload),
        target: config.endpoint.addr.clone(),
        tls: config.endpoint.tls.is_some(),
        settings: args.settings(),
    };
    let client = Arc::new(redis::RedisClient::new(config));
    let (report, histogram) = measure(client, &described, &args.run)?;
    emit(&report, &histogram, &args.run)?;
    Ok(report)
}

fn run_postgres(args: &cli::PostgresArgs) -> Result<Report, Error> {
    let config = args.config()?;
    let described = Described {
        label: format!("postgres {}", enum_name(&config.workload)),
        protocol: "postgres",
        workload: enum_name(&config.workload),
        target: config.endpoint.addr.clone(),
        tls: config.endpoint.tls.is_some(),
        settings: args.settings(),
    };
    let client = Arc::new(postgres::PgClient::new(config));
    if !args.no_setup {
        block_on(client.setup())?;
    }
    let (report, histogram) = measure(client, &described, &args.run)?;
    emit(&report, &histogram, &args.run)?;
    Ok(report)
}

/// Runs a future to completion on a throwaway single-threaded runtime
/// (setup steps, before the worker threads start).
pub fn block_on<T>(f: impl std::future::Future<Output = Result<T, Error>>) -> Result<T, Error> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(f)
}

/// The kebab-case name clap and serde give an enum value.
pub fn enum_name<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// Runs one measurement with a progress display and builds its report;
/// the merged histogram comes back too, for plots over several runs.
pub fn measure<C: Client>(
    client: Arc<C>,
    described: &Described,
    run: &cli::RunArgs,
) -> Result<(Report, hdrhistogram::Histogram<u64>), Error> {
    let mut plan = run.plan()?;
    if client.churn() {
        // A churn operation is a connection of its own: nothing to pipeline.
        plan.pipeline = 1;
    }
    let started_unix_s = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let progress = Arc::new(Progress::default());
    let label = described.label.clone();
    let outcome = std::thread::scope(|scope| {
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let display = {
            let progress = progress.clone();
            let done = done.clone();
            let total = plan.warmup + plan.duration;
            let quiet = run.quiet;
            scope.spawn(move || show_progress(&label, &progress, &done, total, quiet))
        };
        let outcome = engine::run(client, &plan, progress.clone());
        done.store(true, Ordering::Relaxed);
        let _ = display.join();
        outcome
    })?;
    let secs = outcome.elapsed.as_secs_f64();
    let report = Report {
        tool: TOOL.into(),
        version: env!("CARGO_PKG_VERSION").into(),
        protocol: described.protocol.into(),
        workload: described.workload.clone(),
        target: described.target.clone(),
        tls: described.tls,
        connections: plan.connections,
        threads: plan.threads.clamp(1, plan.connections.max(1)),
        pipeline: plan.pipeline,
        loop_kind: if plan.rate.is_some() {
            "open"
        } else {
            "closed"
        }
        .into(),
        rate: plan.rate,
        warmup_s: plan.warmup.as_secs_f64(),
        duration_s: (secs * 1000.0).round() / 1000.0,
        ops: outcome.ops,
        errors: outcome.errors,
        ops_per_s: if secs > 0.0 {
            ((outcome.ops as f64 / secs) * 10.0).round() / 10.0
        } else {
            0.0
        },
        latency_us: Latency::of(&outcome.histogram),
        percentiles: percentile_curve(&outcome.histogram),
        settings: described.settings.clone(),
        error_samples: outcome.error_samples,
        started_unix_s,
    };
    Ok((report, outcome.histogram))
}

/// Prints the summary and writes the files asked for.
fn emit(
    report: &Report,
    histogram: &hdrhistogram::Histogram<u64>,
    run: &cli::RunArgs,
) -> Result<(), Error> {
    print!("{}", report.summary());
    if let Some(path) = &run.json {
        let text = serde_json::to_string_pretty(report)
            .map_err(|e| Error::Usage(format!("serialising the report: {e}")))?;
        report::write_file(path, &(text + "\n"))?;
    }
    if let Some(path) = &run.csv {
        report::write_file(
            path,
            &format!("{}\n{}\n", report::CSV_HEADER, report.csv_row()),
        )?;
    }
    if let Some(path) = &run.plot {
        let title = format!(
            "{} {} against {}, {} connections, pipeline {}",
            report.protocol, report.workload, report.target, report.connections, report.pipeline
        );
        plot::write_svg(
            path,
            &title,
            &[(report.target.clone(), percentile_curve(histogram))],
        )?;
    }
    Ok(())
}

/// How often the progress display updates.
const PROGRESS_TICK: Duration = Duration::from_millis(250);
/// How often a plain progress line is printed when stderr is not a
/// terminal (logs, CI).
const PROGRESS_LINE_EVERY: Duration = Duration::from_secs(1);

/// A live bar with the current throughput on a terminal, plain lines once a
/// second otherwise, nothing with `--quiet`. Runs until `done`.
fn show_progress(
    label: &str,
    progress: &Progress,
    done: &std::sync::atomic::AtomicBool,
    total: Duration,
    quiet: bool,
) {
    let terminal = std::io::stderr().is_terminal();
    let bar = (!quiet && terminal).then(|| {
        let bar = indicatif::ProgressBar::new(total.as_millis() as u64);
        let style = indicatif::ProgressStyle::with_template(
            "{prefix} [{bar:30}] {elapsed:>4}/{duration:4} {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> ");
        bar.set_style(style);
        bar.set_prefix(label.to_owned());
        bar
    });
    let start = Instant::now();
    let mut last = (start, 0u64);
    let mut last_line = start;
    while !done.load(Ordering::Relaxed) {
        std::thread::sleep(PROGRESS_TICK);
        let now = Instant::now();
        let ops = progress.ops.load(Ordering::Relaxed);
        let errors = progress.errors.load(Ordering::Relaxed);
        let window = now.duration_since(last.0).as_secs_f64();
        let rate = if window > 0.0 {
            (ops - last.1) as f64 / window
        } else {
            0.0
        };
        last = (now, ops);
        let elapsed = now.duration_since(start);
        if let Some(bar) = &bar {
            bar.set_position((elapsed.as_millis() as u64).min(total.as_millis() as u64));
            bar.set_message(format!("{rate:>10.0} ops/s  {ops} ops  {errors} errors"));
        } else if !quiet && now.duration_since(last_line) >= PROGRESS_LINE_EVERY {
            last_line = now;
            eprintln!(
                "{label}: {:5.1}s  {rate:.0} ops/s  {ops} ops  {errors} errors",
                elapsed.as_secs_f64()
            );
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
}
