//! The PostgreSQL proxy's two secured edges: TLS for clients (SSLRequest,
//! certificate verification, refusing plaintext unless told otherwise,
//! declining GSS encryption), and the appliance's own way into the store
//! (each `pg_hba.conf` password method, a refused credential, TLS to the
//! store with and without verifying it).

use custos_tests::pgwire::{self, PgRaw};
use custos_tests::tools::{psql, psql_ok};
use custos_tests::{
    Certs, Custos, CustosConfig, PasswordSource, PgAuth, PgConnect, PostgresOptions,
    PostgresServer, SETTLE_TIMEOUT, TargetConfig, random_hex,
};

const SSL_IN_USE: &str = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()";

fn client(custos: &Custos) -> PgConnect {
    PgConnect::new(custos.port())
}

/// A target that offers TLS to clients with `certs`; `allow_plaintext` is
/// the `allow_plaintext_auth` key (`None`: left out).
fn tls_target(pg: &PostgresServer, certs: &Certs, allow_plaintext: Option<bool>) -> TargetConfig {
    TargetConfig::postgres("pg", pg)
        .client_tls(certs)
        .allow_plaintext_auth(allow_plaintext)
}

// ---- clients and TLS ----

#[test]
fn client_tls_require_and_verify_full() {
    let certs = Certs::generate();
    let wrong = Certs::generate();
    let pg = PostgresServer::start();
    let custos = Custos::start(CustosConfig::single(tls_target(&pg, &certs, None)));

    let mut raw = PgRaw::open(custos.port());
    raw.send(&pgwire::ssl_request()).expect("SSLRequest");
    assert_eq!(
        raw.read_byte().expect("answer to SSLRequest"),
        b'S',
        "a target with tls_cert accepts TLS"
    );
    drop(raw);

    let require = client(&custos).sslmode("require");
    assert_eq!(psql_ok(&require, "SELECT current_user"), "custos");
    let info = psql(&require, &["-c", r"\conninfo"], None);
    info.assert_success("\\conninfo");
    assert!(
        info.stdout.contains("SSL connection"),
        "psql reports no TLS: {}",
        info.stdout
    );

    let verified = client(&custos)
        .server_name("localhost")
        .verify_full(&certs.ca());
    assert_eq!(psql_ok(&verified, "SELECT 'verified'"), "verified");

    // psql's default (sslmode=prefer) lands on TLS as well.
    assert_eq!(psql_ok(&client(&custos).sslmode("prefer"), "SELECT 1"), "1");

    let out = psql(
        &client(&custos)
            .server_name("localhost")
            .verify_full(&wrong.ca()),
        &["-c", "SELECT 1"],
        None,
    );
    assert!(
        !out.status.success(),
        "verify-full against another CA must fail: {out:?}"
    );
    assert!(
        out.stderr.contains("certificate verify failed"),
        "{}",
        out.stderr
    );
    let out = psql(
        &client(&custos)
            .server_name("not-the-name.invalid")
            .verify_full(&certs.ca()),
        &["-c", "SELECT 1"],
        None,
    );
    assert!(
        !out.status.success(),
        "verify-full with a name the certificate lacks must fail: {out:?}"
    );
}

/// Checks that a plaintext client of port `port` is refused with FATAL 28000
/// naming TLS, both on the raw protocol and through psql.
fn plaintext_refused(port: u16, what: &str) {
    let mut raw = PgRaw::open(port);
    let err = raw
        .startup(&[("user", "alice"), ("database", "app")], None)
        .expect_err("a plaintext startup must be refused")
        .into_server_error();
    assert_eq!(
        (err.severity(), err.code()),
        ("FATAL", "28000"),
        "{what}: {err:?}"
    );
    assert!(
        err.message().contains("TLS"),
        "{what}: the message should say TLS is required: {err:?}"
    );
    raw.wait_closed(SETTLE_TIMEOUT)
        .unwrap_or_else(|e| panic!("{what}: not closed after FATAL: {e}"));

    let out = psql(&PgConnect::new(port), &["-c", "SELECT 1"], None);
    assert!(
        !out.status.success(),
        "{what}: psql sslmode=disable must be refused"
    );
    assert!(out.stderr.contains("TLS"), "{what}: {}", out.stderr);
}

