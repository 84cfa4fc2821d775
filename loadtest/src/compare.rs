//! `compare`: one workload against several endpoints (the store directly,
//! custos, other proxies) over several rounds. Each round runs every
//! endpoint once, the order rotated from round to round (A B C, B C A,
//! C A B) so that no endpoint always runs first on a cold cache or last on
//! a hot machine. The table gives medians over rounds and each endpoint's
//! throughput and p99 relative to the first endpoint.
//!
//! Endpoints are URLs: `redis://[user[:password]@]host:port`, `rediss://`
//! for TLS, `postgres://user[:password]@host:port/dbname[?sslmode=require]`.
//! Missing credentials come from `--user` / `--password` /
//! `--password-file` / `CUSTOS_LOADTEST_PASSWORD`, so that secrets need not
//! appear on the command line.

use std::sync::Arc;

use clap::Args;
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::cli::{AuthArgs, DataArgs, RunArgs};
use crate::engine::new_histogram;
use crate::report::{self, Latency, Report, csv_field, percentile_curve};
use crate::{Described, Error, block_on, enum_name, measure, plot, postgres, redis};

/// Most rounds: each one runs every endpoint for the full duration.
const ROUNDS_MAX: usize = 100;

/// `custos-loadtest compare`.
#[derive(Debug, Clone, Args)]
pub struct CompareArgs {
    /// NAME=URL of an endpoint; give two or more, the first is the
    /// reference for the ratios.
    #[arg(long = "endpoint", value_name = "NAME=URL", required = true)]
    pub endpoints: Vec<String>,
    /// Rounds; each runs every endpoint once.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// The workload (Redis: get-set, hash, memory, ping, churn; PostgreSQL:
    /// select, insert, mix, memory, ping, churn); by default get-set or
    /// select.
    #[arg(long)]
    pub workload: Option<String>,
    /// PostgreSQL: simple or prepared statements.
    #[arg(long, value_enum, default_value_t = postgres::QueryMode::Prepared)]
    pub mode: postgres::QueryMode,
    /// PostgreSQL: do not create or load the workload's tables first.
    #[arg(long)]
    pub no_setup: bool,
    /// PostgreSQL: create and load the tables once, through this endpoint
    /// only, before the first round (the endpoints front one store; a proxy
    /// whose policy refuses DDL can still be compared). Without it, each
    /// endpoint sets them up before its first run.
    #[arg(long, value_name = "NAME", conflicts_with = "no_setup")]
    pub setup_on: Option<String>,
    /// Redis: negotiate RESP3.
    #[arg(long)]
    pub resp3: bool,
    /// Redis: fields per hash in the hash workload.
    #[arg(long, default_value_t = 16)]
    pub hash_fields: u64,
    /// Default credentials and TLS settings for the endpoints.
    #[command(flatten)]
    pub auth: AuthArgs,
    /// Key space, values, write ratio.
    #[command(flatten)]
    pub data: DataArgs,
    /// Connections, duration, rate, outputs (the files hold the
    /// comparison).
    #[command(flatten)]
    pub run: RunArgs,
}

/// Which protocol a URL speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `redis://`, `rediss://`.
    Redis,
    /// `postgres://`, `postgresql://`.
    Postgres,
}

/// One `NAME=URL`, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointSpec {
    /// The name in the table.
    pub name: String,
    /// The protocol.
    pub protocol: Protocol,
    /// `host:port`.
    pub addr: String,
    /// User from the URL.
    pub user: Option<String>,
    /// Password from the URL.
    pub password: Option<String>,
    /// Database from the URL's path.
    pub dbname: Option<String>,
    /// TLS asked for by the URL (`rediss://`, `sslmode=require` and
    /// stronger).
    pub tls: bool,
}

