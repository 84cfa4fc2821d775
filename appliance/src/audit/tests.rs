//! The trail end to end without a network: records pushed by shards,
//! drained to segments, verified, tampered with, recovered.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::drain::Drain;
use super::record::{Context, Decision, Encoder, FLAG_RAW_RESP, Head, Kind, Proto, Status};
use super::{AuditConfig, AuditShared, ShardAudit, default_masker, ring, segment, sign, verify};
use crate::metrics::AuditMetrics;

const CARD: &[u8] = b"4111 1111 1111 1111";

struct Trail {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    key: PathBuf,
}

fn config(dir: &Path, key: &Path) -> AuditConfig {
    let mut c = AuditConfig::new(dir.to_path_buf(), key.to_path_buf());
    c.segment_bytes_max = 16 * 1024;
    c.ring_bytes = 64 * 1024;
    c.appliance_id = "test".into();
    c
}

fn open(dir: &Path, key: &Path, shards: usize) -> (Drain, Vec<ShardAudit>, Arc<AuditShared>) {
    open_with(dir, key, shards, |_| {})
}

fn open_with(
    dir: &Path,
    key: &Path,
    shards: usize,
    tune: impl FnOnce(&mut AuditConfig),
) -> (Drain, Vec<ShardAudit>, Arc<AuditShared>) {
    let mut config = config(dir, key);
    tune(&mut config);
    let shared = Arc::new(AuditShared::new(
        config,
        shards,
        Arc::new(AuditMetrics::new(shards)),
    ));
    let mut producers = Vec::new();
    let mut consumers = Vec::new();
    for _ in 0..shards {
        let (p, c) = ring::channel(shared.config.ring_bytes);
        producers.push(p);
        consumers.push(c);
    }
    let drain = Drain::open(shared.clone(), consumers, Arc::new(default_masker())).unwrap();
    let ends = producers
        .into_iter()
        .enumerate()
        .map(|(i, p)| ShardAudit::new(i as u16, shared.clone(), p))
        .collect();
    (drain, ends, shared)
}

fn command(a: &ShardAudit, i: u64) {
    command_in(a, 1, i);
}

fn command_in(a: &ShardAudit, session: u64, i: u64) {
    let ctx = Context::new(b"alice", &["ops"], b"idp", b"jti", b"127.0.0.1:1", b"cache");
    let head = Head {
        kind: Some(Kind::Command),
        protocol: Proto::Redis,
        decision: Some(Decision::Allow),
        flags: FLAG_RAW_RESP,
        shard: a.shard,
        time_ns: super::record::now_ns(),
        session,
        cmd_no: i,
        ..Head::default()
    };
    let key = format!("key:{i}");
    let mut raw = Vec::new();
    custos_parsers::resp::encode::command(&mut raw, &[b"SET", key.as_bytes(), CARD]);
    a.emit(|out| {
        Encoder::start(out, &head, &ctx)
            .rule(b"")
            .arg(&raw)
            .finish(b"", b"", b"")
    });
}

/// The reply to command `i` of `session`, its excerpt holding a card number.
fn reply(a: &ShardAudit, session: u64, i: u64) {
    let ctx = Context::new(b"alice", &["ops"], b"idp", b"jti", b"127.0.0.1:1", b"cache");
    let head = Head {
        kind: Some(Kind::Reply),
        protocol: Proto::Redis,
        status: Status::Ok,
        shard: a.shard,
        time_ns: super::record::now_ns(),
        session,
        cmd_no: i,
        latency_us: 70 + i,
        count: 26,
        ..Head::default()
    };
    let mut excerpt = b"$19\r\n".to_vec();
    excerpt.extend_from_slice(CARD);
    a.emit(|out| {
        Encoder::start(out, &head, &ctx)
            .rule(b"")
            .finish(b"", &excerpt, b"")
    });
}

fn end(a: &ShardAudit, session: u64) {
    let head = Head {
        kind: Some(Kind::SessionEnd),
        protocol: Proto::Redis,
        shard: a.shard,
        time_ns: super::record::now_ns(),
        session,
        ..Head::default()
    };
    a.emit(|out| {
        Encoder::start(out, &head, &Context::none())
            .rule(b"")
            .finish(b"", b"", b"client closed")
    });
}

/// Two shards, a few hundred commands and their replies each, several
/// segments each.
fn build() -> Trail {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("trail");
    let key = tmp.path().join("audit.key");
    let (mut drain, ends, _) = open(&dir, &key, 2);
    for i in 0..600 {
        command(&ends[(i % 2) as usize], i);
        reply(&ends[(i % 2) as usize], 1, i);
        if i % 50 == 0 {
            drain.round();
        }
    }
    drain.round();
    drain.close();
    Trail {
        _tmp: tmp,
        dir,
        key,
    }
}

