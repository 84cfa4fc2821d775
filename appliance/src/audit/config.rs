//! The `[audit]` section: the file as written ([`RawAudit`]) and the checked
//! settings the drain and the shards run with ([`AuditConfig`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::config::ConfigError;

/// Default `record_reply_bytes`.
pub const RECORD_REPLY_BYTES_DEFAULT: usize = 4096;
/// Largest accepted `record_reply_bytes`.
pub const RECORD_REPLY_BYTES_MAX: usize = 64 * 1024;
/// Default `segment_bytes_max`.
pub const SEGMENT_BYTES_MAX_DEFAULT: u64 = 64 * 1024 * 1024;
/// Accepted range of `segment_bytes_max`.
pub const SEGMENT_BYTES_MAX_RANGE: std::ops::RangeInclusive<u64> = 64 * 1024..=4 << 30;
/// Default `segment_age_s`.
pub const SEGMENT_AGE_S_DEFAULT: u64 = 3600;
/// Default `checkpoint_interval_ms`.
pub const CHECKPOINT_INTERVAL_MS_DEFAULT: u64 = 5000;
/// Default `flush_interval_ms`: the group-commit window of `async`.
pub const FLUSH_INTERVAL_MS_DEFAULT: u64 = 20;
/// Default `ring_bytes` per shard.
pub const RING_BYTES_DEFAULT: usize = 4 * 1024 * 1024;
/// Accepted range of `ring_bytes`: a ring must take a few of the largest
/// records, and more than this only hides a drain that cannot keep up.
pub const RING_BYTES_RANGE: std::ops::RangeInclusive<usize> = 256 * 1024..=1 << 30;
/// Default `retention_days`.
pub const RETENTION_DAYS_DEFAULT: u64 = 400;

/// When a reply may be released to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// Records are fsynced in groups every `flush_interval_ms`.
    Async,
    /// A reply waits until the records of its command are on disk.
    Sync,
}

/// What the appliance does when the trail cannot be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// New commands are refused until the trail is writable again.
    FailClosed,
    /// Commands go on; what could not be recorded is counted.
    FailOpen,
}

/// `[audit]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAudit {
    dir: Spanned<PathBuf>,
    durability: Option<Durability>,
    retention_days: Option<Spanned<u64>>,
    signing_key: Spanned<PathBuf>,
    on_failure: Option<OnFailure>,
    record_reply_bytes: Option<Spanned<usize>>,
    segment_bytes_max: Option<Spanned<u64>>,
    segment_age_s: Option<Spanned<u64>>,
    checkpoint_interval_ms: Option<Spanned<u64>>,
    flush_interval_ms: Option<Spanned<u64>>,
    ring_bytes: Option<Spanned<usize>>,
    appliance_id: Option<Spanned<String>>,
}

/// The checked `[audit]` settings.
#[derive(Debug, Clone)]
pub struct AuditConfig {
    /// Where segments live.
    pub dir: PathBuf,
    /// When replies are released.
    pub durability: Durability,
    /// Sealed segments older than this are removed; 0 keeps everything.
    pub retention_days: u64,
    /// The Ed25519 key (PKCS#8 PEM), created on first start.
    pub signing_key: PathBuf,
    /// Behaviour when the trail cannot be written.
    pub on_failure: OnFailure,
    /// Longest masked reply excerpt kept per reply; 0 keeps none.
    pub record_reply_bytes: usize,
    /// Rotation size.
    pub segment_bytes_max: u64,
    /// Rotation age.
    pub segment_age: Duration,
    /// How often heads are signed.
    pub checkpoint_interval: Duration,
    /// Group-commit window under `async`.
    pub flush_interval: Duration,
    /// Ring size per shard.
    pub ring_bytes: usize,
    /// Names the appliance in segment headers and checkpoints.
    pub appliance_id: String,
}

