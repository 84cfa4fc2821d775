//! The Redis proxy with real clients: `redis-cli`, `redis-benchmark` and the
//! `redis` crate over RESP2 and RESP3. Every scenario checks what the client
//! sees and, where it matters, what reached the store.

use custos_tests::resp::{Reply, encode_str};
use custos_tests::tools::{redis_benchmark, redis_cli};
use custos_tests::{Custos, RawConn, RedisServer, SETTLE_TIMEOUT, redis_behind_custos, wait_until};
use redis::{Commands, Value};
use std::collections::BTreeMap;
use std::thread;
use std::time::Duration;

fn cli_ok(port: u16, args: &[&str]) -> String {
    let out = redis_cli(port, args, None);
    out.assert_success(&format!("redis-cli {args:?}"));
    out.stdout.trim_end().to_string()
}

#[test]
fn basic_commands_through_redis_cli() {
    let (redis, custos) = redis_behind_custos(|c| c);
    let p = custos.port();
    assert_eq!(cli_ok(p, &["SET", "greeting", "hello"]), "OK");
    assert_eq!(cli_ok(p, &["GET", "greeting"]), "hello");
    assert_eq!(cli_ok(p, &["INCR", "counter"]), "1");
    assert_eq!(cli_ok(p, &["INCR", "counter"]), "2");
    assert_eq!(
        cli_ok(p, &["HSET", "user:1", "name", "ada", "lang", "rust"]),
        "2"
    );
    let all = cli_ok(p, &["HGETALL", "user:1"]);
    let lines: Vec<&str> = all.lines().collect();
    let pairs: BTreeMap<&str, &str> = lines.chunks(2).map(|c| (c[0], c[1])).collect();
    assert_eq!(
        pairs,
        BTreeMap::from([("lang", "rust"), ("name", "ada")]),
        "HGETALL -> {all:?}"
    );

    // `-n 3` makes redis-cli send SELECT 3 first: the database choice must
    // reach the store on the same upstream connection.
    assert_eq!(cli_ok(p, &["-n", "3", "SET", "in-db-3", "x"]), "OK");
    let mut direct = redis.connection();
    let in0: Option<String> = direct.get("in-db-3").expect("GET db 0");
    assert_eq!(in0, None, "the key must not land in database 0");
    redis::cmd("SELECT")
        .arg(3)
        .exec(&mut direct)
        .expect("SELECT 3");
    let in3: Option<String> = direct.get("in-db-3").expect("GET db 3");
    assert_eq!(in3.as_deref(), Some("x"));
    let greeting: Option<String> = {
        redis::cmd("SELECT")
            .arg(0)
            .exec(&mut direct)
            .expect("SELECT 0");
        direct.get("greeting").expect("GET")
    };
    assert_eq!(
        greeting.as_deref(),
        Some("hello"),
        "data written through custos is in the store"
    );
}

#[test]
fn connection_state_commands_through_redis_cli() {
    let (_redis, custos) = redis_behind_custos(|c| c);
    // Several commands on one connection: redis-cli reads them from stdin.
    let script =
        "CLIENT SETNAME probe\nCLIENT GETNAME\nSELECT 5\nCLIENT ID\nCLIENT INFO\nACL WHOAMI\n";
    let out = redis_cli(custos.port(), &[], Some(script.as_bytes()));
    out.assert_success("redis-cli with a script");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(
        lines.len() >= 6,
        "expected six replies, got {:?}",
        out.stdout
    );
    assert_eq!(lines[0], "OK", "CLIENT SETNAME");
    assert_eq!(lines[1], "probe", "CLIENT GETNAME");
    assert_eq!(lines[2], "OK", "SELECT 5");
    let id: i64 = lines[3]
        .parse()
        .unwrap_or_else(|_| panic!("CLIENT ID -> {:?}", lines[3]));
    assert!(id > 0);
    let info = lines[4];
    for field in [
        &format!("id={id} ") as &str,
        " name=probe ",
        " db=5 ",
        " user=custos ",
    ] {
        assert!(info.contains(field), "CLIENT INFO lacks {field:?}: {info}");
    }
    assert_eq!(
        lines[5], "custos",
        "ACL WHOAMI: the store sees the appliance's user"
    );
}

