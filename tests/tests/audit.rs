//! The audit trail with real stores and real clients: what a session leaves
//! behind, replayed against a golden transcript; secrets that must never be
//! recorded; tampering found by `custos audit verify`; `kill -9` under load
//! in sync mode; a full disk under `fail_closed`; the export formats.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use custos_tests::custos::{Custos, CustosConfig, TargetConfig};
use custos_tests::idp::Idp;
use custos_tests::net::RawConn;
use custos_tests::postgres_server::PostgresServer;
use custos_tests::redis_server::RedisServer;
use custos_tests::resp::Reply;
use custos_tests::tools::{PgConnect, psql_ok};
use custos_tests::wait_until;

const CARD: &str = "4111 1111 1111 1111";
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// A folder for the trail and its key, outside any appliance's own folder
/// so that the trail outlives a restart.
struct TrailDir {
    tmp: tempfile::TempDir,
}

impl TrailDir {
    fn new() -> TrailDir {
        TrailDir {
            tmp: tempfile::Builder::new()
                .prefix("custos-audit-")
                .tempdir()
                .expect("temp dir"),
        }
    }
    fn dir(&self) -> PathBuf {
        self.tmp.path().join("trail")
    }
    fn key(&self) -> PathBuf {
        self.tmp.path().join("audit.key")
    }
    fn dir_arg(&self) -> String {
        self.dir().display().to_string()
    }
    fn key_arg(&self) -> String {
        self.key().display().to_string()
    }
}

fn stop(mut custos: Custos) {
    custos.signal(libc::SIGTERM);
    let status = custos
        .wait_exit(STOP_TIMEOUT)
        .expect("custos stops on SIGTERM");
    assert!(
        status.success(),
        "custos exited with {status}\n{}",
        custos.log()
    );
}

fn verify_ok(t: &TrailDir) -> String {
    let out = Custos::audit_cli(&["verify", "--dir", &t.dir_arg(), "--key", &t.key_arg()]);
    out.assert_success("custos audit verify");
    out.stdout
}

fn search(t: &TrailDir, filters: &[&str]) -> Vec<String> {
    let mut args = vec!["search", "--dir"];
    let dir = t.dir_arg();
    args.push(&dir);
    args.extend_from_slice(filters);
    let out = Custos::audit_cli(&args);
    out.assert_success("custos audit search");
    out.stdout.lines().map(str::to_string).collect()
}

/// The value of a string field in one JSON line.
fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let key = format!("\"{name}\":\"");
    let at = line.find(&key)? + key.len();
    let end = line[at..].find('"')?;
    Some(&line[at..at + end])
}

