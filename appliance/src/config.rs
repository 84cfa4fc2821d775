//! The appliance's configuration: one TOML file, read at start.
//!
//! This module owns the schema (what keys exist, their defaults and limits),
//! loading secrets from the files or environment variables the file names,
//! and the error messages: every refusal names the key and the line, so an
//! operator can fix the file without reading code. Unknown keys are errors:
//! a misspelt `upstream_pasword_file` must not silently leave a target
//! without credentials.

use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use toml::Spanned;

use crate::audit::config::{AuditConfig, RawAudit};
use crate::identity::config::{IdentityConfig, RawIdentity};
use crate::policy::config::RawRule;
use crate::policy::{Action, Policy};
use crate::secret::Secret;
use crate::tls::UpstreamTls;

/// Per-direction read buffer a connection starts with.
pub const BUFFER_BYTES_INITIAL: usize = 4 * 1024;
/// Smallest accepted `buffer_bytes_max`: a command head or a reply header
/// line must fit in one buffer.
pub const BUFFER_BYTES_MAX_FLOOR: usize = 16 * 1024;
/// Largest accepted `buffer_bytes_max`.
pub const BUFFER_BYTES_MAX_CEILING: usize = 64 * 1024 * 1024;
/// Largest accepted `pending_replies_max`.
pub const PENDING_REPLIES_CEILING: usize = 1 << 20;
/// Largest accepted `workers`.
pub const WORKERS_MAX: usize = 1024;

/// A configuration error, already formatted for the operator: it names the
/// file, the key and the line.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

impl ConfigError {
    pub(crate) fn at(
        file: &Path,
        src: &str,
        span: Range<usize>,
        key: &str,
        msg: impl fmt::Display,
    ) -> Self {
        let line = line_of(src, span.start);
        ConfigError(format!("{}: line {line}: `{key}`: {msg}", file.display()))
    }

    pub(crate) fn plain(file: &Path, msg: impl fmt::Display) -> Self {
        ConfigError(format!("{}: {msg}", file.display()))
    }
}

/// 1-based line number of byte offset `at` in `src`.
pub(crate) fn line_of(src: &str, at: usize) -> usize {
    src.as_bytes()[..at.min(src.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

// ---------------------------------------------------------------------------
// The file as written.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    target: Vec<Spanned<RawTarget>>,
    // Sections of the design that later features fill in. They are named
    // here so that an operator who writes them gets a precise refusal
    // instead of a silently ignored policy.
    identity: Option<Spanned<RawIdentity>>,
    audit: Option<Spanned<RawAudit>>,
    #[serde(default)]
    rule: Vec<Spanned<RawRule>>,
    #[serde(default)]
    mask: Vec<Spanned<crate::mask::config::RawMask>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawServer {
    workers: Option<Spanned<Workers>>,
    admin_listen: Option<Spanned<String>>,
    shutdown_grace_ms: Option<u64>,
    log_format: Option<LogFormat>,
    connections_max: Option<Spanned<usize>>,
    io_driver: Option<IoDriver>,
    pin_cores: Option<bool>,
}

/// Which kernel interface the shards use for I/O.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum IoDriver {
    /// io_uring where the kernel (and sandbox) allow it, else epoll.
    #[default]
    Auto,
    /// io_uring or refuse to start.
    IoUring,
    /// epoll, even where io_uring is available.
    Epoll,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(untagged)]
enum Workers {
    Auto(AutoWord),
    Count(usize),
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum AutoWord {
    Auto,
}

/// How log lines are written to standard error.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    name: Spanned<String>,
    protocol: Spanned<Protocol>,
    listen: Spanned<String>,
    upstream: Spanned<String>,
    upstream_user: Option<String>,
    upstream_password_file: Option<Spanned<PathBuf>>,
    upstream_password_env: Option<Spanned<String>>,
    upstream_database: Option<String>,
    auth: Option<Spanned<AuthMode>>,
    tls_cert: Option<Spanned<PathBuf>>,
    tls_key: Option<Spanned<PathBuf>>,
    upstream_tls: Option<Spanned<String>>,
    upstream_tls_ca: Option<Spanned<PathBuf>>,
    allow_plaintext_auth: Option<bool>,
    buffer_bytes_max: Option<Spanned<usize>>,
    pending_replies_max: Option<Spanned<usize>>,
    connect_timeout_ms: Option<Spanned<u64>>,
    upstream_sharing: Option<bool>,
    default_action: Option<Spanned<String>>,
}

/// The wire protocol a target speaks.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// RESP2/RESP3.
    Redis,
    /// The PostgreSQL frontend/backend protocol.
    Postgres,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Redis => "redis",
            Protocol::Postgres => "postgres",
        })
    }
}