#[test]
fn plaintext_clients_are_refused_unless_allowed() {
    let certs = Certs::generate();
    let pg = PostgresServer::start();
    let custos = Custos::start(
        CustosConfig::single(tls_target(&pg, &certs, None))
            .add_target(tls_target(&pg, &certs, Some(false)).with_name("explicit")),
    );
    plaintext_refused(custos.port(), "allow_plaintext_auth left out");
    plaintext_refused(custos.port_of("explicit"), "allow_plaintext_auth = false");
    // TLS still works on both.
    for port in [custos.port(), custos.port_of("explicit")] {
        assert_eq!(
            psql_ok(&PgConnect::new(port).sslmode("require"), "SELECT 1"),
            "1"
        );
    }
}

#[test]
fn plaintext_clients_are_served_when_allowed() {
    let certs = Certs::generate();
    let pg = PostgresServer::start();
    let custos = Custos::start(CustosConfig::single(tls_target(&pg, &certs, Some(true))));
    assert_eq!(
        psql_ok(&client(&custos), "SELECT current_user"),
        "custos",
        "sslmode=disable"
    );
    let info = psql(
        &client(&custos).sslmode("require"),
        &["-c", r"\conninfo"],
        None,
    );
    info.assert_success("\\conninfo over TLS");
    assert!(info.stdout.contains("SSL connection"), "{}", info.stdout);
}

#[test]
fn without_tls_cert_ssl_request_is_declined() {
    let pg = PostgresServer::start();
    let custos = Custos::start(CustosConfig::postgres(&pg));
    let mut raw = PgRaw::open(custos.port());
    raw.send(&pgwire::ssl_request()).expect("SSLRequest");
    assert_eq!(raw.read_byte().expect("answer to SSLRequest"), b'N');
    // The same connection goes on in plaintext.
    let startup = raw
        .startup(&[("user", "alice"), ("database", "app")], None)
        .unwrap_or_else(|e| panic!("startup after a declined SSLRequest: {e}"));
    assert_eq!(startup.status, b'I');
    assert_eq!(raw.column("SELECT 'plain'"), ["plain"]);

    assert_eq!(psql_ok(&client(&custos).sslmode("prefer"), "SELECT 1"), "1");
    let out = psql(
        &client(&custos).sslmode("require"),
        &["-c", "SELECT 1"],
        None,
    );
    assert!(
        !out.status.success(),
        "sslmode=require must fail against a target without TLS: {out:?}"
    );
}

#[test]
fn gss_encryption_request_is_declined() {
    let certs = Certs::generate();
    let pg = PostgresServer::start();
    let custos = Custos::start(
        CustosConfig::postgres(&pg).add_target(tls_target(&pg, &certs, None).with_name("tls")),
    );
    // Plaintext target: 'N', then a plain startup on the same connection.
    let mut raw = PgRaw::open(custos.port());
    raw.send(&pgwire::gssenc_request()).expect("GSSENCRequest");
    assert_eq!(raw.read_byte().expect("answer to GSSENCRequest"), b'N');
    raw.startup(&[("user", "alice"), ("database", "app")], None)
        .unwrap_or_else(|e| panic!("startup after a declined GSSENCRequest: {e}"));
    assert_eq!(raw.column("SELECT 1"), ["1"]);

    // TLS target: 'N', then an SSLRequest on the same connection is 'S'
    // (what libpq does with gssencmode=prefer).
    let mut raw = PgRaw::open(custos.port_of("tls"));
    raw.send(&pgwire::gssenc_request()).expect("GSSENCRequest");
    assert_eq!(raw.read_byte().expect("answer to GSSENCRequest"), b'N');
    raw.send(&pgwire::ssl_request()).expect("SSLRequest");
    assert_eq!(raw.read_byte().expect("answer to SSLRequest"), b'S');

    for (port, sslmode) in [
        (custos.port(), "disable"),
        (custos.port_of("tls"), "require"),
    ] {
        let conn = PgConnect::new(port)
            .sslmode(sslmode)
            .param("gssencmode", "prefer");
        assert_eq!(psql_ok(&conn, "SELECT 1"), "1", "gssencmode=prefer");
    }
}

