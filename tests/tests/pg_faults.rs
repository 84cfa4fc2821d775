//! The PostgreSQL proxy when things go wrong: malformed messages, a store
//! that is down or dies mid-session, query cancellation (genuine and
//! forged), graceful shutdown, and clients that vanish.

use custos_tests::pgwire::{self, PgRaw};
use custos_tests::python::python_ok;
use custos_tests::tools::{psql, psql_ok};
use custos_tests::{
    Custos, PgConnect, PostgresServer, SETTLE_TIMEOUT, poll_until, postgres_behind_custos,
    wait_until,
};
use socket2::SockRef;
use std::time::Duration;

const UPSTREAM_UNAVAILABLE: &str = "custos: upstream unavailable";

fn session(custos: &Custos) -> PgRaw {
    PgRaw::session(custos.port(), "alice", "app").0
}

// ---- malformed input ----

/// Sends `bytes` on an established session and checks that custos answers
/// FATAL 08P01, closes that session, and keeps serving one that was open all
/// along, and new ones.
fn malformed_message_closes_only_its_session(what: &str, bytes: &[u8]) {
    let (_pg, custos) = postgres_behind_custos(|c| c);
    let mut bystander = session(&custos);
    assert_eq!(bystander.column("SELECT 'before'"), ["before"]);
    let mut c = session(&custos);
    assert_eq!(c.column("SELECT 1"), ["1"]);
    c.send(bytes)
        .unwrap_or_else(|e| panic!("{what}: send: {e}"));
    let e = c
        .read_error()
        .unwrap_or_else(|e| panic!("{what}: no ErrorResponse ({e})"));
    assert_eq!(
        (e.severity(), e.code()),
        ("FATAL", "08P01"),
        "{what}: {e:?}"
    );
    c.wait_closed(SETTLE_TIMEOUT)
        .unwrap_or_else(|e| panic!("{what}: session not closed: {e}"));
    assert_eq!(
        bystander.column("SELECT 'after'"),
        ["after"],
        "{what}: another session must keep working"
    );
    assert_eq!(session(&custos).column("SELECT 'new'"), ["new"]);
}

/// Sends `bytes` as the first thing on a new connection and checks that
/// custos answers FATAL with `code` (or, for bytes that are not even a
/// length, just closes), while an established session keeps working.
fn bad_startup_closes_only_its_connection(what: &str, bytes: &[u8], code: Option<&str>) {
    let (_pg, custos) = postgres_behind_custos(|c| c);
    let mut bystander = session(&custos);
    assert_eq!(bystander.column("SELECT 'before'"), ["before"]);
    let mut c = PgRaw::open(custos.port());
    c.send(bytes)
        .unwrap_or_else(|e| panic!("{what}: send: {e}"));
    if let Some(code) = code {
        let e = c
            .read_error()
            .unwrap_or_else(|e| panic!("{what}: no ErrorResponse ({e})"));
        assert_eq!((e.severity(), e.code()), ("FATAL", code), "{what}: {e:?}");
    }
    c.wait_closed(SETTLE_TIMEOUT)
        .unwrap_or_else(|e| panic!("{what}: connection not closed: {e}"));
    assert_eq!(
        bystander.column("SELECT 'after'"),
        ["after"],
        "{what}: another session must keep working"
    );
    assert_eq!(session(&custos).column("SELECT 'new'"), ["new"]);
}

#[test]
fn garbage_instead_of_a_startup_packet() {
    bad_startup_closes_only_its_connection(
        "an HTTP request",
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        Some("08P01"),
    );
}

#[test]
fn oversized_startup_packet() {
    // A declared length of 1 MiB, far above the 10,000 bytes PostgreSQL
    // allows a startup packet.
    let mut bytes = (1u32 << 20).to_be_bytes().to_vec();
    bytes.extend_from_slice(&196_608u32.to_be_bytes());
    bytes.extend_from_slice(&[b'x'; 4096]);
    bad_startup_closes_only_its_connection("a 1 MiB startup packet", &bytes, Some("08P01"));
}