/// How clients of a target authenticate.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Development only: any client is let through, as an anonymous identity.
    None,
    /// An OIDC token as the password.
    Token,
}

// ---------------------------------------------------------------------------
// The validated configuration the appliance runs with.

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Process-wide settings.
    pub server: Server,
    /// The stores the appliance fronts, in file order.
    pub targets: Vec<Target>,
    /// How client tokens are verified (`[identity]`); required by targets
    /// with `auth = "token"`.
    pub identity: Option<IdentityConfig>,
    /// The `[[mask]]` rules, compiled.
    pub masks: std::sync::Arc<crate::mask::Masks>,
    /// The audit trail (`[audit]`); `None` keeps none.
    pub audit: Option<AuditConfig>,
    /// The `[[rule]]`s and each target's default action.
    pub policy: Arc<Policy>,
    /// The file the configuration was read from (for reload).
    pub source: PathBuf,
}

/// Process-wide settings (`[server]`).
#[derive(Debug, Clone)]
pub struct Server {
    /// Number of data-plane shards.
    pub workers: usize,
    /// Admin API and `/metrics` address; `None` disables it.
    pub admin_listen: Option<SocketAddr>,
    /// How long in-flight commands may run after SIGTERM.
    pub shutdown_grace_ms: u64,
    /// Log line format.
    pub log_format: LogFormat,
    /// Client connections per shard beyond which new ones are refused.
    pub connections_max: usize,
    /// The I/O interface of the shards.
    pub io_driver: IoDriver,
    /// Whether each shard's thread is pinned to its own core. Right for an
    /// appliance that owns its machine; a machine shared with the stores
    /// and clients may do better letting the scheduler move shards.
    pub pin_cores: bool,
}

/// One fronted store (`[[target]]`).
#[derive(Debug, Clone)]
pub struct Target {
    /// Name used in metrics, logs and policy.
    pub name: String,
    /// Wire protocol.
    pub protocol: Protocol,
    /// Where clients connect.
    pub listen: SocketAddr,
    /// The store, `host:port`.
    pub upstream: String,
    /// The appliance's own user at the store.
    pub upstream_user: Option<String>,
    /// The appliance's own password at the store; never shown to clients.
    pub upstream_password: Option<Secret>,
    /// How clients authenticate.
    pub auth: AuthMode,
    /// Bound of each per-direction buffer of a connection.
    pub buffer_bytes_max: usize,
    /// Commands in flight per connection before reading from the client pauses.
    pub pending_replies_max: usize,
    /// Upstream connect (and authenticate) deadline.
    pub connect_timeout_ms: u64,
    /// Sessions that send one simple command at a time share a store
    /// connection per shard until they do anything else.
    pub upstream_sharing: bool,
    /// PostgreSQL: the database every session uses; `None` forwards the
    /// client's.
    pub upstream_database: Option<String>,
    /// The certificate clients see; `None` when the target offers no TLS.
    pub client_tls: Option<Arc<rustls::ServerConfig>>,
    /// Whether clients may authenticate without TLS.
    pub allow_plaintext_auth: bool,
    /// TLS towards the store; `None` for plain TCP.
    pub upstream_tls: Option<UpstreamTls>,
    /// What policy does with a request no rule matches.
    pub default_action: Action,
}

