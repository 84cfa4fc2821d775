//! The PostgreSQL side of the harness, checked against PostgreSQL itself
//! with no appliance in between: the throwaway server and its
//! authentication methods, TLS, crash and restart, the raw protocol client,
//! the psycopg environment and pgbench. When one of these fails, the proxy
//! tests that use the same piece cannot be trusted either.

use custos_tests::pgwire::{self, PgRaw};
use custos_tests::python::python_ok;
use custos_tests::tools::{pgbench, pgbench_transactions, psql, psql_ok};
use custos_tests::{Certs, PgAuth, PostgresOptions, PostgresServer, SETTLE_TIMEOUT, wait_until};

fn authenticates_with(auth: PgAuth, stored_prefix: &str) {
    let pg = PostgresOptions::default().auth(auth).start();
    assert_eq!(
        psql_ok(
            &pg.connect(),
            "SELECT current_user, current_database(), inet_server_port()"
        ),
        format!("custos|app|{}", pg.port()),
        "a direct TCP connection as the application role"
    );
    let wrong = psql(
        &pg.connect().password("not-the-password"),
        &["-c", "SELECT 1"],
        None,
    );
    assert!(
        !wrong.status.success(),
        "a wrong password must be refused: {wrong:?}"
    );
    assert!(
        wrong
            .stderr
            .contains("password authentication failed for user \"custos\""),
        "{}",
        wrong.stderr
    );
    let no_password = psql(
        &custos_tests::PgConnect::new(pg.port())
            .user("custos")
            .dbname("app"),
        &["-c", "SELECT 1"],
        None,
    );
    assert!(
        !no_password.status.success(),
        "TCP without a password must be refused: {no_password:?}"
    );
    let stored = pg.psql_direct("SELECT rolpassword FROM pg_authid WHERE rolname = 'custos'");
    assert!(
        stored.starts_with(stored_prefix),
        "the role's password is stored as {stored:?}, expected {stored_prefix}..."
    );
    assert!(
        pg.psql_direct("SHOW hba_file").ends_with("pg_hba.conf"),
        "hba file"
    );
    let hba = pg.psql_direct(
        "SELECT auth_method FROM pg_hba_file_rules WHERE type = 'host' ORDER BY line_number",
    );
    assert_eq!(hba, auth.hba_method(), "pg_hba.conf TCP rule");
}

#[test]
fn postgres_server_scram_sha_256() {
    authenticates_with(PgAuth::ScramSha256, "SCRAM-SHA-256$");
}

#[test]
fn postgres_server_md5() {
    authenticates_with(PgAuth::Md5, "md5");
}

#[test]
fn postgres_server_cleartext_password() {
    authenticates_with(PgAuth::Password, "SCRAM-SHA-256$");
}

#[test]
fn postgres_server_with_tls() {
    let certs = Certs::generate();
    let other = Certs::generate();
    let pg = PostgresOptions::default().ssl(&certs).start();
    let verified = pg
        .connect()
        .server_name("localhost")
        .verify_full(&certs.ca());
    assert_eq!(
        psql_ok(
            &verified,
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
        ),
        "t"
    );
    let by_ip = pg.connect().verify_full(&certs.ca());
    assert_eq!(
        psql_ok(&by_ip, "SELECT 1"),
        "1",
        "the certificate names 127.0.0.1 too"
    );
    let wrong_ca = psql(
        &pg.connect()
            .server_name("localhost")
            .verify_full(&other.ca()),
        &["-c", "SELECT 1"],
        None,
    );
    assert!(!wrong_ca.status.success(), "{wrong_ca:?}");
    assert!(
        wrong_ca.stderr.contains("certificate verify failed"),
        "{}",
        wrong_ca.stderr
    );
    assert_eq!(
        psql_ok(
            &pg.connect(),
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
        ),
        "f",
        "sslmode=disable stays plaintext"
    );
}

#[test]
fn postgres_server_restarts_after_a_crash() {
    let mut pg = PostgresServer::start();
    psql_ok(
        &pg.connect(),
        "CREATE TABLE kept (v int); INSERT INTO kept VALUES (42)",
    );
    let old_pid = pg.pid().expect("running");
    pg.stop();
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", pg.port())).is_err(),
        "the port is closed after a crash"
    );
    pg.restart();
    assert_ne!(pg.pid(), Some(old_pid));
    assert_eq!(psql_ok(&pg.connect(), "SELECT v FROM kept"), "42");
}

