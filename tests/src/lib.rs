//! Harness for the custos integration tests.
//!
//! Every scenario runs against real processes: a `redis-server` or a
//! PostgreSQL server started on a free loopback port in a temporary folder,
//! the `custos` binary configured to front it, and real clients
//! (`redis-cli`, `redis-benchmark`, the `redis` crate, `psql`, `pgbench`,
//! psycopg, or a raw socket when a test needs to send bytes no driver would).
//! Nothing here talks to the machine's standard servers, and every process the
//! harness starts is killed when its guard is dropped, so a failing test
//! leaves nothing behind.

#![deny(missing_docs)]

pub mod certs;
pub mod custos;
pub mod idp;
pub mod metrics;
pub mod net;
pub mod pgwire;
pub mod postgres_server;
pub mod process;
pub mod python;
pub mod redis_server;
pub mod relay;
pub mod resp;
pub mod tools;

pub use certs::Certs;
pub use custos::{Custos, CustosConfig, PasswordSource, TargetConfig};
pub use metrics::Metrics;
pub use net::{RawConn, free_port, http_get};
pub use pgwire::PgRaw;
pub use postgres_server::{PgAuth, PostgresOptions, PostgresServer};
pub use process::{ChildGuard, ToolOutput, poll_until, wait_until};
pub use redis_server::{RedisOptions, RedisServer};
pub use relay::{Faults, Relay};
pub use resp::Reply;
pub use tools::PgConnect;

use std::time::Duration;

/// How long a test waits for something that should happen "soon" (a server
/// answering, a counter settling). Generous: the tests run on loaded 2-core
/// machines, and a timeout here only turns a hang into a readable failure.
pub const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Random lowercase hex string of `bytes * 2` characters, for passwords and
/// unique key names.
pub fn random_hex(bytes: usize) -> String {
    use std::io::Read;
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .expect("read /dev/urandom");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// A fresh `redis-server` and a `custos` fronting it with the default test
/// configuration, adjusted by `adjust`.
pub fn redis_behind_custos(
    adjust: impl FnOnce(CustosConfig) -> CustosConfig,
) -> (RedisServer, Custos) {
    let redis = RedisServer::start();
    let custos = Custos::start(adjust(CustosConfig::redis(&redis)));
    (redis, custos)
}

/// A fresh PostgreSQL server (SCRAM, no TLS) and a `custos` fronting it with
/// the default PostgreSQL test configuration (target `pg`), adjusted by
/// `adjust`.
pub fn postgres_behind_custos(
    adjust: impl FnOnce(CustosConfig) -> CustosConfig,
) -> (PostgresServer, Custos) {
    let pg = PostgresServer::start();
    let custos = Custos::start(adjust(CustosConfig::postgres(&pg)));
    (pg, custos)
}
