//! Masking end to end: values planted in real Redis and PostgreSQL servers
//! come back masked through custos for ordinary identities and clear for
//! exempt groups, through redis-cli, redis-py, the raw protocols, psql and
//! psycopg (text and binary results, simple and extended protocol).

use custos_tests::certs::Certs;
use custos_tests::custos::{Custos, CustosConfig, TargetConfig};
use custos_tests::idp::Idp;
use custos_tests::net::RawConn;
use custos_tests::pgwire::{self, PgRaw};
use custos_tests::postgres_server::{PostgresOptions, PostgresServer};
use custos_tests::python::{python_ok, run_python};
use custos_tests::redis_server::RedisServer;
use custos_tests::resp::Reply;
use custos_tests::tools::{PgConnect, psql_ok, redis_cli};

const CARD: &str = "4111 1111 1111 1111";
const CARD_MASKED: &str = "**** **** **** 1111";
const EMAIL: &str = "jane.doe@example.com";
const SSN: &str = "078-05-1120";
const SECRET: &str = "tok-0123456789abcdef";

/// The mask section every scenario uses: detectors everywhere, whole values
/// by key, field and column, and one exempt group.
const MASKS: &str = r#"
[[mask]]
detectors = ["credit_card", "email", "us_ssn"]
keys = ["secret:*"]
fields = ["ssn"]
style = "partial"
except_groups = ["privacy"]

[[mask]]
target = "pg"
columns = ["patients.diagnosis", "nickname"]
style = "redact"
except_groups = ["privacy"]
"#;

struct Setup {
    custos: Custos,
    idp: Idp,
    redis: RedisServer,
    pg: PostgresServer,
    certs: Certs,
}

fn setup() -> Setup {
    let redis = RedisServer::start();
    let pg = PostgresOptions::default().start();
    let certs = Certs::generate();
    let idp = Idp::new();
    let mut cache = TargetConfig::redis("cache", &redis);
    cache.auth = "token".into();
    let mut memory = TargetConfig::postgres("pg", &pg)
        .client_tls(&certs)
        .allow_plaintext_auth(None);
    memory.auth = "token".into();
    let config = CustosConfig::single(cache)
        .add_target(memory)
        .section(&idp.section(""))
        .section(MASKS);
    Setup {
        custos: Custos::start(config),
        idp,
        redis,
        pg,
        certs,
    }
}

impl Setup {
    fn token(&self, sub: &str, groups: &str) -> String {
        self.idp.token(sub, groups, "10m", &[])
    }

    fn redis_as(&self, sub: &str, groups: &str) -> RawConn {
        let mut c = RawConn::open(self.custos.port_of("cache"));
        let token = self.token(sub, groups);
        assert_eq!(c.cmd(&["AUTH", sub, &token]), Reply::Simple("OK".into()));
        c
    }

    fn pg_as(&self, sub: &str, groups: &str) -> PgConnect {
        PgConnect::new(self.custos.port_of("pg"))
            .host("localhost")
            .user(sub)
            .dbname(self.pg.database())
            .verify_full(&self.certs.ca())
            .password(&self.token(sub, groups))
    }
}

fn text(r: &Reply) -> String {
    r.text().unwrap_or_else(|| format!("{r:?}"))
}

fn texts(r: &Reply) -> Vec<String> {
    match r {
        Reply::Map(pairs) => pairs.iter().flat_map(|(k, v)| [text(k), text(v)]).collect(),
        _ => r
            .items()
            .unwrap_or_else(|| panic!("not an aggregate: {r:?}"))
            .iter()
            .map(text)
            .collect(),
    }
}

