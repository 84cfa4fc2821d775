//! Policy on a Redis target, with real clients (`redis-cli`, the `redis`
//! crate, raw RESP and inline commands) against a real `redis-server`.
//! Every refusal is checked twice: what the client sees, and that the
//! store was not touched.

use custos_tests::resp::encode_str;
use custos_tests::tools::redis_cli;
use custos_tests::{CustosConfig, RawConn, Reply, SETTLE_TIMEOUT, redis_behind_custos, wait_until};
use redis::Commands;

const NO_FLUSH: &str = r#"
id = "no-flush"
target = "cache"
groups = ["*"]
command = ["FLUSHALL", "FLUSHDB"]
action = "block"
reason = "destructive command"
"#;

const NO_DANGEROUS: &str = r#"
id = "no-dangerous"
target = "cache"
groups = ["*"]
command = ["@dangerous", "CONFIG SET"]
action = "block"
reason = "dangerous command"
"#;

const SECRETS: &str = r#"
id = "secrets"
target = "cache"
groups = ["*"]
keys = ["secret:*"]
action = "block"
reason = "secret keys"
"#;

const SCRIPTS: &str = r#"
id = "scripts"
target = "cache"
groups = ["*"]
command = ["@scripting"]
keys = ["sandbox:*"]
action = "allow"
"#;

const SCRIPTS_APPROVE: &str = r#"
id = "scripts-approve"
target = "cache"
groups = ["*"]
command = ["@scripting"]
action = "approve"
reason = "scripts need approval"
"#;

fn policy(c: CustosConfig) -> CustosConfig {
    c.rule(NO_FLUSH)
        .rule(NO_DANGEROUS)
        .rule(SECRETS)
        .rule(SCRIPTS)
        .rule(SCRIPTS_APPROVE)
}

fn error(r: &Reply) -> &str {
    match r {
        Reply::Error(e) => e,
        other => panic!("expected an error, got {other:?}"),
    }
}

#[test]
fn blocked_commands_are_refused_in_every_spelling_and_leave_the_data_alone() {
    let (redis, custos) = redis_behind_custos(policy);
    let mut direct = redis.connection();
    let _: () = direct.set("kept", "1").unwrap();

    let p = custos.port();
    for spelling in ["FLUSHALL", "flushall", "FlushAll", "FLUSHDB"] {
        let out = redis_cli(p, &[spelling], None);
        assert!(
            out.stdout
                .contains("NOPERM custos: destructive command (rule no-flush)"),
            "{spelling}: {out:?}"
        );
    }
    let out = redis_cli(p, &["config", "set", "maxmemory", "1"], None);
    assert!(
        out.stdout
            .contains("NOPERM custos: dangerous command (rule no-dangerous)"),
        "{out:?}"
    );
    let out = redis_cli(p, &["KEYS", "*"], None);
    assert!(out.stdout.contains("(rule no-dangerous)"), "{out:?}");

    // Inline commands (telnet, health checks) are decided the same way.
    let mut raw = RawConn::open(p);
    raw.send(b"flushall\r\n").unwrap();
    assert!(error(&raw.read().unwrap()).contains("(rule no-flush)"));
    raw.send(b"GET \"secret:1\"\r\n").unwrap();
    assert!(error(&raw.read().unwrap()).contains("(rule secrets)"));
    raw.send(b"PING\r\n").unwrap();
    assert_eq!(raw.read().unwrap(), Reply::Simple("PONG".into()));

    // Through the redis crate.
    let mut con = redis::Client::open(format!("redis://127.0.0.1:{p}/"))
        .unwrap()
        .get_connection()
        .unwrap();
    let err = redis::cmd("FLUSHDB").exec(&mut con).unwrap_err();
    assert!(err.to_string().contains("destructive command"), "{err}");
    let v: String = con.get("kept").unwrap();
    assert_eq!(v, "1");

    let still: Option<String> = direct.get("kept").unwrap();
    assert_eq!(
        still.as_deref(),
        Some("1"),
        "a refused FLUSH reached the store"
    );
    let maxmemory: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory")
        .query(&mut direct)
        .unwrap();
    assert_eq!(maxmemory[1], "0", "a refused CONFIG SET reached the store");
}