/// Every byte of every file under `dir`.
fn all_bytes(dir: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("read trail dir") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            out.extend(all_bytes(&p));
        } else {
            out.extend(std::fs::read(&p).expect("read segment"));
        }
    }
    out
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// A transcript without what changes from run to run: the time column,
/// client ports, session ids and latencies.
fn normalize(transcript: &str) -> String {
    transcript
        .lines()
        .map(|l| {
            let l = l.split_once("  ").map_or(l, |(_, rest)| rest);
            l.split_whitespace()
                .map(|w| {
                    if let Some(port) = w.strip_prefix("127.0.0.1:")
                        && port.bytes().all(|b| b.is_ascii_digit())
                    {
                        "127.0.0.1:PORT".to_string()
                    } else if w.len() > 2
                        && w.ends_with("us")
                        && w[..w.len() - 2].bytes().all(|b| b.is_ascii_digit())
                    {
                        "Nus".to_string()
                    } else if w.len() == 16 && w.bytes().all(|b| b.is_ascii_hexdigit()) {
                        "SESSION".to_string()
                    } else {
                        w.to_string()
                    }
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

const REDIS_GOLDEN: &str = r#"session SESSION start alice [eng,ops] from 127.0.0.1:PORT to cache (redis)
#1 > SET greeting hello [allow] < ok 5 bytes Nus +OK\r\n
#2 > GET greeting [allow] < ok 11 bytes Nus $5\r\nhello\r\n
#3 > SET card **** [allow] < ok 5 bytes Nus +OK\r\n
#4 > GET card [allow] < ok 26 bytes Nus $19\r\n****\r\n
#5 > INCR greeting [allow] < error 46 bytes Nus ERR -ERR value is not an integer or out of range\r\n
#6 > RPUSH list a b c [allow] < ok 4 bytes Nus :3\r\n
#7 > LRANGE list 0 -1 [allow] < ok 25 bytes Nus *3\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n
#8 > AUTH alice **** [allow] < ok 5 bytes Nus +OK\r\n
#9 > QUIT [allow] < ok 5 bytes Nus +OK\r\n
session end (quit), 9 commands"#;

#[test]
fn a_redis_session_replays_as_its_golden_transcript_and_keeps_no_secret() {
    let t = TrailDir::new();
    let idp = Idp::new();
    let redis = RedisServer::start();
    let mut cache = TargetConfig::redis("cache", &redis);
    cache.auth = "token".into();
    let config =
        CustosConfig::single(cache)
            .section(&idp.section(""))
            .audit(&t.dir(), &t.key(), "");
    let custos = Custos::start(config);
    let token = idp.token("alice", "eng,ops", "10m", &[]);

    let mut c = RawConn::open(custos.port());
    assert_eq!(
        c.cmd(&["AUTH", "alice", &token]).text().as_deref(),
        Some("OK")
    );
    assert_eq!(
        c.cmd(&["SET", "greeting", "hello"]).text().as_deref(),
        Some("OK")
    );
    assert_eq!(c.cmd(&["GET", "greeting"]).text().as_deref(), Some("hello"));
    assert_eq!(c.cmd(&["SET", "card", CARD]).text().as_deref(), Some("OK"));
    assert_eq!(c.cmd(&["GET", "card"]).text().as_deref(), Some(CARD));
    assert!(matches!(c.cmd(&["INCR", "greeting"]), Reply::Error(_)));
    // A pipeline: one record per command, replies matched in order.
    let mut pipeline = custos_tests::resp::encode_str(&["RPUSH", "list", "a", "b", "c"]);
    pipeline.extend(custos_tests::resp::encode_str(&[
        "LRANGE", "list", "0", "-1",
    ]));
    c.send(&pipeline).unwrap();
    assert!(matches!(c.read().unwrap(), Reply::Int(3)));
    assert!(c.read().unwrap().items().is_some_and(|i| i.len() == 3));
    assert_eq!(
        c.cmd(&["AUTH", "alice", &token]).text().as_deref(),
        Some("OK")
    );
    assert_eq!(c.cmd(&["QUIT"]).text().as_deref(), Some("OK"));
    let _ = c.wait_closed(STOP_TIMEOUT);
    // A refused token is recorded as auth_fail, without the token.
    let mut bad = RawConn::open(custos.port());
    let forged = format!("{token}x");
    assert!(matches!(
        bad.cmd(&["AUTH", "mallory", &forged]),
        Reply::Error(_)
    ));
    drop(bad);
    wait_until(STOP_TIMEOUT, "the auth failure to be recorded", || {
        custos.metrics().counter("custos_audit_records_total", &[]) >= 13.0
    });
    stop(custos);

    let verified = verify_ok(&t);
    assert!(verified.starts_with("ok:"), "{verified}");
    let starts = search(&t, &["--kind", "session_start", "--subject", "alice"]);
    assert_eq!(starts.len(), 1, "{starts:?}");
    let session = field(&starts[0], "session")
        .expect("session id")
        .to_string();
    let replay = Custos::audit_cli(&["replay", "--dir", &t.dir_arg(), &session]);
    replay.assert_success("custos audit replay");
    assert_eq!(normalize(&replay.stdout), REDIS_GOLDEN, "{}", replay.stdout);

    let fails = search(&t, &["--kind", "auth_fail"]);
    assert_eq!(fails.len(), 1, "{fails:?}");
    assert_eq!(
        field(&fails[0], "detail"),
        Some("bad signature"),
        "{}",
        fails[0]
    );
    let oks = search(&t, &["--kind", "auth_ok", "--group", "ops"]);
    assert_eq!(oks.len(), 2, "{oks:?}");

    let bytes = all_bytes(&t.dir());
    assert!(!contains(&bytes, &token), "the trail holds the token");
    assert!(
        !contains(&bytes, &token[token.len() - 40..]),
        "the trail holds part of the token"
    );
    assert!(
        !contains(&bytes, redis.password()),
        "the trail holds the upstream password"
    );
    assert!(!contains(&bytes, CARD), "the trail holds the card number");
}

#[test]
fn postgres_statements_and_replies_are_recorded_without_the_token_or_password() {
    let t = TrailDir::new();
    let idp = Idp::new();
    let pg = PostgresServer::start();
    let mut target = TargetConfig::postgres("pg", &pg);
    target.auth = "token".into();
    let config = CustosConfig::single(target)
        .section(&idp.section(""))
        .audit(&t.dir(), &t.key(), "record_reply_bytes = 64");
    let custos = Custos::start(config);
    let token = idp.token("alice", "analysts", "10m", &[]);
    let conn = PgConnect::new(custos.port()).password(&token);
    psql_ok(
        &conn,
        &format!("CREATE TABLE cards (n text); INSERT INTO cards VALUES ('{CARD}'), ('none');"),
    );
    assert!(psql_ok(&conn, "SELECT n FROM cards ORDER BY n").contains(CARD));
    let err = custos_tests::tools::psql(&conn, &["-c", "SELECT * FROM missing"], None);
    assert!(!err.status.success());
    // The extended protocol: Parse, Bind, Execute per transaction.
    custos_tests::tools::pgbench(&conn, &["-i", "-s", "1", "-q"]).assert_success("pgbench -i");
    custos_tests::tools::pgbench(
        &conn,
        &["-n", "-S", "-M", "prepared", "-t", "20", "-c", "1"],
    )
    .assert_success("pgbench -S -M prepared");
    stop(custos);

    verify_ok(&t);
    let commands = search(&t, &["--kind", "command", "--subject", "alice"]);
    assert!(
        commands
            .iter()
            .any(|l| l.contains("SELECT n FROM cards ORDER BY n")),
        "{commands:?}"
    );
    // Each statement's record carries its reply summary.
    let replies = search(&t, &["--kind", "command", "--target", "pg"]);
    let select = replies
        .iter()
        .find(|l| field(l, "code") == Some("SELECT 2"))
        .unwrap_or_else(|| panic!("{replies:?}"));
    assert!(
        select.contains("SELECT n FROM cards ORDER BY n"),
        "{select}"
    );
    assert!(select.contains(r#""rows":2"#), "{select}");
    assert!(select.contains(r#""latency_us":"#), "{select}");
    assert_eq!(field(select, "excerpt"), Some("****\\nnone\\n"), "{select}");
    assert!(
        replies.iter().any(|l| field(l, "code") == Some("42P01")
            && l.contains(r#""status":"error""#)
            && l.contains("SELECT * FROM missing")),
        "{replies:?}"
    );
    let extended: Vec<&String> = commands
        .iter()
        .filter(|l| l.contains("FROM pgbench_accounts WHERE aid = $1"))
        .collect();
    assert_eq!(extended.len(), 20, "{commands:?}");
    assert!(
        extended
            .iter()
            .all(|l| l.contains("extended protocol, 1 bound parameters")
                && l.contains(r#""code":"SELECT 1""#)
                && l.contains(r#""rows":1"#)),
        "{extended:?}"
    );
    let bytes = all_bytes(&t.dir());
    assert!(!contains(&bytes, &token), "the trail holds the token");
    assert!(
        !contains(&bytes, pg.password()),
        "the trail holds the upstream password"
    );
    assert!(!contains(&bytes, CARD), "the trail holds the card number");

    // The export formats carry the same records.
    let ocsf = Custos::audit_cli(&["export", "--dir", &t.dir_arg(), "--format", "ocsf"]);
    ocsf.assert_success("export ocsf");
    assert!(
        ocsf.stdout.contains(r#""class_uid":6005"#),
        "{}",
        ocsf.stdout
    );
    assert!(
        ocsf.stdout.contains(r#""class_uid":3002"#),
        "{}",
        ocsf.stdout
    );
    assert!(ocsf.stdout.contains("SELECT n FROM cards ORDER BY n"));
    // Datastore Activity records carry the response.
    assert!(
        ocsf.stdout
            .lines()
            .any(|l| l.contains(r#""class_uid":6005"#)
                && l.contains("SELECT n FROM cards ORDER BY n")
                && l.contains(r#""status_code":"SELECT 2""#)
                && l.contains(r#""duration":"#)),
        "{}",
        ocsf.stdout
    );
    let cef = Custos::audit_cli(&["export", "--dir", &t.dir_arg(), "--format", "cef"]);
    cef.assert_success("export cef");
    assert!(
        cef.stdout
            .lines()
            .all(|l| l.starts_with("CEF:0|custos|custos|")),
        "{}",
        cef.stdout
    );
    assert!(cef.stdout.contains("suser=alice"), "{}", cef.stdout);
}

#[test]
fn verify_names_the_file_and_offset_of_a_flipped_byte() {
    let t = TrailDir::new();
    let (redis, custos) = {
        let redis = RedisServer::start();
        let custos = Custos::start(CustosConfig::redis(&redis).audit(&t.dir(), &t.key(), ""));
        (redis, custos)
    };
    let mut c = RawConn::open(custos.port());
    for i in 0..50 {
        c.cmd(&["SET", &format!("k{i}"), "v"]);
    }
    drop(c);
    stop(custos);
    drop(redis);
    verify_ok(&t);
    let pubkey = Custos::audit_cli(&["pubkey", "--key", &t.key_arg()]);
    pubkey.assert_success("custos audit pubkey");
    assert!(pubkey.stdout.starts_with("ed25519:"), "{}", pubkey.stdout);
    let pubkey_file = t.tmp.path().join("audit.pub");
    std::fs::write(&pubkey_file, &pubkey.stdout).unwrap();

    let seg = std::fs::read_dir(t.dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .expect("a segment");
    let mut b = std::fs::read(&seg).unwrap();
    let at = b.len() / 2;
    b[at] ^= 0x20;
    std::fs::write(&seg, &b).unwrap();
    let out = Custos::audit_cli(&[
        "verify",
        "--dir",
        &t.dir_arg(),
        "--pubkey",
        &pubkey_file.display().to_string(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let name = seg.file_name().unwrap().to_string_lossy().to_string();
    assert!(out.stderr.contains(&name), "{}", out.stderr);
    assert!(out.stderr.contains("offset "), "{}", out.stderr);
}

/// `durability = "sync"`: a client that got a reply can find its command in
/// the trail, even when the appliance is killed without warning.
#[test]
fn kill_9_under_load_then_restart_verifies_and_every_acknowledged_command_is_recorded() {
    let t = TrailDir::new();
    let redis = RedisServer::start();
    let config = CustosConfig::redis(&redis).audit(&t.dir(), &t.key(), "durability = \"sync\"");
    let custos = Custos::start(config.clone());
    let port = custos.port();
    let acked: Arc<Vec<AtomicU64>> = Arc::new((0..4).map(|_| AtomicU64::new(0)).collect());
    let stopped = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|w| {
            let acked = acked.clone();
            let stopped = stopped.clone();
            std::thread::spawn(move || {
                let Ok(mut c) = RawConn::connect(port) else {
                    return;
                };
                let mut i = 0u64;
                while !stopped.load(Ordering::Relaxed) {
                    i += 1;
                    if c.send(&custos_tests::resp::encode_str(&[
                        "SET",
                        &format!("w{w}:{i}"),
                        "v",
                    ]))
                    .is_err()
                    {
                        return;
                    }
                    match c.read() {
                        Ok(Reply::Simple(s)) if s == "OK" => acked[w].store(i, Ordering::Relaxed),
                        _ => return,
                    }
                }
            })
        })
        .collect();
    wait_until(STOP_TIMEOUT, "clients to get 300 replies each", || {
        acked.iter().all(|a| a.load(Ordering::Relaxed) >= 300)
    });
    custos.signal(libc::SIGKILL);
    let mut custos = custos;
    custos.wait_exit(STOP_TIMEOUT).expect("killed");
    stopped.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    drop(custos);

    // The restart recovers the tails and continues the chains.
    let custos = Custos::start(config);
    stop(custos);
    verify_ok(&t);
    let commands = search(&t, &["--kind", "command"]);
    let recorded: std::collections::HashSet<String> = commands
        .iter()
        .filter_map(|l| {
            let at = l.find(r#""command":["SET",""#)? + r#""command":["SET",""#.len();
            Some(l[at..at + l[at..].find('"')?].to_string())
        })
        .collect();
    for (w, a) in acked.iter().enumerate() {
        let last = a.load(Ordering::Relaxed);
        for i in 1..=last {
            assert!(
                recorded.contains(&format!("w{w}:{i}")),
                "client {w} got the reply to SET w{w}:{i} but the trail has no record of it ({} recorded)",
                recorded.len()
            );
        }
    }
}

/// Unmounts a filesystem when dropped.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// A full disk under `fail_closed`: new commands get a clear error, the
/// condition shows in the metrics, and what is on disk still verifies. Runs
/// on a 512 KiB tmpfs, which needs root (`mount`); without it the test says
/// so and passes vacuously.
#[test]
fn a_full_disk_fails_closed_and_leaves_no_corrupt_segment() {
    let t = TrailDir::new();
    let mnt = t.tmp.path().join("small");
    std::fs::create_dir(&mnt).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=512k", "tmpfs"])
        .arg(&mnt)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("SKIPPED: cannot mount a tmpfs here (needs root)");
        return;
    }
    let _mount = Mount(mnt.clone());
    let dir = mnt.join("trail");
    let redis = RedisServer::start();
    let custos = Custos::start(CustosConfig::redis(&redis).audit(
        &dir,
        &t.key(),
        "segment_bytes_max = 65536\nflush_interval_ms = 1",
    ));
    let mut c = RawConn::open(custos.port());
    let value = "x".repeat(200);
    let mut refused = None;
    for i in 0..20_000 {
        match c.cmd(&["SET", &format!("key:{i}"), &value]) {
            Reply::Simple(s) if s == "OK" => {}
            Reply::Error(e) => {
                refused = Some((i, e));
                break;
            }
            other => panic!("unexpected reply {other:?}"),
        }
    }
    let (at, e) = refused.expect("the trail fills a 512 KiB disk long before 20,000 commands");
    assert_eq!(e, "ERR custos: audit trail unavailable", "at command {at}");
    // Still refused: nothing runs unrecorded.
    let again = c.cmd(&["GET", "key:0"]);
    assert!(
        matches!(&again, Reply::Error(e) if e.contains("audit trail unavailable")),
        "{again:?}"
    );
    let m = custos.metrics();
    assert!(m.counter("custos_audit_write_errors_total", &[]) >= 1.0);
    assert_eq!(m.get("custos_audit_failed", &[]), Some(1.0));
    drop(c);
    stop(custos);
    let out = Custos::audit_cli(&["verify", "--dir", &dir.display().to_string()]);
    out.assert_success("verify after a full disk");
}

/// Policy decisions reach the trail: a blocked command is a `block` record
/// naming its rule, inline or as RESP, and what the store ran is not.
#[test]
fn blocked_commands_are_recorded_as_blocks_with_their_rule() {
    let t = TrailDir::new();
    let redis = RedisServer::start();
    let config = CustosConfig::redis(&redis)
        .rule(
            r#"id = "no-flush"
target = "*"
groups = ["*"]
command = ["FLUSHALL"]
action = "block"
reason = "destructive command""#,
        )
        .audit(&t.dir(), &t.key(), "");
    let custos = Custos::start(config);
    let mut c = RawConn::open(custos.port());
    assert_eq!(c.cmd(&["SET", "k", "v"]).text().as_deref(), Some("OK"));
    let r = c.cmd(&["FLUSHALL"]);
    assert!(
        matches!(&r, Reply::Error(e) if e.contains("rule no-flush")),
        "{r:?}"
    );
    c.send(b"flushall\r\n").unwrap();
    assert!(matches!(c.read().unwrap(), Reply::Error(_)));
    assert_eq!(c.cmd(&["GET", "k"]).text().as_deref(), Some("v"));
    drop(c);
    stop(custos);
    verify_ok(&t);
    let blocks = search(&t, &["--kind", "block"]);
    assert_eq!(blocks.len(), 2, "{blocks:#?}");
    for b in &blocks {
        assert_eq!(field(b, "rule"), Some("no-flush"), "{b}");
        assert_eq!(field(b, "decision"), Some("block"), "{b}");
    }
}

/// The same for SQL: a refused statement, simple or extended protocol, is
/// a `block` record naming its rule, and the table is untouched.
#[test]
fn refused_statements_are_recorded_as_blocks_with_their_rule() {
    let t = TrailDir::new();
    let pg = custos_tests::postgres_server::PostgresOptions::default().start();
    pg.psql_direct(&format!(
        "CREATE TABLE keep (id int); INSERT INTO keep VALUES (1); GRANT ALL ON keep TO \"{}\";",
        pg.user()
    ));
    let config = CustosConfig::postgres(&pg)
        .rule(
            r#"id = "no-ddl"
target = "*"
groups = ["*"]
statement = ["DROP"]
action = "block"
reason = "destructive statement""#,
        )
        .audit(&t.dir(), &t.key(), "");
    let custos = Custos::start(config);
    let conn = custos_tests::tools::PgConnect::new(custos.port()).dbname(pg.database());
    let out = custos_tests::tools::psql(&conn, &["-c", "SELECT 1; DROP TABLE keep"], None);
    assert!(
        !out.status.success() && out.stderr.contains("no-ddl"),
        "{}",
        out.stderr
    );
    let py = custos_tests::python::run_python(
        "import sys, psycopg\n\
         with psycopg.connect(sys.argv[1], autocommit=True) as c:\n\
         \x20   try:\n\
         \x20       c.execute('DROP TABLE keep', prepare=True)\n\
         \x20   except psycopg.errors.InsufficientPrivilege as e:\n\
         \x20       print('refused', e.sqlstate)\n",
        &[&conn.conninfo()],
        &[],
    );
    py.assert_success("psycopg extended DROP");
    assert!(py.stdout.contains("refused 42501"), "{}", py.stdout);
    assert_eq!(pg.psql_direct("SELECT count(*) FROM keep"), "1");
    stop(custos);
    verify_ok(&t);
    let blocks = search(&t, &["--kind", "block"]);
    assert_eq!(blocks.len(), 2, "{blocks:#?}");
    for b in &blocks {
        assert_eq!(field(b, "rule"), Some("no-ddl"), "{b}");
        assert!(b.contains("DROP TABLE keep"), "{b}");
    }
}