fn plant_redis(redis: &RedisServer) {
    let mut up = redis.raw();
    let big = format!("{} {CARD}", "x".repeat(1 << 20));
    for cmd in [
        vec!["SET", "note", &format!("call {EMAIL} about card {CARD}")],
        vec!["SET", "clean", "nothing to see"],
        vec!["SET", "secret:api", SECRET],
        vec!["SET", "big", &big],
        vec![
            "HSET",
            "user:1",
            "name",
            "Jane",
            "ssn",
            "123456789",
            "email",
            EMAIL,
        ],
        vec!["RPUSH", "contacts", EMAIL, "plain", SSN],
    ] {
        let r = up.cmd(&cmd);
        assert!(!matches!(r, Reply::Error(_)), "{cmd:?}: {r:?}");
    }
}

#[test]
fn redis_replies_are_masked_for_ordinary_identities_and_clear_for_exempt_ones() {
    let s = setup();
    plant_redis(&s.redis);
    let mut c = s.redis_as("alice", "eng");

    // Detectors inside a bulk string; clean values untouched.
    let note = text(&c.cmd(&["GET", "note"]));
    assert_eq!(
        note,
        format!("call ****.***@******e.com about card {CARD_MASKED}")
    );
    assert_eq!(text(&c.cmd(&["GET", "clean"])), "nothing to see");
    // A whole value by key glob, in GET and positionally in MGET.
    let secret = text(&c.cmd(&["GET", "secret:api"]));
    assert!(
        !secret.contains("0123456789") && secret.ends_with("cdef"),
        "{secret}"
    );
    let mget = texts(&c.cmd(&["MGET", "clean", "secret:api", "missing"]));
    assert_eq!(mget[0], "nothing to see");
    assert_eq!(mget[1], secret);
    // Hash fields: by name in HGET, HMGET and HGETALL; detectors on the rest.
    let ssn = text(&c.cmd(&["HGET", "user:1", "ssn"]));
    assert_eq!(ssn, "*****6789");
    assert_eq!(
        texts(&c.cmd(&["HMGET", "user:1", "name", "ssn"])),
        ["Jane", "*****6789"]
    );
    let all = texts(&c.cmd(&["HGETALL", "user:1"]));
    assert!(all.contains(&"*****6789".to_string()), "{all:?}");
    assert!(
        !all.iter().any(|v| v == "123456789" || v == EMAIL),
        "{all:?}"
    );
    assert!(all.contains(&"Jane".to_string()), "{all:?}");
    // Array elements.
    let list = texts(&c.cmd(&["LRANGE", "contacts", "0", "-1"]));
    assert_eq!(list[1], "plain");
    assert!(list[0] != EMAIL && list[2] != SSN, "{list:?}");
    // A 1 MiB value whose card number sits at the very end.
    let big = text(&c.cmd(&["GET", "big"]));
    assert_eq!(big.len(), (1 << 20) + 1 + CARD.len());
    assert!(
        big.ends_with(CARD_MASKED),
        "tail: {}",
        &big[big.len() - 40..]
    );
    // RESP3: a map reply, fields masked by name.
    let hello = c.cmd(&["HELLO", "3"]);
    assert!(matches!(hello, Reply::Map(_)), "{hello:?}");
    let map = c.cmd(&["HGETALL", "user:1"]);
    assert!(matches!(map, Reply::Map(_)), "{map:?}");
    let map = texts(&map);
    assert!(map.contains(&"*****6789".to_string()), "{map:?}");
    assert!(
        !map.iter().any(|v| v == "123456789" || v == EMAIL),
        "{map:?}"
    );

    // The exempt group sees every value as stored.
    let mut officer = s.redis_as("pat", "privacy");
    assert_eq!(
        text(&officer.cmd(&["GET", "note"])),
        format!("call {EMAIL} about card {CARD}")
    );
    assert_eq!(text(&officer.cmd(&["GET", "secret:api"])), SECRET);
    assert_eq!(text(&officer.cmd(&["HGET", "user:1", "ssn"])), "123456789");

    // A token without the exempt group switches the same connection back.
    let token = s.token("alice", "eng");
    assert_eq!(
        officer.cmd(&["AUTH", "alice", &token]),
        Reply::Simple("OK".into())
    );
    assert_eq!(text(&officer.cmd(&["HGET", "user:1", "ssn"])), "*****6789");

    let masked = s
        .custos
        .metrics()
        .counter("custos_replies_masked_total", &[]);
    assert!(masked >= 10.0, "custos_replies_masked_total = {masked}");
}

