//! `custos-loadtest` against real servers: a password-protected
//! `redis-server` and PostgreSQL (SCRAM, md5, cleartext over TLS), and
//! custos in front of Redis for `compare`. Each run lasts a second or two;
//! the assertions are about plausibility (operations happened, none failed,
//! percentiles are ordered, the JSON has its documented shape), never about
//! speed.

use std::path::Path;
use std::process::{Command, Output};

use custos_tests::{
    Certs, Custos, CustosConfig, PgAuth, PostgresOptions, PostgresServer, RedisOptions, RedisServer,
};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_custos-loadtest");

/// Runs the harness with `args`, `password` in the environment (never on
/// the command line), and returns its output.
fn loadtest(args: &[&str], password: Option<&str>) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args).env_remove("CUSTOS_LOADTEST_PASSWORD");
    if let Some(p) = password {
        cmd.env("CUSTOS_LOADTEST_PASSWORD", p);
    }
    cmd.output().expect("run custos-loadtest")
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs the harness, which must succeed, and returns its JSON report.
fn run_json(dir: &Path, name: &str, args: &[&str], password: Option<&str>) -> Value {
    let json = dir.join(format!("{name}.json"));
    let mut argv: Vec<&str> = args.to_vec();
    let json_arg = json.to_str().expect("UTF-8 path").to_owned();
    argv.extend(["--json", &json_arg, "--quiet"]);
    let out = loadtest(&argv, password);
    assert!(out.status.success(), "{name}: {}", text(&out));
    let raw = std::fs::read_to_string(&json).unwrap_or_else(|e| panic!("{name}: {e}"));
    serde_json::from_str(&raw).unwrap_or_else(|e| panic!("{name}: {e}\n{raw}"))
}

/// The documented shape of a run report, and plausible figures: operations
/// happened, none failed, latencies are positive and ordered.
fn assert_plausible(report: &Value, protocol: &str, workload: &str) {
    let ctx = || serde_json::to_string_pretty(report).unwrap_or_default();
    for key in [
        "tool",
        "version",
        "protocol",
        "workload",
        "target",
        "tls",
        "connections",
        "threads",
        "pipeline",
        "loop",
        "rate",
        "warmup_s",
        "duration_s",
        "ops",
        "errors",
        "ops_per_s",
        "latency_us",
        "percentiles",
        "settings",
        "error_samples",
        "started_unix_s",
    ] {
        assert!(report.get(key).is_some(), "missing {key}: {}", ctx());
    }
    assert_eq!(report["tool"], "custos-loadtest");
    assert_eq!(report["protocol"], protocol);
    assert_eq!(report["workload"], workload);
    let ops = report["ops"].as_u64().expect("ops");
    assert!(ops > 0, "no operations: {}", ctx());
    assert_eq!(report["errors"], 0, "{}", ctx());
    assert!(report["ops_per_s"].as_f64().expect("ops_per_s") > 0.0);
    let l = &report["latency_us"];
    let p = |k: &str| {
        l[k].as_f64()
            .unwrap_or_else(|| panic!("latency_us.{k}: {}", ctx()))
    };
    assert!(p("p50") > 0.0, "{}", ctx());
    assert!(
        p("p50") <= p("p90")
            && p("p90") <= p("p99")
            && p("p99") <= p("p999")
            && p("p999") <= p("max"),
        "percentiles out of order: {}",
        ctx()
    );
    assert!(p("mean") > 0.0 && p("mean") <= p("max"));
    let curve = report["percentiles"].as_array().expect("percentiles");
    assert!(curve.len() > 10);
    for pair in curve.windows(2) {
        assert!(pair[0]["percentile"].as_f64() < pair[1]["percentile"].as_f64());
        assert!(pair[0]["latency_us"].as_f64() <= pair[1]["latency_us"].as_f64());
    }
}

fn redis_args<'a>(server: &'a RedisServer, addr: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["redis", "--target", addr, "--user", server.user()];
    v.extend_from_slice(extra);
    v
}

