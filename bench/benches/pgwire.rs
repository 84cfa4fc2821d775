//! PostgreSQL parser throughput on the proxy's hot paths: walking a result
//! set of DataRows (boundaries, parse, every value), rewriting one column
//! of every row as masking does, and walking extended-query batches
//! (Parse/Bind/Execute/Sync) from a client.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use custos_parsers::pgwire::encode::{self, Rewrite};
use custos_parsers::pgwire::{Limits, backend, check, frontend};
use std::hint::black_box;

/// Result sets and batches are repeated to about this size, a typical
/// read buffer's worth.
const TARGET_BYTES: usize = 64 * 1024;
const BATCH_PARAMS: usize = 4;

/// Rows of a `users` table: id, name, email, a 64-byte note and a NULL,
/// as a server sends them in text format.
fn result_set() -> (Vec<u8>, usize) {
    let note = [b'n'; 64];
    let mut buf = Vec::with_capacity(TARGET_BYTES + 1024);
    let mut rows = 0;
    while buf.len() < TARGET_BYTES {
        let id = rows.to_string();
        let name = format!("user {rows:06}");
        let email = format!("user{rows:06}@example.com");
        encode::data_row(
            &mut buf,
            &[
                Some(id.as_bytes()),
                Some(name.as_bytes()),
                Some(email.as_bytes()),
                Some(&note),
                None,
            ],
        );
        rows += 1;
    }
    (buf, rows)
}

/// Extended-query batches as a driver pipelines them: Parse of the
/// unnamed statement, Bind of four parameters, Execute, Sync.
fn batches() -> (Vec<u8>, usize) {
    let mut buf = Vec::with_capacity(TARGET_BYTES + 1024);
    let mut messages = 0;
    let mut n = 0u32;
    while buf.len() < TARGET_BYTES {
        let id = n.to_string();
        let email = format!("user{n:06}@example.com");
        let params: [Option<&[u8]>; BATCH_PARAMS] = [
            Some(id.as_bytes()),
            Some(email.as_bytes()),
            Some(b"active"),
            None,
        ];
        encode::parse(
            &mut buf,
            b"",
            b"UPDATE users SET email = $2, status = $3, note = $4 WHERE id = $1",
            &[23, 25, 25, 25],
        );
        encode::bind(&mut buf, b"", b"", &[0], &params, &[0]);
        encode::execute(&mut buf, b"", 0);
        encode::sync(&mut buf);
        messages += 4;
        n += 1;
    }
    (buf, messages)
}

fn data_rows(c: &mut Criterion) {
    let (buf, rows) = result_set();
    let limits = Limits::backend();
    let mut group = c.benchmark_group("pgwire/backend");
    group.throughput(Throughput::Bytes(buf.len() as u64));
    group.bench_function("data_rows_64k_walk", |b| {
        b.iter(|| {
            let buf = black_box(&buf[..]);
            let mut pos = 0;
            let mut seen = 0;
            let mut value_bytes = 0;
            while let Some(len) = check(&buf[pos..], &limits).expect("valid stream") {
                let msg = &buf[pos..pos + len];
                if let backend::Message::DataRow(row) = backend::parse(msg).expect("valid row") {
                    value_bytes += row.values().flatten().map(<[u8]>::len).sum::<usize>();
                    seen += 1;
                }
                pos += len;
            }
            assert_eq!(seen, rows);
            value_bytes
        });
    });
    group.bench_function("data_rows_64k_rewrite_one_column", |b| {
        let mut out = Vec::with_capacity(buf.len() + 1024);
        b.iter(|| {
            out.clear();
            let buf = black_box(&buf[..]);
            let mut pos = 0;
            while let Some(len) = check(&buf[pos..], &limits).expect("valid stream") {
                let msg = &buf[pos..pos + len];
                if let backend::Message::DataRow(row) = backend::parse(msg).expect("valid row") {
                    encode::data_row_rewrite(&mut out, &row, |column, value, out| {
                        match (column, value) {
                            (2, Some(email)) => {
                                out.extend_from_slice(b"****");
                                let at = email.iter().position(|&b| b == b'@').unwrap_or(0);
                                out.extend_from_slice(&email[at..]);
                                Rewrite::Replaced
                            }
                            _ => Rewrite::Keep,
                        }
                    });
                }
                pos += len;
            }
            out.len()
        });
    });
    group.finish();
}

fn extended_query(c: &mut Criterion) {
    let (buf, messages) = batches();
    let limits = Limits::frontend();
    let mut group = c.benchmark_group("pgwire/frontend");
    group.throughput(Throughput::Bytes(buf.len() as u64));
    group.bench_function("parse_bind_execute_sync_64k", |b| {
        b.iter(|| {
            let buf = black_box(&buf[..]);
            let mut pos = 0;
            let mut seen = 0;
            let mut param_bytes = 0;
            while let Some(len) = check(&buf[pos..], &limits).expect("valid stream") {
                let msg = &buf[pos..pos + len];
                match frontend::parse(msg).expect("valid message") {
                    frontend::Message::Bind(bind) => {
                        param_bytes += bind.params.iter().flatten().map(<[u8]>::len).sum::<usize>();
                    }
                    frontend::Message::Parse { sql, .. } => param_bytes += sql.len(),
                    _ => {}
                }
                seen += 1;
                pos += len;
            }
            assert_eq!(seen, messages);
            param_bytes
        });
    });
    group.finish();
}

criterion_group!(benches, data_rows, extended_query);
criterion_main!(benches);