#[test]
fn unsupported_protocol_version() {
    let mut body = 0x0002_0000u32.to_be_bytes().to_vec(); // protocol 2.0
    body.extend_from_slice(b"user\0alice\0\0");
    let mut bytes = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    bytes.extend_from_slice(&body);
    bad_startup_closes_only_its_connection("protocol 2.0", &bytes, Some("0A000"));
}

#[test]
fn malformed_declared_length_2() {
    malformed_message_closes_only_its_session("Query with length 2", b"Q\x00\x00\x00\x02");
}

#[test]
fn malformed_negative_length() {
    malformed_message_closes_only_its_session("Query with length -2^31", b"Q\x80\x00\x00\x00");
}

#[test]
fn malformed_length_above_1_gib() {
    // PostgreSQL's own ceiling for any message is 1 GiB - 1.
    malformed_message_closes_only_its_session("Query with length 2 GiB - 1", b"Q\x7f\xff\xff\xff");
}

#[test]
fn malformed_unknown_message_type() {
    malformed_message_closes_only_its_session(
        "message type '!'",
        &pgwire::typed(b'!', b"\x00\x00"),
    );
}

// ---- the store goes away ----

fn assert_upstream_unavailable(port: u16, what: &str) {
    let mut raw = PgRaw::open(port);
    let err = raw
        .startup(&[("user", "alice"), ("database", "app")], None)
        .expect_err("startup must fail while the store is down")
        .into_server_error();
    assert_eq!(
        (err.severity(), err.code()),
        ("FATAL", "08006"),
        "{what}: {err:?}"
    );
    assert!(
        err.message().starts_with(UPSTREAM_UNAVAILABLE),
        "{what}: {err:?}"
    );
    raw.wait_closed(SETTLE_TIMEOUT)
        .unwrap_or_else(|e| panic!("{what}: not closed after FATAL: {e}"));
}

fn wait_serving(custos: &Custos, what: &str) {
    poll_until(SETTLE_TIMEOUT, what, || {
        let mut c = PgRaw::connect(custos.port()).map_err(|e| e.to_string())?;
        c.startup(&[("user", "alice"), ("database", "app")], None)
            .map_err(|e| e.to_string())?;
        let r = c.simple_query("SELECT 1").map_err(|e| e.to_string())?;
        if r.rows == [[Some("1".to_string())]] {
            Ok(())
        } else {
            Err(format!("{r:?}"))
        }
    });
}

#[test]
fn store_down_then_back() {
    let (mut pg, custos) = postgres_behind_custos(|c| c.connect_timeout_ms(2000));
    assert_eq!(psql_ok(&PgConnect::new(custos.port()), "SELECT 1"), "1");
    pg.stop();
    assert_upstream_unavailable(custos.port(), "store down");
    let out = psql(&PgConnect::new(custos.port()), &["-c", "SELECT 1"], None);
    assert!(
        !out.status.success(),
        "psql must fail while the store is down"
    );
    assert!(
        out.stderr.contains(UPSTREAM_UNAVAILABLE),
        "psql shows the appliance's message: {}",
        out.stderr
    );
    pg.restart();
    wait_serving(&custos, "a new session after the store is back");
}