impl EndpointSpec {
    /// Parses `NAME=URL`.
    pub fn parse(spec: &str) -> Result<Self, Error> {
        let bad = |why: &str| Error::Usage(format!("--endpoint '{spec}': {why}"));
        let (name, url) = spec
            .split_once('=')
            .ok_or_else(|| bad("expected NAME=URL"))?;
        if name.is_empty() {
            return Err(bad("the name is empty"));
        }
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| bad("the URL has no scheme"))?;
        let (protocol, mut tls) = match scheme {
            "redis" => (Protocol::Redis, false),
            "rediss" => (Protocol::Redis, true),
            "postgres" | "postgresql" => (Protocol::Postgres, false),
            other => return Err(bad(&format!("unknown scheme '{other}'"))),
        };
        let (rest, query) = match rest.split_once('?') {
            Some((r, q)) => (r, Some(q)),
            None => (rest, None),
        };
        let (authority, path) = match rest.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (rest, None),
        };
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let (user, password) = match userinfo {
            Some(u) => match u.split_once(':') {
                Some((u, p)) => (Some(percent_decode(u)?), Some(percent_decode(p)?)),
                None => (Some(percent_decode(u)?), None),
            },
            None => (None, None),
        };
        let default_port = match protocol {
            Protocol::Redis => 6379,
            Protocol::Postgres => 5432,
        };
        let has_port = hostport
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.ends_with(':') && p.bytes().all(|b| b.is_ascii_digit()));
        if hostport.is_empty() {
            return Err(bad("no host"));
        }
        let addr = if has_port {
            hostport.to_owned()
        } else {
            format!("{hostport}:{default_port}")
        };
        for pair in query.into_iter().flat_map(|q| q.split('&')) {
            match pair.split_once('=') {
                Some(("sslmode", "require" | "verify-ca" | "verify-full"))
                | Some(("tls", "1" | "true")) => {
                    tls = true;
                }
                Some(("sslmode", "disable" | "allow" | "prefer")) => {}
                _ => return Err(bad(&format!("unsupported URL parameter '{pair}'"))),
            }
        }
        let dbname = path
            .filter(|p| !p.is_empty())
            .map(percent_decode)
            .transpose()?;
        Ok(Self {
            name: name.to_owned(),
            protocol,
            addr,
            user,
            password,
            dbname,
            tls,
        })
    }
}

fn percent_decode(s: &str) -> Result<String, Error> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| Error::Usage(format!("bad percent escape in '{s}'")))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| Error::Usage(format!("'{s}' is not UTF-8 once decoded")))
}

/// The endpoints in round `round`'s order (0-based): rotated by the round.
pub fn rotation(n: usize, round: usize) -> Vec<usize> {
    (0..n).map(|i| (i + round) % n).collect()
}

/// The median of `values` (the mean of the middle two for an even count).
pub fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

/// An endpoint's medians over rounds.
#[derive(Debug, Clone, Serialize)]
struct Medians {
    ops_per_s: f64,
    p50: f64,
    p90: f64,
    p99: f64,
    p999: f64,
    max: f64,
    errors: u64,
}

#[derive(Debug, Serialize)]
struct EndpointResult {
    name: String,
    target: String,
    median: Medians,
    /// Median throughput divided by the first endpoint's.
    ops_per_s_ratio: f64,
    /// Median p99 divided by the first endpoint's.
    p99_ratio: f64,
    runs: Vec<Report>,
}

#[derive(Debug, Serialize)]
struct Comparison {
    tool: &'static str,
    version: &'static str,
    protocol: &'static str,
    workload: String,
    rounds: usize,
    connections: usize,
    pipeline: usize,
    rate: Option<f64>,
    duration_s: f64,
    settings: Map<String, Value>,
    endpoints: Vec<EndpointResult>,
}