impl Default for Server {
    fn default() -> Self {
        Server {
            workers: default_workers(),
            admin_listen: Some(SocketAddr::from(([127, 0, 0, 1], 9090))),
            shutdown_grace_ms: 5_000,
            log_format: LogFormat::Text,
            connections_max: 100_000,
            io_driver: IoDriver::Auto,
            pin_cores: true,
        }
    }
}

fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

impl Config {
    /// Reads, parses and validates `path`, including the secrets it names.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let src = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::plain(path, format_args!("cannot read: {e}")))?;
        Config::parse(path, &src)
    }

    /// Parses and validates `src`, the text of `path`.
    pub fn parse(path: &Path, src: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(src)
            .map_err(|e| ConfigError::plain(path, format_args!("{}", e.to_string().trim_end())))?;
        let base = path.parent().unwrap_or(Path::new("."));

        let mut server = Server::default();
        if let Some(w) = &raw.server.workers {
            server.workers = match *w.get_ref() {
                Workers::Auto(AutoWord::Auto) => default_workers(),
                Workers::Count(n) if (1..=WORKERS_MAX).contains(&n) => n,
                Workers::Count(n) => {
                    return Err(ConfigError::at(
                        path,
                        src,
                        w.span(),
                        "server.workers",
                        format_args!("{n} is out of range 1..={WORKERS_MAX} (or \"auto\")"),
                    ));
                }
            };
        }
        if let Some(a) = &raw.server.admin_listen {
            server.admin_listen = if a.get_ref().is_empty() {
                None
            } else {
                Some(parse_addr(path, src, a, "server.admin_listen")?)
            };
        }
        if let Some(ms) = raw.server.shutdown_grace_ms {
            server.shutdown_grace_ms = ms;
        }
        if let Some(p) = raw.server.pin_cores {
            server.pin_cores = p;
        }
        if let Some(d) = raw.server.io_driver {
            server.io_driver = d;
        }
        if let Some(f) = raw.server.log_format {
            server.log_format = f;
        }
        if let Some(c) = &raw.server.connections_max {
            if *c.get_ref() == 0 {
                return Err(ConfigError::at(
                    path,
                    src,
                    c.span(),
                    "server.connections_max",
                    "must be at least 1",
                ));
            }
            server.connections_max = *c.get_ref();
        }

        let identity = match &raw.identity {
            Some(i) => Some(crate::identity::config::validate(
                path,
                src,
                base,
                i.get_ref(),
            )?),
            None => None,
        };
        let audit = match &raw.audit {
            Some(a) => Some(crate::audit::config::validate(
                path,
                src,
                base,
                a.get_ref(),
            )?),
            None => None,
        };
        let mut targets: Vec<Target> = Vec::with_capacity(raw.target.len());
        for t in &raw.target {
            let span = t.span();
            let t = t.get_ref();
            let target = validate_target(path, src, base, span, t, identity.is_some())?;
            if let Some(prev) = targets.iter().find(|p| p.name == target.name) {
                return Err(ConfigError::at(
                    path,
                    src,
                    t.name.span(),
                    "target.name",
                    format_args!("duplicate target name {:?}", prev.name),
                ));
            }
            if let Some(prev) = targets.iter().find(|p| p.listen == target.listen) {
                return Err(ConfigError::at(
                    path,
                    src,
                    t.listen.span(),
                    "target.listen",
                    format_args!(
                        "{} is already the listen address of target {:?}",
                        target.listen, prev.name
                    ),
                ));
            }
            targets.push(target);
        }
        if targets.is_empty() {
            return Err(ConfigError::plain(path, "no [[target]]: nothing to front"));
        }
        let masks = crate::mask::config::validate(path, src, base, &raw.mask, &targets)?;
        let policy = crate::policy::config::validate(path, src, &raw.rule, &targets)?;
        Ok(Config {
            server,
            targets,
            identity,
            masks: std::sync::Arc::new(crate::mask::Masks::new(masks)),
            audit,
            policy: Arc::new(policy),
            source: path.to_path_buf(),
        })
    }
}