#[test]
fn raw_protocol_client_against_postgres() {
    let pg = PostgresOptions::default().auth(PgAuth::Password).start();
    let login = |c: &mut PgRaw| {
        c.startup(
            &[
                ("user", pg.user()),
                ("database", pg.database()),
                ("application_name", "raw"),
            ],
            Some(pg.password()),
        )
        .unwrap_or_else(|e| panic!("startup: {e}"))
    };
    let mut c = PgRaw::open(pg.port());
    let startup = login(&mut c);
    assert_eq!(startup.status, b'I');
    let (pid, key) = startup.backend_key.expect("BackendKeyData");
    assert!(
        startup
            .parameters
            .iter()
            .any(|(k, v)| k == "application_name" && v == "raw"),
        "{:?}",
        startup.parameters
    );
    assert_eq!(c.column(&format!("SELECT pg_backend_pid() = {pid}")), ["t"]);

    // Transaction status and an error inside a transaction.
    let r = c.simple_query("BEGIN").expect("BEGIN");
    assert_eq!(
        (r.status, r.tags.as_slice()),
        (b'T', &["BEGIN".to_string()][..])
    );
    let r = c.simple_query("SELECT 1/0").expect("SELECT 1/0");
    assert_eq!(r.error.as_ref().map(|e| e.code()), Some("22012"));
    assert_eq!(r.status, b'E');
    let r = c.simple_query("ROLLBACK").expect("ROLLBACK");
    assert_eq!(r.status, b'I');
    let r = c
        .simple_query("SELECT 1 AS a, NULL AS b; SELECT 'two'")
        .expect("two statements");
    assert_eq!(
        r.rows,
        vec![vec![Some("1".into()), None], vec![Some("two".into())]]
    );

    // A CancelRequest with the wrong key is ignored; the right key cancels.
    let sleeping = |c: &mut PgRaw, seconds: u32| {
        c.send(&pgwire::query(&format!("SELECT pg_sleep({seconds})")))
            .expect("send pg_sleep");
        wait_until(SETTLE_TIMEOUT, "pg_sleep to run", || {
            pg.psql_direct(&format!(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = {pid} AND state = 'active'"
            )) == "1"
        });
    };
    let cancel = |key: i32| {
        let mut k = PgRaw::open(pg.port());
        k.send(&pgwire::cancel_request(pid, key))
            .expect("send CancelRequest");
        k.wait_closed(SETTLE_TIMEOUT)
            .expect("the server closes a cancel connection");
    };
    sleeping(&mut c, 3);
    cancel(!key);
    let r = c.read_query_result().expect("pg_sleep(3) result");
    assert!(r.error.is_none(), "a forged key cancelled: {:?}", r.error);
    assert_eq!(r.rows.len(), 1);
    sleeping(&mut c, 60);
    cancel(key);
    let r = c.read_query_result().expect("pg_sleep(60) result");
    assert_eq!(r.error.as_ref().map(|e| e.code()), Some("57014"));

    // PostgreSQL answers an unknown message type with FATAL 08P01 ...
    c.send(&pgwire::typed(b'!', b""))
        .expect("send unknown type");
    let e = c.read_error().expect("an ErrorResponse");
    assert_eq!((e.severity(), e.code()), ("FATAL", "08P01"), "{e:?}");
    c.wait_closed(SETTLE_TIMEOUT).expect("closed after FATAL");
    // ... but closes without a word on an impossible length, so the
    // appliance's FATAL for one (tests/pg_faults.rs) is its own.
    let mut c = PgRaw::open(pg.port());
    login(&mut c);
    c.send(b"Q\x00\x00\x00\x02").expect("send malformed");
    c.wait_closed(SETTLE_TIMEOUT)
        .expect("closed silently after an invalid length");

    // And declines TLS when it has none. (A server built with GSSAPI
    // accepts a GSSENCRequest with 'G' even without a keytab, which is why
    // the appliance must answer that one itself; see tests/pg_tls.rs.)
    let mut g = PgRaw::open(pg.port());
    g.send(&pgwire::ssl_request()).expect("SSLRequest");
    assert_eq!(g.read_byte().expect("answer"), b'N');
    let startup = login(&mut g);
    assert_eq!(startup.status, b'I');
}

#[test]
fn psycopg_environment_reaches_postgres_directly() {
    let pg = PostgresServer::start();
    let conn = pg.connect();
    let out = python_ok(
        "psycopg directly",
        r#"
import sys, psycopg
with psycopg.connect(sys.argv[1], password=sys.argv[2]) as conn:
    row = conn.execute("SELECT current_user, %s::int + 1", (41,)).fetchone()
    print(psycopg.__version__.split(".")[0], row[0], row[1])
"#,
        &[&conn.conninfo(), pg.password()],
    );
    assert_eq!(out.trim(), "3 custos 42");
    let out = python_ok("redis-py importable", "import redis; print('ok')", &[]);
    assert_eq!(out.trim(), "ok");
}

#[test]
fn pgbench_against_postgres_directly() {
    let pg = PostgresServer::start();
    pgbench(&pg.connect(), &["-i", "-s", "1", "-q"]).assert_success("pgbench -i");
    let out = pgbench(
        &pg.connect(),
        &["-n", "-c", "2", "-j", "1", "-t", "20", "-M", "extended"],
    );
    out.assert_success("pgbench");
    assert_eq!(
        pgbench_transactions(&out.stdout),
        Some((40, 40)),
        "{}",
        out.stdout
    );
    assert_eq!(pg.psql_direct("SELECT count(*) FROM pgbench_history"), "40");
}