/// Runs the comparison and writes its outputs.
pub fn run(args: &CompareArgs) -> Result<(), Error> {
    let specs = args
        .endpoints
        .iter()
        .map(|s| EndpointSpec::parse(s))
        .collect::<Result<Vec<_>, _>>()?;
    let protocol = specs[0].protocol;
    if specs.iter().any(|s| s.protocol != protocol) {
        return Err(Error::Usage(
            "all endpoints of a comparison must speak the same protocol".into(),
        ));
    }
    if !(1..=ROUNDS_MAX).contains(&args.rounds) {
        return Err(Error::Usage(format!("--rounds must be 1..={ROUNDS_MAX}")));
    }
    args.run.plan()?;
    let mut runs: Vec<Vec<Report>> = vec![Vec::new(); specs.len()];
    let mut histograms: Vec<_> = specs.iter().map(|_| new_histogram()).collect();
    let mut set_up = vec![false; specs.len()];
    if let Some(name) = &args.setup_on {
        let spec = specs
            .iter()
            .find(|s| &s.name == name)
            .ok_or_else(|| Error::Usage(format!("--setup-on {name}: no endpoint of that name")))?;
        if protocol == Protocol::Postgres {
            let client = postgres::PgClient::new(postgres_config(args, spec)?);
            block_on(client.setup())?;
        }
        set_up.fill(true);
    }
    let mut workload_name = String::new();
    let mut settings = Map::new();

    for round in 0..args.rounds {
        for i in rotation(specs.len(), round) {
            let spec = &specs[i];
            eprintln!(
                "round {}/{}: {} ({})",
                round + 1,
                args.rounds,
                spec.name,
                spec.addr
            );
            let (report, histogram) = match protocol {
                Protocol::Redis => {
                    let config = redis_config(args, spec)?;
                    workload_name = enum_name(&config.workload);
                    let described =
                        described(args, spec, "redis", &workload_name, &config.endpoint);
                    settings = described.settings.clone();
                    measure(
                        Arc::new(redis::RedisClient::new(config)),
                        &described,
                        &args.run,
                    )?
                }
                Protocol::Postgres => {
                    let config = postgres_config(args, spec)?;
                    workload_name = enum_name(&config.workload);
                    let described =
                        described(args, spec, "postgres", &workload_name, &config.endpoint);
                    settings = described.settings.clone();
                    let client = Arc::new(postgres::PgClient::new(config));
                    if !args.no_setup && !set_up[i] {
                        block_on(client.setup())?;
                        set_up[i] = true;
                    }
                    measure(client, &described, &args.run)?
                }
            };
            eprintln!(
                "  {:.0} ops/s, p50 {:.1} us, p99 {:.1} us, {} errors",
                report.ops_per_s, report.latency_us.p50, report.latency_us.p99, report.errors
            );
            // Same bounds on both sides: adding cannot fail.
            let _ = histograms[i].add(&histogram);
            runs[i].push(report);
        }
    }

    let mut results: Vec<EndpointResult> = specs
        .iter()
        .zip(runs)
        .map(|(spec, runs)| {
            let pick = |f: fn(&Report) -> f64| median(&mut runs.iter().map(f).collect::<Vec<_>>());
            let median = Medians {
                ops_per_s: pick(|r| r.ops_per_s),
                p50: pick(|r| r.latency_us.p50),
                p90: pick(|r| r.latency_us.p90),
                p99: pick(|r| r.latency_us.p99),
                p999: pick(|r| r.latency_us.p999),
                max: pick(|r| r.latency_us.max),
                errors: runs.iter().map(|r| r.errors).sum(),
            };
            EndpointResult {
                name: spec.name.clone(),
                target: spec.addr.clone(),
                median,
                ops_per_s_ratio: 0.0,
                p99_ratio: 0.0,
                runs,
            }
        })
        .collect();
    let (ref_ops, ref_p99) = (results[0].median.ops_per_s, results[0].median.p99);
    for r in &mut results {
        r.ops_per_s_ratio = ratio(r.median.ops_per_s, ref_ops);
        r.p99_ratio = ratio(r.median.p99, ref_p99);
    }

    let plan = args.run.plan()?;
    let comparison = Comparison {
        tool: report::TOOL,
        version: env!("CARGO_PKG_VERSION"),
        protocol: match protocol {
            Protocol::Redis => "redis",
            Protocol::Postgres => "postgres",
        },
        workload: workload_name,
        rounds: args.rounds,
        connections: plan.connections,
        pipeline: plan.pipeline,
        rate: plan.rate,
        duration_s: plan.duration.as_secs_f64(),
        settings,
        endpoints: results,
    };
    print!("{}", table(&comparison));
    if let Some(path) = &args.run.json {
        let text = serde_json::to_string_pretty(&comparison)
            .map_err(|e| Error::Usage(format!("serialising the comparison: {e}")))?;
        report::write_file(path, &(text + "\n"))?;
    }
    if let Some(path) = &args.run.csv {
        report::write_file(path, &csv(&comparison))?;
    }
    if let Some(path) = &args.run.plot {
        let series: Vec<_> = comparison
            .endpoints
            .iter()
            .zip(&histograms)
            .map(|(e, h)| (e.name.clone(), percentile_curve(h)))
            .collect();
        let title = format!(
            "{} {}: {} connections, pipeline {}, {} rounds{}",
            comparison.protocol,
            comparison.workload,
            comparison.connections,
            comparison.pipeline,
            comparison.rounds,
            comparison
                .rate
                .map(|r| format!(", {r} ops/s open loop"))
                .unwrap_or_default()
        );
        plot::write_svg(path, &title, &series)?;
    }
    Ok(())
}

