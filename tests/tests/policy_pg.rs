//! Policy on a PostgreSQL target, with psql, psycopg and pgbench against a
//! real PostgreSQL. Every refusal is checked on both sides: the client sees
//! SQLSTATE 42501 naming the rule, and the data in the store is untouched.

use custos_tests::python::python_ok;
use custos_tests::tools::{pgbench, pgbench_transactions, psql};
use custos_tests::{Custos, CustosConfig, PgConnect, postgres_behind_custos};

const RULES: &[&str] = &[
    r#"
id = "no-ddl"
target = "pg"
groups = ["*"]
statement = ["DROP", "TRUNCATE"]
action = "block"
reason = "destructive statement"
"#,
    r#"
id = "no-mass-update"
target = "pg"
groups = ["*"]
without_where = true
action = "block"
reason = "UPDATE or DELETE without WHERE"
"#,
    r#"
id = "no-file-access"
target = "pg"
groups = ["*"]
functions = ["pg_read_file", "pg_ls_dir"]
action = "block"
reason = "server file access"
"#,
    r#"
id = "grants"
target = "pg"
groups = ["*"]
statement = ["GRANT", "REVOKE"]
action = "approve"
reason = "privilege change"
"#,
];

fn policy(mut c: CustosConfig) -> CustosConfig {
    for r in RULES {
        c = c.rule(r);
    }
    c
}

fn client(custos: &Custos) -> PgConnect {
    PgConnect::new(custos.port())
}

/// Runs a psql script (errors do not stop it) with verbose errors.
fn script(conn: &PgConnect, sql: &str) -> (String, String) {
    let text = format!("\\set ON_ERROR_STOP 0\n\\set VERBOSITY verbose\n{sql}\n");
    let out = psql(conn, &[], Some(text.as_bytes()));
    (out.stdout, out.stderr)
}

fn setup(pg: &custos_tests::PostgresServer) {
    pg.psql_direct(
        "CREATE TABLE t (id int PRIMARY KEY, v text); \
         INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 10) g; \
         GRANT ALL ON t TO custos",
    );
}

fn rows(pg: &custos_tests::PostgresServer) -> String {
    pg.psql_direct("SELECT count(*) FROM t")
}

#[test]
fn refused_statements_leave_the_data_alone_in_every_disguise() {
    let (pg, custos) = postgres_behind_custos(policy);
    setup(&pg);
    let conn = client(&custos);
    for (sql, rule) in [
        ("DROP TABLE t", "no-ddl"),
        ("drop table \"t\"", "no-ddl"),
        ("/* harmless */ SELECT 1; DROP TABLE t", "no-ddl"),
        ("TRUNCATE t", "no-ddl"),
        ("DELETE FROM t", "no-mass-update"),
        ("UPDATE t SET v = 'x'", "no-mass-update"),
        (
            "WITH d AS (DELETE FROM t RETURNING *) SELECT count(*) FROM d",
            "no-mass-update",
        ),
        ("DO $$BEGIN DELETE FROM t; END$$", "no-mass-update"),
        (
            "DO $$BEGIN EXECUTE 'DELETE FROM ' || 't'; END$$",
            "unclassified",
        ),
        ("SELECT pg_read_file('/etc/passwd')", "no-file-access"),
        ("SELEC 1", "unclassified"),
    ] {
        let (out, err) = script(&conn, &format!("{sql};"));
        assert!(
            err.contains("ERROR:  42501: custos: ") && err.contains(&format!("(rule {rule})")),
            "{sql}: {out} {err}"
        );
    }
    assert_eq!(rows(&pg), "10", "a refused statement reached the store");
    let (out, err) = script(
        &conn,
        "UPDATE t SET v = 'w' WHERE id = 1;\nSELECT v FROM t WHERE id = 1;",
    );
    assert_eq!(out.trim(), "w", "{err}");
}

#[test]
fn a_refusal_in_a_transaction_fails_it_like_any_error() {
    let (pg, custos) = postgres_behind_custos(policy);
    setup(&pg);
    let conn = client(&custos);
    let (out, err) = script(
        &conn,
        "BEGIN;\nINSERT INTO t VALUES (100, 'x');\nDROP TABLE t;\nSELECT 1;\nCOMMIT;\nSELECT 'after', count(*) FROM t;",
    );
    assert!(err.contains("(rule no-ddl)"), "{err}");
    assert!(
        err.contains("25P02"),
        "the transaction must be failed: {err}"
    );
    assert!(
        out.contains("ROLLBACK") || out.contains("after|10"),
        "{out}"
    );
    assert_eq!(
        rows(&pg),
        "10",
        "COMMIT of a failed transaction must roll back"
    );
    // Outside a transaction the session carries on.
    let (out, err) = script(&conn, "DROP TABLE t;\nSELECT count(*) FROM t;");
    assert!(err.contains("(rule no-ddl)"), "{err}");
    assert_eq!(out.trim(), "10");
}