fn segments(dir: &Path, shard: u16) -> Vec<PathBuf> {
    segment::list(dir)
        .unwrap()
        .into_iter()
        .find(|v| v[0].shard == shard)
        .unwrap()
        .into_iter()
        .map(|s| s.path)
        .collect()
}

fn pinned(t: &Trail) -> Option<[u8; 32]> {
    Some(sign::SigningKey::load(&t.key).unwrap().public())
}

#[test]
fn a_clean_trail_verifies_and_holds_no_card_number() {
    let t = build();
    let r = verify::verify(&t.dir, pinned(&t)).unwrap();
    assert_eq!(r.chains, 2);
    assert!(r.segments >= 4, "{r:?}");
    assert!(r.records >= 600, "{r:?}");
    assert!(r.checkpoints >= 2, "{r:?}");
    assert_eq!(r.unsigned_tail, 0, "{r:?}");
    for s in [0, 1] {
        for f in segments(&t.dir, s) {
            let bytes = std::fs::read(&f).unwrap();
            assert!(
                !bytes.windows(CARD.len()).any(|w| w == CARD),
                "{} holds the card number",
                f.display()
            );
        }
    }
    // The commands were split and kept, the value masked.
    let mut out = Vec::new();
    super::search::search(
        &t.dir,
        &super::search::Filter {
            kind: Some(Kind::Command),
            ..Default::default()
        },
        &mut out,
    )
    .unwrap();
    let text = String::from_utf8(out).unwrap();
    assert_eq!(text.lines().count(), 600);
    assert!(
        text.contains(r#""command":["SET","key:7","****"]"#),
        "{}",
        &text[..400]
    );
}

fn expect_problem(t: &Trail, want: &str) -> verify::Problem {
    let p = verify::verify(&t.dir, pinned(t)).expect_err("tampering must be found");
    assert!(p.to_string().contains(want), "{p}");
    p
}

#[test]
fn a_flipped_byte_is_found_with_file_and_offset() {
    let t = build();
    let f = &segments(&t.dir, 0)[1];
    let mut b = std::fs::read(f).unwrap();
    let at = b.len() / 2;
    b[at] ^= 0x01;
    std::fs::write(f, &b).unwrap();
    let p = expect_problem(&t, "CRC");
    assert_eq!(&p.file, f);
    assert!(p.offset <= at && p.offset > 0, "{p}");
}

#[test]
fn a_deleted_middle_segment_is_found() {
    let t = build();
    std::fs::remove_file(&segments(&t.dir, 1)[1]).unwrap();
    expect_problem(&t, "a segment is missing");
}

#[test]
fn a_deleted_first_segment_is_found() {
    let t = build();
    std::fs::remove_file(&segments(&t.dir, 0)[0]).unwrap();
    expect_problem(&t, "no retention record");
}

#[test]
fn a_deleted_last_segment_is_found_by_the_other_chain() {
    let t = build();
    let last = segments(&t.dir, 1).pop().unwrap();
    std::fs::remove_file(&last).unwrap();
    expect_problem(&t, "checkpoint names shard 1");
}

#[test]
fn swapped_segments_are_found() {
    let t = build();
    let s = segments(&t.dir, 0);
    let tmp = t.dir.join("swap");
    std::fs::rename(&s[1], &tmp).unwrap();
    std::fs::rename(&s[2], &s[1]).unwrap();
    std::fs::rename(&tmp, &s[2]).unwrap();
    expect_problem(&t, "renamed or swapped");
}

#[test]
fn a_truncated_segment_is_found() {
    let t = build();
    let f = &segments(&t.dir, 1)[0];
    let len = std::fs::metadata(f).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(f)
        .unwrap()
        .set_len(len - 10)
        .unwrap();
    expect_problem(&t, "cut short");
}

#[test]
fn a_rechained_edit_fails_the_signature_check() {
    // An attacker who edits a record and recomputes every hash and CRC
    // after it still cannot produce the checkpoints' signatures.
    let t = build();
    let other = tempfile::tempdir().unwrap();
    let wrong = sign::SigningKey::load_or_create(&other.path().join("k"))
        .unwrap()
        .0
        .public();
    let p = verify::verify(&t.dir, Some(wrong)).unwrap_err();
    assert!(p.to_string().contains("is signed by"), "{p}");
}

#[test]
fn a_torn_tail_is_cut_noted_and_the_chain_continues() {
    let t = build();
    let last = segments(&t.dir, 0).pop().unwrap();
    let len = std::fs::metadata(&last).unwrap().len();
    {
        use std::io::Write as _;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&last)
            .unwrap();
        // A frame header promising more than follows: a write cut by a crash.
        f.write_all(&[200, 0, 0, 0, 1, 2, 3, 4, 5, 6]).unwrap();
    }
    assert!(verify::verify(&t.dir, pinned(&t)).is_err());
    let (mut drain, ends, _) = open(&t.dir, &t.key, 2);
    command(&ends[0], 9999);
    drain.round();
    drain.close();
    let r = verify::verify(&t.dir, pinned(&t)).unwrap();
    assert!(r.records > 600);
    assert!(std::fs::metadata(&last).unwrap().len() >= len);
    let mut out = Vec::new();
    super::search::search(
        &t.dir,
        &super::search::Filter {
            kind: Some(Kind::Recovery),
            ..Default::default()
        },
        &mut out,
    )
    .unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("cut 10 bytes at offset"), "{text}");
}

