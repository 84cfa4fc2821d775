//! `custos audit search`: records matching filters, as JSON lines.
//!
//! The JSON form of a record ([`to_json`]) is also what `export --format
//! json` writes. Byte fields are shown as UTF-8 (invalid bytes replaced);
//! what is in them was masked before it was written.

use std::path::Path;

use serde_json::{Value, json};

use super::checkpoint;
use super::reader::{Item, Merged};
use super::record::{Decision, Kind, Record, Status};

/// Filters; every one given must match.
#[derive(Debug, Default, Clone)]
pub struct Filter {
    /// Exact subject.
    pub subject: Option<String>,
    /// One of the groups.
    pub group: Option<String>,
    /// Exact target name.
    pub target: Option<String>,
    /// Session id.
    pub session: Option<u64>,
    /// Record kind.
    pub kind: Option<Kind>,
    /// Decision.
    pub decision: Option<Decision>,
    /// From this time (Unix ns), inclusive.
    pub since_ns: Option<u64>,
    /// Before this time (Unix ns), exclusive.
    pub until_ns: Option<u64>,
}

impl Filter {
    /// Whether `r` passes.
    pub fn matches(&self, r: &Record<'_>) -> bool {
        self.subject
            .as_ref()
            .is_none_or(|s| r.subject == s.as_bytes())
            && self
                .group
                .as_ref()
                .is_none_or(|g| r.groups.iter().any(|x| x == g.as_bytes()))
            && self
                .target
                .as_ref()
                .is_none_or(|t| r.target == t.as_bytes())
            && self.session.is_none_or(|s| r.session == s)
            && self.kind.is_none_or(|k| r.kind == k)
            && self.decision.is_none_or(|d| r.decision == Some(d))
            && self.since_ns.is_none_or(|t| r.time_ns >= t)
            && self.until_ns.is_none_or(|t| r.time_ns < t)
    }
}

