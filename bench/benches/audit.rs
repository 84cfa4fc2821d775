//! The audit trail's hot path: what a shard pays per record. Encoding a
//! command record into the reused scratch buffer, pushing it into the SPSC
//! ring, and the two together as sessions call them ([`ShardAudit::emit`]).
//! The target is below 100 ns per record. The drain side (decode, mask,
//! chain, frame) is measured too, though it runs on its own thread.

use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use custos::audit::record::{
    Context, Decision, Encoder, FLAG_RAW_RESP, Head, Kind, Proto, Record, Status,
};
use custos::audit::{AuditConfig, AuditShared, ShardAudit, ring};
use custos::metrics::AuditMetrics;
use custos_parsers::resp::encode;
use std::hint::black_box;

fn context() -> Context {
    Context::new(
        b"alice@example.com",
        &["engineering", "oncall"],
        b"https://idp.example.com/",
        b"6f1c2a9e-4b1d-4a57-9d1e-3c8f0e2b7a11",
        b"10.1.2.3:51234",
        b"cache",
    )
}

fn command() -> Vec<u8> {
    let mut raw = Vec::new();
    encode::command(&mut raw, &[b"SET", b"session:4711", &[b'v'; 64]]);
    raw
}

fn head() -> Head {
    Head {
        kind: Some(Kind::Command),
        protocol: Proto::Redis,
        decision: Some(Decision::Allow),
        flags: FLAG_RAW_RESP,
        shard: 1,
        time_ns: 1_795_000_000_000_000_000,
        session: 0x1_0000_0000_0042,
        cmd_no: 17,
        ..Head::default()
    }
}

/// A shard's end of the trail and the drain's end of its ring, with no
/// drain thread: the benchmark empties the ring itself.
fn shard_end() -> (ShardAudit, ring::Consumer) {
    let dir = std::env::temp_dir();
    let shared = Arc::new(AuditShared::new(
        AuditConfig::new(dir.clone(), dir.join("unused.key")),
        1,
        Arc::new(AuditMetrics::new(1)),
    ));
    let (p, cons) = ring::channel(4 << 20);
    (ShardAudit::new(0, shared, p), cons)
}

fn hot_path(c: &mut Criterion) {
    let ctx = context();
    let raw = command();
    let head = head();
    let mut group = c.benchmark_group("audit/record");
    group.throughput(Throughput::Elements(1));

    group.bench_function("encode_command", |b| {
        let mut out = Vec::with_capacity(4096);
        b.iter(|| {
            Encoder::start(&mut out, black_box(&head), &ctx)
                .rule(b"")
                .arg(black_box(&raw))
                .finish(b"", b"", b"");
            out.len()
        });
    });

    let mut body = Vec::new();
    Encoder::start(&mut body, &head, &ctx)
        .rule(b"")
        .arg(&raw)
        .finish(b"", b"", b"");
    group.bench_function("ring_push_pop", |b| {
        let (p, mut cons) = ring::channel(4 << 20);
        b.iter(|| {
            assert!(p.push(black_box(&body)));
            cons.pop(|e| {
                black_box(e.len());
            })
        });
    });

    // What a session pays: time, encode into the shard's scratch, push.
    // The ring is emptied in the same loop so it never fills.
    group.bench_function("emit_with_clock", |b| {
        let (shard, mut cons) = shard_end();
        b.iter(|| {
            let mut h = head;
            h.time_ns = custos::audit::record::now_ns();
            shard.emit(|out| {
                Encoder::start(out, &h, &ctx)
                    .rule(b"")
                    .arg(black_box(&raw))
                    .finish(b"", b"", b"")
            });
            cons.pop(|e| {
                black_box(e.len());
            })
        });
    });

    // What a Redis session pays per command: the wall-clock time of the
    // instant its batch was read (one clock read per 16 commands, as with
    // `-P 16`), encode into the scratch buffer, push.
    group.bench_function("emit_command", |b| {
        let (shard, mut cons) = shard_end();
        let mut now = std::time::Instant::now();
        let mut n = 0u32;
        b.iter(|| {
            n += 1;
            if n.is_multiple_of(16) {
                now = std::time::Instant::now();
            }
            let mut h = head;
            h.time_ns = shard.wall_ns(now);
            shard.emit(|out| {
                Encoder::start(out, &h, &ctx)
                    .rule(b"")
                    .arg(black_box(&raw))
                    .finish(b"", b"", b"")
            });
            cons.pop(|e| {
                black_box(e.len());
            })
        });
    });
    group.finish();

    let mut group = c.benchmark_group("audit/drain");
    group.throughput(Throughput::Elements(1));
    group.bench_function("decode", |b| {
        b.iter(|| Record::decode(black_box(&body)).map(|r| r.args.len()))
    });
    let masker = custos::audit::default_masker();
    group.bench_function("mask_and_frame", |b| {
        let mut masked = Vec::with_capacity(4096);
        let mut framed = Vec::with_capacity(4096);
        let mut prev = [0u8; 32];
        b.iter(|| {
            let r = Record::decode(black_box(&body)).expect("valid");
            masked.clear();
            for a in r.args.iter() {
                let _ = masker.mask_into(a, &mut masked);
            }
            framed.clear();
            prev = custos::audit::segment::frame(&mut framed, 17, &prev, &body);
            framed.len()
        });
    });
    // The drain's work per record as it runs: decode, split, mask each
    // argument and the excerpt, frame, CRC and chain hash.
    group.bench_function("record", |b| {
        let mut scratch = custos::audit::drain::Scratch::default();
        let mut framed = Vec::with_capacity(1 << 20);
        let mut prev = [0u8; 32];
        let mut seq = 0u64;
        b.iter(|| {
            if framed.len() > (1 << 20) - 4096 {
                framed.clear();
            }
            seq += 1;
            prev = custos::audit::segment::frame_with(&mut framed, seq, &prev, |out| {
                custos::audit::drain::masked_body(&masker, &mut scratch, 1, black_box(&body), out)
            });
            framed.len()
        });
    });
    // Per command as the drain runs under async durability: the command
    // entry held, its reply entry paired with it, one record written.
    let mut reply = Vec::new();
    let reply_head = Head {
        kind: Some(Kind::Reply),
        status: Status::Ok,
        flags: 0,
        decision: None,
        latency_us: 80,
        count: 5,
        ..head
    };
    Encoder::start(&mut reply, &reply_head, &ctx)
        .rule(b"")
        .finish(b"", b"+OK\r\n", b"");
    group.bench_function("command_with_reply", |b| {
        let mut scratch = custos::audit::drain::Scratch::default();
        let mut pairing = custos::audit::drain::Pairing::default();
        let mut framed = Vec::with_capacity(1 << 20);
        let mut prev = [0u8; 32];
        let mut seq = 0u64;
        let mut base = None;
        let mut records = 0u64;
        b.iter(|| {
            if framed.len() > (1 << 20) - 4096 {
                framed.clear();
            }
            let mut f = custos::audit::drain::Framer {
                out: &mut framed,
                next_seq: &mut seq,
                head: &mut prev,
                out_base: &mut base,
                records: &mut records,
            };
            pairing.take(&mut f, &masker, &mut scratch, 1, black_box(&body), true);
            pairing.take(&mut f, &masker, &mut scratch, 1, black_box(&reply), true);
            framed.len()
        });
    });
    group.finish();
}

criterion_group!(benches, hot_path);
criterion_main!(benches);