#[test]
fn redis_cli_pipe_of_10000_commands() {
    let (redis, custos) = redis_behind_custos(|c| c);
    let mut payload = Vec::new();
    for i in 0..10_000 {
        payload.extend(encode_str(&[
            "SET",
            &format!("pipe:{i}"),
            &format!("value-{i}"),
        ]));
    }
    let out = redis_cli(custos.port(), &["--pipe"], Some(&payload));
    out.assert_success("redis-cli --pipe");
    assert!(
        out.stdout.contains("errors: 0, replies: 10000"),
        "redis-cli --pipe summary: {}\n{}",
        out.stdout,
        out.stderr
    );
    let mut direct = redis.connection();
    let size: u64 = redis::cmd("DBSIZE").query(&mut direct).expect("DBSIZE");
    assert_eq!(size, 10_000, "every key reached the store");
    for i in [0, 1, 4999, 9999] {
        let v: String = direct.get(format!("pipe:{i}")).expect("GET");
        assert_eq!(v, format!("value-{i}"));
    }
}

fn benchmark(custos: &Custos, pipeline: &str) {
    let out = redis_benchmark(
        custos.port(),
        &[
            "-t", "get,set", "-n", "20000", "-P", pipeline, "-c", "20", "--csv", "-e",
        ],
    );
    out.assert_success(&format!("redis-benchmark -P {pipeline}"));
    let text = format!("{}\n{}", out.stdout, out.stderr);
    assert!(
        !text.contains("ERR") && !text.contains("Error"),
        "redis-benchmark -P {pipeline} saw errors:\n{text}"
    );
    for test in ["SET", "GET"] {
        let row = out
            .stdout
            .lines()
            .find(|l| l.starts_with(&format!("\"{test}\"")))
            .unwrap_or_else(|| panic!("no {test} row in:\n{}", out.stdout));
        let rps: f64 = row
            .split(',')
            .nth(1)
            .map(|v| v.trim_matches('"'))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no requests/s in {row:?}"));
        assert!(rps > 0.0, "{row}");
    }
}

#[test]
fn redis_benchmark_pipelined_and_not() {
    let (redis, custos) = redis_behind_custos(|c| c);
    benchmark(&custos, "16");
    benchmark(&custos, "1");
    let mut direct = redis.connection();
    let v: String = direct
        .get("key:__rand_int__")
        .expect("benchmark key in the store");
    assert_eq!(
        v.len(),
        3,
        "redis-benchmark writes 3-byte values by default"
    );
    let commands = custos
        .metrics()
        .counter("custos_commands_total", &[("target", "cache")]);
    assert!(
        commands >= 80_000.0,
        "custos_commands_total = {commands} after 80000 commands"
    );
}

// ---- the `redis` crate, RESP2 and RESP3 ----

fn driver(custos: &Custos, resp3: bool) -> redis::Client {
    let proto = if resp3 { "?protocol=resp3" } else { "" };
    redis::Client::open(format!("redis://127.0.0.1:{}/{proto}", custos.port())).expect("client")
}

fn sync_conn(client: &redis::Client) -> redis::Connection {
    let c = client
        .get_connection_with_timeout(Duration::from_secs(30))
        .expect("connect through custos");
    c.set_read_timeout(Some(Duration::from_secs(60)))
        .expect("read timeout");
    c
}

