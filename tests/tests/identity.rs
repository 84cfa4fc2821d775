//! OIDC tokens as the password, on Redis and PostgreSQL targets: the
//! authentication phase, hostile tokens, key rotation at the provider, and
//! sessions ending when their token does.

use std::time::Duration;

use custos_tests::certs::Certs;
use custos_tests::custos::{Custos, CustosConfig, TargetConfig};
use custos_tests::idp::{self, Idp, JwksServer};
use custos_tests::net::RawConn;
use custos_tests::postgres_server::{PostgresOptions, PostgresServer};
use custos_tests::process::poll_until;
use custos_tests::redis_server::RedisServer;
use custos_tests::tools::{PgConnect, psql};

const SETTLE: Duration = Duration::from_secs(20);

/// custos with a Redis target `cache` and a PostgreSQL target `pg`, both
/// with `auth = "token"`, trusting `idp` (plus `identity_extra` lines).
struct Setup {
    custos: Custos,
    certs: Certs,
    _redis: RedisServer,
    _pg: PostgresServer,
}

fn setup(identity: &str) -> Setup {
    let redis = RedisServer::start();
    let pg = PostgresOptions::default().start();
    let certs = Certs::generate();
    let mut cache = TargetConfig::redis("cache", &redis);
    cache.auth = "token".into();
    let mut memory = TargetConfig::postgres("pg", &pg)
        .client_tls(&certs)
        .allow_plaintext_auth(None);
    memory.auth = "token".into();
    let config = CustosConfig::single(cache)
        .add_target(memory)
        .section(identity);
    Setup {
        custos: Custos::start(config),
        certs,
        _redis: redis,
        _pg: pg,
    }
}

impl Setup {
    fn redis(&self) -> RawConn {
        RawConn::open(self.custos.port_of("cache"))
    }

    fn pg(&self, token: &str) -> PgConnect {
        let mut c = PgConnect::new(self.custos.port_of("pg"));
        c.sslmode = "verify-full".into();
        c.host = "localhost".into();
        c.params
            .push(("sslrootcert".into(), self.certs.ca().display().to_string()));
        c.password = Some(token.into());
        c
    }
}

/// A reply as text; errors without their leading dash.
fn text(r: &custos_tests::resp::Reply) -> String {
    match r {
        custos_tests::resp::Reply::Error(e) => e.clone(),
        _ => r.text().unwrap_or_else(|| format!("{r:?}")),
    }
}

#[test]
fn redis_answers_only_auth_hello_and_quit_until_a_token_is_accepted() {
    let idp = Idp::new();
    let s = setup(&idp.section(""));
    let token = idp.token("alice", "eng,ops", "10m", &[]);
    let mut c = s.redis();
    assert!(text(&c.cmd(&["GET", "k"])).starts_with("NOAUTH"));
    assert!(text(&c.cmd(&["HELLO", "3"])).starts_with("NOAUTH"));
    assert!(
        text(&c.cmd(&["AUTH", "not-a-token"])).starts_with("WRONGPASS custos: malformed token")
    );
    assert_eq!(text(&c.cmd(&["AUTH", &token])), "OK");
    assert_eq!(text(&c.cmd(&["SET", "k", "v"])), "OK");
    assert_eq!(text(&c.cmd(&["GET", "k"])), "v");
    // The store sees the appliance's user, never the token.
    assert_eq!(text(&c.cmd(&["ACL", "WHOAMI"])), "custos");

    // AUTH name token, and HELLO 3 AUTH name token (the store's own HELLO
    // reply comes back, protocol switched).
    let mut c = s.redis();
    assert_eq!(text(&c.cmd(&["AUTH", "alice", &token])), "OK");
    let mut c = s.redis();
    let hello = c.cmd(&["HELLO", "3", "AUTH", "alice", &token]);
    let proto = match &hello {
        custos_tests::resp::Reply::Map(pairs) => pairs
            .iter()
            .find(|(k, _)| k.text().as_deref() == Some("proto"))
            .map(|(_, v)| v.clone()),
        _ => None,
    };
    assert_eq!(
        proto,
        Some(custos_tests::resp::Reply::Int(3)),
        "HELLO reply: {hello:?}"
    );
    assert_eq!(text(&c.cmd(&["GET", "k"])), "v");

    // A second AUTH switches the identity; a refused one changes nothing.
    let bob = idp.token("bob", "", "10m", &[]);
    assert_eq!(text(&c.cmd(&["AUTH", "bob", &bob])), "OK");
    assert!(text(&c.cmd(&["AUTH", "garbage"])).starts_with("WRONGPASS"));
    assert_eq!(text(&c.cmd(&["GET", "k"])), "v");
    poll_until(SETTLE, "the identity switch is logged", || {
        let log = s.custos.log();
        if log.contains("identity_switch") && log.contains("to=bob") {
            Ok(())
        } else {
            Err("no identity_switch yet".into())
        }
    });
    // QUIT before authenticating is answered.
    let mut c = s.redis();
    assert_eq!(text(&c.cmd(&["QUIT"])), "OK");
}