fn validate_target(
    path: &Path,
    src: &str,
    base: &Path,
    span: Range<usize>,
    t: &RawTarget,
    has_identity: bool,
) -> Result<Target, ConfigError> {
    let name = t.name.get_ref().clone();
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(ConfigError::at(
            path,
            src,
            t.name.span(),
            "target.name",
            "must be non-empty and use only letters, digits, '-' and '_'",
        ));
    }
    let protocol = *t.protocol.get_ref();
    let listen = parse_addr(path, src, &t.listen, "target.listen")?;
    let upstream = t.upstream.get_ref().clone();
    if !valid_host_port(&upstream) {
        return Err(ConfigError::at(
            path,
            src,
            t.upstream.span(),
            "target.upstream",
            format_args!("{upstream:?} is not host:port"),
        ));
    }
    let tls = match protocol {
        Protocol::Redis => {
            redis_only(path, src, span.clone(), t)?;
            TargetTls::default()
        }
        Protocol::Postgres => postgres_tls(path, src, base, span.clone(), t)?,
    };

    let auth = match &t.auth {
        None => {
            return Err(ConfigError::at(
                path,
                src,
                span,
                "target.auth",
                "missing: say auth = \"token\" (OIDC tokens as the password) or auth = \"none\" (development mode, no client authentication)",
            ));
        }
        Some(a) if *a.get_ref() == AuthMode::Token && !has_identity => {
            return Err(ConfigError::at(
                path,
                src,
                a.span(),
                "target.auth",
                "\"token\" needs an [identity] section saying which tokens to accept",
            ));
        }
        Some(a) => *a.get_ref(),
    };

    let upstream_password = match (&t.upstream_password_file, &t.upstream_password_env) {
        (Some(f), Some(_)) => {
            return Err(ConfigError::at(
                path,
                src,
                f.span(),
                "target.upstream_password_file",
                "set either upstream_password_file or upstream_password_env, not both",
            ));
        }
        (Some(f), None) => {
            let file = base.join(f.get_ref());
            Some(Secret::from_file(&file).map_err(|e| {
                ConfigError::at(
                    path,
                    src,
                    f.span(),
                    "target.upstream_password_file",
                    format_args!("{}: {e}", file.display()),
                )
            })?)
        }
        (None, Some(v)) => Some(Secret::from_env(v.get_ref()).map_err(|e| {
            ConfigError::at(path, src, v.span(), "target.upstream_password_env", e)
        })?),
        (None, None) => None,
    };

    let buffer_bytes_max = match &t.buffer_bytes_max {
        None => 64 * 1024,
        Some(b) => {
            let v = *b.get_ref();
            if !(BUFFER_BYTES_MAX_FLOOR..=BUFFER_BYTES_MAX_CEILING).contains(&v) {
                return Err(ConfigError::at(
                    path,
                    src,
                    b.span(),
                    "target.buffer_bytes_max",
                    format_args!(
                        "{v} is out of range {BUFFER_BYTES_MAX_FLOOR}..={BUFFER_BYTES_MAX_CEILING}"
                    ),
                ));
            }
            v
        }
    };
    let pending_replies_max = match &t.pending_replies_max {
        None => 1024,
        Some(p) => {
            let v = *p.get_ref();
            if !(1..=PENDING_REPLIES_CEILING).contains(&v) {
                return Err(ConfigError::at(
                    path,
                    src,
                    p.span(),
                    "target.pending_replies_max",
                    format_args!("{v} is out of range 1..={PENDING_REPLIES_CEILING}"),
                ));
            }
            v
        }
    };
    let connect_timeout_ms = match &t.connect_timeout_ms {
        None => 3_000,
        Some(c) if *c.get_ref() == 0 => {
            return Err(ConfigError::at(
                path,
                src,
                c.span(),
                "target.connect_timeout_ms",
                "must be at least 1",
            ));
        }
        Some(c) => *c.get_ref(),
    };

    Ok(Target {
        name,
        protocol,
        listen,
        upstream,
        upstream_user: t.upstream_user.clone(),
        upstream_password,
        auth,
        buffer_bytes_max,
        pending_replies_max,
        connect_timeout_ms,
        upstream_sharing: t.upstream_sharing.unwrap_or(true),
        upstream_database: t.upstream_database.clone(),
        client_tls: tls.client,
        allow_plaintext_auth: t.allow_plaintext_auth.unwrap_or(false),
        upstream_tls: tls.upstream,
        default_action: crate::policy::config::default_action(
            path,
            src,
            t.default_action.as_ref(),
        )?,
    })
}

