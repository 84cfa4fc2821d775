//! SQL classification cost: a full parse and walk with PostgreSQL's parser
//! (uncached), the per-shard cache hit that repeated statements take, and,
//! for the choice of cache key, what pg_query's own normalization,
//! fingerprint and scanner cost next to a parse.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use custos::policy::sql::{SessionSql, SqlCache, classify};
use std::hint::black_box;

const POINT_SELECT: &str = "SELECT id, name, email FROM users WHERE id = $1";
const INSERT: &str =
    "INSERT INTO orders (user_id, amount, note, created_at) VALUES ($1, $2, $3, now())";
const THREE_STATEMENTS: &str =
    "BEGIN; UPDATE accounts SET balance = balance - 10 WHERE id = 1 AND balance >= 10; COMMIT";
const DO_BLOCK: &str = "DO $$ DECLARE n int; BEGIN \
    SELECT count(*) INTO n FROM orders WHERE amount < 0; \
    IF n > 0 THEN DELETE FROM orders WHERE amount < 0; END IF; \
    RAISE NOTICE 'removed %', n; END $$";
/// A psql-style statement with inlined literals, as simple-protocol clients
/// send them.
const LITERAL_SELECT: &str =
    "SELECT id, name, email FROM users WHERE id = 42 AND status = 'active'";

fn uncached(c: &mut Criterion) {
    let mut g = c.benchmark_group("sql_classify_uncached");
    for (name, sql) in [
        ("point_select", POINT_SELECT),
        ("insert", INSERT),
        ("three_statements", THREE_STATEMENTS),
        ("do_block", DO_BLOCK),
    ] {
        g.throughput(Throughput::Bytes(sql.len() as u64));
        g.bench_function(name, |b| b.iter(|| classify(black_box(sql)).unwrap()));
    }
    g.finish();
}

fn cached(c: &mut Criterion) {
    let mut g = c.benchmark_group("sql_classify_cached");
    g.throughput(Throughput::Bytes(POINT_SELECT.len() as u64));
    let mut cache = SqlCache::new(4096);
    // A working set of distinct statements, as a busy shard holds.
    for i in 0..1000 {
        cache
            .classify(&format!("SELECT * FROM t{i} WHERE id = $1"))
            .unwrap();
    }
    cache.classify(POINT_SELECT).unwrap();
    g.bench_function("point_select_hit", |b| {
        b.iter(|| cache.classify(black_box(POINT_SELECT)).unwrap())
    });
    let mut session = SessionSql::default();
    g.bench_function("point_select_session_hit", |b| {
        b.iter(|| {
            session
                .classify(&mut cache, black_box(POINT_SELECT))
                .unwrap()
        })
    });
    // A text seen before with other literals: found by its normalized form.
    cache.classify(LITERAL_SELECT).unwrap();
    let mut n = 0u64;
    let texts: Vec<String> = (0..1024)
        .map(|i| format!("SELECT id, name, email FROM users WHERE id = {i} AND status = 'active'"))
        .collect();
    g.throughput(Throughput::Bytes(LITERAL_SELECT.len() as u64));
    g.bench_function("literal_select_normalized_hit", |b| {
        b.iter(|| {
            n += 1;
            cache
                .classify(black_box(&texts[n as usize % texts.len()]))
                .unwrap()
        })
    });
    cache.classify(DO_BLOCK).unwrap();
    g.throughput(Throughput::Bytes(DO_BLOCK.len() as u64));
    g.bench_function("do_block_hit", |b| {
        b.iter(|| cache.classify(black_box(DO_BLOCK)).unwrap())
    });
    g.finish();
}

/// What a normalized cache key would cost: each of these runs before a
/// lookup, on hits as well as misses.
fn key_candidates(c: &mut Criterion) {
    let mut g = c.benchmark_group("sql_key_candidates");
    g.throughput(Throughput::Bytes(LITERAL_SELECT.len() as u64));
    g.bench_function("parse_only", |b| {
        b.iter(|| pg_query::parse(black_box(LITERAL_SELECT), 0).unwrap())
    });
    g.bench_function("classify", |b| {
        b.iter(|| classify(black_box(LITERAL_SELECT)).unwrap())
    });
    g.bench_function("normalize", |b| {
        b.iter(|| pg_query::normalize(black_box(LITERAL_SELECT)).unwrap())
    });
    g.bench_function("fingerprint", |b| {
        b.iter(|| pg_query::fingerprint(black_box(LITERAL_SELECT), 0, 0).unwrap())
    });
    g.bench_function("scan_tokens", |b| {
        b.iter(|| pg_query::scan_tokens(black_box(LITERAL_SELECT)).unwrap())
    });
    g.finish();
}

criterion_group!(benches, uncached, cached, key_candidates);
criterion_main!(benches);