#[test]
fn key_globs_follow_each_commands_key_positions() {
    let (redis, custos) = redis_behind_custos(policy);
    let mut direct = redis.connection();
    let mut raw = RawConn::open(custos.port());

    // MSET: keys at step 2; a value that looks like a secret key is no key.
    let r = raw.cmd(&["MSET", "a", "1", "secret:x", "2"]);
    assert!(error(&r).contains("(rule secrets)"), "{r:?}");
    assert_eq!(
        raw.cmd(&["MSET", "b", "secret:y", "c", "2"]),
        Reply::Simple("OK".into())
    );
    // EVAL: the keys are the `numkeys` arguments after the script.
    let script = "return redis.call('SET', KEYS[1], ARGV[1])";
    let r = raw.cmd(&["EVAL", script, "1", "secret:e", "v"]);
    assert!(error(&r).contains("(rule secrets)"), "{r:?}");
    assert_eq!(
        raw.cmd(&["EVAL", script, "1", "sandbox:e", "v"]),
        Reply::Simple("OK".into())
    );
    // A script outside the sandbox needs an approval.
    let r = raw.cmd(&["EVAL", script, "1", "other:e", "v"]);
    assert!(
        error(&r).starts_with("NOPERM custos: approval required, request "),
        "{r:?}"
    );
    // XREAD: keys follow STREAMS.
    let r = raw.cmd(&["XREAD", "COUNT", "1", "STREAMS", "s", "secret:s", "0", "0"]);
    assert!(error(&r).contains("(rule secrets)"), "{r:?}");

    let a: Option<String> = direct.get("a").unwrap();
    let x: Option<String> = direct.get("secret:x").unwrap();
    let e: Option<String> = direct.get("secret:e").unwrap();
    let o: Option<String> = direct.get("other:e").unwrap();
    assert_eq!(
        (a, x, e, o),
        (None, None, None, None),
        "refused writes reached the store"
    );
    let b: Option<String> = direct.get("b").unwrap();
    let sandbox: Option<String> = direct.get("sandbox:e").unwrap();
    assert_eq!(b.as_deref(), Some("secret:y"));
    assert_eq!(sandbox.as_deref(), Some("v"));
}

/// Commands a rule with key globs allows are decided on the shared store
/// connection, so request/response clients keep sharing it under a policy
/// that looks at keys; a refused key is still refused.
#[test]
fn key_rules_keep_request_response_clients_on_the_shared_connection() {
    let (redis, custos) = redis_behind_custos(policy);
    let mut conns: Vec<RawConn> = (0..8).map(|_| RawConn::open(custos.port())).collect();
    for round in 0..10 {
        for (i, c) in conns.iter_mut().enumerate() {
            let key = format!("app:{i}");
            let value = format!("v{round}");
            assert_eq!(c.cmd(&["SET", &key, &value]), Reply::Simple("OK".into()));
            assert_eq!(c.cmd(&["GET", &key]), Reply::Bulk(Some(value.into_bytes())));
        }
    }
    let mut refused = RawConn::open(custos.port());
    let r = refused.cmd(&["GET", "secret:1"]);
    assert!(error(&r).contains("(rule secrets)"), "{r:?}");
    // Two shards: at most two shared connections, and at most one of its
    // own for the session that was refused.
    let seen = redis.client_list().len();
    assert!(
        seen <= 3,
        "store sees {seen} connections for 9 request/response clients"
    );
}