/// The TLS settings of a target.
#[derive(Default)]
struct TargetTls {
    client: Option<Arc<rustls::ServerConfig>>,
    upstream: Option<UpstreamTls>,
}

/// Refuses the keys a Redis target does not take (yet).
fn redis_only(
    path: &Path,
    src: &str,
    span: Range<usize>,
    t: &RawTarget,
) -> Result<(), ConfigError> {
    for (key, set) in [
        ("target.tls_cert", t.tls_cert.as_ref().map(|s| s.span())),
        ("target.tls_key", t.tls_key.as_ref().map(|s| s.span())),
        (
            "target.upstream_tls",
            t.upstream_tls.as_ref().map(|s| s.span()),
        ),
        (
            "target.upstream_tls_ca",
            t.upstream_tls_ca.as_ref().map(|s| s.span()),
        ),
    ] {
        if let Some(sp) = set {
            return Err(ConfigError::at(
                path,
                src,
                sp,
                key,
                "TLS for Redis targets is not supported by this build yet",
            ));
        }
    }
    if t.upstream_database.is_some() {
        return Err(ConfigError::at(
            path,
            src,
            span,
            "target.upstream_database",
            "only meaningful for protocol = \"postgres\"",
        ));
    }
    Ok(())
}

/// Checks a PostgreSQL target's user and TLS keys and loads its
/// certificates.
fn postgres_tls(
    path: &Path,
    src: &str,
    base: &Path,
    span: Range<usize>,
    t: &RawTarget,
) -> Result<TargetTls, ConfigError> {
    if t.upstream_user.is_none() {
        return Err(ConfigError::at(
            path,
            src,
            span,
            "target.upstream_user",
            "missing: a PostgreSQL target logs in to the store as its own user",
        ));
    }
    let client = match (&t.tls_cert, &t.tls_key) {
        (Some(cert), Some(key)) => Some(
            crate::tls::server_config(
                &base.join(cert.get_ref()),
                &base.join(key.get_ref()),
                &[crate::tls::ALPN_POSTGRESQL],
            )
            .map_err(|e| ConfigError::at(path, src, cert.span(), "target.tls_cert", e))?,
        ),
        (Some(cert), None) => {
            return Err(ConfigError::at(
                path,
                src,
                cert.span(),
                "target.tls_key",
                "missing: tls_cert needs its tls_key",
            ));
        }
        (None, Some(key)) => {
            return Err(ConfigError::at(
                path,
                src,
                key.span(),
                "target.tls_cert",
                "missing: tls_key needs its tls_cert",
            ));
        }
        (None, None) => None,
    };
    if client.is_none() && t.allow_plaintext_auth != Some(true) {
        return Err(ConfigError::at(
            path,
            src,
            span,
            "target.tls_cert",
            "missing: clients send their credentials over TLS; set tls_cert and tls_key, \
             or allow_plaintext_auth = true for a trusted network",
        ));
    }
    let require = match &t.upstream_tls {
        None => false,
        Some(v) => match v.get_ref().as_str() {
            "disable" => false,
            "require" => true,
            other => {
                return Err(ConfigError::at(
                    path,
                    src,
                    v.span(),
                    "target.upstream_tls",
                    format_args!("{other:?}: expected \"disable\" or \"require\""),
                ));
            }
        },
    };
    let upstream = match (&t.upstream_tls_ca, require) {
        (Some(ca), false) => {
            return Err(ConfigError::at(
                path,
                src,
                ca.span(),
                "target.upstream_tls_ca",
                "needs upstream_tls = \"require\"",
            ));
        }
        (ca, true) => {
            let ca_path = ca.as_ref().map(|c| base.join(c.get_ref()));
            let tls = crate::tls::upstream_config(ca_path.as_deref()).map_err(|e| {
                let sp = ca.as_ref().map_or(span.clone(), |c| c.span());
                ConfigError::at(path, src, sp, "target.upstream_tls_ca", e)
            })?;
            crate::tls::server_name(t.upstream.get_ref())
                .map_err(|e| ConfigError::at(path, src, t.upstream.span(), "target.upstream", e))?;
            Some(tls)
        }
        (None, false) => None,
    };
    Ok(TargetTls { client, upstream })
}