fn tokio_rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn driver_get_set_pipeline(resp3: bool) {
    let (_redis, custos) = redis_behind_custos(|c| c);
    let client = driver(&custos, resp3);
    let mut con = sync_conn(&client);
    let () = con.set("k", "v").expect("SET");
    let v: String = con.get("k").expect("GET");
    assert_eq!(v, "v");
    let n: i64 = con.incr("n", 5).expect("INCRBY");
    assert_eq!(n, 5);

    let mut pipe = redis::pipe();
    for i in 0..200 {
        pipe.set(format!("p:{i}"), i).ignore();
    }
    for i in 0..200 {
        pipe.get(format!("p:{i}"));
    }
    let got: Vec<i64> = pipe.query(&mut con).expect("pipeline");
    assert_eq!(got, (0..200).collect::<Vec<i64>>());

    let (a, b): (i64, i64) = redis::pipe()
        .atomic()
        .incr("tx", 1)
        .incr("tx", 1)
        .query(&mut con)
        .expect("atomic pipeline");
    assert_eq!((a, b), (1, 2));

    // The multiplexed async connection pipelines requests from many tasks
    // over one socket; replies must come back in order.
    tokio_rt().block_on(async {
        let con = client
            .get_multiplexed_async_connection()
            .await
            .expect("async connect");
        let mut tasks = Vec::new();
        for i in 0..100 {
            let mut con = con.clone();
            tasks.push(tokio::spawn(async move {
                let () = redis::AsyncCommands::set(&mut con, format!("a:{i}"), i)
                    .await
                    .expect("SET");
                let v: i64 = redis::AsyncCommands::get(&mut con, format!("a:{i}"))
                    .await
                    .expect("GET");
                assert_eq!(v, i);
            }));
        }
        for t in tasks {
            t.await.expect("task");
        }
    });
}

#[test]
fn driver_get_set_pipeline_resp2() {
    driver_get_set_pipeline(false);
}

#[test]
fn driver_get_set_pipeline_resp3() {
    driver_get_set_pipeline(true);
}

fn driver_transactions(resp3: bool) {
    let (_redis, custos) = redis_behind_custos(|c| c);
    let client = driver(&custos, resp3);
    let mut con = sync_conn(&client);
    let mut other = sync_conn(&client);

    // MULTI/EXEC.
    let queued: String = redis::cmd("MULTI").query(&mut con).expect("MULTI");
    assert_eq!(queued, "OK");
    let q: String = redis::cmd("SET")
        .arg("m")
        .arg("1")
        .query(&mut con)
        .expect("SET in MULTI");
    assert_eq!(q, "QUEUED");
    let q: String = redis::cmd("INCR")
        .arg("m")
        .query(&mut con)
        .expect("INCR in MULTI");
    assert_eq!(q, "QUEUED");
    let exec: (String, i64) = redis::cmd("EXEC").query(&mut con).expect("EXEC");
    assert_eq!(exec, ("OK".into(), 2));

    // DISCARD drops what was queued.
    redis::cmd("MULTI").exec(&mut con).expect("MULTI");
    redis::cmd("SET")
        .arg("d")
        .arg("1")
        .exec(&mut con)
        .expect("SET in MULTI");
    let discarded: String = redis::cmd("DISCARD").query(&mut con).expect("DISCARD");
    assert_eq!(discarded, "OK");
    let d: Option<String> = con.get("d").expect("GET");
    assert_eq!(d, None, "a discarded transaction must not write");

    // WATCH: a write from another connection aborts the transaction.
    let () = con.set("w", "before").expect("SET");
    redis::cmd("WATCH").arg("w").exec(&mut con).expect("WATCH");
    let () = other
        .set("w", "from-other")
        .expect("SET from another connection");
    redis::cmd("MULTI").exec(&mut con).expect("MULTI");
    redis::cmd("SET")
        .arg("w")
        .arg("from-tx")
        .exec(&mut con)
        .expect("SET in MULTI");
    let aborted: Value = redis::cmd("EXEC").query(&mut con).expect("EXEC");
    assert_eq!(
        aborted,
        Value::Nil,
        "EXEC after a watched key changed must be null"
    );
    let w: String = con.get("w").expect("GET");
    assert_eq!(w, "from-other");

    // WATCH with no interference commits.
    redis::cmd("WATCH").arg("w").exec(&mut con).expect("WATCH");
    redis::cmd("MULTI").exec(&mut con).expect("MULTI");
    redis::cmd("SET")
        .arg("w")
        .arg("from-tx")
        .exec(&mut con)
        .expect("SET in MULTI");
    let committed: Vec<String> = redis::cmd("EXEC").query(&mut con).expect("EXEC");
    assert_eq!(committed, vec!["OK".to_string()]);
    let w: String = other.get("w").expect("GET");
    assert_eq!(w, "from-tx");
}