fn ratio(x: f64, reference: f64) -> f64 {
    if reference > 0.0 {
        ((x / reference) * 1000.0).round() / 1000.0
    } else {
        0.0
    }
}

fn described(
    args: &CompareArgs,
    spec: &EndpointSpec,
    protocol: &'static str,
    workload: &str,
    endpoint: &crate::net::Endpoint,
) -> Described {
    let mut settings = args.data_settings(protocol);
    settings.insert("endpoint".into(), json!(spec.name));
    Described {
        label: format!("{} {workload}", spec.name),
        protocol,
        workload: workload.to_owned(),
        target: spec.addr.clone(),
        tls: endpoint.tls.is_some(),
        settings,
    }
}

impl CompareArgs {
    fn data_settings(&self, protocol: &str) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("keyspace".into(), json!(self.data.keyspace));
        m.insert("value_size".into(), json!(self.data.value_size.to_string()));
        m.insert("write_ratio".into(), json!(self.data.write_ratio));
        m.insert("agents".into(), json!(self.data.agents));
        if protocol == "postgres" {
            m.insert("mode".into(), json!(enum_name(&self.mode)));
        } else {
            m.insert("hash_fields".into(), json!(self.hash_fields));
            m.insert("resp3".into(), json!(self.resp3));
        }
        m
    }

    fn password_for(&self, spec: &EndpointSpec) -> Result<Option<String>, Error> {
        match &spec.password {
            Some(p) => Ok(Some(p.clone())),
            None => self.auth.password(),
        }
    }
}

fn parse_workload<T: clap::ValueEnum>(name: &str) -> Result<T, Error> {
    T::from_str(name, true).map_err(|_| {
        let names: Vec<String> = T::value_variants()
            .iter()
            .filter_map(|v| v.to_possible_value().map(|p| p.get_name().to_owned()))
            .collect();
        Error::Usage(format!(
            "unknown workload '{name}' (one of: {})",
            names.join(", ")
        ))
    })
}

fn redis_config(args: &CompareArgs, spec: &EndpointSpec) -> Result<redis::Config, Error> {
    let workload = match &args.workload {
        Some(w) => parse_workload(w)?,
        None => redis::Workload::GetSet,
    };
    Ok(redis::Config {
        endpoint: args.auth.endpoint(&spec.addr, spec.tls)?,
        user: spec.user.clone().or_else(|| args.auth.user.clone()),
        password: args.password_for(spec)?,
        resp3: args.resp3,
        workload,
        keyspace: args.data.keyspace,
        hash_fields: args.hash_fields,
        value_size: args.data.value_size,
        write_ratio: args.data.write_ratio,
        agents: args.data.agents,
        seed: args.run.seed,
    })
}

fn postgres_config(args: &CompareArgs, spec: &EndpointSpec) -> Result<postgres::Config, Error> {
    let workload = match &args.workload {
        Some(w) => parse_workload(w)?,
        None => postgres::Workload::Select,
    };
    let user = spec
        .user
        .clone()
        .or_else(|| args.auth.user.clone())
        .ok_or_else(|| Error::Usage(format!("endpoint {}: no user", spec.name)))?;
    Ok(postgres::Config {
        endpoint: args.auth.endpoint(&spec.addr, spec.tls)?,
        dbname: spec.dbname.clone().unwrap_or_else(|| user.clone()),
        user,
        password: args.password_for(spec)?,
        workload,
        mode: args.mode,
        keyspace: args.data.keyspace,
        value_size: args.data.value_size,
        write_ratio: args.data.write_ratio,
        agents: args.data.agents,
        seed: args.run.seed,
    })
}