#[test]
fn store_killed_mid_session_then_recovery() {
    let (mut pg, custos) = postgres_behind_custos(|c| c.connect_timeout_ms(2000));
    let mut c = session(&custos);
    assert_eq!(c.column("SELECT 'alive'"), ["alive"]);
    let mut other = session(&custos);
    other
        .send(&pgwire::query("SELECT pg_sleep(60)"))
        .expect("send pg_sleep");
    wait_until(SETTLE_TIMEOUT, "pg_sleep to run", || {
        pg.psql_direct(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE query = 'SELECT pg_sleep(60)' AND state = 'active'",
        ) == "1"
    });
    pg.stop();

    // A session waiting for a reply gets the error.
    let e = other
        .read_error()
        .expect("an ErrorResponse for the query in flight, not a silent close");
    assert_eq!((e.severity(), e.code()), ("FATAL", "08006"), "{e:?}");
    other
        .wait_closed(SETTLE_TIMEOUT)
        .expect("closed after the store died");

    // An idle session gets it at the latest with its next query (the
    // appliance may also have sent it already).
    if !c.readable_now() {
        let _ = c.send(&pgwire::query("SELECT 1"));
    }
    let e = c
        .read_error()
        .expect("an ErrorResponse, not a silent close");
    assert_eq!((e.severity(), e.code()), ("FATAL", "08006"), "{e:?}");
    c.wait_closed(SETTLE_TIMEOUT)
        .expect("closed after the store died");

    assert_upstream_unavailable(custos.port(), "store still down");
    pg.restart();
    wait_serving(&custos, "a new session after the store restarted");
    assert_eq!(
        psql_ok(&PgConnect::new(custos.port()), "SELECT current_user"),
        "custos"
    );
}

// ---- cancellation ----

#[test]
fn cancel_request_from_psycopg_across_shards() {
    // Two shards: the cancel connection is a new connection that the kernel
    // may hand to either shard; eight rounds make it land on the other one
    // with near certainty at least once.
    let (_pg, custos) = postgres_behind_custos(|c| c.workers(2));
    let out = python_ok(
        "psycopg cancel",
        r#"
import sys, threading, time
import psycopg

conninfo, rounds = sys.argv[1], int(sys.argv[2])
problems = []
with psycopg.connect(conninfo, autocommit=True) as watcher:
    for i in range(rounds):
        with psycopg.connect(conninfo, autocommit=True) as conn:
            marker = f"cancel_round_{i}"

            def cancel_when_running():
                # The watcher's own query text carries the marker only as a
                # parameter, so it never matches itself.
                for _ in range(1200):
                    n = watcher.execute(
                        "SELECT count(*) FROM pg_stat_activity "
                        "WHERE state = 'active' AND query LIKE %s",
                        (f"%{marker}%",)).fetchone()[0]
                    if n == 1:
                        break
                    time.sleep(0.05)
                else:
                    problems.append(f"round {i}: the query never showed as running")
                conn.cancel_safe(timeout=30)

            t = threading.Thread(target=cancel_when_running)
            t.start()
            try:
                conn.execute(f"SELECT pg_sleep(30) AS {marker}")
            except psycopg.errors.QueryCanceled as e:
                assert e.sqlstate == "57014", e.sqlstate
            else:
                raise AssertionError(f"round {i}: pg_sleep(30) was not cancelled")
            t.join()
            assert not problems, problems
            # The postmaster signals a cancelled backend twice (process and
            # process group); on a loaded machine the second signal can land
            # after the error and cancel the next statement. One retry.
            try:
                got = conn.execute("SELECT %s::int", (i,)).fetchone()
            except psycopg.errors.QueryCanceled:
                got = conn.execute("SELECT %s::int", (i,)).fetchone()
            assert got == (i,), got
        print(f"round {i} cancelled")
print("ok")
"#,
        &[&PgConnect::new(custos.port()).conninfo(), "8"],
    );
    assert!(out.lines().any(|l| l == "ok"), "{out}");
}

