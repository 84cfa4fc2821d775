//! The Redis proxy when things go wrong or get big: malformed frames, values
//! far larger than the buffers, a store that dies or refuses the appliance's
//! credential, and clients that vanish mid-pipeline.

use custos_tests::custos::RssWatch;
use custos_tests::resp::{Reply, encode_str};
use custos_tests::{
    Custos, CustosConfig, RawConn, RedisOptions, RedisServer, SETTLE_TIMEOUT, poll_until,
    random_hex, redis_behind_custos,
};
use socket2::SockRef;
use std::io::{BufRead, Read, Write};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

const PROTOCOL_ERROR: &str = "ERR custos: protocol error";
const UPSTREAM_UNAVAILABLE: &str = "ERR custos: upstream unavailable";

fn assert_error_starting(reply: &Reply, prefix: &str) {
    match reply {
        Reply::Error(e) if e.starts_with(prefix) => {}
        other => panic!("expected an error reply starting with -{prefix}, got {other:?}"),
    }
}

// ---- a value far larger than every buffer ----

const CHUNK_BYTES: usize = 64 * 1024;
const BIG_BYTES: usize = 300 * 1024 * 1024;

/// Chunk `i` of the big value: a fixed random block stamped with its index,
/// so a chunk that is lost, repeated or reordered is detected by comparing
/// bytes, without the test holding the whole value.
fn chunk(base: &[u8], i: usize, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(base);
    out[..8].copy_from_slice(&(i as u64).to_le_bytes());
}

#[test]
fn value_of_300_mib_streams_through_bounded_buffers() {
    let (redis, custos) = redis_behind_custos(|c| c.buffer_bytes_max(65_536));
    let mut c = RawConn::open(custos.port());
    assert_eq!(c.cmd(&["PING"]), Reply::Simple("PONG".into()));
    let baseline_kib = custos.rss_kib();
    let watch = RssWatch::start(custos.pid());

    let base: Vec<u8> = random_hex(CHUNK_BYTES / 2).into_bytes();
    let mut buf = Vec::with_capacity(CHUNK_BYTES);
    let chunks = BIG_BYTES / CHUNK_BYTES;
    c.send(format!("*3\r\n$3\r\nSET\r\n$3\r\nbig\r\n${BIG_BYTES}\r\n").as_bytes())
        .expect("SET header");
    for i in 0..chunks {
        chunk(&base, i, &mut buf);
        c.send(&buf).expect("SET payload");
    }
    c.send(b"\r\n").expect("SET trailer");
    assert_eq!(c.read().expect("SET reply"), Reply::Simple("OK".into()));
    let len = redis.raw().cmd(&["STRLEN", "big"]);
    assert_eq!(
        len,
        Reply::Int(BIG_BYTES as i64),
        "the whole value reached the store"
    );

    c.send(&encode_str(&["GET", "big"])).expect("GET");
    let reader = c.reader();
    let mut header = String::new();
    reader.read_line(&mut header).expect("GET header");
    assert_eq!(header, format!("${BIG_BYTES}\r\n"));
    let mut got = vec![0u8; CHUNK_BYTES];
    for i in 0..chunks {
        reader.read_exact(&mut got).expect("GET payload");
        chunk(&base, i, &mut buf);
        assert!(got == buf, "chunk {i} of the value came back different");
    }
    let mut trailer = [0u8; 2];
    reader.read_exact(&mut trailer).expect("GET trailer");
    assert_eq!(&trailer, b"\r\n");
    assert_eq!(
        c.cmd(&["PING"]),
        Reply::Simple("PONG".into()),
        "the connection stays usable"
    );

    watch.assert_growth_below(
        &custos,
        baseline_kib,
        64,
        "a 300 MiB value with buffer_bytes_max = 65536",
    );
}

// ---- malformed input ----