fn table(c: &Comparison) -> String {
    let reference = &c.endpoints[0].name;
    let mut s = format!(
        "{} {}: {} rounds x {:.1} s, {} connections, pipeline {}{}; medians over rounds\n",
        c.protocol,
        c.workload,
        c.rounds,
        c.duration_s,
        c.connections,
        c.pipeline,
        c.rate
            .map(|r| format!(", open loop at {r} ops/s"))
            .unwrap_or_default()
    );
    let width = c
        .endpoints
        .iter()
        .map(|e| e.name.len())
        .max()
        .unwrap_or(8)
        .max(8);
    s.push_str(&format!(
        "{:<width$}  {:>12}  {:>10}  {:>9}  {:>9}  {:>10}  {:>10}  {:>7}\n",
        "endpoint",
        "ops/s",
        format!("vs {}", truncate(reference, 7)),
        "p50 us",
        "p99 us",
        "p99.9 us",
        "p99 vs ref",
        "errors"
    ));
    for e in &c.endpoints {
        s.push_str(&format!(
            "{:<width$}  {:>12.0}  {:>10.3}  {:>9.1}  {:>9.1}  {:>10.1}  {:>10.3}  {:>7}\n",
            e.name,
            e.median.ops_per_s,
            e.ops_per_s_ratio,
            e.median.p50,
            e.median.p99,
            e.median.p999,
            e.p99_ratio,
            e.median.errors
        ));
    }
    s
}

fn truncate(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

/// The comparison's CSV header.
pub const COMPARE_CSV_HEADER: &str = "round,endpoint,target,ops_per_s,p50_us,p90_us,p99_us,p999_us,max_us,errors,ops_per_s_ratio,p99_ratio";

fn csv(c: &Comparison) -> String {
    let mut s = String::from(COMPARE_CSV_HEADER);
    s.push('\n');
    for e in &c.endpoints {
        for (round, r) in e.runs.iter().enumerate() {
            let Latency {
                p50,
                p90,
                p99,
                p999,
                max,
                ..
            } = r.latency_us;
            s.push_str(&format!(
                "{},{},{},{:.1},{p50},{p90},{p99},{p999},{max},{},,\n",
                round + 1,
                csv_field(&e.name),
                csv_field(&e.target),
                r.ops_per_s,
                r.errors
            ));
        }
        let m = &e.median;
        s.push_str(&format!(
            "median,{},{},{:.1},{},{},{},{},{},{},{},{}\n",
            csv_field(&e.name),
            csv_field(&e.target),
            m.ops_per_s,
            m.p50,
            m.p90,
            m.p99,
            m.p999,
            m.max,
            m.errors,
            e.ops_per_s_ratio,
            e.p99_ratio
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_urls() {
        let e = EndpointSpec::parse("direct=redis://127.0.0.1:6379").unwrap();
        assert_eq!(e.name, "direct");
        assert_eq!(e.protocol, Protocol::Redis);
        assert_eq!(e.addr, "127.0.0.1:6379");
        assert_eq!((e.user, e.password, e.tls), (None, None, false));

        let e = EndpointSpec::parse("custos=rediss://alice:p%40ss@localhost").unwrap();
        assert_eq!(e.addr, "localhost:6379");
        assert_eq!(e.user.as_deref(), Some("alice"));
        assert_eq!(e.password.as_deref(), Some("p@ss"));
        assert!(e.tls);

        let e =
            EndpointSpec::parse("pg=postgres://app@127.0.0.1:5433/appdb?sslmode=require").unwrap();
        assert_eq!(e.protocol, Protocol::Postgres);
        assert_eq!(e.addr, "127.0.0.1:5433");
        assert_eq!(e.dbname.as_deref(), Some("appdb"));
        assert!(e.tls);

        let e = EndpointSpec::parse("v6=redis://[::1]:7000").unwrap();
        assert_eq!(e.addr, "[::1]:7000");

        for bad in [
            "noname",
            "=redis://h:1",
            "x=http://h:1",
            "x=redis//h:1",
            "x=redis://",
            "x=postgres://u@h/db?frobnicate=1",
            "x=redis://u:%zz@h",
        ] {
            assert!(EndpointSpec::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rounds_rotate_the_order() {
        assert_eq!(rotation(3, 0), [0, 1, 2]);
        assert_eq!(rotation(3, 1), [1, 2, 0]);
        assert_eq!(rotation(3, 2), [2, 0, 1]);
        assert_eq!(rotation(3, 3), [0, 1, 2]);
    }

    #[test]
    fn medians() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&mut []), 0.0);
        assert_eq!(ratio(50.0, 100.0), 0.5);
        assert_eq!(ratio(1.0, 0.0), 0.0);
    }
}