#[test]
fn redis_pubsub_messages_and_pipelines_are_masked() {
    let s = setup();
    plant_redis(&s.redis);
    let mut sub = s.redis_as("alice", "eng");
    let r = sub.cmd(&["SUBSCRIBE", "news"]);
    assert!(matches!(r, Reply::Array(_)), "{r:?}");
    let mut up = s.redis.raw();
    up.cmd(&["PUBLISH", "news", &format!("card {CARD}")]);
    let msg = sub.read().expect("message");
    let parts = texts(&msg);
    assert_eq!(parts, ["message", "news", &format!("card {CARD_MASKED}")]);

    // A pipeline of 200 commands, masked and clean replies interleaved,
    // comes back complete and in order.
    let mut c = s.redis_as("alice", "eng");
    let mut batch = Vec::new();
    for i in 0..200 {
        let key = if i % 2 == 0 { "note" } else { "clean" };
        batch.extend_from_slice(
            format!("*2\r\n$3\r\nGET\r\n${}\r\n{key}\r\n", key.len()).as_bytes(),
        );
    }
    c.send(&batch).unwrap();
    for i in 0..200 {
        let r = text(&c.read().unwrap());
        if i % 2 == 0 {
            assert!(r.ends_with(CARD_MASKED), "{i}: {r}");
        } else {
            assert_eq!(r, "nothing to see", "{i}");
        }
    }
}

#[test]
fn redis_cli_and_redis_py_see_masked_values() {
    let redis = RedisServer::start();
    plant_redis(&redis);
    let first_mask = MASKS.split("\n[[mask]]\ntarget").next().unwrap();
    let custos = Custos::start(CustosConfig::redis(&redis).section(first_mask));
    let out = redis_cli(custos.port(), &["GET", "note"], None);
    out.assert_success("redis-cli GET");
    assert_eq!(
        out.stdout.trim(),
        format!("call ****.***@******e.com about card {CARD_MASKED}")
    );
    let out = redis_cli(custos.port(), &["HGETALL", "user:1"], None);
    assert!(
        !out.stdout.contains("123456789") && !out.stdout.contains(EMAIL),
        "{}",
        out.stdout
    );

    let py = python_ok(
        "redis-py",
        r#"
import sys, redis
r = redis.Redis(port=int(sys.argv[1]))
print(r.get("note").decode())
print(r.hget("user:1", "ssn").decode())
print(r.get("secret:api").decode())
p = r.pipeline(transaction=False)
for _ in range(10):
    p.get("note")
print(all(v.decode().endswith("1111") and b"4111 1111" not in v for v in p.execute()))
"#,
        &[&custos.port().to_string()],
    );
    let lines: Vec<&str> = py.lines().collect();
    assert!(lines[0].ends_with(CARD_MASKED), "{py}");
    assert_eq!(lines[1], "*****6789");
    assert!(!lines[2].contains("0123456789"), "{py}");
    assert_eq!(lines[3], "True", "{py}");
}

fn plant_pg(pg: &PostgresServer) {
    pg.psql_direct(&format!(
        "CREATE TABLE patients (id int PRIMARY KEY, name text, email text UNIQUE, \
           card varchar(40), diagnosis text, nickname text, visits int, born date); \
         INSERT INTO patients VALUES \
           (1, 'Jane', '{EMAIL}', '{CARD}', 'flu', 'JJ', 4, '1980-01-02'), \
           (2, 'Bob', 'bob@example.org', 'none', 'cold', 'Bobby', 1, '1990-03-04'); \
         GRANT ALL ON patients TO \"{}\";",
        pg.user()
    ));
}