#[test]
fn driver_transactions_resp2() {
    driver_transactions(false);
}

#[test]
fn driver_transactions_resp3() {
    driver_transactions(true);
}

#[test]
fn driver_pubsub_resp2() {
    let (_redis, custos) = redis_behind_custos(|c| c);
    let client = driver(&custos, false);
    let mut sub_con = sync_conn(&client);
    let mut publisher = sync_conn(&client);
    {
        let mut sub = sub_con.as_pubsub();
        sub.set_read_timeout(Some(Duration::from_secs(60)))
            .expect("timeout");
        sub.subscribe("news").expect("SUBSCRIBE");
        sub.psubscribe("events.*").expect("PSUBSCRIBE");
        let n: i64 = publisher.publish("news", "hello").expect("PUBLISH");
        assert_eq!(n, 1, "one subscriber on news");
        let n: i64 = publisher.publish("events.login", "ada").expect("PUBLISH");
        assert_eq!(n, 1, "one pattern subscriber");
        let m = sub.get_message().expect("message");
        assert_eq!(m.get_channel_name(), "news");
        assert_eq!(m.get_payload::<String>().expect("payload"), "hello");
        let m = sub.get_message().expect("pmessage");
        assert_eq!(m.get_channel_name(), "events.login");
        assert_eq!(m.get_pattern::<String>().expect("pattern"), "events.*");
        assert_eq!(m.get_payload::<String>().expect("payload"), "ada");
        sub.unsubscribe("news").expect("UNSUBSCRIBE");
        sub.punsubscribe("events.*").expect("PUNSUBSCRIBE");
    }
    // Back to normal commands on the same connection.
    let pong: String = redis::cmd("PING").query(&mut sub_con).expect("PING");
    assert_eq!(pong, "PONG");
    let () = sub_con.set("after-pubsub", "1").expect("SET");
    let n: i64 = publisher.publish("news", "nobody").expect("PUBLISH");
    assert_eq!(n, 0, "nobody listens any more");
}