#[test]
fn postgres_target_config_needs_tls_or_allow_plaintext_auth() {
    let pg = PostgresServer::start();
    let check = |target: TargetConfig| {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = CustosConfig::single(target).write_to(dir.path());
        let out = Custos::check_config(&path, dir.path());
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        (out, text)
    };
    let certs = Certs::generate();

    for (what, target) in [
        (
            "no tls_cert, allow_plaintext_auth left out",
            TargetConfig::postgres("pg", &pg).allow_plaintext_auth(None),
        ),
        (
            "no tls_cert, allow_plaintext_auth = false",
            TargetConfig::postgres("pg", &pg).allow_plaintext_auth(Some(false)),
        ),
    ] {
        let (out, text) = check(target);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{what}: check-config must refuse:\n{text}\n{out:?}"
        );
        assert!(
            out.stderr.contains("allow_plaintext_auth"),
            "{what}: the error should name allow_plaintext_auth: {}",
            out.stderr
        );
    }

    let mut cert_only = tls_target(&pg, &certs, None);
    cert_only.tls_key = None;
    let (out, text) = check(cert_only);
    assert_eq!(
        out.status.code(),
        Some(1),
        "tls_cert without tls_key must be refused:\n{text}\n{out:?}"
    );
    assert!(out.stderr.contains("tls_key"), "{}", out.stderr);

    for (what, target) in [
        (
            "allow_plaintext_auth = true",
            TargetConfig::postgres("pg", &pg),
        ),
        ("tls_cert and tls_key", tls_target(&pg, &certs, None)),
        (
            "upstream_tls = require with a CA, upstream_database",
            TargetConfig::postgres("pg", &pg)
                .upstream_tls("require")
                .upstream_tls_ca(&certs.ca())
                .upstream_database("app"),
        ),
    ] {
        let (out, text) = check(target);
        assert!(
            out.status.success(),
            "{what}: check-config must accept:\n{text}\n{out:?}"
        );
    }
}

// ---- the appliance's own credential ----

fn upstream_auth_works(auth: PgAuth) {
    let pg = PostgresOptions::default().auth(auth).start();
    assert_eq!(
        pg.psql_direct(
            "SELECT auth_method FROM pg_hba_file_rules WHERE type = 'host' ORDER BY line_number"
        ),
        auth.hba_method(),
        "the store asks TCP clients for {auth:?}"
    );
    let mut config = CustosConfig::postgres(&pg);
    if auth == PgAuth::Trust {
        config = config.map_target(|t| t.password(PasswordSource::None));
    }
    let custos = Custos::start(config);
    assert_eq!(
        psql_ok(
            &client(&custos),
            "SELECT current_user || '|' || inet_server_port()"
        ),
        format!("custos|{}", pg.port())
    );
    assert!(
        !custos.log().contains(pg.password()),
        "the log contains the store's password"
    );
}

#[test]
fn upstream_scram_sha_256() {
    upstream_auth_works(PgAuth::ScramSha256);
}

#[test]
fn upstream_md5() {
    upstream_auth_works(PgAuth::Md5);
}

#[test]
fn upstream_cleartext_password() {
    upstream_auth_works(PgAuth::Password);
}

#[test]
fn upstream_trust_without_a_password() {
    upstream_auth_works(PgAuth::Trust);
}

