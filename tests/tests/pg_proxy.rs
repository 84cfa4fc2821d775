//! The PostgreSQL proxy with real clients: psql, pgbench and psycopg 3 over
//! the simple and extended query protocols, pipelines, COPY, notifications
//! and notices. Every scenario checks what the client sees and, where it
//! matters, what reached the store (read directly, bypassing the appliance).
//!
//! The appliance runs in development mode (`auth = "none"`): clients give
//! any user name and no password, and the store sees the appliance's own
//! role, `custos`.

use custos_tests::custos::RssWatch;
use custos_tests::pgwire::PgRaw;
use custos_tests::python::python_ok;
use custos_tests::tools::{pgbench, pgbench_transactions, psql, psql_ok};
use custos_tests::{
    Custos, CustosConfig, PgConnect, PostgresServer, SETTLE_TIMEOUT, TargetConfig, poll_until,
    postgres_behind_custos,
};
use sha2::{Digest, Sha256};

/// A client of the first target: user `alice`, database `app`, no TLS.
fn client(custos: &Custos) -> PgConnect {
    PgConnect::new(custos.port())
}

// ---- startup ----

#[test]
fn startup_parameters_are_forwarded_and_the_store_sees_the_appliance_role() {
    let (pg, custos) = postgres_behind_custos(|c| c);
    pg.psql_direct(
        "CREATE SCHEMA s1 AUTHORIZATION custos; \
         CREATE TABLE s1.marker (v text); INSERT INTO s1.marker VALUES ('in s1'); \
         GRANT SELECT ON s1.marker TO custos",
    );
    let conn = client(&custos)
        .user("alice")
        .param("application_name", "memory-agent")
        .param("options", "-c search_path=s1");
    assert_eq!(
        psql_ok(
            &conn,
            "SELECT current_user, session_user, current_database(), \
             current_setting('application_name'), current_setting('search_path'), \
             (SELECT v FROM marker)"
        ),
        "custos|custos|app|memory-agent|s1|in s1"
    );

    // Whatever the client calls itself, the store sees the appliance.
    for user in ["postgres", "Ünïcode user with spaces", "x"] {
        assert_eq!(
            psql_ok(&client(&custos).user(user), "SELECT current_user"),
            "custos",
            "client user {user:?}"
        );
    }

    // And what the store saw of a live session, read directly.
    let mut live = PgRaw::open(custos.port());
    live.startup(
        &[
            ("user", "bob"),
            ("database", "app"),
            ("application_name", "seen-upstream"),
        ],
        None,
    )
    .unwrap_or_else(|e| panic!("startup through custos: {e}"));
    assert_eq!(live.column("SELECT 1"), ["1"]);
    assert_eq!(
        pg.psql_direct(
            "SELECT usename || '|' || datname FROM pg_stat_activity \
             WHERE application_name = 'seen-upstream'"
        ),
        "custos|app"
    );
}

#[test]
fn client_database_is_forwarded_unless_upstream_database_is_set() {
    let pg = PostgresServer::start();
    pg.psql_direct("CREATE DATABASE other OWNER custos");
    let custos = Custos::start(
        CustosConfig::postgres(&pg)
            .add_target(TargetConfig::postgres("pinned", &pg).upstream_database("app")),
    );
    assert_eq!(
        psql_ok(
            &client(&custos).dbname("other"),
            "SELECT current_database()"
        ),
        "other",
        "without upstream_database the client's dbname is forwarded"
    );
    assert_eq!(
        psql_ok(&client(&custos), "SELECT current_database()"),
        "app"
    );
    let pinned = PgConnect::new(custos.port_of("pinned"));
    for db in ["other", "app", "does_not_exist"] {
        assert_eq!(
            psql_ok(&pinned.clone().dbname(db), "SELECT current_database()"),
            "app",
            "upstream_database = \"app\" whatever the client asks for ({db})"
        );
    }
}

// ---- simple query protocol through psql ----