#[test]
fn driver_pubsub_resp3_push() {
    let (_redis, custos) = redis_behind_custos(|c| c);
    let client = driver(&custos, true);
    let mut publisher = sync_conn(&client);
    tokio_rt().block_on(async {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let config = redis::AsyncConnectionConfig::new().set_push_sender(tx);
        let mut con = client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .expect("async RESP3 connection");
        con.subscribe("news").await.expect("SUBSCRIBE");
        con.psubscribe("events.*").await.expect("PSUBSCRIBE");
        let n: i64 = publisher.publish("news", "hello").expect("PUBLISH");
        assert_eq!(n, 1);
        let n: i64 = publisher.publish("events.login", "ada").expect("PUBLISH");
        assert_eq!(n, 1);
        let mut seen = Vec::new();
        while seen.len() < 2 {
            let push = tokio::time::timeout(Duration::from_secs(60), rx.recv())
                .await
                .expect("push within a minute")
                .expect("push channel open");
            match push.kind {
                redis::PushKind::Message | redis::PushKind::PMessage => seen.push(push),
                redis::PushKind::Subscribe | redis::PushKind::PSubscribe => {}
                other => panic!("unexpected push {other:?}: {:?}", push.data),
            }
        }
        assert_eq!(seen[0].kind, redis::PushKind::Message);
        assert_eq!(
            seen[0].data.last(),
            Some(&Value::BulkString(b"hello".to_vec()))
        );
        assert_eq!(seen[1].kind, redis::PushKind::PMessage);
        assert_eq!(
            seen[1].data.last(),
            Some(&Value::BulkString(b"ada".to_vec()))
        );
        // RESP3 allows ordinary commands while subscribed.
        let () = redis::AsyncCommands::set(&mut con, "while-subscribed", "1")
            .await
            .expect("SET");
        con.unsubscribe("news").await.expect("UNSUBSCRIBE");
        con.punsubscribe("events.*").await.expect("PUNSUBSCRIBE");
        let v: String = redis::AsyncCommands::get(&mut con, "while-subscribed")
            .await
            .expect("GET");
        assert_eq!(v, "1");
    });
    let n: i64 = publisher.publish("news", "nobody").expect("PUBLISH");
    assert_eq!(n, 0, "unsubscribed");
}

/// SUBSCRIBE, PSUBSCRIBE and SSUBSCRIBE on a raw socket, so both the RESP2
/// array and the RESP3 push framing are checked byte for byte.
fn raw_pubsub(resp3: bool) {
    let (_redis, custos) = redis_behind_custos(|c| c);
    let mut sub = RawConn::open(custos.port());
    let mut publisher = RawConn::open(custos.port());
    if resp3 {
        let hello = sub.cmd(&["HELLO", "3"]);
        assert!(matches!(hello, Reply::Map(_)), "HELLO 3 -> {hello:?}");
    }
    let frame = |items: Vec<Reply>| {
        if resp3 {
            Reply::Push(items)
        } else {
            Reply::Array(Some(items))
        }
    };
    let bulk = |s: &str| Reply::Bulk(Some(s.as_bytes().to_vec()));
    for (cmd, name) in [
        ("SUBSCRIBE", "news"),
        ("PSUBSCRIBE", "events.*"),
        ("SSUBSCRIBE", "orders"),
    ] {
        let confirm = sub.cmd(&[cmd, name]);
        let kind = cmd.to_ascii_lowercase();
        let count = if cmd == "SSUBSCRIBE" {
            1
        } else if cmd == "PSUBSCRIBE" {
            2
        } else {
            1
        };
        assert_eq!(
            confirm,
            frame(vec![bulk(&kind), bulk(name), Reply::Int(count)]),
            "{cmd}"
        );
    }
    assert_eq!(publisher.cmd(&["PUBLISH", "news", "m1"]), Reply::Int(1));
    assert_eq!(publisher.cmd(&["PUBLISH", "events.x", "m2"]), Reply::Int(1));
    assert_eq!(publisher.cmd(&["SPUBLISH", "orders", "m3"]), Reply::Int(1));
    let m = sub.read().expect("message");
    assert_eq!(m, frame(vec![bulk("message"), bulk("news"), bulk("m1")]));
    let m = sub.read().expect("pmessage");
    assert_eq!(
        m,
        frame(vec![
            bulk("pmessage"),
            bulk("events.*"),
            bulk("events.x"),
            bulk("m2")
        ])
    );
    let m = sub.read().expect("smessage");
    assert_eq!(m, frame(vec![bulk("smessage"), bulk("orders"), bulk("m3")]));
    if resp3 {
        // Commands interleave with pushes in RESP3.
        assert_eq!(sub.cmd(&["SET", "x", "1"]), Reply::Simple("OK".into()));
    }
    let u = sub.cmd(&["UNSUBSCRIBE", "news"]);
    assert_eq!(
        u,
        frame(vec![bulk("unsubscribe"), bulk("news"), Reply::Int(1)])
    );
    let u = sub.cmd(&["PUNSUBSCRIBE", "events.*"]);
    assert_eq!(
        u,
        frame(vec![bulk("punsubscribe"), bulk("events.*"), Reply::Int(0)])
    );
    let u = sub.cmd(&["SUNSUBSCRIBE", "orders"]);
    assert_eq!(
        u,
        frame(vec![bulk("sunsubscribe"), bulk("orders"), Reply::Int(0)])
    );
    assert_eq!(
        sub.cmd(&["PING"]),
        Reply::Simple("PONG".into()),
        "back to normal replies"
    );
    assert_eq!(sub.cmd(&["SET", "y", "2"]), Reply::Simple("OK".into()));
    assert_eq!(publisher.cmd(&["PUBLISH", "news", "m4"]), Reply::Int(0));
}

