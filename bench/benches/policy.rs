//! Policy decisions per second on one core, with a 50-rule policy.
//!
//! `redis/head`: the identity's rules look at command names and
//! categories only, so a decision is a table look-up and an array index
//! (the session's hot path). `redis/keys`: a rule with key globs applies,
//! so each command's keys are found with its key specifications first.
//! Inputs are pre-encoded RESP commands, as the session holds them.
//!
//! `sql/uncached`: PostgreSQL's parser on every statement, then the
//! decision; `sql/cached`: the shard's classification cache in front, as a
//! session sees repeated statements.

use std::hint::black_box;
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use custos::config::Config;
use custos::identity::Identity;
use custos::policy::decide::SqlRules;
use custos::policy::redis::FrameArgs;
use custos::policy::sql::{SqlCache, classify};
use custos::policy::{Gate, PolicyHandle, PolicyState, RedisGate, ShardPolicy};
use custos_parsers::resp::{self, CommandHead, HeadStatus, Limits};

/// 50 rules: 40 per-team key rules, ten for everyone (names, categories,
/// subcommands, scripts, one key glob for everyone when `secrets`).
fn fifty_rules(secrets: bool) -> String {
    let mut s = String::from(
        "[[target]]\nname = \"cache\"\nprotocol = \"redis\"\nlisten = \"127.0.0.1:16380\"\nupstream = \"127.0.0.1:6379\"\nauth = \"none\"\n",
    );
    for i in 0..40 {
        s.push_str(&format!(
            "\n[[rule]]\nid = \"team-{i}\"\ntarget = \"cache\"\ngroups = [\"team-{i}\"]\ncommand = [\"@write\"]\nkeys = [\"team:{i}:*\"]\naction = \"allow\"\n"
        ));
    }
    let everyone: [(&str, &str, &str); 9] = [
        ("no-flush", r#"["FLUSHALL", "FLUSHDB"]"#, "block"),
        ("no-config-set", r#"["CONFIG SET", "CLIENT KILL"]"#, "block"),
        ("no-dangerous", r#"["@dangerous"]"#, "block"),
        ("scripts", r#"["@scripting"]"#, "approve"),
        ("no-admin", r#"["@admin"]"#, "block"),
        ("no-pubsub", r#"["PUBLISH", "SPUBLISH"]"#, "block"),
        ("no-module", r#"["MODULE", "FT.DROPINDEX"]"#, "block"),
        ("no-debug", r#"["DEBUG", "MONITOR"]"#, "block"),
        ("no-bgsave", r#"["BGSAVE", "BGREWRITEAOF"]"#, "block"),
    ];
    for (id, cmds, action) in everyone {
        s.push_str(&format!(
            "\n[[rule]]\nid = \"{id}\"\ntarget = \"cache\"\ngroups = [\"*\"]\ncommand = {cmds}\naction = \"{action}\"\nreason = \"{id}\"\n"
        ));
    }
    let last = if secrets {
        "keys = [\"secret:*\"]\naction = \"block\"\nreason = \"secret keys\""
    } else {
        "command = [\"SHUTDOWN\"]\naction = \"block\"\nreason = \"shutdown\""
    };
    s.push_str(&format!(
        "\n[[rule]]\nid = \"last\"\ntarget = \"cache\"\ngroups = [\"*\"]\n{last}\n"
    ));
    s
}

fn gate(src: &str, groups: &[&str]) -> RedisGate {
    let cfg = Config::parse(Path::new("bench.toml"), src).expect("bench policy");
    assert_eq!(cfg.policy.rules.len(), 50);
    let handle = Arc::new(PolicyHandle::new(PolicyState {
        policy: cfg.policy.clone(),
        tables: vec![None],
    }));
    let mut id = Identity::anonymous();
    id.groups = groups.iter().map(|g| g.to_string()).collect();
    RedisGate::new(Rc::new(ShardPolicy::new(handle, 0)), 0, &id)
}

fn commands() -> Vec<(Vec<u8>, CommandHead)> {
    let lines: &[&[&str]] = &[
        &["GET", "team:7:user:1"],
        &["SET", "team:7:user:1", "value"],
        &["HGETALL", "team:7:h"],
        &["MGET", "team:7:a", "team:7:b", "team:7:c"],
        &["INCR", "team:7:counter"],
        &["EXPIRE", "team:7:k", "60"],
        &["ZADD", "team:7:z", "1", "m"],
        &["PING"],
    ];
    lines.iter().map(|args| encoded(args)).collect()
}

/// A command as the session holds it: the frame and its parsed head.
fn encoded(args: &[&str]) -> (Vec<u8>, CommandHead) {
    let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
    let mut frame = Vec::new();
    resp::encode::command(&mut frame, &args);
    let Ok(HeadStatus::Multibulk(h)) = resp::command_head(&frame, &Limits::request()) else {
        panic!("head")
    };
    (frame, h)
}

fn decide(g: &RedisGate, frame: &[u8], head: &CommandHead) -> bool {
    match g.check_head(frame, head) {
        Gate::Pass => true,
        Gate::NeedFrame(id) => {
            matches!(
                g.check_frame(id, &FrameArgs::parse(frame).expect("frame")),
                Gate::Pass
            )
        }
        Gate::Answer { .. } => false,
    }
}

fn redis(c: &mut Criterion) {
    let cmds = commands();
    let mut group = c.benchmark_group("policy/redis");
    group.throughput(Throughput::Elements(cmds.len() as u64));
    let head = gate(&fifty_rules(false), &["analysts"]);
    group.bench_function("head_50_rules", |b| {
        b.iter(|| {
            let mut allowed = 0;
            for (f, h) in &cmds {
                allowed += usize::from(decide(&head, black_box(f), h));
            }
            assert_eq!(allowed, cmds.len());
        })
    });
    let keys = gate(&fifty_rules(true), &["team-7"]);
    group.bench_function("keys_50_rules", |b| {
        b.iter(|| {
            let mut allowed = 0;
            for (f, h) in &cmds {
                allowed += usize::from(decide(&keys, black_box(f), h));
            }
            assert_eq!(allowed, cmds.len());
        })
    });
    // bench/configs/policy50_redis.toml, the end-to-end comparison's policy:
    // 50 rules, 27 with key globs, none matching redis-benchmark's keys.
    let file = format!(
        "[[target]]\nname = \"cache\"\nprotocol = \"redis\"\nlisten = \"127.0.0.1:16380\"\nupstream = \"127.0.0.1:6379\"\nauth = \"none\"\n{}",
        include_str!("../configs/policy50_redis.toml")
    );
    let bench_file = gate(&file, &[]);
    let bench_cmds: Vec<(Vec<u8>, CommandHead)> = [
        &["GET", "key:000000012345"][..],
        &[
            "SET",
            "key:000000012345",
            "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
        ],
    ]
    .iter()
    .map(|args| encoded(args))
    .collect();
    group.throughput(Throughput::Elements(bench_cmds.len() as u64));
    group.bench_function("bench_file_50_rules", |b| {
        b.iter(|| {
            let mut allowed = 0;
            for (f, h) in &bench_cmds {
                allowed += usize::from(decide(&bench_file, black_box(f), h));
            }
            assert_eq!(allowed, bench_cmds.len());
        })
    });
    group.finish();
}

/// A 50-rule PostgreSQL policy: statement kinds, tables, functions.
fn fifty_sql_rules() -> String {
    let mut s = String::from(
        "[[target]]\nname = \"db\"\nprotocol = \"postgres\"\nlisten = \"127.0.0.1:15433\"\nupstream = \"127.0.0.1:5432\"\nupstream_user = \"app\"\nallow_plaintext_auth = true\nauth = \"none\"\n",
    );
    for i in 0..46 {
        s.push_str(&format!(
            "\n[[rule]]\nid = \"team-{i}\"\ntarget = \"db\"\ngroups = [\"team-{i}\"]\nstatement = [\"INSERT\", \"UPDATE\", \"SELECT\"]\ntables = [\"team{i}.*\"]\naction = \"allow\"\n"
        ));
    }
    for (id, key) in [
        ("no-ddl", "statement = [\"DROP\", \"TRUNCATE\"]"),
        ("no-mass-update", "without_where = true"),
        ("no-files", "functions = [\"pg_read_file\", \"lo_*\"]"),
        ("no-secrets", "tables = [\"public.secrets\", \"vault.*\"]"),
    ] {
        s.push_str(&format!(
            "\n[[rule]]\nid = \"{id}\"\ntarget = \"db\"\ngroups = [\"*\"]\n{key}\naction = \"block\"\nreason = \"{id}\"\n"
        ));
    }
    s
}

const SQL: &[&str] = &[
    "SELECT abalance FROM pgbench_accounts WHERE aid = $1",
    "UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2",
    "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES ($1, $2, $3, $4, CURRENT_TIMESTAMP)",
    "WITH recent AS (SELECT * FROM memories WHERE agent = $1 ORDER BY created DESC LIMIT 10) SELECT m.*, e.embedding FROM recent m JOIN embeddings e ON e.id = m.id",
];

fn sql(c: &mut Criterion) {
    let cfg = Config::parse(Path::new("bench.toml"), &fifty_sql_rules()).expect("bench policy");
    assert_eq!(cfg.policy.rules.len(), 50);
    let rules = SqlRules::compile(&cfg.policy, 0, &["analysts".to_string()]);
    let mut group = c.benchmark_group("policy/sql");
    group.throughput(Throughput::Elements(SQL.len() as u64));
    group.bench_function("uncached_50_rules", |b| {
        b.iter(|| {
            for q in SQL {
                let facts = classify(black_box(q)).map(std::rc::Rc::new);
                black_box(rules.decide(&facts));
            }
        })
    });
    let mut cache = SqlCache::new(4096);
    group.bench_function("cached_50_rules", |b| {
        b.iter(|| {
            for q in SQL {
                let facts = cache.classify(black_box(q));
                black_box(rules.decide(&facts));
            }
        })
    });
    group.finish();
}

criterion_group!(benches, redis, sql);
criterion_main!(benches);