#[test]
fn cancel_with_a_forged_key_cancels_nothing() {
    let (pg, custos) = postgres_behind_custos(|c| c.workers(2));
    let (mut c, startup) = PgRaw::session(custos.port(), "alice", "app");
    let (pid, key) = startup.backend_key.expect("BackendKeyData");
    let running = |marker: &str| {
        pg.psql_direct(&format!(
            "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' \
             AND pid <> pg_backend_pid() AND query LIKE '%{marker}%'"
        )) == "1"
    };
    let cancel = |pid: i32, key: i32| {
        let mut k = PgRaw::open(custos.port());
        k.send(&pgwire::cancel_request(pid, key))
            .expect("send CancelRequest");
        k.wait_closed(SETTLE_TIMEOUT)
            .expect("a cancel connection is closed without a reply");
    };

    c.send(&pgwire::query("SELECT pg_sleep(5) AS forged_probe"))
        .expect("send");
    wait_until(SETTLE_TIMEOUT, "forged_probe to run", || {
        running("forged_probe")
    });
    for (p, k) in [
        (pid, key.wrapping_add(1)),
        (pid, !key),
        (pid.wrapping_add(1), key),
    ] {
        cancel(p, k);
    }
    let r = c.read_query_result().expect("pg_sleep(5) result");
    assert!(
        r.error.is_none(),
        "a forged CancelRequest cancelled the query: {:?}",
        r.error
    );
    assert_eq!(r.rows.len(), 1, "pg_sleep(5) completed normally");

    // The genuine key, on the same path, does cancel: the forged ones failed
    // because of the key, not because cancellation does not work at all.
    //
    // PostgreSQL's postmaster signals a cancelled backend twice (the process
    // and its process group). On a loaded machine the second signal can land
    // after the backend answered the first, and cancel whatever the session
    // runs next: a probe can be cancelled before the test sent its own
    // CancelRequest. Such a probe is sent again. Each CancelRequest yields
    // two signals, so at most two strays per genuine cancel are PostgreSQL's
    // doing; more would mean custos forwarded a cancel more than once.
    let mut strays = 0;
    for round in 0..4 {
        let marker = format!("genuine_probe_{round}");
        loop {
            c.send(&pgwire::query(&format!("SELECT pg_sleep(60) AS {marker}")))
                .expect("send");
            let started = poll_until(SETTLE_TIMEOUT, &format!("{marker} to run"), || {
                if c.readable_now() {
                    Ok(false)
                } else if running(&marker) {
                    Ok(true)
                } else {
                    Err("neither running nor answered".to_string())
                }
            });
            if started {
                break;
            }
            let r = c.read_query_result().expect("pg_sleep(60) result");
            assert_eq!(
                r.error.as_ref().map(|e| e.code()),
                Some("57014"),
                "round {round}: pg_sleep(60) answered before any cancel: {r:?}"
            );
            strays += 1;
            assert!(
                strays <= 2 * round,
                "round {round}: {strays} stray cancels after {round} CancelRequests"
            );
        }
        cancel(pid, key);
        let r = c.read_query_result().expect("pg_sleep(60) result");
        assert_eq!(
            r.error.as_ref().map(|e| e.code()),
            Some("57014"),
            "round {round}: {r:?}"
        );
        assert_eq!(r.status, b'I');
    }
    // The last round's strays, if any, land on these.
    let mut answered = 0;
    for _ in 0..3 {
        c.send(&pgwire::query("SELECT 'still usable'"))
            .expect("send");
        let r = c.read_query_result().expect("result");
        match r.error.as_ref().map(|e| e.code().to_owned()) {
            None => answered += 1,
            Some(code) if code == "57014" && strays < 8 => strays += 1,
            Some(code) => panic!("after the last cancel: {code} ({strays} strays)"),
        }
    }
    assert!(answered >= 1, "the session stays usable after four cancels");
}

// ---- shutdown ----

#[test]
fn sigterm_ends_idle_sessions_with_57p01_and_exits_zero() {
    let (_pg, mut custos) = postgres_behind_custos(|c| c);
    let mut idle: Vec<PgRaw> = (0..4).map(|_| session(&custos)).collect();
    for c in &mut idle {
        assert_eq!(c.column("SELECT 1"), ["1"]);
    }
    custos.signal(libc::SIGTERM);
    for (i, c) in idle.iter_mut().enumerate() {
        let e = c
            .read_error()
            .unwrap_or_else(|e| panic!("idle session {i}: no ErrorResponse ({e})"));
        assert_eq!(
            (e.severity(), e.code()),
            ("FATAL", "57P01"),
            "idle session {i}: {e:?}"
        );
        c.wait_closed(SETTLE_TIMEOUT)
            .unwrap_or_else(|e| panic!("idle session {i}: not closed: {e}"));
    }
    let status = custos
        .wait_exit(Duration::from_secs(60))
        .expect("custos exits after SIGTERM");
    assert!(
        status.success(),
        "custos exit status after SIGTERM: {status}"
    );
}