#[test]
fn postgres_asks_for_the_token_as_the_password() {
    let idp = Idp::new();
    let s = setup(&idp.section(""));
    let token = idp.token("alice", "eng", "10m", &[]);
    let out = psql(&s.pg(&token), &["-c", "select current_user"], None);
    out.assert_success("psql with a token");
    assert_eq!(out.stdout.trim(), "custos", "the store sees its own role");

    let out = psql(&s.pg("wrong"), &["-c", "select 1"], None);
    assert!(!out.status.success());
    assert!(
        out.stderr
            .contains("custos: token refused: malformed token"),
        "{}",
        out.stderr
    );
    // A plaintext client never gets to send its token.
    let mut plain = s.pg(&token);
    plain.sslmode = "disable".into();
    let out = psql(&plain, &["-c", "select 1"], None);
    assert!(out.stderr.contains("requires TLS"), "{}", out.stderr);
}

#[test]
fn hostile_tokens_are_refused_on_both_protocols() {
    let mut idp = Idp::new();
    let stranger = idp.new_key("stranger");
    let s = setup(&idp.section(""));
    let good = idp.token("alice", "eng", "10m", &[]);
    let (kid, public) = idp::first_key(&idp.jwks());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let past = format!("exp={}", now - 3600);
    let future_nbf = format!("nbf={}", now + 3600);
    let huge = format!("pad=\"{}\"", "x".repeat(90 * 1024));
    let cases: Vec<(&str, String, &str)> = vec![
        ("alg none", idp::alg_none(&good), "algorithm not allowed"),
        (
            "HS256 with the public key",
            idp::hs256_with(&good, &kid, public.as_bytes()),
            "algorithm not allowed",
        ),
        (
            "tampered payload",
            idp::tampered(&good, |j| j.replace("\"alice\"", "\"admin\"")),
            "bad signature",
        ),
        ("truncated", good[..good.len() - 12].to_string(), ""),
        (
            "90 KB",
            idp.token("alice", "", "10m", &[&huge]),
            "token too large",
        ),
        (
            "unknown kid",
            idp.token_with(&stranger, "alice", "", "10m", &[]),
            "unknown signing key",
        ),
        (
            "expired",
            idp.token("alice", "", "10m", &[&past]),
            "token expired",
        ),
        (
            "nbf in the future",
            idp.token("alice", "", "10m", &[&future_nbf]),
            "token not yet valid",
        ),
        (
            "wrong iss",
            idp.token("alice", "", "10m", &["iss=\"https://evil.test/\""]),
            "wrong issuer",
        ),
        (
            "wrong aud",
            idp.token("alice", "", "10m", &["aud=\"someone-else\""]),
            "wrong audience",
        ),
        (
            "missing exp",
            idp.token("alice", "", "10m", &["exp=null"]),
            "",
        ),
    ];
    for (name, token, class) in &cases {
        let mut c = s.redis();
        let reply = text(&c.cmd(&["AUTH", token]));
        assert!(
            reply.starts_with("WRONGPASS custos: ") && reply.contains(class),
            "{name}: Redis answered {reply:?}"
        );
        assert!(text(&c.cmd(&["GET", "k"])).starts_with("NOAUTH"), "{name}");

        let out = psql(&s.pg(token), &["-c", "select 1"], None);
        assert!(!out.status.success(), "{name}: psql got in");
        assert!(
            out.stderr.contains("custos: token refused: ") && out.stderr.contains(class),
            "{name}: {}",
            out.stderr
        );
    }
    // Every refusal is logged with its reason, never with the token.
    let log = s.custos.log();
    assert!(log.matches("auth_fail").count() >= 2 * cases.len(), "{log}");
    for (name, token, _) in &cases {
        let sig = token.rsplit('.').next().unwrap_or_default();
        if sig.len() > 16 {
            assert!(!log.contains(sig), "{name}: the log holds the token");
        }
    }
    // The good token still works on both.
    let mut c = s.redis();
    assert_eq!(text(&c.cmd(&["AUTH", &good])), "OK");
    psql(&s.pg(&good), &["-c", "select 1"], None).assert_success("good token");
}