#[test]
fn redis_closed_loop_get_set_pipelined() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let addr = redis.addr();
    let csv = dir.path().join("run.csv");
    let svg = dir.path().join("run.svg");
    let args = redis_args(
        &redis,
        &addr,
        &[
            "--connections",
            "4",
            "--threads",
            "2",
            "--pipeline",
            "8",
            "--duration",
            "2s",
            "--warmup",
            "500ms",
            "--value-size",
            "16..256",
            "--csv",
            csv.to_str().unwrap(),
            "--plot",
            svg.to_str().unwrap(),
        ],
    );
    let report = run_json(dir.path(), "getset", &args, Some(redis.password()));
    assert_plausible(&report, "redis", "get-set");
    assert_eq!(report["loop"], "closed");
    assert_eq!(report["rate"], Value::Null);
    assert_eq!(report["connections"], 4);
    assert_eq!(report["pipeline"], 8);
    assert_eq!(report["settings"]["value_size"], "16..256");

    // The keys were really written, within the key space.
    let dbsize: u64 = redis
        .cli(&["DBSIZE"])
        .stdout
        .trim()
        .parse()
        .expect("DBSIZE");
    assert!(dbsize > 0, "nothing written");
    for _ in 0..20 {
        let key = redis.cli(&["RANDOMKEY"]).stdout.trim().to_owned();
        let n: u64 = key
            .strip_prefix("key:")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("unexpected key {key:?}"));
        assert!(n < 100_000, "{key} outside the key space");
    }

    let csv = std::fs::read_to_string(&csv).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 2, "{csv}");
    assert!(lines[0].starts_with("protocol,workload,target"));
    assert_eq!(lines[0].split(',').count(), lines[1].split(',').count());
    let svg = std::fs::read_to_string(&svg).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("99.9%"));
}

#[test]
fn redis_workloads_hash_memory_ping_churn_resp3() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let addr = redis.addr();
    for workload in ["hash", "memory", "ping", "churn"] {
        let args = redis_args(
            &redis,
            &addr,
            &[
                "--workload",
                workload,
                "-c",
                "3",
                "-d",
                "1s",
                "--warmup",
                "0",
            ],
        );
        let report = run_json(dir.path(), workload, &args, Some(redis.password()));
        assert_plausible(&report, "redis", workload);
    }
    let args = redis_args(&redis, &addr, &["--resp3", "-c", "2", "-d", "1s"]);
    let report = run_json(dir.path(), "resp3", &args, Some(redis.password()));
    assert_plausible(&report, "redis", "get-set");

    // The memory records carry personal data for masking to find.
    let text = redis.cli(&["HGET", "mem:0:0", "text"]).stdout;
    assert!(text.contains("@example.org"), "{text}");
}

#[test]
fn redis_open_loop_sends_at_the_rate() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let addr = redis.addr();
    let args = redis_args(
        &redis,
        &addr,
        &["--rate", "400", "-c", "2", "-d", "2s", "--warmup", "0"],
    );
    let report = run_json(dir.path(), "open", &args, Some(redis.password()));
    assert_plausible(&report, "redis", "get-set");
    assert_eq!(report["loop"], "open");
    assert_eq!(report["rate"], 400.0);
    // 400/s for 2 s is 800 scheduled operations; the schedule never runs
    // ahead, and a loaded machine may fall somewhat behind.
    let ops = report["ops"].as_u64().unwrap();
    assert!(
        (400..=802).contains(&ops),
        "{ops} operations at 400/s for 2 s"
    );
}

#[test]
fn redis_bad_credentials_and_unreachable_targets_fail_the_run() {
    let redis = RedisServer::start();
    let addr = redis.addr();
    let out = loadtest(
        &redis_args(&redis, &addr, &["-c", "2", "-d", "1s"]),
        Some("not-the-password"),
    );
    assert!(!out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("authentication failed"), "{stderr}");
    assert!(
        !stderr.contains("not-the-password"),
        "the secret must not be echoed: {stderr}"
    );

    let closed = format!("127.0.0.1:{}", custos_tests::free_port());
    let out = loadtest(&["redis", "--target", &closed, "-c", "1", "-d", "1s"], None);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("connecting to"),
        "{}",
        text(&out)
    );
}

