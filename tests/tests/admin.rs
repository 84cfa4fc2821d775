//! The appliance as an operator sees it: health, metrics, configuration
//! checking and graceful shutdown.

use custos_tests::custos::workspace_root;
use custos_tests::resp::{Reply, encode_str};
use custos_tests::{
    Custos, CustosConfig, RawConn, RedisServer, SETTLE_TIMEOUT, poll_until, redis_behind_custos,
    wait_until,
};
use std::io::ErrorKind;
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

#[test]
fn healthz_answers_ok() {
    let (_redis, custos) = redis_behind_custos(|c| c);
    let (code, body) = custos.healthz().expect("GET /healthz");
    assert_eq!(code, 200);
    assert_eq!(body.trim(), "ok");
}

#[test]
fn metrics_count_commands_bytes_and_latency() {
    let (_redis, custos) = redis_behind_custos(|c| c);
    const N: usize = 500;
    let mut c = RawConn::open(custos.port());
    let mut sent = 0usize;
    for i in 0..N {
        let cmd = encode_str(&["SET", &format!("m:{i}"), "value"]);
        sent += cmd.len();
        c.send(&cmd).expect("send");
        assert_eq!(c.read().expect("reply"), Reply::Simple("OK".into()));
    }
    let received = N * b"+OK\r\n".len();
    let open = custos
        .metrics()
        .get("custos_connections_open", &[("target", "cache")]);
    assert_eq!(open, Some(1.0), "one connection open");

    let t = [("target", "cache")];
    let m = poll_until(SETTLE_TIMEOUT, "metrics to count every command", || {
        let m = custos.metrics();
        let commands = m.counter("custos_commands_total", &t);
        let count = m.counter("custos_command_duration_seconds_count", &t);
        if commands >= N as f64 && count >= N as f64 {
            Ok(m)
        } else {
            Err(format!(
                "commands_total = {commands}, duration _count = {count}"
            ))
        }
    });
    let commands = m.counter("custos_commands_total", &t);
    let count = m
        .get("custos_command_duration_seconds_count", &t)
        .expect("_count");
    let sum = m
        .get("custos_command_duration_seconds_sum", &t)
        .expect("_sum");
    assert!(
        count <= commands,
        "histogram _count {count} > commands_total {commands}"
    );
    assert!(sum >= 0.0 && sum.is_finite(), "_sum = {sum}");

    // Buckets are cumulative and end with +Inf == _count.
    let mut buckets: Vec<(f64, f64)> = m
        .matching("custos_command_duration_seconds_bucket", &t)
        .iter()
        .map(|s| {
            let le = s
                .labels
                .iter()
                .find(|(k, _)| k == "le")
                .expect("le label")
                .1
                .as_str();
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().expect("le number")
            };
            (le, s.value)
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert!(
        buckets.len() >= 2,
        "histogram buckets: {buckets:?}\n{}",
        m.text
    );
    assert!(
        buckets.windows(2).all(|w| w[0].1 <= w[1].1),
        "buckets not cumulative: {buckets:?}"
    );
    assert_eq!(
        buckets.last().map(|b| b.0),
        Some(f64::INFINITY),
        "no +Inf bucket"
    );
    assert_eq!(
        buckets.last().map(|b| b.1),
        Some(count),
        "+Inf bucket != _count"
    );

    let bytes_in = m.counter("custos_client_bytes_received_total", &t);
    let bytes_out = m.counter("custos_client_bytes_sent_total", &t);
    assert!(
        bytes_in >= sent as f64,
        "client bytes received {bytes_in} < {sent} sent"
    );
    assert!(
        bytes_out >= received as f64,
        "client bytes sent {bytes_out} < {received} received"
    );
    assert!(m.counter("custos_connections_total", &t) >= 1.0);
    for kind in ["client_protocol", "upstream_unavailable", "upstream_auth"] {
        let e = m.counter(
            "custos_errors_total",
            &[("target", "cache"), ("kind", kind)],
        );
        assert_eq!(e, 0.0, "no {kind} errors expected");
    }

    drop(c);
    poll_until(
        SETTLE_TIMEOUT,
        "connections_open back to 0",
        || match custos.metrics().get("custos_connections_open", &t) {
            Some(0.0) => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
}

#[test]
fn sigterm_lets_a_blocked_command_finish_and_exits_zero() {
    let (redis, mut custos) = redis_behind_custos(|c| c.shutdown_grace_ms(10_000));
    let mut c = RawConn::open(custos.port());
    c.send(&encode_str(&["BLPOP", "nothing-here", "1"]))
        .expect("BLPOP");
    wait_until(SETTLE_TIMEOUT, "BLPOP to block in the store", || {
        redis
            .client_list()
            .iter()
            .any(|l| l.contains(" cmd=blpop "))
    });
    let port = custos.port();
    custos.signal(libc::SIGTERM);

    // New connections are refused while the in-flight command still runs.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut refused_while_running = false;
    while Instant::now() < deadline {
        match TcpStream::connect(("127.0.0.1", port)) {
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                refused_while_running = custos.try_wait().is_none();
                break;
            }
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    }

    let reply = c.read().expect("the in-flight BLPOP gets its reply");
    assert!(
        reply.is_null(),
        "BLPOP timing out returns null, got {reply:?}"
    );
    let status = custos
        .wait_exit(Duration::from_secs(60))
        .expect("custos exits after SIGTERM");
    assert!(
        status.success(),
        "custos exit status after SIGTERM: {status}"
    );
    assert!(
        refused_while_running,
        "new connections were not refused while the in-flight command finished"
    );
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write config");
    p
}

const VALID: &str = r#"[server]
workers = 2
admin_listen = "127.0.0.1:19090"
shutdown_grace_ms = 5000
log_format = "json"

[[target]]
name = "cache"
protocol = "redis"
listen = "127.0.0.1:16380"
upstream = "127.0.0.1:16379"
upstream_user = "custos"
upstream_password_file = "secret"
auth = "none"
buffer_bytes_max = 65536
pending_replies_max = 1024
connect_timeout_ms = 3000
"#;

#[test]
fn check_config_accepts_a_valid_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("secret"), "pw").expect("secret");
    let path = write(dir.path(), "custos.toml", VALID);
    let out = Custos::check_config(&path, dir.path());
    out.assert_success("check-config on a valid file");
    assert!(
        out.stdout.starts_with("ok"),
        "check-config printed {:?}",
        out.stdout
    );
}

#[test]
fn check_config_accepts_the_example() {
    // The example's password files, TLS certificate and JWKS (under secrets/,
    // next to it) are written by the demo; check a copy next to throwaway
    // ones so the test does not depend on the demo having run.
    let example = std::fs::read_to_string(workspace_root().join("examples/custos.toml"))
        .expect("examples/custos.toml");
    let dir = tempfile::tempdir().expect("temp dir");
    let secrets = dir.path().join("examples/secrets");
    std::fs::create_dir_all(secrets.join("tls")).expect("mkdir");
    std::fs::write(secrets.join("redis"), "pw").expect("secret");
    std::fs::write(secrets.join("postgres"), "pw").expect("secret");
    let certs = custos_tests::certs::Certs::generate();
    std::fs::copy(certs.cert(), secrets.join("tls/cert.pem")).expect("cert");
    std::fs::copy(certs.key(), secrets.join("tls/key.pem")).expect("key");
    let idp = custos_tests::idp::Idp::new();
    std::fs::copy(idp.jwks_path(), secrets.join("jwks.json")).expect("jwks");
    let path = write(&dir.path().join("examples"), "custos.toml", &example);
    let out = Custos::check_config(&path, dir.path());
    out.assert_success("check-config on examples/custos.toml");
    assert!(
        out.stdout.starts_with("ok"),
        "check-config printed {:?}",
        out.stdout
    );
}

fn assert_rejected(config: &str, key: &str, line: usize) {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("secret"), "pw").expect("secret");
    let path = write(dir.path(), "custos.toml", config);
    let out = Custos::check_config(&path, dir.path());
    assert_eq!(
        out.status.code(),
        Some(1),
        "check-config must exit 1: {out:?}"
    );
    let err = out.stderr.to_lowercase();
    assert!(
        err.contains(key),
        "stderr does not name {key:?}: {}",
        out.stderr
    );
    assert!(
        err.contains("line"),
        "stderr does not mention a line: {}",
        out.stderr
    );
    assert!(
        err.contains(&line.to_string()),
        "stderr does not give line {line}: {}",
        out.stderr
    );
}