/// Sends `bytes` on a fresh connection and checks that custos answers with a
/// protocol error, closes that connection, counts the error, and keeps
/// serving a connection that was open all along.
fn malformed_frame_closes_only_its_connection(what: &str, bytes: &[u8]) {
    let (_redis, custos) = redis_behind_custos(|c| c);
    let mut bystander = RawConn::open(custos.port());
    assert_eq!(
        bystander.cmd(&["SET", "k", "v"]),
        Reply::Simple("OK".into())
    );
    let mut c = RawConn::open(custos.port());
    assert_eq!(c.cmd(&["PING"]), Reply::Simple("PONG".into()));
    c.send(bytes).expect("send malformed frame");
    let reply = c
        .read()
        .unwrap_or_else(|e| panic!("{what}: no error reply ({e})"));
    match &reply {
        Reply::Error(e) if e.starts_with(PROTOCOL_ERROR) => {}
        other => panic!("{what}: expected -{PROTOCOL_ERROR}..., got {other:?}"),
    }
    c.wait_closed(SETTLE_TIMEOUT)
        .unwrap_or_else(|e| panic!("{what}: connection not closed: {e}"));
    assert_eq!(
        bystander.cmd(&["GET", "k"]),
        Reply::Bulk(Some(b"v".to_vec())),
        "{what}: another connection must keep working"
    );
    poll_until(
        SETTLE_TIMEOUT,
        "the client_protocol error to be counted",
        || {
            let n = custos.metrics().counter(
                "custos_errors_total",
                &[("target", "cache"), ("kind", "client_protocol")],
            );
            if n >= 1.0 {
                Ok(())
            } else {
                Err(format!(
                    "custos_errors_total{{kind=\"client_protocol\"}} = {n}"
                ))
            }
        },
    );
}

#[test]
fn malformed_bulk_length_not_a_number() {
    malformed_frame_closes_only_its_connection("bulk length not a number", b"*1\r\n$abc\r\n");
}

#[test]
fn malformed_bulk_length_above_512_mib() {
    malformed_frame_closes_only_its_connection(
        "bulk length above 512 MiB",
        b"*1\r\n$600000000\r\n",
    );
}

#[test]
fn malformed_array_count_not_a_number() {
    malformed_frame_closes_only_its_connection("array count not a number", b"*x\r\n");
}

#[test]
fn malformed_bulk_string_where_a_command_array_is_expected() {
    malformed_frame_closes_only_its_connection(
        "bulk string where an array is expected",
        b"$3\r\nGET\r\n",
    );
}

// ---- the store goes away ----

#[test]
fn upstream_death_mid_session_then_recovery() {
    let (mut redis, custos) = redis_behind_custos(|c| c.connect_timeout_ms(1000));
    let mut c = RawConn::open(custos.port());
    assert_eq!(c.cmd(&["SET", "k", "v"]), Reply::Simple("OK".into()));
    redis.stop();
    // Whether custos notices the dead upstream on its own or only when the
    // next command fails, the client must get the error and then EOF.
    let _ = c.send(&encode_str(&["GET", "k"]));
    let reply = c.read().expect("an error reply, not a silent close");
    assert_error_starting(&reply, UPSTREAM_UNAVAILABLE);
    c.wait_closed(SETTLE_TIMEOUT)
        .expect("connection closed after upstream death");

    // While the store is down, a new session is told so.
    let mut down = RawConn::open(custos.port());
    let _ = down.send(&encode_str(&["PING"]));
    let reply = down.read().expect("an error reply while the store is down");
    assert_error_starting(&reply, UPSTREAM_UNAVAILABLE);

    redis.restart();
    let pong = poll_until(
        SETTLE_TIMEOUT,
        "a new session after the store is back",
        || {
            let mut c = RawConn::connect(custos.port()).map_err(|e| e.to_string())?;
            c.send(&encode_str(&["PING"])).map_err(|e| e.to_string())?;
            match c.read() {
                Ok(Reply::Simple(s)) if s == "PONG" => Ok(c),
                other => Err(format!("{other:?}")),
            }
        },
    );
    let mut c = pong;
    assert_eq!(c.cmd(&["SET", "k2", "v2"]), Reply::Simple("OK".into()));
    let n = custos.metrics().counter(
        "custos_errors_total",
        &[("target", "cache"), ("kind", "upstream_unavailable")],
    );
    assert!(n >= 1.0, "upstream_unavailable errors counted: {n}");
}

