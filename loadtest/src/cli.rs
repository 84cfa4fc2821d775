//! The command line. Its shape is relied on by `bench/` and by users:
//! `redis|postgres --target HOST:PORT ... --connections N --pipeline P
//! --duration 10s [--rate R] --json FILE`, and `compare`.
//!
//! Secrets: `--password` shows in `ps`; `--password-file` and the
//! `CUSTOS_LOADTEST_PASSWORD` environment variable do not. A bearer token
//! is given the same ways: it is sent where the protocol sends a password.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use serde_json::{Map, Value, json};

use crate::Error;
use crate::data::ValueSize;
use crate::engine::Plan;
use crate::net::{Endpoint, Tls, TlsOptions};
use crate::{enum_name, postgres, redis};

/// The environment variable a password or token can come from.
pub const PASSWORD_ENV: &str = "CUSTOS_LOADTEST_PASSWORD";

/// Load-test harness for Redis and PostgreSQL endpoints (direct, custos or
/// any proxy).
#[derive(Debug, Parser)]
#[command(name = "custos-loadtest", version)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Load a Redis endpoint.
    Redis(RedisArgs),
    /// Load a PostgreSQL endpoint.
    Postgres(PostgresArgs),
    /// Run the same workload against several endpoints, interleaved over
    /// rounds, and print medians and ratios.
    Compare(crate::compare::CompareArgs),
}

/// Credentials and TLS, shared by both protocols.
#[derive(Debug, Clone, Args)]
pub struct AuthArgs {
    /// User (Redis ACL user, PostgreSQL role).
    #[arg(long)]
    pub user: Option<String>,
    /// Password or token (visible in `ps`: prefer --password-file or
    /// CUSTOS_LOADTEST_PASSWORD).
    #[arg(long)]
    pub password: Option<String>,
    /// File whose first line is the password or token.
    #[arg(long, value_name = "FILE", conflicts_with = "password")]
    pub password_file: Option<PathBuf>,
    /// Connect with TLS (PostgreSQL: after an SSLRequest).
    #[arg(long)]
    pub tls: bool,
    /// Trust the CA certificates in this PEM file instead of the system's.
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// Accept any server certificate (self-signed test certificates).
    #[arg(long)]
    pub tls_insecure: bool,
    /// Server name to verify and send as SNI (default: the target's host).
    #[arg(long, value_name = "NAME")]
    pub tls_server_name: Option<String>,
}

impl AuthArgs {
    /// The password: --password, else --password-file, else the
    /// environment.
    pub fn password(&self) -> Result<Option<String>, Error> {
        if let Some(p) = &self.password {
            return Ok(Some(p.clone()));
        }
        if let Some(path) = &self.password_file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                Error::Usage(format!("reading the password file {}: {e}", path.display()))
            })?;
            return Ok(Some(text.lines().next().unwrap_or("").to_owned()));
        }
        Ok(std::env::var(PASSWORD_ENV).ok().filter(|p| !p.is_empty()))
    }

    /// The endpoint for `addr`, with TLS set up if asked (`tls` overrides
    /// --tls, for URLs that say so themselves).
    pub fn endpoint(&self, addr: &str, tls: bool) -> Result<Endpoint, Error> {
        let tls = (tls || self.tls)
            .then(|| {
                Tls::new(
                    addr,
                    &TlsOptions {
                        ca_file: self.tls_ca.clone(),
                        insecure: self.tls_insecure,
                        server_name: self.tls_server_name.clone(),
                    },
                )
            })
            .transpose()?;
        Ok(Endpoint {
            addr: addr.to_owned(),
            tls,
        })
    }
}

/// How a run is shaped and where its results go.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Concurrent connections (for churn: concurrent connection attempts).
    #[arg(long, short = 'c', default_value_t = 50)]
    pub connections: usize,
    /// Worker threads (default: one per core, at most one per connection).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Operations in flight per connection.
    #[arg(long, short = 'P', default_value_t = 1)]
    pub pipeline: usize,
    /// Measured time, e.g. 10s, 500ms, 2m.
    #[arg(long, short = 'd', default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Time before measuring starts, e.g. 1s (0 for none).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Open loop at this many operations per second over all connections,
    /// latency measured from each operation's scheduled time; closed loop
    /// (as fast as possible) without it.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Write the report as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write the report as CSV (a header and one row) to FILE.
    #[arg(long, value_name = "FILE")]
    pub csv: Option<PathBuf>,
    /// Write a latency-by-percentile plot (SVG) to FILE.
    #[arg(long, value_name = "FILE")]
    pub plot: Option<PathBuf>,
    /// Seed of the key, value and record choices.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// No progress display.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

/// Most connections one run opens: far beyond what one load generator on
/// one machine drives usefully, and within common open-file limits.
const CONNECTIONS_MAX: usize = 50_000;
/// Deepest pipeline.
const PIPELINE_MAX: usize = 10_000;