#[test]
fn approvals_carry_the_request_id_in_the_hint() {
    let (pg, custos) = postgres_behind_custos(policy);
    setup(&pg);
    let (_, err) = script(&client(&custos), "GRANT SELECT ON t TO PUBLIC;");
    assert!(
        err.contains("custos: approval required (rule grants)")
            && err.contains("HINT:  approval request "),
        "{err}"
    );
    assert_eq!(
        pg.psql_direct("SELECT count(*) FROM information_schema.role_table_grants WHERE grantee = 'PUBLIC' AND table_name = 't'"),
        "0"
    );
}

#[test]
fn extended_protocol_refusals_are_decided_at_parse_and_never_execute() {
    let (pg, custos) = postgres_behind_custos(policy);
    setup(&pg);
    let out = python_ok(
        "psycopg: extended protocol, prepared statements, pipeline",
        r#"
import sys
import psycopg
from psycopg import errors

with psycopg.connect(sys.argv[1], autocommit=True) as conn:
    # Extended protocol (server-side parameters), refused at Parse.
    for attempt in range(3):
        try:
            conn.execute("DELETE FROM t", prepare=True)
            print("not refused")
        except errors.InsufficientPrivilege as e:
            print("refused", e.diag.sqlstate, e.diag.message_primary)
    # Allowed statements keep working, prepared or not.
    for i in range(5):
        cur = conn.execute("SELECT v FROM t WHERE id = %s", (i + 1,), prepare=True)
        assert cur.fetchone()[0] == f"v{i + 1}"
    # A pipeline is one implicit transaction up to its Sync: the refusal
    # fails it like any error, so neither the statement before nor the
    # one after takes effect.
    try:
        with conn.pipeline():
            conn.execute("UPDATE t SET v = 'p' WHERE id = %s", (2,))
            conn.execute("DROP TABLE t")
            conn.execute("UPDATE t SET v = 'q' WHERE id = %s", (3,))
    except errors.InsufficientPrivilege as e:
        print("pipeline refused", e.diag.message_primary)
    print(conn.execute("SELECT v FROM t WHERE id = 2").fetchone()[0])
    print(conn.execute("SELECT v FROM t WHERE id = 3").fetchone()[0])

with psycopg.connect(sys.argv[1]) as conn:
    conn.execute("INSERT INTO t VALUES (200, 'x')")
    try:
        conn.execute("TRUNCATE t")
    except errors.InsufficientPrivilege:
        print("tx", conn.info.transaction_status.name)
    conn.rollback()
print("ok")
"#,
        &[&client(&custos).conninfo()],
    );
    let refused: Vec<&str> = out.lines().filter(|l| l.starts_with("refused")).collect();
    assert_eq!(refused.len(), 3, "{out}");
    assert!(
        refused
            .iter()
            .all(|l| l.contains("42501") && l.contains("(rule no-mass-update)")),
        "{out}"
    );
    assert!(
        out.contains("pipeline refused custos: destructive statement (rule no-ddl)"),
        "{out}"
    );
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines.contains(&"v2") && lines.contains(&"v3"),
        "the failed pipeline must change nothing: {out}"
    );
    assert!(lines.contains(&"tx INERROR"), "{out}");
    assert_eq!(rows(&pg), "10");
    assert_eq!(pg.psql_direct("SELECT count(*) FROM t WHERE id = 200"), "0");
}

#[test]
fn pgbench_prepared_and_simple_run_with_a_policy_on() {
    let (pg, custos) = postgres_behind_custos(policy);
    // pgbench -i drops and truncates: the policy forbids that, so the
    // tables are made directly at the store.
    pgbench(&pg.connect(), &["-i", "-s", "1"]).assert_success("pgbench -i (direct)");
    pg.psql_direct("GRANT ALL ON ALL TABLES IN SCHEMA public TO custos");
    let conn = client(&custos);
    for mode in ["prepared", "simple", "extended"] {
        let out = pgbench(
            &conn,
            &["-n", "-c", "2", "-j", "1", "-t", "100", "-M", mode],
        );
        out.assert_success(&format!("pgbench -M {mode} with a policy"));
        assert_eq!(
            pgbench_transactions(&out.stdout),
            Some((200, 200)),
            "{mode}: {}",
            out.stdout
        );
    }
    let out = pgbench(&conn, &["-i", "-s", "1"]);
    assert!(!out.status.success(), "pgbench -i must be refused");
    assert!(
        out.stderr.contains("42501") || out.stderr.contains("custos:"),
        "{}",
        out.stderr
    );
}