#[test]
fn queries_errors_and_transactions_through_psql() {
    let (pg, custos) = postgres_behind_custos(|c| c);
    let conn = client(&custos);
    // Three statements in one query string (one simple Query message).
    assert_eq!(
        psql_ok(
            &conn,
            "CREATE TABLE notes (id int PRIMARY KEY, body text); \
             INSERT INTO notes VALUES (1, 'one'), (2, 'two'); \
             SELECT count(*) FROM notes"
        ),
        "2"
    );
    // One session: an error, recovery, a failed transaction rolled back;
    // the backend pid proves it stayed one upstream session throughout.
    let script = r"\set ON_ERROR_STOP 0
SELECT pg_backend_pid() AS pid \gset
SELECT 1/0;
\echo after-error :LAST_ERROR_SQLSTATE
SELECT 'still here';
BEGIN;
INSERT INTO notes VALUES (3, 'three');
SELECT no_such_column FROM notes;
SELECT 1;
\echo in-failed-transaction :LAST_ERROR_SQLSTATE
ROLLBACK;
SELECT count(*) FROM notes;
SELECT 'a' AS x, 1 AS y \; SELECT 'b', 2;
SELECT pg_backend_pid() = :pid;
";
    let out = psql(&conn, &[], Some(script.as_bytes()));
    out.assert_success("psql script through custos");
    assert_eq!(
        out.stdout.lines().collect::<Vec<_>>(),
        [
            "after-error 22012",
            "still here",
            "in-failed-transaction 25P02",
            "2",
            "a|1",
            "b|2",
            "t"
        ],
        "stderr:\n{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("division by zero")
            && out.stderr.contains("current transaction is aborted"),
        "the errors reach psql: {}",
        out.stderr
    );
    assert_eq!(
        pg.psql_direct("SELECT string_agg(body, ',' ORDER BY id) FROM notes"),
        "one,two",
        "the rolled-back insert is not in the store"
    );
}

#[test]
fn transaction_status_and_results_on_the_raw_protocol() {
    let (_pg, custos) = postgres_behind_custos(|c| c);
    let (mut c, startup) = PgRaw::session(custos.port(), "alice", "app");
    assert_eq!(startup.status, b'I');
    assert!(startup.backend_key.is_some(), "BackendKeyData is sent");
    // Drivers depend on these reports.
    for name in [
        "server_version",
        "client_encoding",
        "standard_conforming_strings",
        "integer_datetimes",
        "DateStyle",
    ] {
        assert!(
            startup.parameters.iter().any(|(k, _)| k == name),
            "no ParameterStatus {name}: {:?}",
            startup.parameters
        );
    }

    let r = c.simple_query("BEGIN").expect("BEGIN");
    assert_eq!(
        (r.status, r.tags.as_slice()),
        (b'T', &["BEGIN".to_string()][..])
    );
    let r = c.simple_query("SELECT 1/0").expect("SELECT 1/0");
    let e = r.error.expect("division by zero");
    assert_eq!((e.severity(), e.code()), ("ERROR", "22012"));
    assert_eq!(r.status, b'E');
    let r = c
        .simple_query("SELECT 1")
        .expect("SELECT 1 in a failed transaction");
    assert_eq!(
        r.error.map(|e| e.code().to_string()).as_deref(),
        Some("25P02")
    );
    assert_eq!(r.status, b'E');
    let r = c.simple_query("ROLLBACK").expect("ROLLBACK");
    assert_eq!(
        (r.status, r.tags.as_slice()),
        (b'I', &["ROLLBACK".to_string()][..])
    );

    let r = c
        .simple_query("SELECT 1 AS a, NULL AS b; SELECT 'two' UNION ALL SELECT 'three'")
        .expect("two statements");
    assert_eq!(
        r.rows,
        vec![
            vec![Some("1".into()), None],
            vec![Some("two".into())],
            vec![Some("three".into())]
        ]
    );
    assert_eq!(r.tags, ["SELECT 1", "SELECT 2"]);
    let r = c.simple_query("").expect("empty query");
    assert!(r.error.is_none() && r.rows.is_empty() && r.status == b'I');
    let r = c
        .simple_query("SELECT 1; SELECT 1/0; SELECT 3")
        .expect("an error mid-string");
    assert_eq!(r.rows, vec![vec![Some("1".into())]], "the rest is skipped");
    assert_eq!(
        r.error.map(|e| e.code().to_string()).as_deref(),
        Some("22012")
    );
    assert_eq!(r.status, b'I');

    c.send(&custos_tests::pgwire::terminate())
        .expect("Terminate");
    c.wait_closed(SETTLE_TIMEOUT)
        .expect("Terminate closes the session");
}

// ---- pgbench ----