impl RunArgs {
    /// The engine's plan, checked.
    pub fn plan(&self) -> Result<Plan, Error> {
        if !(1..=CONNECTIONS_MAX).contains(&self.connections) {
            return Err(Error::Usage(format!(
                "--connections must be 1..={CONNECTIONS_MAX}"
            )));
        }
        if !(1..=PIPELINE_MAX).contains(&self.pipeline) {
            return Err(Error::Usage(format!(
                "--pipeline must be 1..={PIPELINE_MAX}"
            )));
        }
        if self.duration.is_zero() {
            return Err(Error::Usage("--duration must be more than 0".into()));
        }
        if let Some(rate) = self.rate
            && !(rate.is_finite() && rate > 0.0)
        {
            return Err(Error::Usage("--rate must be a positive number".into()));
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let threads = self.threads.unwrap_or(cores).clamp(1, self.connections);
        Ok(Plan {
            connections: self.connections,
            threads,
            pipeline: self.pipeline,
            warmup: self.warmup,
            duration: self.duration,
            rate: self.rate,
        })
    }
}

/// Workload knobs shared by both protocols.
#[derive(Debug, Clone, Args)]
pub struct DataArgs {
    /// Keys (Redis) or rows (PostgreSQL) the operations pick from, uniformly.
    #[arg(long, default_value_t = 100_000)]
    pub keyspace: u64,
    /// Sizes of written values: 64 (fixed), 16..4096 (uniform) or exp:256
    /// (exponential with that mean).
    #[arg(long, default_value = "64")]
    pub value_size: ValueSize,
    /// Share of writes among operations, 0..=1 (SET, HSET, INSERT, memory
    /// stores).
    #[arg(long, default_value_t = 0.5)]
    pub write_ratio: f64,
    /// Agents the memory workload's records are spread over.
    #[arg(long, default_value_t = 100)]
    pub agents: u64,
}

impl DataArgs {
    fn check(&self) -> Result<(), Error> {
        if !(0.0..=1.0).contains(&self.write_ratio) {
            return Err(Error::Usage("--write-ratio must be within 0..=1".into()));
        }
        if self.keyspace == 0 {
            return Err(Error::Usage("--keyspace must be at least 1".into()));
        }
        Ok(())
    }

    fn settings(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("keyspace".into(), json!(self.keyspace));
        m.insert("value_size".into(), json!(self.value_size.to_string()));
        m.insert("write_ratio".into(), json!(self.write_ratio));
        m.insert("agents".into(), json!(self.agents));
        m
    }
}

/// `custos-loadtest redis`.
#[derive(Debug, Clone, Args)]
pub struct RedisArgs {
    /// HOST:PORT of the endpoint.
    #[arg(long)]
    pub target: String,
    /// Credentials and TLS.
    #[command(flatten)]
    pub auth: AuthArgs,
    /// Negotiate RESP3 (HELLO 3, with AUTH in it) instead of RESP2 and AUTH.
    #[arg(long)]
    pub resp3: bool,
    /// The workload.
    #[arg(long, value_enum, default_value_t = redis::Workload::GetSet)]
    pub workload: redis::Workload,
    /// Fields per hash in the hash workload.
    #[arg(long, default_value_t = 16)]
    pub hash_fields: u64,
    /// Key space, values, write ratio.
    #[command(flatten)]
    pub data: DataArgs,
    /// Connections, duration, rate, outputs.
    #[command(flatten)]
    pub run: RunArgs,
}

impl RedisArgs {
    /// The client configuration.
    pub fn config(&self) -> Result<redis::Config, Error> {
        self.data.check()?;
        Ok(redis::Config {
            endpoint: self.auth.endpoint(&self.target, false)?,
            user: self.auth.user.clone(),
            password: self.auth.password()?,
            resp3: self.resp3,
            workload: self.workload,
            keyspace: self.data.keyspace,
            hash_fields: self.hash_fields,
            value_size: self.data.value_size,
            write_ratio: self.data.write_ratio,
            agents: self.data.agents,
            seed: self.run.seed,
        })
    }