// ---- clients that vanish ----

#[test]
fn clients_vanishing_leave_no_session_upstream() {
    let (pg, custos) = postgres_behind_custos(|c| c);
    psql_ok(&PgConnect::new(custos.port()), "CREATE TABLE sink (v text)");
    let upstream_sessions =
        || pg.psql_direct("SELECT count(*) FROM pg_stat_activity WHERE usename = 'custos'");
    let vanish = |c: PgRaw, reset: bool| {
        if reset {
            let _ = SockRef::from(c.stream()).set_linger(Some(Duration::ZERO));
        }
        drop(c);
    };
    for i in 0..40 {
        let mut c = session(&custos);
        match i % 4 {
            // A large reply in flight.
            0 | 1 => c
                .send(&pgwire::query(
                    "SELECT repeat('x', 1000) FROM generate_series(1, 2000)",
                ))
                .expect("send"),
            // In the middle of COPY FROM STDIN.
            2 => {
                c.send(&pgwire::query("COPY sink FROM STDIN"))
                    .expect("send");
                let m = c.read().expect("CopyInResponse");
                assert_eq!(m.tag, b'G', "{m:?}");
                c.send(&pgwire::typed(b'd', b"half a row")).expect("send");
            }
            // In the middle of a transaction.
            _ => {
                let r = c
                    .simple_query("BEGIN; INSERT INTO sink VALUES ('x')")
                    .expect("send");
                assert_eq!(r.status, b'T');
            }
        }
        vanish(c, i % 2 == 0);
    }
    // Startup cut short, before and after the startup message.
    for i in 0..10 {
        let mut c = PgRaw::open(custos.port());
        let startup = pgwire::startup_message(&[("user", "alice"), ("database", "app")]);
        let cut = if i % 2 == 0 { 3 } else { startup.len() };
        c.send(&startup[..cut]).expect("send");
        vanish(c, i % 3 == 0);
    }

    poll_until(
        SETTLE_TIMEOUT,
        "every upstream session to end",
        || match upstream_sessions() {
            n if n == "0" => Ok(()),
            n => Err(format!("{n} upstream sessions as custos")),
        },
    );
    poll_until(
        SETTLE_TIMEOUT,
        "custos_connections_open back to 0",
        || match custos
            .metrics()
            .get("custos_connections_open", &[("target", "pg")])
        {
            Some(0.0) => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    assert_eq!(
        pg.psql_direct("SELECT count(*) FROM sink"),
        "0",
        "nothing from the vanished sessions was committed"
    );
    assert_eq!(
        session(&custos).column("SELECT 'still serving'"),
        ["still serving"]
    );
}

#[test]
fn a_second_store_is_unaffected_by_the_first_dying() {
    let mut a = PostgresServer::start();
    let b = PostgresServer::start();
    let custos = Custos::start(
        custos_tests::CustosConfig::postgres(&a)
            .add_target(custos_tests::TargetConfig::postgres("other", &b)),
    );
    let (mut on_b, _) = PgRaw::session(custos.port_of("other"), "alice", "app");
    a.stop();
    assert_upstream_unavailable(custos.port(), "first store down");
    assert_eq!(
        on_b.column("SELECT inet_server_port()"),
        [b.port().to_string()]
    );
    assert_eq!(
        psql_ok(&PgConnect::new(custos.port_of("other")), "SELECT 1"),
        "1"
    );
}