#[test]
fn retention_removes_old_sealed_segments_and_says_so() {
    let t = build();
    let first = segments(&t.dir, 0)[0].clone();
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(500 * 86_400);
    std::fs::File::options()
        .write(true)
        .open(&first)
        .unwrap()
        .set_modified(old)
        .unwrap();
    let (mut drain, _ends, _) = open(&t.dir, &t.key, 2);
    drain.round();
    drain.close();
    assert!(!first.exists());
    let r = verify::verify(&t.dir, pinned(&t)).unwrap();
    assert!(r.records > 0);
    let mut out = Vec::new();
    super::export::export(&t.dir, super::export::Format::Json, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains(r#""kind":"retention""#), "{text}");
}

/// Every record under `dir`, as JSON lines.
fn records(dir: &Path) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    super::search::search(dir, &super::search::Filter::default(), &mut out).unwrap();
    String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn session_records(dir: &Path, session: u64) -> Vec<serde_json::Value> {
    let id = super::search::session_text(session);
    records(dir)
        .into_iter()
        .filter(|r| r["session"] == id.as_str())
        .collect()
}

fn summary(r: &serde_json::Value) -> String {
    format!(
        "{} {} {}",
        r["kind"].as_str().unwrap_or(""),
        r["cmd_no"].as_u64().unwrap_or(0),
        r["status"].as_str().unwrap_or("-")
    )
}

#[test]
fn a_command_and_its_reply_are_one_record_pipelines_included() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, key) = (tmp.path().join("trail"), tmp.path().join("k"));
    let (mut drain, ends, _) = open(&dir, &key, 1);
    // One command, then a pipeline of three whose replies come after all
    // of them, across drain rounds; another session interleaved.
    command_in(&ends[0], 7, 1);
    reply(&ends[0], 7, 1);
    command_in(&ends[0], 7, 2);
    command_in(&ends[0], 7, 3);
    command_in(&ends[0], 8, 1);
    drain.round();
    command_in(&ends[0], 7, 4);
    reply(&ends[0], 7, 2);
    reply(&ends[0], 8, 1);
    drain.round();
    reply(&ends[0], 7, 3);
    reply(&ends[0], 7, 4);
    end(&ends[0], 7);
    end(&ends[0], 8);
    drain.round();
    drain.close();
    verify::verify(&dir, Some(sign::SigningKey::load(&key).unwrap().public())).unwrap();
    let got: Vec<String> = session_records(&dir, 7).iter().map(summary).collect();
    assert_eq!(
        got,
        [
            "command 1 ok",
            "command 2 ok",
            "command 3 ok",
            "command 4 ok",
            "session_end 0 -"
        ]
    );
    let r = &session_records(&dir, 7)[2];
    assert_eq!(r["command"], serde_json::json!(["SET", "key:3", "****"]));
    assert_eq!(r["latency_us"], 73);
    assert_eq!(r["bytes"], 26);
    assert_eq!(r["excerpt"], "$19\r\n****");
    let got: Vec<String> = session_records(&dir, 8).iter().map(summary).collect();
    assert_eq!(got, ["command 1 ok", "session_end 0 -"]);
    // No reply records are left, and nothing holds the card number.
    assert!(records(&dir).iter().all(|r| r["kind"] != "reply"));
    for f in segments(&dir, 0) {
        let b = std::fs::read(f).unwrap();
        assert!(!b.windows(CARD.len()).any(|w| w == CARD));
    }
}

#[test]
fn commands_without_replies_are_written_never_dropped() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, key) = (tmp.path().join("trail"), tmp.path().join("k"));
    let (mut drain, ends, _) = open(&dir, &key, 1);
    // Session 1 ends with two commands unanswered; session 2's command 1
    // gets no reply before command 2's (a reply the appliance answered
    // itself); session 3 is still waiting at shutdown.
    command_in(&ends[0], 1, 1);
    command_in(&ends[0], 1, 2);
    end(&ends[0], 1);
    command_in(&ends[0], 2, 1);
    command_in(&ends[0], 2, 2);
    reply(&ends[0], 2, 2);
    command_in(&ends[0], 3, 1);
    drain.round();
    drain.close();
    verify::verify(&dir, None).unwrap();
    let s = |n| -> Vec<String> { session_records(&dir, n).iter().map(summary).collect() };
    assert_eq!(
        s(1),
        [
            "command 1 no_reply",
            "command 2 no_reply",
            "session_end 0 -"
        ]
    );
    assert_eq!(s(2), ["command 1 no_reply", "command 2 ok"]);
    assert_eq!(s(3), ["command 1 no_reply"]);
}