/// A refused command never reaches the store, so clients refused now and
/// then keep sharing the store connection, and each refusal (of a command
/// that would not be shared if allowed, inline ones too) comes in its
/// place.
#[test]
fn refused_commands_keep_request_response_clients_on_the_shared_connection() {
    let (redis, custos) = redis_behind_custos(policy);
    let mut conns: Vec<RawConn> = (0..8).map(|_| RawConn::open(custos.port())).collect();
    for round in 0..4 {
        for (i, c) in conns.iter_mut().enumerate() {
            let key = format!("app:{i}");
            let value = format!("v{round}");
            assert_eq!(c.cmd(&["SET", &key, &value]), Reply::Simple("OK".into()));
            let r = c.cmd(&["GET", &format!("secret:{i}")]);
            assert!(error(&r).contains("(rule secrets)"), "{r:?}");
            let r = c.cmd(&["FLUSHALL"]);
            assert!(error(&r).contains("(rule no-flush)"), "{r:?}");
            c.send(b"flushdb\r\n").unwrap();
            let r = c.read().unwrap();
            assert!(error(&r).contains("(rule no-flush)"), "{r:?}");
            assert_eq!(c.cmd(&["GET", &key]), Reply::Bulk(Some(value.into_bytes())));
        }
    }
    // Two shards: at most two shared connections, none of a session's own.
    let seen = redis.client_list().len();
    assert!(
        seen <= 2,
        "store sees {seen} connections for 8 request/response clients"
    );
    let mut direct = redis.connection();
    let kept: usize = redis::cmd("DBSIZE").query(&mut direct).unwrap();
    assert_eq!(kept, 8, "a refused FLUSHALL or FLUSHDB ran");
}

#[test]
fn refusals_keep_their_place_in_a_pipeline() {
    let (_redis, custos) = redis_behind_custos(policy);
    let mut raw = RawConn::open(custos.port());
    let mut batch = Vec::new();
    for cmd in [
        &["SET", "p", "1"][..],
        &["FLUSHALL"],
        &["GET", "p"],
        &["GET", "secret:p"],
        &["INCR", "p"],
        &["CONFIG", "SET", "maxmemory", "1"],
        &["PING"],
    ] {
        batch.extend_from_slice(&encode_str(cmd));
    }
    // One write, and an inline command in the middle of the stream.
    batch.extend_from_slice(b"flushdb\r\n");
    batch.extend_from_slice(&encode_str(&["GET", "p"]));
    raw.send(&batch).unwrap();
    let replies: Vec<Reply> = (0..9).map(|_| raw.read().unwrap()).collect();
    assert_eq!(replies[0], Reply::Simple("OK".into()));
    assert!(error(&replies[1]).contains("(rule no-flush)"));
    assert_eq!(replies[2], Reply::Bulk(Some(b"1".to_vec())));
    assert!(error(&replies[3]).contains("(rule secrets)"));
    assert_eq!(replies[4], Reply::Int(2));
    assert!(error(&replies[5]).contains("(rule no-dangerous)"));
    assert_eq!(replies[6], Reply::Simple("PONG".into()));
    assert!(error(&replies[7]).contains("(rule no-flush)"));
    assert_eq!(replies[8], Reply::Bulk(Some(b"2".to_vec())));
}

#[test]
fn a_refused_command_in_multi_aborts_the_transaction_and_nothing_runs() {
    let (redis, custos) = redis_behind_custos(policy);
    let mut direct = redis.connection();
    let mut raw = RawConn::open(custos.port());
    assert_eq!(raw.cmd(&["MULTI"]), Reply::Simple("OK".into()));
    assert_eq!(raw.cmd(&["SET", "m1", "1"]), Reply::Simple("QUEUED".into()));
    assert!(error(&raw.cmd(&["FLUSHALL"])).contains("(rule no-flush)"));
    assert_eq!(raw.cmd(&["SET", "m2", "2"]), Reply::Simple("QUEUED".into()));
    assert_eq!(
        error(&raw.cmd(&["EXEC"])),
        "EXECABORT Transaction discarded because of previous errors."
    );
    let m1: Option<String> = direct.get("m1").unwrap();
    let m2: Option<String> = direct.get("m2").unwrap();
    assert_eq!((m1, m2), (None, None), "a poisoned transaction ran");
    // The connection is usable and the next transaction runs.
    assert_eq!(raw.cmd(&["MULTI"]), Reply::Simple("OK".into()));
    assert_eq!(raw.cmd(&["SET", "m3", "3"]), Reply::Simple("QUEUED".into()));
    assert_eq!(
        raw.cmd(&["EXEC"]),
        Reply::Array(Some(vec![Reply::Simple("OK".into())]))
    );

    // The redis crate's atomic pipeline sees the abort as an error.
    let mut con = redis::Client::open(format!("redis://127.0.0.1:{}/", custos.port()))
        .unwrap()
        .get_connection()
        .unwrap();
    let r: redis::RedisResult<()> = redis::pipe()
        .atomic()
        .set("m4", "4")
        .get("secret:m")
        .query(&mut con);
    assert!(r.is_err(), "{r:?}");
    let m4: Option<String> = direct.get("m4").unwrap();
    assert_eq!(m4, None);
    let m3: Option<String> = direct.get("m3").unwrap();
    assert_eq!(m3.as_deref(), Some("3"));
}