    /// The workload settings for the report.
    pub fn settings(&self) -> Map<String, Value> {
        let mut m = self.data.settings();
        m.insert("hash_fields".into(), json!(self.hash_fields));
        m.insert("resp3".into(), json!(self.resp3));
        m
    }
}

/// `custos-loadtest postgres`.
#[derive(Debug, Clone, Args)]
pub struct PostgresArgs {
    /// HOST:PORT of the endpoint.
    #[arg(long)]
    pub target: String,
    /// The database.
    #[arg(long, default_value = "postgres")]
    pub dbname: String,
    /// Credentials and TLS.
    #[command(flatten)]
    pub auth: AuthArgs,
    /// The workload.
    #[arg(long, value_enum, default_value_t = postgres::Workload::Select)]
    pub workload: postgres::Workload,
    /// Simple query protocol, or statements prepared once per connection.
    #[arg(long, value_enum, default_value_t = postgres::QueryMode::Prepared)]
    pub mode: postgres::QueryMode,
    /// Do not create or load the workload's tables first (they must exist).
    #[arg(long)]
    pub no_setup: bool,
    /// Key space, values, write ratio.
    #[command(flatten)]
    pub data: DataArgs,
    /// Connections, duration, rate, outputs.
    #[command(flatten)]
    pub run: RunArgs,
}

impl PostgresArgs {
    /// The client configuration.
    pub fn config(&self) -> Result<postgres::Config, Error> {
        self.data.check()?;
        let user = match &self.auth.user {
            Some(u) => u.clone(),
            None => {
                std::env::var("USER").map_err(|_| Error::Usage("postgres needs --user".into()))?
            }
        };
        Ok(postgres::Config {
            endpoint: self.auth.endpoint(&self.target, false)?,
            user,
            dbname: self.dbname.clone(),
            password: self.auth.password()?,
            workload: self.workload,
            mode: self.mode,
            keyspace: self.data.keyspace,
            value_size: self.data.value_size,
            write_ratio: self.data.write_ratio,
            agents: self.data.agents,
            seed: self.run.seed,
        })
    }

    /// The workload settings for the report.
    pub fn settings(&self) -> Map<String, Value> {
        let mut m = self.data.settings();
        m.insert("mode".into(), json!(enum_name(&self.mode)));
        m.insert("dbname".into(), json!(self.dbname));
        m
    }
}

/// Parses `10s`, `500ms`, `2m`, `1.5s`, `1h` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a duration (e.g. 10s, 500ms, 2m)"))?;
    let secs = match unit.trim() {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "us" => n / 1e6,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        other => return Err(format!("unknown duration unit '{other}' (ms, s, m, h)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("'{s}': {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let cases = [
            ("10s", Some(Duration::from_secs(10))),
            ("10", Some(Duration::from_secs(10))),
            ("500ms", Some(Duration::from_millis(500))),
            ("1.5s", Some(Duration::from_millis(1500))),
            ("2m", Some(Duration::from_secs(120))),
            ("1h", Some(Duration::from_secs(3600))),
            ("0", Some(Duration::ZERO)),
            ("ten", None),
            ("5 parsecs", None),
            ("", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_duration(text).ok(), want, "{text}");
        }
    }

    #[test]
    fn the_documented_command_lines_parse() {
        let cli = Cli::try_parse_from([
            "custos-loadtest",
            "redis",
            "--target",
            "127.0.0.1:6379",
            "--user",
            "u",
            "--password",
            "p",
            "--tls",
            "--connections",
            "8",
            "--pipeline",
            "16",
            "--duration",
            "10s",
            "--rate",
            "1000",
            "--json",
            "out.json",
        ])
        .unwrap();
        let Command::Redis(args) = cli.command else {
            panic!("not redis")
        };
        assert_eq!(args.run.connections, 8);
        assert_eq!(args.run.pipeline, 16);
        assert_eq!(args.run.rate, Some(1000.0));
        assert!(args.auth.tls);

        let cli = Cli::try_parse_from([
            "custos-loadtest",
            "postgres",
            "--target",
            "127.0.0.1:5432",
            "--user",
            "app",
            "--dbname",
            "app",
            "--workload",
            "mix",
            "--mode",
            "simple",
            "--connections",
            "4",
            "--duration",
            "2s",
        ])
        .unwrap();
        let Command::Postgres(args) = cli.command else {
            panic!("not postgres")
        };
        assert_eq!(args.workload, postgres::Workload::Mix);
        assert_eq!(args.mode, postgres::QueryMode::Simple);
    }

    #[test]
    fn plans_are_checked() {
        let parse = |extra: &[&str]| {
            let mut argv = vec!["custos-loadtest", "redis", "--target", "h:1"];
            argv.extend_from_slice(extra);
            let Command::Redis(a) = Cli::try_parse_from(argv).unwrap().command else {
                unreachable!()
            };
            a.run.plan()
        };
        assert!(parse(&[]).is_ok());
        assert!(parse(&["--connections", "0"]).is_err());
        assert!(parse(&["--pipeline", "0"]).is_err());
        assert!(parse(&["--duration", "0s"]).is_err());
        assert!(parse(&["--rate", "0"]).is_err());
        let plan = parse(&["--connections", "1", "--threads", "8"]).unwrap();
        assert_eq!(plan.threads, 1, "no more threads than connections");
    }

    #[test]
    fn password_sources() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secret");
        std::fs::write(&file, "s3cret\nignored\n").unwrap();
        let mut auth = AuthArgs {
            user: None,
            password: None,
            password_file: Some(file),
            tls: false,
            tls_ca: None,
            tls_insecure: false,
            tls_server_name: None,
        };
        assert_eq!(auth.password().unwrap().as_deref(), Some("s3cret"));
        auth.password = Some("given".into());
        assert_eq!(auth.password().unwrap().as_deref(), Some("given"));
    }
}
