//! `custos audit export`: every record, in time order, for a SIEM.
//!
//! - `json`: the same objects as `search`, one per line.
//! - `ocsf`: OCSF 1.1 events, one JSON object per line. Logins, session
//!   starts and ends are Authentication (`class_uid` 3002, activity Logon
//!   or Logoff); commands, statements, blocks, approvals and replies are
//!   Datastore Activity (`class_uid` 6005, activity Other with the record
//!   kind as its name, the command in `query_info.query_string`). The
//!   trail's own records (checkpoint, recovery, retention) are exported as
//!   Base Event (`class_uid` 0).
//! - `cef`: ArcSight CEF, `CEF:0|custos|custos|<version>|<kind>|<name>|<severity>|<extensions>`,
//!   with `|` and `\` escaped in the header and `\`, `=` and line breaks in
//!   extension values.

use std::io::Write;
use std::path::Path;

use serde_json::{Value, json};

use super::reader::{Item, Merged};
use super::record::{Decision, Kind, Record, Status};
use super::search::{session_text, to_json};

/// An export format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// JSON lines.
    Json,
    /// OCSF JSON lines.
    Ocsf,
    /// CEF lines.
    Cef,
}

impl Format {
    /// Parses `json`, `ocsf` or `cef`.
    pub fn parse(s: &str) -> Result<Format, String> {
        match s {
            "json" => Ok(Format::Json),
            "ocsf" => Ok(Format::Ocsf),
            "cef" => Ok(Format::Cef),
            other => Err(format!("format {other:?}: expected json, ocsf or cef")),
        }
    }
}

/// Writes every record under `dir` to `out`.
pub fn export(dir: &Path, format: Format, out: &mut impl Write) -> Result<u64, String> {
    let mut n = 0;
    for item in Merged::open(dir)? {
        let item = item?;
        let r = item.record()?;
        let line = match format {
            Format::Json => to_json(&item, &r).to_string(),
            Format::Ocsf => ocsf(&item, &r).to_string(),
            Format::Cef => cef(&item, &r),
        };
        writeln!(out, "{line}").map_err(|e| e.to_string())?;
        n += 1;
    }
    Ok(n)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn command_text(r: &Record<'_>) -> String {
    r.args.iter().map(text).collect::<Vec<_>>().join(" ")
}

/// Whether `r` carries a reply summary: a reply record, or a command
/// record written with its reply.
fn has_summary(r: &Record<'_>) -> bool {
    r.kind == Kind::Reply || matches!(r.status, Status::Ok | Status::Error)
}

fn failed(r: &Record<'_>) -> bool {
    matches!(r.kind, Kind::AuthFail | Kind::Block | Kind::ApprovalDenied)
        || r.status == Status::Error
        || r.decision == Some(Decision::Block)
}

fn severity(r: &Record<'_>) -> u8 {
    match r.kind {
        Kind::AuthFail | Kind::Block | Kind::ApprovalDenied | Kind::Recovery => 3,
        _ if r.status == Status::Error => 2,
        _ => 1,
    }
}

fn endpoint(client: &[u8]) -> Value {
    let c = text(client);
    match c.rsplit_once(':') {
        Some((ip, port)) => {
            json!({"ip": ip.trim_matches(['[', ']']), "port": port.parse::<u16>().ok()})
        }
        None => json!({"ip": c}),
    }
}

/// The OCSF form of a record.
pub fn ocsf(item: &Item, r: &Record<'_>) -> Value {
    let (class_uid, category_uid, activity_id, class_name) = match r.kind {
        Kind::AuthOk | Kind::AuthFail | Kind::SessionStart => (3002, 3, 1, "Authentication"),
        Kind::SessionEnd => (3002, 3, 2, "Authentication"),
        Kind::Checkpoint | Kind::Recovery | Kind::Retention => (0, 0, 99, "Base Event"),
        _ => (6005, 6, 99, "Datastore Activity"),
    };
    let mut v = json!({
        "class_uid": class_uid,
        "class_name": class_name,
        "category_uid": category_uid,
        "activity_id": activity_id,
        "activity_name": r.kind.name(),
        "type_uid": class_uid * 100 + activity_id,
        "time": r.time_ns / 1_000_000,
        "severity_id": severity(r),
        "status_id": if failed(r) { 2 } else { 1 },
        "status": if failed(r) { "Failure" } else { "Success" },
        "metadata": {
            "version": "1.1.0",
            "uid": format!("{}-{}", item.shard, item.seq),
            "product": {"name": "custos", "vendor_name": "custos", "version": env!("CARGO_PKG_VERSION")},
        },
    });
    let m = v.as_object_mut().expect("an object");
    if !r.subject.is_empty() {
        let groups: Vec<Value> = r.groups.iter().map(|g| json!({"name": text(g)})).collect();
        let mut user = json!({"name": text(r.subject), "groups": groups});
        if !r.token_id.is_empty() {
            user["credential_uid"] = text(r.token_id).into();
        }
        m.insert(
            "actor".into(),
            json!({"user": user, "session": {"uid": session_text(r.session), "issuer": text(r.issuer)}}),
        );
        if class_uid == 3002 {
            m.insert("user".into(), json!({"name": text(r.subject)}));
        }
    }
    if !r.client.is_empty() {
        m.insert("src_endpoint".into(), endpoint(r.client));
    }
    if !r.target.is_empty() {
        m.insert(
            "database".into(),
            json!({"name": text(r.target), "type": r.protocol.name()}),
        );
    }
    if class_uid == 6005 && !r.args.is_empty() {
        m.insert(
            "query_info".into(),
            json!({"query_string": command_text(r)}),
        );
    }
    if let Some(d) = r.decision {
        m.insert("disposition".into(), d.name().into());
    }
    if has_summary(r) {
        // The reply summary: OCSF's response status and duration (ms), the
        // rest unmapped.
        if !r.code.is_empty() {
            m.insert("status_code".into(), text(r.code).into());
        }
        if !r.excerpt.is_empty() {
            m.insert("status_detail".into(), text(r.excerpt).into());
        }
        m.insert("duration".into(), (r.latency_us / 1000).into());
        m.insert(
            "unmapped".into(),
            json!({"cmd_no": r.cmd_no, "status": r.status.name(), "code": text(r.code), "count": r.count, "excerpt": text(r.excerpt), "latency_us": r.latency_us}),
        );
    } else if matches!(r.status, Status::NoReply | Status::Unknown) {
        m.insert(
            "unmapped".into(),
            json!({"cmd_no": r.cmd_no, "status": r.status.name()}),
        );
    }
    if !r.detail.is_empty() && r.kind != Kind::Checkpoint {
        m.insert("message".into(), text(r.detail).into());
    }
    v
}

fn cef_header(s: &str) -> String {
    s.replace('\\', "\\\\").replace('|', "\\|")
}

fn cef_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '=' => out.push_str("\\="),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            _ => out.push(c),
        }
    }
    out
}