#[test]
fn raw_pubsub_resp2() {
    raw_pubsub(false);
}

#[test]
fn raw_pubsub_resp3() {
    raw_pubsub(true);
}

fn wait_blocked(redis: &RedisServer, command: &str) {
    wait_until(
        SETTLE_TIMEOUT,
        &format!("a client blocked in {command}"),
        || {
            redis
                .client_list()
                .iter()
                .any(|l| l.contains(&format!(" cmd={command} ")) && l.contains(" flags=b "))
        },
    );
}

fn driver_blocking(resp3: bool) {
    let (redis, custos) = redis_behind_custos(|c| c);
    let client = driver(&custos, resp3);
    let mut waker = sync_conn(&client);

    let mut blocked = sync_conn(&client);
    let popper = thread::spawn(move || {
        let got: (String, String) = redis::cmd("BLPOP")
            .arg("jobs")
            .arg(0)
            .query(&mut blocked)
            .expect("BLPOP");
        got
    });
    wait_blocked(&redis, "blpop");
    let n: i64 = waker.lpush("jobs", "job-1").expect("LPUSH");
    assert_eq!(n, 1);
    assert_eq!(
        popper.join().expect("BLPOP thread"),
        ("jobs".into(), "job-1".into())
    );

    let mut blocked = sync_conn(&client);
    let reader = thread::spawn(move || {
        let got: Value = redis::cmd("XREAD")
            .arg("BLOCK")
            .arg(0)
            .arg("STREAMS")
            .arg("events")
            .arg("$")
            .query(&mut blocked)
            .expect("XREAD BLOCK");
        got
    });
    wait_blocked(&redis, "xread");
    let id: String = redis::cmd("XADD")
        .arg("events")
        .arg("*")
        .arg("kind")
        .arg("login")
        .query(&mut waker)
        .expect("XADD");
    let got = reader.join().expect("XREAD thread");
    let text = format!("{got:?}");
    assert!(
        text.contains(&id) && text.contains("login"),
        "XREAD -> {text}, expected entry {id}"
    );
}

#[test]
fn driver_blocking_commands_resp2() {
    driver_blocking(false);
}

#[test]
fn driver_blocking_commands_resp3() {
    driver_blocking(true);
}

#[test]
fn quit_closes_the_connection() {
    let (_redis, custos) = redis_behind_custos(|c| c);
    let mut c = RawConn::open(custos.port());
    assert_eq!(c.cmd(&["PING"]), Reply::Simple("PONG".into()));
    assert_eq!(c.cmd(&["QUIT"]), Reply::Simple("OK".into()));
    c.wait_closed(SETTLE_TIMEOUT)
        .expect("QUIT closes the connection");
    let mut again = RawConn::open(custos.port());
    assert_eq!(again.cmd(&["PING"]), Reply::Simple("PONG".into()));
}