/// Prints every matching record under `dir` as a JSON line to `out`.
pub fn search(dir: &Path, filter: &Filter, out: &mut impl std::io::Write) -> Result<u64, String> {
    let mut n = 0;
    for item in Merged::open(dir)? {
        let item = item?;
        let r = item.record()?;
        if filter.matches(&r) {
            n += 1;
            writeln!(out, "{}", to_json(&item, &r)).map_err(|e| e.to_string())?;
        }
    }
    Ok(n)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A session id as printed: 16 hex digits.
pub fn session_text(id: u64) -> String {
    format!("{id:016x}")
}

/// Parses a session id: 16 hex digits as printed, or decimal.
pub fn parse_session(s: &str) -> Result<u64, String> {
    let s = s.trim();
    if s.len() == 16 {
        return u64::from_str_radix(s, 16).map_err(|e| format!("session {s:?}: {e}"));
    }
    s.parse()
        .map_err(|_| format!("session {s:?}: expected 16 hex digits as printed by search"))
}

/// The JSON form of a record.
pub fn to_json(item: &Item, r: &Record<'_>) -> Value {
    let mut v = json!({
        "time": rfc3339(r.time_ns),
        "time_ns": r.time_ns,
        "kind": r.kind.name(),
        "shard": item.shard,
        "seq": item.seq,
        "file": item.file.file_name().map(|f| f.to_string_lossy().into_owned()),
        "offset": item.offset,
    });
    let m = v.as_object_mut().expect("an object");
    if r.session != 0 {
        m.insert("session".into(), session_text(r.session).into());
    }
    if r.cmd_no != 0 {
        m.insert("cmd_no".into(), r.cmd_no.into());
    }
    if !r.protocol.name().is_empty() {
        m.insert("protocol".into(), r.protocol.name().into());
    }
    for (k, b) in [
        ("subject", r.subject),
        ("issuer", r.issuer),
        ("token_id", r.token_id),
        ("client", r.client),
        ("target", r.target),
        ("rule", r.rule),
        ("code", r.code),
    ] {
        if !b.is_empty() {
            m.insert(k.into(), text(b).into());
        }
    }
    if !r.groups.is_empty() {
        m.insert(
            "groups".into(),
            r.groups.iter().map(text).collect::<Vec<_>>().into(),
        );
    }
    if let Some(d) = r.decision {
        m.insert("decision".into(), d.name().into());
    }
    if !r.args.is_empty() {
        m.insert(
            "command".into(),
            r.args.iter().map(text).collect::<Vec<_>>().into(),
        );
    }
    // A reply summary: a reply record, or a command record that carries
    // its reply (see `record.rs`).
    if r.kind == Kind::Reply || r.status != Status::None {
        m.insert("status".into(), r.status.name().into());
        if !matches!(r.status, Status::NoReply | Status::Unknown) {
            m.insert("latency_us".into(), r.latency_us.into());
            m.insert("excerpt".into(), text(r.excerpt).into());
            let unit = if r.protocol == super::record::Proto::Postgres {
                "rows"
            } else {
                "bytes"
            };
            m.insert(unit.into(), r.count.into());
        }
    } else if r.kind == Kind::Command && r.protocol == super::record::Proto::Postgres && r.count > 0
    {
        // A command written before its reply keeps its bound parameter
        // count in `count`.
        m.insert("parameters".into(), r.count.into());
    }
    if r.kind == Kind::SessionEnd {
        m.insert("commands".into(), r.count.into());
    }
    if r.kind == Kind::Checkpoint {
        if let Ok(c) = checkpoint::decode(r.detail) {
            m.insert("appliance_id".into(), c.appliance_id.into());
            m.insert(
                "heads".into(),
                c.heads
                    .iter()
                    .map(|h| json!({"shard": h.shard, "next_seq": h.next_seq}))
                    .collect::<Vec<_>>()
                    .into(),
            );
            m.insert(
                "public_key".into(),
                super::sign::public_text(&c.public_key).into(),
            );
        }
    } else if !r.detail.is_empty() {
        m.insert("detail".into(), text(r.detail).into());
    }
    v
}

/// `2026-11-30T06:15:54.123456789Z`.
pub fn rfc3339(ns: u64) -> String {
    let secs = ns / 1_000_000_000;
    let frac = ns % 1_000_000_000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, mo, d) = civil_from_days(days);
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{frac:09}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.frac]Z` (or `+00:00`), `YYYY-MM-DD`, or
/// Unix seconds, into Unix ns.
pub fn parse_time(s: &str) -> Result<u64, String> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(secs.saturating_mul(1_000_000_000));
    }
    let bad =
        || format!("time {s:?}: expected RFC 3339 (2026-01-31T12:00:00Z), a date or Unix seconds");
    let (date, time) = s.split_once(['T', ' ']).unwrap_or((s, "00:00:00Z"));
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>());
    let (Some(Ok(y)), Some(Ok(mo)), Some(Ok(day))) = (d.next(), d.next(), d.next()) else {
        return Err(bad());
    };
    let time = time
        .strip_suffix('Z')
        .or_else(|| time.strip_suffix("+00:00"))
        .ok_or_else(bad)?;
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut t = hms.splitn(3, ':').map(|p| p.parse::<u64>());
    let (Some(Ok(h)), Some(Ok(mi)), Some(Ok(sec))) = (t.next(), t.next(), t.next()) else {
        return Err(bad());
    };
    if !(1..=12).contains(&mo) || !(1..=31).contains(&day) || h > 23 || mi > 59 || sec > 60 {
        return Err(bad());
    }
    let mut frac_ns = 0u64;
    if !frac.is_empty() {
        let digits: String = frac.chars().take(9).collect();
        let v: u64 = digits.parse().map_err(|_| bad())?;
        frac_ns = v * 10u64.pow(9 - digits.len() as u32);
    }
    let days = days_from_civil(y, mo as u32, day as u32);
    if days < 0 {
        return Err(bad());
    }
    Ok(((days as u64 * 86_400 + h * 3600 + mi * 60 + sec) * 1_000_000_000) + frac_ns)
}

// Howard Hinnant's algorithms for the proleptic Gregorian calendar.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip() {
        let ns = 1_795_000_000_123_456_789u64;
        let s = rfc3339(ns);
        assert_eq!(parse_time(&s).unwrap(), ns);
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            parse_time("2000-03-01T00:00:00Z").unwrap(),
            951_868_800 * 1_000_000_000
        );
        assert_eq!(
            parse_time("2000-03-01").unwrap(),
            951_868_800 * 1_000_000_000
        );
        assert_eq!(
            parse_time("951868800").unwrap(),
            951_868_800 * 1_000_000_000
        );
        assert!(parse_time("yesterday").is_err());
        assert_eq!(
            parse_session(&session_text(0x1_0000_0000_0005)).unwrap(),
            0x1_0000_0000_0005
        );
    }
}