/// The CEF form of a record.
pub fn cef(item: &Item, r: &Record<'_>) -> String {
    let name = match r.kind {
        Kind::Command => "command forwarded",
        Kind::Block => "command blocked",
        Kind::Reply => "reply",
        Kind::AuthOk => "authentication succeeded",
        Kind::AuthFail => "authentication failed",
        Kind::SessionStart => "session started",
        Kind::SessionEnd => "session ended",
        Kind::ApprovalRequested => "approval requested",
        Kind::ApprovalGranted => "approval granted",
        Kind::ApprovalDenied => "approval denied",
        Kind::Checkpoint => "audit checkpoint",
        Kind::Recovery => "audit recovery",
        Kind::Retention => "audit retention",
    };
    let sev = match severity(r) {
        3 => 7,
        2 => 5,
        _ => 3,
    };
    let mut ext: Vec<(&str, String)> = vec![
        ("rt", (r.time_ns / 1_000_000).to_string()),
        ("externalId", format!("{}-{}", item.shard, item.seq)),
    ];
    if r.session != 0 {
        ext.push(("cs1Label", "session".into()));
        ext.push(("cs1", session_text(r.session)));
    }
    if !r.subject.is_empty() {
        ext.push(("suser", text(r.subject)));
    }
    if !r.groups.is_empty() {
        ext.push(("cs2Label", "groups".into()));
        ext.push((
            "cs2",
            r.groups.iter().map(text).collect::<Vec<_>>().join(","),
        ));
    }
    if !r.client.is_empty() {
        let c = text(r.client);
        if let Some((ip, port)) = c.rsplit_once(':') {
            ext.push(("src", ip.trim_matches(['[', ']']).into()));
            ext.push(("spt", port.into()));
        }
    }
    if !r.target.is_empty() {
        ext.push(("dvchost", text(r.target)));
        ext.push(("app", r.protocol.name().into()));
    }
    if let Some(d) = r.decision {
        ext.push(("act", d.name().into()));
    }
    if !r.rule.is_empty() {
        ext.push(("cs3Label", "rule".into()));
        ext.push(("cs3", text(r.rule)));
    }
    if !r.args.is_empty() {
        ext.push(("request", command_text(r)));
    }
    if has_summary(r) {
        ext.push(("outcome", r.status.name().into()));
        ext.push(("cn1Label", "count".into()));
        ext.push(("cn1", r.count.to_string()));
        ext.push(("cn2Label", "latency_us".into()));
        ext.push(("cn2", r.latency_us.to_string()));
        if !r.code.is_empty() {
            ext.push(("reason", text(r.code)));
        }
    } else if matches!(r.status, Status::NoReply | Status::Unknown) {
        ext.push(("outcome", r.status.name().into()));
    }
    if !r.detail.is_empty() && r.kind != Kind::Checkpoint {
        ext.push(("msg", text(r.detail)));
    }
    let ext: Vec<String> = ext
        .into_iter()
        .map(|(k, v)| format!("{k}={}", cef_value(&v)))
        .collect();
    format!(
        "CEF:0|custos|custos|{}|{}|{}|{sev}|{}",
        cef_header(env!("CARGO_PKG_VERSION")),
        cef_header(r.kind.name()),
        cef_header(name),
        ext.join(" ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cef_escapes() {
        assert_eq!(cef_header("a|b\\c"), "a\\|b\\\\c");
        assert_eq!(cef_value("x=1\ny\\"), "x\\=1\\ny\\\\");
    }
}