fn parse_addr(
    path: &Path,
    src: &str,
    v: &Spanned<String>,
    key: &str,
) -> Result<SocketAddr, ConfigError> {
    v.get_ref().parse().map_err(|_| {
        ConfigError::at(
            path,
            src,
            v.span(),
            key,
            format_args!(
                "{:?} is not an IP address with a port, like 127.0.0.1:6380",
                v.get_ref()
            ),
        )
    })
}

fn valid_host_port(s: &str) -> bool {
    match s.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(src: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("custos.toml"), src)
    }

    const MINIMAL: &str = r#"
[server]
workers = 2
admin_listen = "127.0.0.1:9090"

[[target]]
name = "cache"
protocol = "redis"
listen = "127.0.0.1:6380"
upstream = "127.0.0.1:6379"
auth = "none"
"#;

    #[test]
    fn minimal_config_loads_with_defaults() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.server.workers, 2);
        assert_eq!(c.targets.len(), 1);
        let t = &c.targets[0];
        assert_eq!(t.name, "cache");
        assert_eq!(t.buffer_bytes_max, 64 * 1024);
        assert_eq!(t.pending_replies_max, 1024);
        assert!(t.upstream_password.is_none());
    }

    const POSTGRES: &str = r#"
[[target]]
name = "memory"
protocol = "postgres"
listen = "127.0.0.1:5433"
upstream = "127.0.0.1:5432"
upstream_user = "app"
auth = "none"
"#;

    #[test]
    fn postgres_target_needs_tls_or_an_explicit_plaintext_opt_in() {
        let e = parse(POSTGRES).unwrap_err().to_string();
        assert!(e.contains("`target.tls_cert`: missing"), "{e}");
        let c = parse(&format!("{POSTGRES}allow_plaintext_auth = true\n")).unwrap();
        let t = &c.targets[0];
        assert_eq!(t.protocol, Protocol::Postgres);
        assert!(t.allow_plaintext_auth && t.client_tls.is_none() && t.upstream_tls.is_none());
    }

    #[test]
    fn postgres_tls_keys_are_checked() {
        let plain = format!("{POSTGRES}allow_plaintext_auth = true\n");
        for (extra, want) in [
            ("upstream_tls = \"maybe\"", "line 10: `target.upstream_tls`"),
            (
                "upstream_tls_ca = \"ca.pem\"",
                "line 10: `target.upstream_tls_ca`: needs",
            ),
            (
                "tls_cert = \"cert.pem\"",
                "line 10: `target.tls_key`: missing",
            ),
            (
                "tls_cert = \"/nonexistent/cert.pem\"\ntls_key = \"/nonexistent/key.pem\"",
                "line 10: `target.tls_cert`",
            ),
        ] {
            let e = parse(&format!("{plain}{extra}\n")).unwrap_err().to_string();
            assert!(e.contains(want), "{extra}: {e}");
        }
        let c = parse(&format!("{plain}upstream_tls = \"require\"\n")).unwrap();
        assert!(
            c.targets[0]
                .upstream_tls
                .as_ref()
                .is_some_and(|u| !u.verified)
        );
    }

    #[test]
    fn workers_auto_is_the_core_count() {
        let c = parse(&MINIMAL.replace("workers = 2", "workers = \"auto\"")).unwrap();
        assert_eq!(c.server.workers, default_workers());
    }

    /// Each bad file is refused with the key and the line it is on.
    #[test]
    fn errors_name_key_and_line() {
        let cases: &[(&str, &str, &str)] = &[
            (
                r#"workers = 2"#,
                r#"workers = 0"#,
                "line 3: `server.workers`",
            ),
            (r#"workers = 2"#, r#"workers = "many""#, "line 3"),
            (
                r#"auth = "none""#,
                "auth = \"none\"\nupstream_pasword_file = \"x\"",
                "upstream_pasword_file",
            ),
            (
                r#"listen = "127.0.0.1:6380""#,
                r#"listen = "localhost""#,
                "line 9: `target.listen`",
            ),
            (
                r#"upstream = "127.0.0.1:6379""#,
                r#"upstream = "nowhere""#,
                "line 10: `target.upstream`",
            ),
            (
                r#"protocol = "redis""#,
                r#"protocol = "postgres""#,
                "`target.upstream_user`: missing",
            ),
            (
                r#"protocol = "redis""#,
                r#"protocol = "memcached""#,
                "line 8",
            ),
            (
                r#"auth = "none""#,
                "auth = \"none\"\nbuffer_bytes_max = 10",
                "line 12: `target.buffer_bytes_max`",
            ),
            (
                r#"auth = "none""#,
                "auth = \"none\"\npending_replies_max = 0",
                "line 12: `target.pending_replies_max`",
            ),
            (
                r#"auth = "none""#,
                "auth = \"none\"\nupstream_password_file = \"/nonexistent/pw\"",
                "line 12",
            ),
            (
                r#"auth = "none""#,
                "auth = \"none\"\nupstream_password_env = \"CUSTOS_TEST_UNSET_VAR\"",
                "line 12",
            ),
            (
                r#"auth = "none""#,
                r#"auth = "token""#,
                "line 11: `target.auth`",
            ),
            (
                r#"name = "cache""#,
                r#"name = "ca che""#,
                "line 7: `target.name`",
            ),
        ];
        for (from, to, want) in cases {
            let src = MINIMAL.replace(from, to);
            let err = parse(&src).expect_err(to).to_string();
            assert!(err.contains(want), "{to}: {err:?} should contain {want:?}");
            assert!(err.starts_with("custos.toml"), "{err}");
        }
    }

    #[test]
    fn unknown_key_is_refused_with_its_line() {
        let err = parse(&format!("{MINIMAL}colour = \"blue\"\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("colour"), "{err}");
        assert!(err.contains("line 12"), "{err}");
    }

    #[test]
    fn mask_sections_are_checked_with_key_and_line() {
        let ok = format!(
            "{MINIMAL}\n[[mask]]\ntarget = \"cache\"\ndetectors = [\"email\"]\nkeys = [\"s:*\"]\n"
        );
        let c = parse(&ok).unwrap();
        assert!(c.masks.apply_to("cache") && !c.masks.is_empty());
        for (mask, key, needle) in [
            (
                "detectors = [\"emails\"]",
                "mask.detectors",
                "unknown detector",
            ),
            (
                "detectors = [\"email\"]\nstyle = \"hash\"",
                "mask.style",
                "hash_key_file",
            ),
            (
                "target = \"cache\"\ncolumns = [\"t.c\"]",
                "mask.columns",
                "redis",
            ),
            (
                "target = \"nope\"\ndetectors = [\"email\"]",
                "mask.target",
                "no [[target]]",
            ),
            (
                "target = \"cache\"\nfields = [\"f\"]\nstyle = \"null\"",
                "mask.style",
                "PostgreSQL",
            ),
            (
                "detectors = [\"email\"]\nstyle = \"blur\"",
                "mask.style",
                "not one of",
            ),
            ("patterns = [\"(\"]", "mask.patterns", "does not compile"),
            ("except_groups = [\"x\"]", "mask.detectors", "masks nothing"),
        ] {
            let src = format!("{MINIMAL}\n[[mask]]\n{mask}\n");
            let err = parse(&src).unwrap_err().to_string();
            assert!(
                err.contains(&format!("`{key}`")) && err.contains(needle) && err.contains("line 1"),
                "{mask}: {err}"
            );
        }
    }

    #[test]
    fn audit_section_is_read_and_checked() {
        let src = format!(
            "{MINIMAL}\n[audit]\ndir = \"audit\"\nsigning_key = \"audit.key\"\ndurability = \"sync\"\n\
             on_failure = \"fail_open\"\nrecord_reply_bytes = 0\nappliance_id = \"gw-1\"\n"
        );
        let c = Config::parse(Path::new("/etc/custos/custos.toml"), &src).unwrap();
        let a = c.audit.unwrap();
        assert_eq!(a.dir, Path::new("/etc/custos/audit"));
        assert_eq!(a.signing_key, Path::new("/etc/custos/audit.key"));
        assert_eq!(a.durability, crate::audit::Durability::Sync);
        assert_eq!(a.on_failure, crate::audit::OnFailure::FailOpen);
        assert_eq!((a.record_reply_bytes, a.appliance_id.as_str()), (0, "gw-1"));
        assert_eq!(a.retention_days, 400);
        for (extra, want) in [
            ("ring_bytes = 10", "line 16: `audit.ring_bytes`"),
            (
                "segment_bytes_max = 1",
                "line 16: `audit.segment_bytes_max`",
            ),
            (
                "record_reply_bytes = 1000000",
                "line 16: `audit.record_reply_bytes`",
            ),
            ("durability = \"maybe\"", "durability"),
            ("colour = 1", "colour"),
        ] {
            let src = format!("{MINIMAL}\n[audit]\ndir = \"a\"\nsigning_key = \"k\"\n{extra}\n");
            let e = parse(&src).unwrap_err().to_string();
            assert!(e.contains(want), "{extra}: {e}");
        }
        let e = parse(&format!("{MINIMAL}\n[audit]\ndir = \"a\"\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("signing_key"), "{e}");
    }

    #[test]
    fn duplicate_names_and_listen_addresses_are_refused() {
        let two = format!(
            "{MINIMAL}{}",
            &MINIMAL[MINIMAL.find("[[target]]").unwrap()..]
        );
        let err = parse(&two).unwrap_err().to_string();
        assert!(err.contains("duplicate target name"), "{err}");
        let two = two.replacen("name = \"cache\"", "name = \"other\"", 1);
        let err = parse(&two).unwrap_err().to_string();
        assert!(err.contains("already the listen address"), "{err}");
    }

    #[test]
    fn password_file_is_read_relative_to_the_config_and_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pw"), "s3cret\n").unwrap();
        let src = MINIMAL.replace(
            "auth = \"none\"",
            "auth = \"none\"\nupstream_password_file = \"pw\"",
        );
        let c = Config::parse(&dir.path().join("custos.toml"), &src).unwrap();
        assert_eq!(
            c.targets[0].upstream_password.as_ref().unwrap().expose(),
            b"s3cret"
        );
        assert!(
            !format!("{:?}", c).contains("s3cret"),
            "Debug must not show secrets"
        );
    }

    #[test]
    fn no_target_is_an_error() {
        let err = parse("[server]\nworkers = 1\n").unwrap_err().to_string();
        assert!(err.contains("no [[target]]"), "{err}");
    }
}