#[test]
fn psql_sees_masked_columns_and_detected_values_and_officers_see_clear() {
    let s = setup();
    plant_pg(&s.pg);
    let alice = s.pg_as("alice", "eng");
    let out = psql_ok(
        &alice,
        "SELECT id, name, email, card, diagnosis, nickname, visits, born FROM patients ORDER BY id",
    );
    let rows: Vec<&str> = out.lines().collect();
    assert_eq!(
        rows[0],
        format!("1|Jane|****.***@******e.com|{CARD_MASKED}|****|****|4|1980-01-02"),
        "{out}"
    );
    assert!(
        rows[1].starts_with("2|Bob|***@******e.org|none|****|****|1|"),
        "{out}"
    );
    // An alias does not hide a masked column; a name alone matches
    // `nickname` wherever it comes from.
    let out = psql_ok(
        &alice,
        "SELECT diagnosis AS d, upper(nickname) AS nickname FROM patients WHERE id = 1",
    );
    assert_eq!(out.trim(), "****|****", "{out}");
    // The unique violation's DETAIL repeats the value: masked too.
    let err = custos_tests::tools::psql(
        &alice,
        &[
            "-c",
            &format!("INSERT INTO patients (id, email) VALUES (3, '{EMAIL}')"),
        ],
        None,
    );
    assert!(!err.status.success(), "duplicate insert succeeded");
    assert!(err.stderr.contains("already exists"), "{}", err.stderr);
    assert!(!err.stderr.contains(EMAIL), "DETAIL leaked: {}", err.stderr);
    // COPY TO STDOUT goes through the detectors.
    let out = psql_ok(
        &alice,
        "COPY (SELECT email FROM patients ORDER BY id) TO STDOUT",
    );
    assert!(
        !out.contains(EMAIL) && out.contains("@******e.com"),
        "{out}"
    );

    let officer = s.pg_as("pat", "privacy");
    let out = psql_ok(
        &officer,
        "SELECT email, card, diagnosis FROM patients WHERE id = 1",
    );
    assert_eq!(out.trim(), format!("{EMAIL}|{CARD}|flu"));
}

#[test]
fn psycopg_extended_protocol_binary_results_and_notify_are_masked() {
    let s = setup();
    plant_pg(&s.pg);
    let conninfo = s.pg_as("alice", "eng").conninfo();
    let token = s.token("alice", "eng");
    let out = run_python(
        r#"
import sys, psycopg
conninfo = sys.argv[1]
with psycopg.connect(conninfo, autocommit=True) as c:
    # Extended protocol, text results.
    row = c.execute("SELECT email, card, diagnosis, visits FROM patients WHERE id = %s", (1,)).fetchone()
    print("text", row)
    # Binary results: text columns travel raw; masking rewrites them there too.
    cur = c.cursor(binary=True)
    row = cur.execute("SELECT email, card, diagnosis, visits FROM patients WHERE id = %s", (1,)).fetchone()
    print("binary", row)
    # A server-side prepared statement executed many times (Bind/Execute
    # without a Describe of its own).
    for _ in range(6):
        row = c.execute("SELECT email, nickname FROM patients WHERE id = %s", (1,), prepare=True).fetchone()
    print("prepared", row)
    # Pipeline mode: several statements in one batch.
    with c.pipeline():
        a = c.execute("SELECT email FROM patients WHERE id = 1")
        b = c.execute("SELECT visits FROM patients WHERE id = 1")
        d = c.execute("SELECT diagnosis FROM patients WHERE id = 2")
    print("pipeline", a.fetchone(), b.fetchone(), d.fetchone())
    # NOTIFY payloads.
    c.execute("LISTEN news")
    with psycopg.connect(conninfo, autocommit=True) as other:
        other.execute("SELECT pg_notify('news', %s)", ("card 4111 1111 1111 1111",))
    for n in c.notifies(timeout=10, stop_after=1):
        print("notify", n.payload)
"#,
        &[&conninfo],
        &[("PGPASSWORD", &token)],
    );
    out.assert_success("psycopg masking");
    let py = out.stdout;
    let line = |tag: &str| {
        py.lines()
            .find(|l| l.starts_with(tag))
            .unwrap_or_else(|| panic!("no {tag} line in {py}"))
            .to_string()
    };
    let expect_row = "('****.***@******e.com', '**** **** **** 1111', '****', 4)";
    assert_eq!(line("text "), format!("text {expect_row}"));
    assert_eq!(line("binary "), format!("binary {expect_row}"));
    assert_eq!(
        line("prepared "),
        "prepared ('****.***@******e.com', '****')"
    );
    assert_eq!(
        line("pipeline "),
        "pipeline ('****.***@******e.com',) (4,) ('****',)"
    );
    assert_eq!(line("notify "), format!("notify card {CARD_MASKED}"));
    assert!(!py.contains(EMAIL) && !py.contains("flu"), "{py}");
}