#[test]
fn reset_keeps_the_appliance_identity() {
    let (_redis, custos) = redis_behind_custos(|c| c);
    let mut c = RawConn::open(custos.port());
    assert!(matches!(c.cmd(&["HELLO", "3"]), Reply::Map(_)));
    assert_eq!(c.cmd(&["SELECT", "4"]), Reply::Simple("OK".into()));
    assert_eq!(
        c.cmd(&["CLIENT", "SETNAME", "before-reset"]),
        Reply::Simple("OK".into())
    );
    assert_eq!(c.cmd(&["RESET"]), Reply::Simple("RESET".into()));
    assert!(
        c.cmd(&["CLIENT", "GETNAME"]).is_null(),
        "RESET clears the name"
    );
    assert_eq!(
        c.cmd(&["ACL", "WHOAMI"]).text().as_deref(),
        Some("custos"),
        "after RESET the upstream connection is still the appliance's"
    );
    assert_eq!(
        c.cmd(&["SET", "after-reset", "1"]),
        Reply::Simple("OK".into())
    );
    let info = c.cmd(&["CLIENT", "INFO"]).text().expect("CLIENT INFO");
    assert!(
        info.contains(" db=0 ") && info.contains(" resp=2"),
        "{info}"
    );
}

#[test]
fn client_auth_is_answered_locally() {
    let (redis, custos) = redis_behind_custos(|c| c);
    let mut c = RawConn::open(custos.port());
    assert_eq!(
        c.cmd(&["AUTH", "alice", "not-a-store-password"]),
        Reply::Simple("OK".into())
    );
    assert_eq!(
        c.cmd(&["AUTH", "just-a-password"]),
        Reply::Simple("OK".into())
    );
    assert_eq!(c.cmd(&["ACL", "WHOAMI"]).text().as_deref(), Some("custos"));

    let hello = c.cmd(&[
        "HELLO",
        "3",
        "AUTH",
        "alice",
        "not-a-store-password",
        "SETNAME",
        "via-hello",
    ]);
    let Reply::Map(fields) = &hello else {
        panic!("HELLO 3 AUTH ... -> {hello:?}");
    };
    let proto = fields
        .iter()
        .find(|(k, _)| k.text().as_deref() == Some("proto"));
    assert_eq!(
        proto.map(|(_, v)| v.clone()),
        Some(Reply::Int(3)),
        "HELLO still switches protocol"
    );
    assert_eq!(
        c.cmd(&["CLIENT", "GETNAME"]).text().as_deref(),
        Some("via-hello"),
        "SETNAME forwarded"
    );
    assert_eq!(c.cmd(&["ACL", "WHOAMI"]).text().as_deref(), Some("custos"));

    // The store never saw alice: a forwarded AUTH would have failed there
    // and left an entry in the ACL log.
    let mut direct = redis.raw();
    let log = direct.cmd(&["ACL", "LOG"]);
    assert!(
        !format!("{log:?}").contains("alice"),
        "a client AUTH reached the store: {log:?}"
    );
}

#[test]
fn deep_pipeline_without_reading_keeps_order() {
    // Far more commands in flight than pending_replies_max: custos must stop
    // reading the client instead of buffering without bound, and every reply
    // must still arrive, in order.
    let (_redis, custos) = redis_behind_custos(|c| c.pending_replies_max(64));
    let mut c = RawConn::open(custos.port());
    let writer_stream = c.stream().try_clone().expect("clone socket");
    const N: i64 = 50_000;
    let writer = thread::spawn(move || {
        use std::io::Write;
        let mut w = std::io::BufWriter::new(writer_stream);
        let cmd = encode_str(&["INCR", "seq"]);
        for _ in 0..N {
            w.write_all(&cmd).expect("write pipeline");
        }
        w.flush().expect("flush pipeline");
    });
    thread::sleep(Duration::from_millis(500));
    for expected in 1..=N {
        match c.read().expect("reply") {
            Reply::Int(n) => assert_eq!(n, expected, "replies out of order"),
            other => panic!("reply {expected}: {other:?}"),
        }
    }
    writer.join().expect("writer");
}