#[test]
fn a_checkpoint_writes_waiting_commands_and_their_replies_follow_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, key) = (tmp.path().join("trail"), tmp.path().join("k"));
    let (mut drain, ends, _) = open_with(&dir, &key, 1, |c| {
        c.checkpoint_interval = std::time::Duration::ZERO;
    });
    command_in(&ends[0], 4, 1);
    drain.round();
    reply(&ends[0], 4, 1);
    drain.round();
    drain.close();
    verify::verify(&dir, None).unwrap();
    let got: Vec<String> = session_records(&dir, 4).iter().map(summary).collect();
    assert_eq!(got, ["command 1 unknown", "reply 1 ok"]);
}

#[test]
fn a_session_with_too_many_commands_waiting_writes_the_oldest() {
    use super::drain::HELD_PER_SESSION_MAX;
    let tmp = tempfile::tempdir().unwrap();
    let (dir, key) = (tmp.path().join("trail"), tmp.path().join("k"));
    let (mut drain, ends, _) = open_with(&dir, &key, 1, |c| c.ring_bytes = 4 << 20);
    let n = HELD_PER_SESSION_MAX as u64 + 2;
    for i in 1..=n {
        command_in(&ends[0], 5, i);
    }
    drain.round();
    for i in 1..=n {
        reply(&ends[0], 5, i);
    }
    end(&ends[0], 5);
    drain.round();
    drain.close();
    let got: Vec<String> = session_records(&dir, 5).iter().map(summary).collect();
    assert_eq!(got.len() as u64, n + 2 + 1, "{got:?}");
    assert_eq!(
        got[..5],
        [
            "command 1 unknown",
            "command 2 unknown",
            "reply 1 ok",
            "reply 2 ok",
            "command 3 ok"
        ]
    );
    assert_eq!(got[got.len() - 1], "session_end 0 -");
}

#[test]
fn under_sync_durability_commands_are_written_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, key) = (tmp.path().join("trail"), tmp.path().join("k"));
    let (mut drain, ends, shared) = open_with(&dir, &key, 1, |c| {
        c.durability = super::Durability::Sync;
    });
    command_in(&ends[0], 6, 1);
    drain.round();
    // The command is durable before any reply exists.
    assert!(shared.durable[0].load(std::sync::atomic::Ordering::Acquire) >= 1);
    reply(&ends[0], 6, 1);
    drain.round();
    drain.close();
    let got: Vec<String> = session_records(&dir, 6).iter().map(summary).collect();
    assert_eq!(got, ["command 1 -", "reply 1 ok"]);
}

/// Pushes one record of about 1 KiB into `a`'s ring.
fn kilobyte(a: &ShardAudit) {
    let head = Head {
        kind: Some(Kind::Command),
        protocol: Proto::Redis,
        ..Head::default()
    };
    a.emit(|out| {
        Encoder::start(out, &head, &Context::none())
            .rule(b"")
            .arg(&[b'v'; 1000])
            .finish(b"", b"", b"")
    });
}

#[test]
fn a_fast_shard_wakes_the_drain_early_and_a_slow_one_lets_it_sleep() {
    let t = build();
    // A ring far larger than what is pushed here, so a quarter-full ring
    // never wakes the drain; this thread stands in for it.
    let (_drain, ends, shared) = open_with(&t.dir, &t.key, 1, |c| c.ring_bytes = 64 << 20);
    shared.set_drain_thread(std::thread::current());
    // Clear any wake-up left from before.
    std::thread::park_timeout(std::time::Duration::ZERO);

    // Slow: one nudge step (64 KiB) every 5 ms, below the early-wake rate.
    for _ in 0..4 {
        std::thread::sleep(std::time::Duration::from_millis(5));
        for _ in 0..66 {
            kilobyte(&ends[0]);
        }
    }
    let start = std::time::Instant::now();
    std::thread::park_timeout(std::time::Duration::from_millis(300));
    assert!(
        start.elapsed() >= std::time::Duration::from_millis(250),
        "a shard pushing 13 MB/s woke the drain"
    );

    // Fast: the same bytes at once.
    for _ in 0..4 * 66 {
        kilobyte(&ends[0]);
    }
    let start = std::time::Instant::now();
    std::thread::park_timeout(std::time::Duration::from_secs(5));
    assert!(
        start.elapsed() < std::time::Duration::from_secs(4),
        "a shard pushing 256 KiB at once did not wake the drain"
    );
}