#[test]
fn an_execute_the_client_never_described_is_masked_by_its_portal_shape() {
    use custos_parsers_for_tests::extended;
    // Plain connection, anonymous identity: masked like any ordinary one.
    let pg = PostgresOptions::default().start();
    plant_pg(&pg);
    let custos = Custos::start(CustosConfig::postgres(&pg).target_name("pg").section(MASKS));
    let (mut c, _) = PgRaw::session(custos.port(), "alice", pg.database());
    // Parse, Describe the statement, Sync; later Bind/Execute/Sync with no
    // Describe of the portal: the appliance describes the first itself
    // (the client never sees that answer) and knows the statement's plan
    // for the rest. Each row: (diagnosis column, email column).
    let run = |c: &mut PgRaw, sql: &str, diagnosis: usize, email: usize, ids: &[&str]| {
        c.send(&extended::prepare("q", sql)).unwrap();
        let r = c.read_query_result().unwrap();
        assert!(r.error.is_none(), "{r:?}");
        for id in ids {
            c.send(&extended::bind_execute("q", &[id])).unwrap();
            let r = c.read_query_result().unwrap();
            assert!(r.error.is_none(), "{r:?}");
            assert_eq!(r.rows.len(), 1, "{r:?}");
            let row = &r.rows[0];
            assert_eq!(row[diagnosis].as_deref(), Some("****"), "{r:?}");
            assert!(
                !row[email].as_deref().unwrap().contains("jane.doe@"),
                "{r:?}"
            );
        }
    };
    let sql = "SELECT email, diagnosis, visits FROM patients WHERE id = $1";
    run(&mut c, sql, 1, 0, &["1", "2"]);
    // The statement redefined under the same name, its columns in another
    // order: the plan learnt for the old one must not be used (the
    // diagnosis, masked by column, would go out as it is).
    assert_eq!(c.column("DEALLOCATE q"), Vec::<String>::new());
    let sql = "SELECT diagnosis, email, visits FROM patients WHERE id = $1";
    run(&mut c, sql, 0, 1, &["1", "2", "1"]);
    // Protocol order intact: a simple query still answers plainly.
    assert_eq!(c.column("SELECT 'after'"), ["after"]);
    c.send(&pgwire::terminate()).unwrap();
}

/// Raw extended-protocol messages for the test above.
mod custos_parsers_for_tests {
    pub mod extended {
        use custos_tests::pgwire::typed;

        fn cstr(out: &mut Vec<u8>, s: &str) {
            out.extend_from_slice(s.as_bytes());
            out.push(0);
        }

        /// Parse + Describe(statement) + Sync.
        pub fn prepare(name: &str, sql: &str) -> Vec<u8> {
            let mut parse = Vec::new();
            cstr(&mut parse, name);
            cstr(&mut parse, sql);
            parse.extend_from_slice(&0u16.to_be_bytes());
            let mut describe = vec![b'S'];
            cstr(&mut describe, name);
            let mut out = typed(b'P', &parse);
            out.extend(typed(b'D', &describe));
            out.extend(typed(b'S', &[]));
            out
        }