#[test]
fn pgbench_simple_extended_and_prepared() {
    let (pg, custos) = postgres_behind_custos(|c| c);
    let conn = client(&custos);
    pgbench(&conn, &["-i", "-s", "1"]).assert_success("pgbench -i -s 1 through custos");
    assert_eq!(
        pg.psql_direct("SELECT count(*) FROM pgbench_accounts"),
        "100000"
    );
    for mode in ["simple", "extended", "prepared"] {
        let out = pgbench(
            &conn,
            &["-n", "-c", "4", "-j", "2", "-t", "200", "-M", mode],
        );
        out.assert_success(&format!("pgbench -M {mode} through custos"));
        assert_eq!(
            pgbench_transactions(&out.stdout),
            Some((800, 800)),
            "pgbench -M {mode}:\n{}\n{}",
            out.stdout,
            out.stderr
        );
        if let Some(failed) = out
            .stdout
            .lines()
            .find(|l| l.starts_with("number of failed transactions:"))
        {
            assert!(failed.contains(": 0 "), "pgbench -M {mode}: {failed}");
        }
    }
    assert_eq!(
        pg.psql_direct("SELECT count(*) FROM pgbench_history"),
        "2400",
        "every transaction reached the store"
    );
}

// ---- COPY, streamed ----

const COPY_BYTES: usize = 20 * 1024 * 1024;