#[test]
fn upstream_refusing_the_credential() {
    let wrong = format!("wrong-{}", random_hex(12));
    let redis = RedisServer::start_with(RedisOptions {
        user: "svc-memory".into(),
        ..RedisOptions::default()
    });
    let custos = Custos::start(
        CustosConfig::redis(&redis)
            .target_name("memory-cache")
            .upstream_password(&wrong),
    );
    let mut c = RawConn::open(custos.port());
    let reply = c.cmd(&["PING"]);
    assert_eq!(
        reply,
        Reply::Error(
            "ERR custos: upstream unavailable (upstream refused the appliance's credential)".into()
        )
    );
    c.wait_closed(SETTLE_TIMEOUT)
        .expect("connection closed after the refusal");

    let log = poll_until(
        SETTLE_TIMEOUT,
        "a log line about the refused credential",
        || {
            let log = custos.log();
            if log
                .lines()
                .any(|l| l.contains("memory-cache") && l.contains("svc-memory"))
            {
                Ok(log)
            } else {
                Err(log)
            }
        },
    );
    assert!(
        !log.contains(&wrong),
        "the log contains the (wrong) upstream password:\n{log}"
    );
    assert!(
        !log.contains(redis.password()),
        "the log contains the store's password"
    );
    let n = custos.metrics().counter(
        "custos_errors_total",
        &[("target", "memory-cache"), ("kind", "upstream_auth")],
    );
    assert!(n >= 1.0, "upstream_auth errors counted: {n}");
}

#[test]
fn upstream_password_from_the_environment() {
    let redis = RedisServer::start();
    let custos =
        Custos::start(CustosConfig::redis(&redis).password_from_env("CUSTOS_TEST_REDIS_PASSWORD"));
    let mut c = RawConn::open(custos.port());
    assert_eq!(c.cmd(&["SET", "k", "v"]), Reply::Simple("OK".into()));
    assert_eq!(c.cmd(&["ACL", "WHOAMI"]).text().as_deref(), Some("custos"));
    assert!(
        !custos.log().contains(redis.password()),
        "the log contains the store's password"
    );
}

// ---- clients that vanish ----

#[test]
fn clients_vanishing_mid_pipeline_leak_nothing() {
    let (redis, custos) = redis_behind_custos(|c| c);
    // One settled session first, so lazily created resources count in the
    // baseline.
    let mut warm = RawConn::open(custos.port());
    assert_eq!(warm.cmd(&["PING"]), Reply::Simple("PONG".into()));
    drop(warm);
    let settled = |what: &str| {
        poll_until(SETTLE_TIMEOUT, what, || {
            let open = custos
                .metrics()
                .get("custos_connections_open", &[("target", "cache")]);
            if open == Some(0.0) {
                Ok(())
            } else {
                Err(format!("custos_connections_open = {open:?}"))
            }
        })
    };
    settled("the warm-up session to end");
    let base_fds = custos.fd_count();
    let base_upstream = redis.client_list().len();

    let mut pipeline = Vec::new();
    for i in 0..200 {
        pipeline.extend(encode_str(&["SET", &format!("v:{i}"), "some value"]));
        pipeline.extend(encode_str(&["GET", &format!("v:{i}")]));
    }
    pipeline.extend(encode_str(&["BLPOP", "never", "0"]));
    let port = custos.port();
    let pipeline = Arc::new(pipeline);
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let pipeline = pipeline.clone();
            thread::spawn(move || {
                // 250 per worker, 50 open at a time: they all write, then
                // all vanish, half with a reset and half with a plain close.
                for batch in 0..5 {
                    let mut open = Vec::new();
                    for _ in 0..50 {
                        let s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
                        open.push(s);
                    }
                    for s in &mut open {
                        let _ = s.write_all(&pipeline);
                    }
                    for (i, s) in open.into_iter().enumerate() {
                        if (i + batch + w) % 2 == 0 {
                            let _ = SockRef::from(&s).set_linger(Some(Duration::ZERO));
                        }
                        drop(s);
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("client thread");
    }

    settled("every vanished session to be closed");
    poll_until(
        SETTLE_TIMEOUT,
        "custos' file descriptors back to baseline",
        || {
            let fds = custos.fd_count();
            if fds <= base_fds + 4 {
                Ok(())
            } else {
                Err(format!("{fds} open fds, baseline {base_fds}"))
            }
        },
    );
    poll_until(
        SETTLE_TIMEOUT,
        "upstream connections back to baseline",
        || {
            let list = redis.client_list();
            if list.len() <= base_upstream + 2 {
                Ok(())
            } else {
                Err(format!(
                    "{} upstream clients, baseline {base_upstream}",
                    list.len()
                ))
            }
        },
    );
    let total = custos
        .metrics()
        .counter("custos_connections_total", &[("target", "cache")]);
    assert!(
        total >= 1001.0,
        "custos_connections_total = {total} after 1001 connections"
    );
    // And the appliance still serves.
    let mut c = RawConn::open(custos.port());
    assert_eq!(c.cmd(&["PING"]), Reply::Simple("PONG".into()));
}
