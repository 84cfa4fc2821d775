//! RESP parser throughput: the proxy's hot path (frame boundaries of
//! pipelined commands, command heads) and whole-reply checks and parses.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use custos_parsers::resp::{self, HeadStatus, Limits, Scanner, encode};
use std::hint::black_box;

const PIPELINE_COMMANDS: usize = 16;
const VALUE_BYTES: usize = 64;
const PIPELINE_TARGET_BYTES: usize = 64 * 1024;
const REPLY_ELEMENTS: usize = 1000;

/// Batches of 16 `SET key value` commands with 64-byte values, repeated to
/// about 64 KiB, as a pipelining client sends them.
fn set_pipeline() -> (Vec<u8>, usize) {
    let value = [b'v'; VALUE_BYTES];
    let mut buf = Vec::with_capacity(PIPELINE_TARGET_BYTES + 4096);
    let mut commands = 0;
    while buf.len() < PIPELINE_TARGET_BYTES {
        for _ in 0..PIPELINE_COMMANDS {
            let key = format!("key:{commands:06}");
            encode::command(&mut buf, &[b"SET", key.as_bytes(), &value]);
            commands += 1;
        }
    }
    (buf, commands)
}

/// An `LRANGE`-style reply: an array of 64-byte bulk strings.
fn array_reply() -> Vec<u8> {
    let value = [b'x'; VALUE_BYTES];
    let mut buf = Vec::new();
    encode::array_header(&mut buf, REPLY_ELEMENTS);
    for _ in 0..REPLY_ELEMENTS {
        encode::bulk(&mut buf, &value);
    }
    buf
}

fn scanner(c: &mut Criterion) {
    let (pipeline, commands) = set_pipeline();
    let mut group = c.benchmark_group("resp/scanner");
    group.throughput(Throughput::Bytes(pipeline.len() as u64));
    group.bench_function("set_pipeline_64k", |b| {
        let mut scanner = Scanner::request(Limits::request());
        b.iter(|| {
            let buf = black_box(&pipeline[..]);
            let mut pos = 0;
            let mut frames = 0;
            while pos < buf.len() {
                let scan = scanner.scan(&buf[pos..]).expect("valid pipeline");
                pos += scan.consumed;
                frames += usize::from(scan.complete);
            }
            assert_eq!(frames, commands);
            frames
        });
    });
    let reply = array_reply();
    group.throughput(Throughput::Bytes(reply.len() as u64));
    group.bench_function("array_reply_1000x64", |b| {
        let mut scanner = Scanner::new(Limits::reply());
        b.iter(|| scanner.scan(black_box(&reply)).expect("valid reply"));
    });
    group.finish();
}

fn head(c: &mut Criterion) {
    let mut get = Vec::new();
    encode::command(&mut get, &[b"GET", b"user:1000:profile"]);
    let limits = Limits::request();
    let mut group = c.benchmark_group("resp/command_head");
    group.throughput(Throughput::Bytes(get.len() as u64));
    group.bench_function("get", |b| {
        b.iter(|| match resp::command_head(black_box(&get), &limits) {
            Ok(HeadStatus::Multibulk(head)) => head.argc,
            other => panic!("{other:?}"),
        });
    });
    group.finish();
}

fn reply(c: &mut Criterion) {
    let reply = array_reply();
    let limits = Limits::reply();
    let mut group = c.benchmark_group("resp/reply");
    group.throughput(Throughput::Bytes(reply.len() as u64));
    group.bench_function("check_array_1000x64", |b| {
        b.iter(|| resp::check(black_box(&reply), &limits).expect("valid reply"));
    });
    group.bench_function("parse_array_1000x64", |b| {
        b.iter(|| resp::parse(black_box(&reply), &limits).expect("valid reply"));
    });
    group.finish();
}

criterion_group!(benches, scanner, head, reply);
criterion_main!(benches);