#[test]
fn approval_requests_have_unique_ids_and_are_logged() {
    let (_redis, custos) = redis_behind_custos(policy);
    let mut raw = RawConn::open(custos.port());
    let mut ids = Vec::new();
    for _ in 0..3 {
        let r = raw.cmd(&["EVAL", "return 1", "0"]);
        let e = error(&r);
        let id = e
            .strip_prefix("NOPERM custos: approval required, request ")
            .unwrap_or_else(|| panic!("{e}"));
        ids.push(id.to_string());
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 3, "{ids:?}");
    wait_until(SETTLE_TIMEOUT, "the approval request in the log", || {
        let log = custos.log();
        ids.iter().all(|id| log.contains(id.as_str())) && log.contains("scripts-approve")
    });
    // The log names the command, never its arguments.
    assert!(!custos.log().contains("return 1"));
}

#[test]
fn an_allow_list_target_refuses_what_it_does_not_list() {
    let (redis, custos) = redis_behind_custos(|c| {
        c.map_target(|t| t.default_action("block")).rule(
            r#"
id = "reads"
target = "cache"
groups = ["*"]
command = ["@read", "PING", "HELLO", "CLIENT SETNAME"]
action = "allow"
"#,
        )
    });
    let mut direct = redis.connection();
    let _: () = direct.set("r", "1").unwrap();
    let p = custos.port();
    let out = redis_cli(p, &["GET", "r"], None);
    assert_eq!(out.stdout.trim(), "1");
    for cmd in [
        &["SET", "r", "2"][..],
        &["del", "r"],
        &["FT.SEARCH", "i", "q"],
    ] {
        let out = redis_cli(p, cmd, None);
        assert!(
            out.stdout
                .contains("NOPERM custos: no rule allows this (rule default)"),
            "{cmd:?}: {out:?}"
        );
    }
    let r: String = direct.get("r").unwrap();
    assert_eq!(r, "1");
}

#[test]
fn sighup_swaps_the_policy_under_live_connections_and_refuses_a_bad_file() {
    let (_redis, custos) = redis_behind_custos(|c| c.rule(NO_FLUSH).rule(NO_DANGEROUS));
    let mut raw = RawConn::open(custos.port());
    assert!(error(&raw.cmd(&["FLUSHDB"])).contains("(rule no-flush)"));

    // A new file without the rule: the same connection may now flush.
    let path = custos.config_path().to_path_buf();
    let original = std::fs::read_to_string(&path).unwrap();
    let without = original
        .replace(
            "\n[[rule]]\nid = \"no-flush\"",
            "\n[[rule]]\nid = \"was-no-flush\"",
        )
        .replace(
            "command = [\"FLUSHALL\", \"FLUSHDB\"]\naction = \"block\"",
            "command = [\"FLUSHALL\", \"FLUSHDB\"]\naction = \"allow\"",
        );
    assert_ne!(without, original);
    std::fs::write(&path, &without).unwrap();
    custos.signal(libc::SIGHUP);
    wait_until(
        SETTLE_TIMEOUT,
        "the new policy on the live connection",
        || raw.cmd(&["FLUSHDB"]) == Reply::Simple("OK".into()),
    );

    // An invalid file is refused with its error; the policy in force stays.
    std::fs::write(
        &path,
        without.replace("action = \"allow\"", "action = \"perhaps\""),
    )
    .unwrap();
    custos.signal(libc::SIGHUP);
    wait_until(SETTLE_TIMEOUT, "the refusal in the log", || {
        custos.log().contains("reload refused")
    });
    assert!(custos.log().contains("rule.action"), "{}", custos.log());
    assert_eq!(raw.cmd(&["FLUSHDB"]), Reply::Simple("OK".into()));
    assert!(error(&raw.cmd(&["KEYS", "*"])).contains("(rule no-dangerous)"));
    assert_eq!(raw.cmd(&["PING"]), Reply::Simple("PONG".into()));
}