        /// Bind (text parameters and results) + Execute + Sync.
        pub fn bind_execute(statement: &str, params: &[&str]) -> Vec<u8> {
            let mut bind = Vec::new();
            cstr(&mut bind, "");
            cstr(&mut bind, statement);
            bind.extend_from_slice(&0u16.to_be_bytes());
            bind.extend_from_slice(&(params.len() as u16).to_be_bytes());
            for p in params {
                bind.extend_from_slice(&(p.len() as i32).to_be_bytes());
                bind.extend_from_slice(p.as_bytes());
            }
            bind.extend_from_slice(&0u16.to_be_bytes());
            let mut execute = Vec::new();
            cstr(&mut execute, "");
            execute.extend_from_slice(&0u32.to_be_bytes());
            let mut out = typed(b'B', &bind);
            out.extend(typed(b'E', &execute));
            out.extend(typed(b'S', &[]));
            out
        }
    }
}

/// Every byte of every file under `dir`.
fn all_bytes(dir: &std::path::Path) -> Vec<u8> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("read dir") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            out.extend(all_bytes(&p));
        } else {
            out.extend(std::fs::read(&p).expect("read file"));
        }
    }
    out
}

fn holds(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[test]
fn after_a_scripted_session_the_planted_values_appear_nowhere_in_the_audit_folder() {
    let redis = RedisServer::start();
    let pg = PostgresOptions::default().start();
    plant_pg(&pg);
    let trail = tempfile::Builder::new()
        .prefix("custos-mask-audit-")
        .tempdir()
        .unwrap();
    let dir = trail.path().join("trail");
    let masks = "\n[[mask]]\ndetectors = [\"credit_card\", \"email\", \"us_ssn\"]\n\
                 keywords = [\"project-falcon\"]\nexcept_groups = [\"privacy\"]\n";
    let config = CustosConfig::redis(&redis)
        .add_target(TargetConfig::postgres("pg", &pg))
        .section(masks)
        .audit(
            &dir,
            &trail.path().join("audit.key"),
            "record_reply_bytes = 4096",
        );
    let mut custos = Custos::start(config);

    // Requests carry the values (SET k <card>) and replies echo them.
    let mut c = RawConn::open(custos.port_of("cache"));
    for cmd in [
        vec!["SET", "k1", CARD],
        vec!["SET", "k2", EMAIL],
        vec!["HSET", "h", "ssn", SSN, "codename", "project-falcon"],
        vec!["GET", "k1"],
        vec!["GET", "k2"],
        vec!["HGETALL", "h"],
        vec!["ECHO", "plan for project-falcon"],
    ] {
        let r = c.cmd(&cmd);
        assert!(!matches!(r, Reply::Error(_)), "{cmd:?}: {r:?}");
    }
    let conn = PgConnect::new(custos.port_of("pg")).dbname(pg.database());
    psql_ok(
        &conn,
        &format!("INSERT INTO patients (id, email, card) VALUES (9, 'x{EMAIL}', '{CARD}')"),
    );
    let out = psql_ok(&conn, "SELECT email, card FROM patients WHERE id = 9");
    assert!(!out.contains(CARD), "{out}");
    drop(c);
    custos.signal(libc::SIGTERM);
    custos.wait_exit(std::time::Duration::from_secs(30));

    let bytes = all_bytes(&dir);
    assert!(
        bytes.len() > 1000,
        "the trail holds the session ({} bytes)",
        bytes.len()
    );
    for planted in [CARD, "4111111111111111", EMAIL, SSN, "project-falcon"] {
        assert!(
            !holds(&bytes, planted),
            "{planted:?} is in the audit folder"
        );
    }
    // The trail is there and readable: the commands are recorded, masked.
    let out = Custos::audit_cli(&["search", "--dir", &dir.display().to_string()]);
    out.assert_success("custos audit search");
    assert!(out.stdout.contains("HGETALL"), "{}", out.stdout);
    assert!(!out.stdout.contains(CARD) && !out.stdout.contains(EMAIL));
}