impl AuditConfig {
    /// The settings a test or a benchmark starts from.
    pub fn new(dir: PathBuf, signing_key: PathBuf) -> AuditConfig {
        AuditConfig {
            dir,
            durability: Durability::Async,
            retention_days: RETENTION_DAYS_DEFAULT,
            signing_key,
            on_failure: OnFailure::FailClosed,
            record_reply_bytes: RECORD_REPLY_BYTES_DEFAULT,
            segment_bytes_max: SEGMENT_BYTES_MAX_DEFAULT,
            segment_age: Duration::from_secs(SEGMENT_AGE_S_DEFAULT),
            checkpoint_interval: Duration::from_millis(CHECKPOINT_INTERVAL_MS_DEFAULT),
            flush_interval: Duration::from_millis(FLUSH_INTERVAL_MS_DEFAULT),
            ring_bytes: RING_BYTES_DEFAULT,
            appliance_id: hostname(),
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "custos".into())
}

/// Checks `[audit]`; relative paths are taken from `base` (the
/// configuration file's folder).
pub fn validate(
    path: &Path,
    src: &str,
    base: &Path,
    raw: &RawAudit,
) -> Result<AuditConfig, ConfigError> {
    let err = |span: std::ops::Range<usize>, key: &str, msg: String| {
        ConfigError::at(path, src, span, &format!("audit.{key}"), msg)
    };
    let mut c = AuditConfig::new(
        base.join(raw.dir.get_ref()),
        base.join(raw.signing_key.get_ref()),
    );
    if raw.dir.get_ref().as_os_str().is_empty() {
        return Err(err(raw.dir.span(), "dir", "must not be empty".into()));
    }
    if let Some(d) = raw.durability {
        c.durability = d;
    }
    if let Some(f) = raw.on_failure {
        c.on_failure = f;
    }
    if let Some(r) = &raw.retention_days {
        c.retention_days = *r.get_ref();
        if c.retention_days > 36_500 {
            return Err(err(
                r.span(),
                "retention_days",
                format!("{} is out of range 0..=36500", c.retention_days),
            ));
        }
    }
    if let Some(r) = &raw.record_reply_bytes {
        let v = *r.get_ref();
        if v > RECORD_REPLY_BYTES_MAX {
            return Err(err(
                r.span(),
                "record_reply_bytes",
                format!("{v} is out of range 0..={RECORD_REPLY_BYTES_MAX}"),
            ));
        }
        c.record_reply_bytes = v;
    }
    if let Some(s) = &raw.segment_bytes_max {
        let v = *s.get_ref();
        if !SEGMENT_BYTES_MAX_RANGE.contains(&v) {
            return Err(err(
                s.span(),
                "segment_bytes_max",
                format!(
                    "{v} is out of range {}..={}",
                    SEGMENT_BYTES_MAX_RANGE.start(),
                    SEGMENT_BYTES_MAX_RANGE.end()
                ),
            ));
        }
        c.segment_bytes_max = v;
    }
    for (key, value, floor, set) in [
        ("segment_age_s", &raw.segment_age_s, 1u64, 0usize),
        ("checkpoint_interval_ms", &raw.checkpoint_interval_ms, 10, 1),
        ("flush_interval_ms", &raw.flush_interval_ms, 1, 2),
    ] {
        if let Some(v) = value {
            let n = *v.get_ref();
            if n < floor || n > 86_400_000 {
                return Err(err(
                    v.span(),
                    key,
                    format!("{n} is out of range {floor}..=86400000"),
                ));
            }
            match set {
                0 => c.segment_age = Duration::from_secs(n),
                1 => c.checkpoint_interval = Duration::from_millis(n),
                _ => c.flush_interval = Duration::from_millis(n),
            }
        }
    }
    if let Some(r) = &raw.ring_bytes {
        let v = *r.get_ref();
        if !RING_BYTES_RANGE.contains(&v) {
            return Err(err(
                r.span(),
                "ring_bytes",
                format!(
                    "{v} is out of range {}..={}",
                    RING_BYTES_RANGE.start(),
                    RING_BYTES_RANGE.end()
                ),
            ));
        }
        c.ring_bytes = v;
    }
    if let Some(id) = &raw.appliance_id {
        let v = id.get_ref();
        if v.is_empty() || v.len() > 255 || v.chars().any(char::is_control) {
            return Err(err(
                id.span(),
                "appliance_id",
                "must be 1 to 255 printable characters".into(),
            ));
        }
        c.appliance_id = v.clone();
    }
    Ok(c)
}