#[test]
fn upstream_refusing_the_credential() {
    let wrong = format!("wrong-{}", random_hex(12));
    let servers: Vec<PostgresServer> = [PgAuth::ScramSha256, PgAuth::Md5, PgAuth::Password]
        .into_iter()
        .map(|a| PostgresOptions::default().auth(a).start())
        .collect();
    let names = ["scram", "md5", "cleartext"];
    let mut config = CustosConfig::single(
        TargetConfig::postgres(names[0], &servers[0]).password(PasswordSource::File(wrong.clone())),
    );
    for (name, pg) in names.iter().zip(&servers).skip(1) {
        config = config.add_target(
            TargetConfig::postgres(name, pg).password(PasswordSource::File(wrong.clone())),
        );
    }
    let custos = Custos::start(config);
    for (name, pg) in names.iter().zip(&servers) {
        let mut raw = PgRaw::open(custos.port_of(name));
        let err = raw
            .startup(&[("user", "alice"), ("database", "app")], None)
            .expect_err("the store refuses the appliance")
            .into_server_error();
        assert_eq!(
            (err.severity(), err.code()),
            ("FATAL", "08006"),
            "{name}: {err:?}"
        );
        assert!(
            err.message().contains("upstream unavailable"),
            "{name}: {err:?}"
        );
        let text = err.all_text();
        assert!(
            !text.contains(&wrong) && !text.contains(pg.password()),
            "{name}: the error carries a password: {err:?}"
        );
        raw.wait_closed(SETTLE_TIMEOUT)
            .unwrap_or_else(|e| panic!("{name}: not closed after FATAL: {e}"));

        let out = psql(
            &PgConnect::new(custos.port_of(name)),
            &["-c", "SELECT 1"],
            None,
        );
        assert!(!out.status.success(), "{name}: psql must fail");
        assert!(
            out.stderr.contains("upstream unavailable") && !out.stderr.contains(&wrong),
            "{name}: {}",
            out.stderr
        );
    }
    let log = custos.log();
    assert!(
        !log.contains(&wrong),
        "the log contains the (wrong) upstream password:\n{log}"
    );
    for pg in &servers {
        assert!(
            !log.contains(pg.password()),
            "the log contains the store's password"
        );
    }
}

// ---- TLS to the store ----

#[test]
fn upstream_tls_require_encrypts_without_verifying() {
    // The store's certificate is from a CA the appliance was never given:
    // "require" encrypts but does not verify.
    let certs = Certs::generate();
    let pg = PostgresOptions::default().ssl(&certs).start();
    let custos = Custos::start(CustosConfig::single(
        TargetConfig::postgres("pg", &pg).upstream_tls("require"),
    ));
    assert_eq!(psql_ok(&client(&custos), SSL_IN_USE), "t");
}

#[test]
fn upstream_tls_disable_stays_plaintext() {
    let certs = Certs::generate();
    let pg = PostgresOptions::default().ssl(&certs).start();
    let custos = Custos::start(CustosConfig::single(
        TargetConfig::postgres("pg", &pg).upstream_tls("disable"),
    ));
    assert_eq!(psql_ok(&client(&custos), SSL_IN_USE), "f");
}

#[test]
fn tls_on_both_sides_with_verification() {
    let certs = Certs::generate();
    let store_certs = Certs::generate();
    let pg = PostgresOptions::default().ssl(&store_certs).start();
    let custos = Custos::start(CustosConfig::single(
        tls_target(&pg, &certs, None)
            .upstream_tls("require")
            .upstream_tls_ca(&store_certs.ca()),
    ));
    let conn = client(&custos)
        .server_name("localhost")
        .verify_full(&certs.ca());
    assert_eq!(psql_ok(&conn, SSL_IN_USE), "t");
}

#[test]
fn upstream_tls_with_a_wrong_ca_is_refused() {
    let certs = Certs::generate();
    let other = Certs::generate();
    let pg = PostgresOptions::default().ssl(&certs).start();
    let custos = Custos::start(CustosConfig::single(
        TargetConfig::postgres("pg", &pg)
            .upstream_tls("require")
            .upstream_tls_ca(&other.ca()),
    ));
    let mut raw = PgRaw::open(custos.port());
    let err = raw
        .startup(&[("user", "alice"), ("database", "app")], None)
        .expect_err("an unverifiable store must be refused")
        .into_server_error();
    assert_eq!((err.severity(), err.code()), ("FATAL", "08006"), "{err:?}");
    assert!(err.message().contains("upstream unavailable"), "{err:?}");
    raw.wait_closed(SETTLE_TIMEOUT).expect("closed after FATAL");
}

#[test]
fn upstream_tls_require_against_a_store_without_tls_is_refused() {
    // "require" means require: no silent fallback to plaintext.
    let pg = PostgresServer::start();
    let custos = Custos::start(CustosConfig::single(
        TargetConfig::postgres("pg", &pg).upstream_tls("require"),
    ));
    let mut raw = PgRaw::open(custos.port());
    let err = raw
        .startup(&[("user", "alice"), ("database", "app")], None)
        .expect_err("a store without TLS must be refused")
        .into_server_error();
    assert_eq!((err.severity(), err.code()), ("FATAL", "08006"), "{err:?}");
    assert!(err.message().contains("upstream unavailable"), "{err:?}");
}
