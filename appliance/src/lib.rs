//! custos: an identity-aware data-access appliance for Redis and PostgreSQL.
//!
//! Clients keep their drivers and change only the address. The appliance
//! terminates each connection on one data-plane shard (a monoio runtime on a
//! pinned core), opens the store with its own credential, and proxies the
//! protocol with zero-copy parsing. A single tokio thread runs the control
//! plane (admin API, metrics, signals). See `DESIGN.md` for the whole shape.
#![deny(missing_docs)]

pub mod admin;
pub mod audit;
pub mod config;
pub mod identity;
pub mod mask;
pub mod metrics;
pub mod policy;
pub mod proxy;
pub mod runtime;
pub mod secret;
pub mod tls;