#[test]
fn check_config_rejects_an_unknown_server_key() {
    let config = VALID.replace(
        "log_format = \"json\"\n",
        "log_format = \"json\"\nbogus_knob = 1\n",
    );
    assert_rejected(&config, "bogus_knob", 6);
}

#[test]
fn check_config_rejects_an_unknown_target_key() {
    let config = format!("{VALID}frobnicate = true\n");
    let line = config.lines().count();
    assert_rejected(&config, "frobnicate", line);
}

#[test]
fn two_targets_are_independent() {
    let a = RedisServer::start();
    let b = RedisServer::start();
    let custos = Custos::start(
        CustosConfig::redis(&a).add_target(custos_tests::TargetConfig::redis("other", &b)),
    );
    let mut ca = RawConn::open(custos.port_of("cache"));
    let mut cb = RawConn::open(custos.port_of("other"));
    assert_eq!(ca.cmd(&["SET", "where", "a"]), Reply::Simple("OK".into()));
    assert_eq!(cb.cmd(&["SET", "where", "b"]), Reply::Simple("OK".into()));
    assert_eq!(a.raw().cmd(&["GET", "where"]).text().as_deref(), Some("a"));
    assert_eq!(b.raw().cmd(&["GET", "where"]).text().as_deref(), Some("b"));
    let m = custos.metrics();
    assert!(
        m.counter("custos_commands_total", &[("target", "cache")]) >= 1.0,
        "{}",
        m.text
    );
    assert!(
        m.counter("custos_commands_total", &[("target", "other")]) >= 1.0,
        "{}",
        m.text
    );
}
