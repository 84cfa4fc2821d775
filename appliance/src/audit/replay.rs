//! `custos audit replay`: one session as a readable transcript.
//!
//! ```text
//! 2026-11-30T06:15:54.123Z  session 0001000000000003 start  alice [ops,dev] from 127.0.0.1:51000 to cache (redis)
//! 2026-11-30T06:15:54.124Z  #1 > SET "k" "v"  [allow]  < ok 5 bytes 80us  +OK
//! 2026-11-30T06:15:54.200Z  session end (client closed), 1 commands
//! ```
//!
//! A command's line ends with its reply summary when its record carries
//! one; a reply written on its own (version 1 trails, `durability =
//! "sync"`, see `record.rs`) has a `#n <` line of its own.
//!
//! `--follow` keeps reading as the appliance writes, until the session ends.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use super::reader::Merged;
use super::record::{Kind, Proto, Record, Status};
use super::search::{rfc3339, session_text};

/// How often `--follow` looks for new records.
const FOLLOW_POLL: Duration = Duration::from_millis(200);

/// Prints session `session`'s records under `dir` to `out`; with `follow`,
/// waits for more until its `session_end`. Returns the lines printed.
pub fn replay(
    dir: &Path,
    session: u64,
    follow: bool,
    out: &mut impl std::io::Write,
) -> Result<u64, String> {
    let mut printed: std::collections::HashSet<(u16, u64)> = Default::default();
    let mut lines = 0;
    loop {
        let mut ended = false;
        for item in Merged::open(dir)? {
            let item = item?;
            let r = item.record()?;
            if r.session != session || !printed.insert((item.shard, item.seq)) {
                ended |= r.session == session && r.kind == Kind::SessionEnd;
                continue;
            }
            ended |= r.kind == Kind::SessionEnd;
            writeln!(out, "{}", line(&r)).map_err(|e| e.to_string())?;
            lines += 1;
        }
        if !follow || ended {
            break;
        }
        let _ = out.flush();
        std::thread::sleep(FOLLOW_POLL);
    }
    if lines == 0 && !follow {
        return Err(format!("no records of session {}", session_text(session)));
    }
    Ok(lines)
}

/// One transcript line.
pub fn line(r: &Record<'_>) -> String {
    let mut s = String::with_capacity(128);
    let t = rfc3339(r.time_ns);
    // Milliseconds are enough to read; the JSON forms keep nanoseconds.
    let _ = write!(s, "{}Z  ", &t[..23]);
    match r.kind {
        Kind::SessionStart => {
            let groups: Vec<String> = r.groups.iter().map(|g| show(g, false)).collect();
            let _ = write!(
                s,
                "session {} start  {} [{}] from {} to {} ({})",
                session_text(r.session),
                show(r.subject, false),
                groups.join(","),
                show(r.client, false),
                show(r.target, false),
                r.protocol.name()
            );
        }
        Kind::SessionEnd => {
            let _ = write!(
                s,
                "session end ({}), {} commands",
                show(r.detail, false),
                r.count
            );
        }
        Kind::Reply => {
            let _ = write!(s, "#{} ", r.cmd_no);
            reply_summary(&mut s, r);
        }
        _ => {
            let args: Vec<String> = r.args.iter().map(|a| show(a, true)).collect();
            let verb = match r.kind {
                Kind::Command => ">",
                Kind::Block => "> BLOCKED",
                Kind::ApprovalRequested => "> APPROVAL REQUESTED",
                _ => r.kind.name(),
            };
            let _ = write!(s, "#{} {verb} {}", r.cmd_no, args.join(" "));
            if let Some(d) = r.decision {
                let _ = write!(s, "  [{}", d.name());
                if !r.rule.is_empty() {
                    let _ = write!(s, " rule {}", show(r.rule, false));
                }
                s.push(']');
            }
            if !r.detail.is_empty() {
                let _ = write!(s, "  ({})", show(r.detail, false));
            }
            if r.status != Status::None {
                s.push_str("  ");
                reply_summary(&mut s, r);
            }
        }
    }
    s
}

/// `< ok 5 bytes 80us  +OK`, or `< no_reply` for a command written
/// without its reply.
fn reply_summary(s: &mut String, r: &Record<'_>) {
    if matches!(r.status, Status::NoReply | Status::Unknown) {
        let _ = write!(s, "< {}", r.status.name());
        return;
    }
    let unit = if r.protocol == Proto::Postgres {
        "rows"
    } else {
        "bytes"
    };
    let _ = write!(
        s,
        "< {} {} {unit} {}us",
        r.status.name(),
        r.count,
        r.latency_us
    );
    if !r.code.is_empty() {
        let _ = write!(s, " {}", show(r.code, false));
    }
    if !r.excerpt.is_empty() {
        let _ = write!(s, "  {}", show(r.excerpt, false));
    }
}

/// Printable form: ASCII as is (quoted when asked and when it has spaces
/// or quotes), everything else escaped.
fn show(b: &[u8], quote: bool) -> String {
    let needs = quote
        && (b.is_empty()
            || b.iter()
                .any(|&c| c == b' ' || c == b'"' || !(0x21..0x7f).contains(&c)));
    let mut s = String::with_capacity(b.len() + 2);
    if needs {
        s.push('"');
    }
    for &c in b {
        match c {
            b'\r' => s.push_str("\\r"),
            b'\n' => s.push_str("\\n"),
            b'\t' => s.push_str("\\t"),
            b'"' if needs => s.push_str("\\\""),
            b'\\' => s.push_str("\\\\"),
            0x20..0x7f => s.push(c as char),
            _ => {
                let _ = write!(s, "\\x{c:02x}");
            }
        }
    }
    if needs {
        s.push('"');
    }
    s
}