/// COPY text format rows `id\tpayload\n`, about `COPY_BYTES` in all; the
/// payload varies per row so a lost, repeated or reordered row shows.
fn copy_rows() -> (Vec<u8>, usize) {
    let block: Vec<u8> = (0..1000u32)
        .map(|i| b"0123456789abcdefghijklmnopqrstuvwxyz"[(i * 7 % 36) as usize])
        .collect();
    let mut data = Vec::with_capacity(COPY_BYTES + 2048);
    let mut rows = 0usize;
    while data.len() < COPY_BYTES {
        data.extend_from_slice(format!("{rows}\t{rows:08x}-").as_bytes());
        let shift = rows % block.len();
        data.extend_from_slice(&block[shift..]);
        data.extend_from_slice(&block[..shift]);
        data.push(b'\n');
        rows += 1;
    }
    (data, rows)
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn copy_of_100_000_rows_both_ways_with_psql() {
    let (pg, custos) = postgres_behind_custos(|c| c);
    let conn = client(&custos);
    psql_ok(
        &conn,
        "CREATE TABLE notes (id int PRIMARY KEY, who text, body text)",
    );
    let mut data = Vec::with_capacity(6 * 1024 * 1024);
    for i in 0..100_000u32 {
        data.extend_from_slice(format!("{i}\tagent-{}\tnote {i} for later\n", i % 97).as_bytes());
    }
    psql(&conn, &["-c", r"\copy notes FROM pstdin"], Some(&data))
        .assert_success("\\copy notes FROM pstdin through custos");
    assert_eq!(pg.psql_direct("SELECT count(*) FROM notes"), "100000");
    let out = psql(
        &conn,
        &["-c", r"\copy (SELECT * FROM notes ORDER BY id) TO pstdout"],
        None,
    );
    out.assert_success("\\copy notes TO pstdout through custos");
    assert_eq!(out.stdout.len(), data.len(), "every byte comes back");
    assert!(
        out.stdout.as_bytes() == data.as_slice(),
        "rows come back unchanged and in order"
    );
}

#[test]
fn copy_of_20_mib_in_and_out_streams_through_small_buffers() {
    let (pg, custos) = postgres_behind_custos(|c| c.buffer_bytes_max(65_536));
    let conn = client(&custos);
    psql_ok(
        &conn,
        "CREATE TABLE blobs (id int PRIMARY KEY, payload text)",
    );
    let (data, rows) = copy_rows();
    let digest = sha256_hex(&data);
    let baseline_kib = custos.rss_kib();
    let watch = RssWatch::start(custos.pid());

    let out = psql(&conn, &["-c", r"\copy blobs FROM pstdin"], Some(&data));
    out.assert_success("\\copy blobs FROM pstdin through custos");
    assert_eq!(
        pg.psql_direct("SELECT count(*) FROM blobs"),
        rows.to_string(),
        "every row reached the store"
    );
    assert_eq!(
        pg.psql_direct(
            "SELECT encode(sha256(convert_to(string_agg(id || E'\\t' || payload || E'\\n', '' \
             ORDER BY id), 'UTF8')), 'hex') FROM blobs"
        ),
        digest,
        "the store holds exactly the rows sent"
    );

    let out = psql(
        &conn,
        &[
            "-c",
            "COPY (SELECT id, payload FROM blobs ORDER BY id) TO STDOUT",
        ],
        None,
    );
    assert!(
        out.status.success(),
        "COPY TO STDOUT through custos failed: {}",
        out.stderr
    );
    assert_eq!(out.stdout.len(), data.len(), "COPY TO STDOUT byte count");
    assert_eq!(
        sha256_hex(out.stdout.as_bytes()),
        digest,
        "COPY TO STDOUT returns exactly the rows sent"
    );
    assert_eq!(
        psql_ok(&conn, "SELECT count(*) FROM blobs"),
        rows.to_string(),
        "the session is usable after both COPYs"
    );

    watch.assert_growth_below(
        &custos,
        baseline_kib,
        16,
        "a 20 MiB COPY with buffer_bytes_max = 65536: the COPY was buffered, not streamed",
    );
}

// ---- psycopg 3: extended protocol, binary, pipelines, notifications ----

fn psycopg(custos: &Custos, what: &str, script: &str) -> String {
    let out = python_ok(what, script, &[&client(custos).conninfo()]);
    assert!(
        out.lines().any(|l| l == "ok"),
        "{what}: the script did not finish: {out}"
    );
    out
}

#[test]
fn psycopg_parameters_binary_results_and_prepared_statements() {
    let (pg, custos) = postgres_behind_custos(|c| c);
    psycopg(
        &custos,
        "psycopg: parameters, binary, prepared",
        r#"
import sys
from decimal import Decimal
import psycopg

with psycopg.connect(sys.argv[1], autocommit=True) as conn:
    conn.execute(
        "CREATE TABLE items (id int PRIMARY KEY, name text, price numeric, tags text[], data bytea)")
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO items VALUES (%s, %s, %s, %s, %s)",
            [(i, f"item-{i}", Decimal(i) * Decimal("1.5"), ["a", str(i)], bytes([i]) * 10)
             for i in range(100)])

    # Parameters travel in Bind messages (extended protocol).
    row = conn.execute("SELECT name, price, tags FROM items WHERE id = %s", (42,)).fetchone()
    assert row == ("item-42", Decimal("63.0"), ["a", "42"]), row
    assert conn.execute("SELECT %s::text || %s", ("a'b", None)).fetchone() == (None,)

    # Binary results.
    with conn.cursor(binary=True) as cur:
        cur.execute("SELECT id, data, price, tags FROM items WHERE id = %s", (7,))
        row = cur.fetchone()
        assert row == (7, b"\x07" * 10, Decimal("10.5"), ["a", "7"]), row
        assert all(cur.pgresult.fformat(i) == 1 for i in range(4)), "binary format"

    # Binary parameters and a value far larger than the appliance's buffers.
    big = bytes(range(256)) * 4096
    with conn.cursor() as cur:
        cur.execute("INSERT INTO items (id, data) VALUES (%b, %b)", (1000, big))
        cur.execute("SELECT data FROM items WHERE id = %s", (1000,), binary=True)
        assert cur.fetchone()[0] == big

    # Prepared statements: Parse once, Bind/Execute many times.
    for i in range(20):
        got = conn.execute(
            "SELECT name FROM items WHERE id = %s", (i,), prepare=True).fetchone()
        assert got == (f"item-{i}",), got
    n = conn.execute(
        "SELECT count(*) FROM pg_prepared_statements WHERE NOT from_sql").fetchone()[0]
    assert n >= 1, n

    # A server-side cursor fetched in batches.
    with conn.transaction():
        with conn.cursor(name="walk") as cur:
            cur.itersize = 7
            cur.execute("SELECT id FROM items WHERE id < 100 ORDER BY id")
            ids = [r[0] for r in cur]
    assert ids == list(range(100)), ids

    # An error in the extended protocol, then the connection still works.
    try:
        conn.execute("SELECT 1 / %s", (0,))
    except psycopg.errors.DivisionByZero as e:
        assert e.sqlstate == "22012"
    else:
        raise AssertionError("no error")
    assert conn.execute("SELECT %s + 1", (1,)).fetchone() == (2,)
print("ok")
"#,
    );
    assert_eq!(pg.psql_direct("SELECT count(*) FROM items"), "101");
}