#[test]
fn provider_key_rotation_needs_no_restart_and_an_outage_keeps_cached_keys() {
    let mut idp = Idp::new();
    let certs = Certs::generate();
    let mut server = JwksServer::start(&idp, &certs);
    let section = format!(
        "\n[identity]\nissuer = {:?}\naudience = {:?}\njwks_url = {:?}\njwks_ca_file = {:?}\nunknown_kid_refresh_min_s = 1\n",
        idp::ISSUER,
        idp::AUDIENCE,
        server.url(),
        certs.ca().display().to_string()
    );
    let s = setup(&section);
    let first = idp.token("alice", "", "10m", &[]);
    assert_eq!(text(&s.redis().cmd(&["AUTH", &first])), "OK");

    // The provider rotates: a second key appears in its JWKS.
    let k1 = idp.key().to_path_buf();
    let k2 = idp.new_key("key-2");
    idp.publish(&[k1, k2.clone()]);
    let second = idp.token_with(&k2, "alice", "", "10m", &[]);
    assert_eq!(text(&s.redis().cmd(&["AUTH", &second])), "OK");
    psql(&s.pg(&second), &["-c", "select 1"], None).assert_success("rotated key on PostgreSQL");

    // The provider goes down: known keys keep working, a new one fails closed.
    server.stop();
    let k3 = idp.new_key("key-3");
    let third = idp.token_with(&k3, "alice", "", "10m", &[]);
    assert_eq!(text(&s.redis().cmd(&["AUTH", &first])), "OK");
    let fresh = idp.token("carol", "", "10m", &[]);
    assert_eq!(text(&s.redis().cmd(&["AUTH", &fresh])), "OK");
    let reply = text(&s.redis().cmd(&["AUTH", &third]));
    assert!(
        reply.starts_with("WRONGPASS custos: unknown signing key"),
        "{reply}"
    );
}

#[test]
fn keys_found_through_discovery() {
    let idp = Idp::new();
    let certs = Certs::generate();
    let server = JwksServer::start(&idp, &certs);
    let section = format!(
        "\n[identity]\nissuer = {:?}\naudience = {:?}\ndiscovery_url = {:?}\njwks_ca_file = {:?}\n",
        idp::ISSUER,
        idp::AUDIENCE,
        server.discovery_url(),
        certs.ca().display().to_string()
    );
    let s = setup(&section);
    let token = idp.token("alice", "", "10m", &[]);
    assert_eq!(text(&s.redis().cmd(&["AUTH", &token])), "OK");
}

#[test]
fn sessions_end_when_their_token_expires() {
    let idp = Idp::new();
    let s = setup(&idp.section("expiry_grace_s = 0"));
    let token = idp.token("alice", "", "3s", &[]);

    // Redis: a session that has been working gets a clear error once the
    // token runs out, then the connection closes.
    let mut c = s.redis();
    assert_eq!(text(&c.cmd(&["AUTH", &token])), "OK");
    assert_eq!(text(&c.cmd(&["SET", "k", "v"])), "OK");
    let last = poll_until(SETTLE, "the Redis session notices the expiry", || {
        let r = text(&c.cmd(&["GET", "k"]));
        if r == "v" { Err(r) } else { Ok(r) }
    });
    assert!(last.contains("token expired"), "{last}");
    c.wait_closed(SETTLE).expect("the session closes");

    // PostgreSQL: the session is ended with FATAL 57P01 naming the reason.
    let token = idp.token("alice", "", "3s", &[]);
    let out = psql(
        &s.pg(&token),
        &[
            "-c",
            "select 1",
            "-c",
            "select pg_sleep(6)",
            "-c",
            "select 2",
        ],
        None,
    );
    assert!(!out.status.success(), "{out:?}");
    assert!(out.stderr.contains("token expired"), "{}", out.stderr);
}