#[test]
fn redis_over_tls_checks_the_certificate() {
    let certs = Certs::generate();
    let tls_port = custos_tests::free_port().to_string();
    let (cert, key) = (certs.cert(), certs.key());
    let redis = RedisServer::start_with(RedisOptions {
        extra_args: vec![
            "--tls-port".into(),
            tls_port.clone(),
            "--tls-cert-file".into(),
            cert.to_str().unwrap().into(),
            "--tls-key-file".into(),
            key.to_str().unwrap().into(),
            "--tls-auth-clients".into(),
            "no".into(),
        ],
        ..RedisOptions::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{tls_port}");
    let ca = certs.ca();
    let args = redis_args(
        &redis,
        &addr,
        &[
            "--tls",
            "--tls-ca",
            ca.to_str().unwrap(),
            "-c",
            "2",
            "-P",
            "4",
            "-d",
            "1s",
        ],
    );
    let report = run_json(dir.path(), "tls", &args, Some(redis.password()));
    assert_plausible(&report, "redis", "get-set");
    assert_eq!(report["tls"], true);

    // Without the CA the system's roots do not know the certificate.
    let args = redis_args(&redis, &addr, &["--tls", "-c", "1", "-d", "1s"]);
    let out = loadtest(&args, Some(redis.password()));
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("TLS"),
        "{}",
        text(&out)
    );
}

#[test]
fn compare_direct_and_through_custos() {
    let redis = RedisServer::start();
    let custos = Custos::start(CustosConfig::redis(&redis));
    let dir = tempfile::tempdir().unwrap();
    let direct = format!("direct=redis://{}@{}", redis.user(), redis.addr());
    // custos in development mode answers AUTH itself and logs in upstream
    // with its own credential.
    let through = format!(
        "custos=redis://{}@127.0.0.1:{}",
        redis.user(),
        custos.port()
    );
    let json = dir.path().join("cmp.json");
    let csv = dir.path().join("cmp.csv");
    let svg = dir.path().join("cmp.svg");
    let out = loadtest(
        &[
            "compare",
            "--endpoint",
            &direct,
            "--endpoint",
            &through,
            "--rounds",
            "2",
            "-c",
            "2",
            "-P",
            "4",
            "-d",
            "1s",
            "--warmup",
            "200ms",
            "--quiet",
            "--json",
            json.to_str().unwrap(),
            "--csv",
            csv.to_str().unwrap(),
            "--plot",
            svg.to_str().unwrap(),
        ],
        Some(redis.password()),
    );
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("direct") && stdout.contains("custos"),
        "{stdout}"
    );

    let cmp: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(cmp["tool"], "custos-loadtest");
    assert_eq!(cmp["rounds"], 2);
    let endpoints = cmp["endpoints"].as_array().unwrap();
    assert_eq!(endpoints.len(), 2);
    assert_eq!(endpoints[0]["name"], "direct");
    assert_eq!(endpoints[0]["ops_per_s_ratio"], 1.0);
    for e in endpoints {
        let runs = e["runs"].as_array().unwrap();
        assert_eq!(runs.len(), 2, "one run per round");
        for r in runs {
            assert_plausible(r, "redis", "get-set");
        }
        assert!(e["median"]["ops_per_s"].as_f64().unwrap() > 0.0);
        assert!(e["ops_per_s_ratio"].as_f64().unwrap() > 0.0);
    }
    let csv = std::fs::read_to_string(&csv).unwrap();
    assert_eq!(csv.lines().count(), 1 + 2 * 3, "{csv}");
    assert_eq!(
        csv.lines().filter(|l| l.starts_with("median,")).count(),
        2,
        "{csv}"
    );
    assert!(std::fs::read_to_string(&svg).unwrap().contains("custos"));
}

fn pg_args<'a>(pg: &'a PostgresServer, addr: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![
        "postgres",
        "--target",
        addr,
        "--user",
        pg.user(),
        "--dbname",
        pg.database(),
    ];
    v.extend_from_slice(extra);
    v
}