#[test]
fn psycopg_pipeline_mode() {
    let (pg, custos) = postgres_behind_custos(|c| c);
    psycopg(
        &custos,
        "psycopg: pipeline",
        r#"
import sys
import psycopg

with psycopg.connect(sys.argv[1]) as conn:
    conn.execute("CREATE TABLE events (id int, kind text)")
    conn.commit()
    with conn.pipeline() as p:
        with conn.cursor() as cur:
            for i in range(300):
                cur.execute("INSERT INTO events VALUES (%s, %s)", (i, f"k{i % 3}"))
        total = conn.cursor()
        total.execute("SELECT count(*), sum(id) FROM events")
        p.sync()
        row = total.fetchone()
    assert row == (300, sum(range(300))), row
    conn.commit()

    # An error mid-pipeline aborts the rest of it; the connection recovers.
    try:
        with conn.pipeline():
            conn.execute("INSERT INTO events VALUES (1000, 'x')")
            conn.execute("SELECT 1 / 0")
            conn.execute("INSERT INTO events VALUES (1001, 'y')")
    except psycopg.errors.DivisionByZero:
        pass
    else:
        raise AssertionError("no error from the pipeline")
    conn.rollback()
    assert conn.execute("SELECT count(*) FROM events").fetchone() == (300,)

    # A pipeline of reads, results in order.
    with conn.pipeline():
        curs = [conn.execute("SELECT %s::int * 2", (i,)) for i in range(200)]
    assert [c.fetchone()[0] for c in curs] == [i * 2 for i in range(200)]
print("ok")
"#,
    );
    assert_eq!(pg.psql_direct("SELECT count(*) FROM events"), "300");
}

#[test]
fn psycopg_listen_notify_between_two_connections() {
    let (_pg, custos) = postgres_behind_custos(|c| c);
    psycopg(
        &custos,
        "psycopg: LISTEN/NOTIFY",
        r#"
import sys
import psycopg

conninfo = sys.argv[1]
with psycopg.connect(conninfo, autocommit=True) as listener, \
     psycopg.connect(conninfo, autocommit=True) as talker:
    listener.execute("LISTEN memory_events")
    sender = talker.execute("SELECT pg_backend_pid()").fetchone()[0]
    # The listener is idle: the notifications must arrive unrequested.
    talker.execute("NOTIFY memory_events, 'hello'")
    talker.execute("SELECT pg_notify('memory_events', %s)", ("second",))
    got = [(n.channel, n.payload, n.pid)
           for n in listener.notifies(timeout=60, stop_after=2)]
    assert got == [("memory_events", "hello", sender),
                   ("memory_events", "second", sender)], got

    # After UNLISTEN nothing more arrives, and the session is usable.
    listener.execute("UNLISTEN memory_events")
    talker.execute("NOTIFY memory_events, 'unheard'")
    talker.execute("NOTIFY other_channel, 'unheard'")
    listener.execute("LISTEN last_one")
    talker.execute("NOTIFY last_one, 'final'")
    got = [n.payload for n in listener.notifies(timeout=60, stop_after=1)]
    assert got == ["final"], got
print("ok")
"#,
    );
}

#[test]
fn psycopg_notices_are_delivered() {
    let (_pg, custos) = postgres_behind_custos(|c| c);
    psycopg(
        &custos,
        "psycopg: notices",
        r#"
import sys
import psycopg

with psycopg.connect(sys.argv[1], autocommit=True) as conn:
    notices = []
    conn.add_notice_handler(
        lambda d: notices.append((d.severity_nonlocalized, d.sqlstate, d.message_primary)))
    conn.execute("DO $$ BEGIN RAISE NOTICE 'remember %', 42; RAISE WARNING 'careful'; END $$")
    assert notices == [("NOTICE", "00000", "remember 42"),
                       ("WARNING", "01000", "careful")], notices
    conn.execute("SET client_min_messages = warning")
    conn.execute("DO $$ BEGIN RAISE NOTICE 'filtered'; END $$")
    assert len(notices) == 2, notices
print("ok")
"#,
    );
}

// ---- metrics ----

#[test]
fn metrics_count_postgres_sessions() {
    let (_pg, custos) = postgres_behind_custos(|c| c);
    const SESSIONS: usize = 5;
    for i in 0..SESSIONS {
        assert_eq!(
            psql_ok(&client(&custos), &format!("SELECT {i}")),
            i.to_string()
        );
    }
    let t = [("target", "pg")];
    poll_until(
        SETTLE_TIMEOUT,
        "every postgres session counted and closed",
        || {
            let m = custos.metrics();
            let total = m.counter("custos_connections_total", &t);
            let open = m.get("custos_connections_open", &t);
            if total >= SESSIONS as f64 && open == Some(0.0) {
                Ok(())
            } else {
                Err(format!(
                    "connections_total = {total}, connections_open = {open:?}\n{}",
                    m.text
                ))
            }
        },
    );
    let (mut live, _) = PgRaw::session(custos.port(), "alice", "app");
    assert_eq!(live.column("SELECT 1"), ["1"]);
    let open = custos.metrics().get("custos_connections_open", &t);
    assert_eq!(open, Some(1.0), "one session open");
}