#[test]
fn postgres_scram_workloads_simple_and_prepared() {
    let pg = PostgresServer::start();
    let dir = tempfile::tempdir().unwrap();
    let addr = pg.addr();
    for (workload, mode) in [
        ("select", "prepared"),
        ("select", "simple"),
        ("mix", "prepared"),
        ("insert", "simple"),
        ("memory", "prepared"),
        ("memory", "simple"),
        ("churn", "simple"),
    ] {
        let args = pg_args(
            &pg,
            &addr,
            &[
                "--workload",
                workload,
                "--mode",
                mode,
                "--keyspace",
                "1000",
                "-c",
                "3",
                "-P",
                "2",
                "-d",
                "1s",
                "--warmup",
                "200ms",
            ],
        );
        let report = run_json(
            dir.path(),
            &format!("{workload}-{mode}"),
            &args,
            Some(pg.password()),
        );
        assert_plausible(&report, "postgres", workload);
        assert_eq!(report["settings"]["mode"], mode);
    }
    let loaded = pg.psql_direct_in(pg.database(), "SELECT count(*) FROM custos_loadtest_kv");
    assert_eq!(loaded.trim(), "1000");
    let stored = pg.psql_direct_in(
        pg.database(),
        "SELECT count(*) > 0 FROM custos_loadtest_memory WHERE body LIKE '%@example.org%'",
    );
    assert_eq!(stored.trim(), "t");
}

#[test]
fn postgres_error_replies_are_counted_and_sampled() {
    let pg = PostgresServer::start();
    let dir = tempfile::tempdir().unwrap();
    let addr = pg.addr();
    // No setup: the table does not exist, so every select fails, and the
    // connection stays usable for the next one.
    let args = pg_args(
        &pg,
        &addr,
        &[
            "--workload",
            "select",
            "--mode",
            "simple",
            "--no-setup",
            "-c",
            "2",
            "-d",
            "1s",
            "--warmup",
            "0",
            "--quiet",
            "--json",
        ],
    );
    let json = dir.path().join("errors.json");
    let mut argv = args.clone();
    argv.push(json.to_str().unwrap());
    let out = loadtest(&argv, Some(pg.password()));
    assert!(out.status.success(), "{}", text(&out));
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let ops = report["ops"].as_u64().unwrap();
    assert!(ops > 0);
    assert_eq!(report["errors"].as_u64(), Some(ops), "every select fails");
    let sample = report["error_samples"][0].as_str().unwrap_or_default();
    assert!(sample.contains("42P01"), "{sample}");

    // Prepared mode finds out while preparing, before the clock starts.
    let args = pg_args(
        &pg,
        &addr,
        &["--workload", "select", "--no-setup", "-c", "1", "-d", "1s"],
    );
    let out = loadtest(&args, Some(pg.password()));
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("preparing the statements"),
        "{}",
        text(&out)
    );
}

#[test]
fn postgres_md5_and_wrong_password() {
    let pg = PostgresOptions::default().auth(PgAuth::Md5).start();
    let dir = tempfile::tempdir().unwrap();
    let addr = pg.addr();
    let args = pg_args(&pg, &addr, &["--workload", "ping", "-c", "2", "-d", "1s"]);
    let report = run_json(dir.path(), "md5", &args, Some(pg.password()));
    assert_plausible(&report, "postgres", "ping");

    let out = loadtest(&args, Some("wrong"));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("authentication failed") && stderr.contains("28P01"),
        "{stderr}"
    );
}

#[test]
fn postgres_cleartext_token_over_tls() {
    let certs = Certs::generate();
    let pg = PostgresOptions::default()
        .auth(PgAuth::Password)
        .ssl(&certs)
        .start();
    let dir = tempfile::tempdir().unwrap();
    let addr = pg.addr();
    let ca = certs.ca();
    let args = pg_args(
        &pg,
        &addr,
        &[
            "--tls",
            "--tls-ca",
            ca.to_str().unwrap(),
            "--workload",
            "churn",
            "-c",
            "2",
            "-d",
            "1s",
        ],
    );
    let report = run_json(dir.path(), "tls", &args, Some(pg.password()));
    assert_plausible(&report, "postgres", "churn");
    assert_eq!(report["tls"], true);

    // The certificate is checked against the CA: another CA is refused,
    // unless checking is turned off.
    let other = Certs::generate();
    let other_ca = other.ca();
    let mut wrong_ca = args.clone();
    let at = wrong_ca.iter().position(|a| *a == "--tls-ca").unwrap() + 1;
    wrong_ca[at] = other_ca.to_str().unwrap();
    let out = loadtest(&wrong_ca, Some(pg.password()));
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("TLS"),
        "{}",
        text(&out)
    );
    let mut insecure: Vec<&str> = wrong_ca.clone();
    insecure.push("--tls-insecure");
    let report = run_json(dir.path(), "insecure", &insecure, Some(pg.password()));
    assert_plausible(&report, "postgres", "churn");
}
