//! Table-driven corpus of policy decisions: (target, groups, request) →
//! (action, rule). Every Redis case is also decided lower-cased, in mixed
//! case, as an inline command and through the session gate, which must all
//! agree.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;

use custos_parsers::resp::{self, HeadStatus, Limits};

use super::redis::{CommandTable, FrameArgs};
use super::sql;
use super::*;
use crate::config::Config;
use crate::identity::Identity;

/// Counts allocations made by the current thread, to prove that deciding
/// a command does not allocate.
struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator; the counter is thread-local
// and touches no allocation.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(|c| c.get())
}

pub(crate) const REDIS_POLICY: &str = r#"
[[target]]
name = "cache"
protocol = "redis"
listen = "127.0.0.1:16380"
upstream = "127.0.0.1:6379"
auth = "none"

[[target]]
name = "strict"
protocol = "redis"
listen = "127.0.0.1:16381"
upstream = "127.0.0.1:6379"
auth = "none"
default_action = "block"

[[rule]]
id = "no-flush"
target = "cache"
groups = ["*"]
command = ["FLUSHALL", "flushdb"]
action = "block"
reason = "destructive command"

[[rule]]
id = "module-search"
target = "cache"
groups = ["*"]
command = ["FT.DROPINDEX"]
action = "block"
reason = "index management"

[[rule]]
id = "admins-config"
target = "cache"
groups = ["admins"]
command = ["CONFIG"]
action = "allow"

[[rule]]
id = "no-config-set"
target = "cache"
groups = ["*"]
command = ["CONFIG SET", "CLIENT|KILL"]
action = "block"
reason = "configuration is managed"

[[rule]]
id = "agent-scripts"
target = "cache"
groups = ["agents"]
command = ["@scripting"]
action = "approve"
reason = "scripts need approval"

[[rule]]
id = "no-dangerous"
target = "cache"
groups = ["*"]
command = ["@dangerous"]
action = "block"
reason = "dangerous command"

[[rule]]
id = "secrets"
target = "cache"
groups = ["*"]
keys = ["secret:*", "*:password"]
action = "block"
reason = "secret keys"

[[rule]]
id = "tenant-a-writes"
target = "cache"
groups = ["tenant-a"]
command = ["@write"]
keys = ["tenant:a:*"]
action = "allow"

[[rule]]
id = "tenant-a-other-writes"
target = "cache"
groups = ["tenant-a"]
command = ["@write", "@scripting"]
action = "block"
reason = "writes outside the tenant"

[[rule]]
id = "readers"
target = "cache"
groups = ["readers"]
command = ["@write", "@admin", "@scripting"]
action = "block"
reason = "read-only identity"

[[rule]]
id = "strict-read"
target = "strict"
groups = ["*"]
command = ["@read", "PING", "MULTI", "EXEC", "DISCARD"]
action = "allow"

[[rule]]
id = "strict-writers"
target = "strict"
groups = ["writers"]
command = ["@write"]
action = "allow"
"#;

fn config(src: &str) -> Config {
    Config::parse(Path::new("custos.toml"), src).unwrap_or_else(|e| panic!("{e}"))
}

fn groups(g: &str) -> Vec<String> {
    g.split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

fn explain(policy: &Policy, target: usize, d: Decision) -> (Action, String) {
    (d.action, policy.explain(target, d).0.to_string())
}

use Action::{Allow as A, Approve as P, Block as B};

/// (target, groups, command, action, rule)
const REDIS_CASES: &[(&str, &str, &str, Action, &str)] = &[
    // Plain reads and writes for anyone.
    ("cache", "", "GET k", A, "default"),
    ("cache", "", "SET k v", A, "default"),
    ("cache", "", "PING", A, "default"),
    ("cache", "", "MGET a b c", A, "default"),
    ("cache", "", "HSET h f v", A, "default"),
    ("cache", "", "XADD s * f v", A, "default"),
    ("cache", "", "INCR counter", A, "default"),
    // Names, in every case.
    ("cache", "", "FLUSHALL", B, "no-flush"),
    ("cache", "", "FLUSHALL ASYNC", B, "no-flush"),
    ("cache", "", "FLUSHDB", B, "no-flush"),
    ("cache", "admins", "FLUSHALL", B, "no-flush"),
    // Subcommands.
    ("cache", "", "CONFIG SET maxmemory 1", B, "no-config-set"),
    ("cache", "", "CONFIG GET maxmemory", B, "no-dangerous"),
    (
        "cache",
        "admins",
        "CONFIG GET maxmemory",
        A,
        "admins-config",
    ),
    (
        "cache",
        "admins",
        "CONFIG SET maxmemory 1",
        A,
        "admins-config",
    ),
    ("cache", "admins", "CONFIG RESETSTAT", A, "admins-config"),
    ("cache", "", "CLIENT KILL ID 1", B, "no-config-set"),
    ("cache", "", "CLIENT LIST", B, "no-dangerous"),
    ("cache", "", "CLIENT SETNAME x", A, "default"),
    ("cache", "", "CLIENT ID", A, "default"),
    // Categories.
    ("cache", "", "KEYS *", B, "no-dangerous"),
    ("cache", "", "DEBUG SLEEP 0", B, "no-dangerous"),
    ("cache", "", "SHUTDOWN", B, "no-dangerous"),
    ("cache", "", "SWAPDB 0 1", B, "no-dangerous"),
    ("cache", "", "MIGRATE h 1 k 0 10", B, "no-dangerous"),
    ("cache", "", "SORT l", B, "no-dangerous"),
    ("cache", "", "SAVE", B, "no-dangerous"),
    ("cache", "", "ACL SETUSER x on", B, "no-dangerous"),
    ("cache", "", "REPLICAOF h 1", B, "no-dangerous"),
    ("cache", "", "MODULE LOAD /x.so", B, "no-dangerous"),
    ("cache", "", "INFO", B, "no-dangerous"),
    ("cache", "", "OBJECT ENCODING k", A, "default"),
    // Scripting: a script can run anything.
    ("cache", "agents", "EVAL return 0", P, "agent-scripts"),
    ("cache", "agents", "EVALSHA abc 0", P, "agent-scripts"),
    ("cache", "agents", "FCALL f 0", P, "agent-scripts"),
    ("cache", "agents", "FUNCTION LOAD code", P, "agent-scripts"),
    ("cache", "agents", "SCRIPT LOAD code", P, "agent-scripts"),
    ("cache", "agents", "EVAL_RO return 0", P, "agent-scripts"),
    ("cache", "agents", "FLUSHALL", B, "no-flush"),
    ("cache", "agents", "GET k", A, "default"),
    ("cache", "", "EVAL return 0", A, "default"),
    // Keys: any key matching refuses.
    ("cache", "", "GET secret:1", B, "secrets"),
    ("cache", "", "SET secret:1 v", B, "secrets"),
    ("cache", "", "MGET a secret:1", B, "secrets"),
    ("cache", "", "MSET a 1 secret:x 2", B, "secrets"),
    ("cache", "", "MSET a 1 b secret:x", A, "default"),
    ("cache", "", "DEL a b user:password", B, "secrets"),
    ("cache", "", "GET user:password", B, "secrets"),
    ("cache", "", "GET user:passwords", A, "default"),
    ("cache", "", "EVAL return 1 secret:1", B, "secrets"),
    ("cache", "", "EVAL return 0 secret:1", A, "default"),
    ("cache", "", "EVAL return 2 a secret:1", B, "secrets"),
    ("cache", "", "EVAL return x secret:1", B, "secrets"),
    ("cache", "", "EVALSHA abc 1 secret:2", B, "secrets"),
    ("cache", "", "FCALL f 1 secret:2", B, "secrets"),
    ("cache", "", "XREAD STREAMS secret:s 0", B, "secrets"),
    (
        "cache",
        "",
        "XREAD COUNT 1 STREAMS a secret:s 0 0",
        B,
        "secrets",
    ),
    ("cache", "", "XREAD COUNT 1 STREAMS a b 0 0", A, "default"),
    ("cache", "", "RENAME a secret:a", B, "secrets"),
    ("cache", "", "COPY secret:a b", B, "secrets"),
    ("cache", "", "ZUNIONSTORE d 2 a secret:z", B, "secrets"),
    ("cache", "", "ZUNIONSTORE secret:d 1 a", B, "secrets"),
    ("cache", "", "BLPOP a secret:l 0", B, "secrets"),
    ("cache", "", "LMPOP 2 a secret:l LEFT", B, "secrets"),
    ("cache", "", "OBJECT ENCODING secret:1", B, "secrets"),
    ("cache", "", "GET Secret:1", A, "default"),
    // Keys on an allow rule: every key must match.
    (
        "cache",
        "tenant-a",
        "SET tenant:a:1 v",
        A,
        "tenant-a-writes",
    ),
    (
        "cache",
        "tenant-a",
        "MSET tenant:a:1 v tenant:a:2 w",
        A,
        "tenant-a-writes",
    ),
    (
        "cache",
        "tenant-a",
        "MSET tenant:a:1 v tenant:b:2 w",
        B,
        "tenant-a-other-writes",
    ),
    // More keys than a decision collects on the stack: the same answers,
    // key by key.
    (
        "cache",
        "",
        "DEL k1 k2 k3 k4 k5 k6 k7 k8 k9 k10 k11 k12 k13 k14 k15 k16 k17 secret:1",
        B,
        "secrets",
    ),
    (
        "cache",
        "",
        "DEL k1 k2 k3 k4 k5 k6 k7 k8 k9 k10 k11 k12 k13 k14 k15 k16 k17 k18",
        A,
        "default",
    ),
    (
        "cache",
        "tenant-a",
        "DEL tenant:a:1 tenant:a:2 tenant:a:3 tenant:a:4 tenant:a:5 tenant:a:6 tenant:a:7 \
         tenant:a:8 tenant:a:9 tenant:a:10 tenant:a:11 tenant:a:12 tenant:a:13 tenant:a:14 \
         tenant:a:15 tenant:a:16 tenant:a:17",
        A,
        "tenant-a-writes",
    ),
    (
        "cache",
        "tenant-a",
        "DEL tenant:a:1 tenant:a:2 tenant:a:3 tenant:a:4 tenant:a:5 tenant:a:6 tenant:a:7 \
         tenant:a:8 tenant:a:9 tenant:a:10 tenant:a:11 tenant:a:12 tenant:a:13 tenant:a:14 \
         tenant:a:15 tenant:a:16 tenant:b:17",
        B,
        "tenant-a-other-writes",
    ),
    (
        "cache",
        "tenant-a",
        "DEL tenant:a:1 tenant:a:2 tenant:a:3 tenant:a:4 tenant:a:5 tenant:a:6 tenant:a:7 \
         tenant:a:8 tenant:a:9 tenant:a:10 tenant:a:11 tenant:a:12 tenant:a:13 tenant:a:14 \
         tenant:a:15 tenant:b:16",
        B,
        "tenant-a-other-writes",
    ),
    (
        "cache",
        "tenant-a",
        "SET tenant:b:1 v",
        B,
        "tenant-a-other-writes",
    ),
    (
        "cache",
        "tenant-a",
        "DEL tenant:a:1 other",
        B,
        "tenant-a-other-writes",
    ),
    ("cache", "tenant-a", "GET tenant:b:1", A, "default"),
    ("cache", "tenant-a", "SET secret:1 v", B, "secrets"),
    (
        "cache",
        "tenant-a",
        "EVAL return 1 tenant:a:1",
        B,
        "tenant-a-other-writes",
    ),
    (
        "cache",
        "tenant-a",
        "RENAME tenant:a:1 tenant:a:2",
        A,
        "tenant-a-writes",
    ),
    (
        "cache",
        "tenant-a",
        "RENAME tenant:a:1 tenant:b:2",
        B,
        "tenant-a-other-writes",
    ),
    // Read-only identities.
    ("cache", "readers", "GET k", A, "default"),
    ("cache", "readers", "SET k v", B, "readers"),
    ("cache", "readers", "HSET h f v", B, "readers"),
    ("cache", "readers", "DEL k", B, "readers"),
    ("cache", "readers", "EXPIRE k 10", B, "readers"),
    ("cache", "readers", "XADD s * f v", B, "readers"),
    ("cache", "readers", "PUBLISH c m", A, "default"),
    ("cache", "readers", "EVAL return 0", B, "readers"),
    ("cache", "readers", "GETDEL k", B, "readers"),
    (
        "cache",
        "readers,agents",
        "EVAL return 0",
        P,
        "agent-scripts",
    ),
    // Unknown commands: literal names match; category rules match only when
    // they refuse.
    ("cache", "", "FT.DROPINDEX idx", B, "module-search"),
    ("cache", "", "ft.dropindex idx", B, "module-search"),
    ("cache", "", "FT.SEARCH idx q", B, "no-dangerous"),
    ("cache", "", "NOSUCHCOMMAND", B, "no-dangerous"),
    ("cache", "admins", "NOSUCHCOMMAND", B, "no-dangerous"),
    // The strict target: default block.
    ("strict", "", "GET k", A, "strict-read"),
    ("strict", "", "MGET a b", A, "strict-read"),
    ("strict", "", "PING", A, "strict-read"),
    ("strict", "", "SET k v", B, "default"),
    ("strict", "", "FLUSHALL", B, "default"),
    ("strict", "", "CONFIG GET x", B, "default"),
    ("strict", "writers", "SET k v", A, "strict-writers"),
    ("strict", "writers", "FLUSHALL", A, "strict-writers"),
    ("strict", "", "FT.SEARCH idx q", B, "default"),
    ("strict", "", "EVAL return 0", B, "default"),
    ("strict", "", "MULTI", A, "strict-read"),
    ("strict", "", "HGETALL h", A, "strict-read"),
    ("strict", "", "XREAD STREAMS s 0", A, "strict-read"),
];

fn redis_decide(cfg: &Config, table: &CommandTable, t: &str, g: &str, line: &str) -> Decision {
    let target = cfg.targets.iter().position(|x| x.name == t).unwrap();
    let rules = RedisRules::compile(&cfg.policy, target, &groups(g), table);
    let args: Vec<&[u8]> = line.split_whitespace().map(str::as_bytes).collect();
    rules.decide(table, &args[..])
}

fn mixed_case(line: &str) -> String {
    line.char_indices()
        .map(|(i, c)| {
            if i % 2 == 0 {
                c.to_ascii_lowercase()
            } else {
                c.to_ascii_uppercase()
            }
        })
        .collect()
}

/// The command name (and subcommand) in other case; key and value
/// arguments stay as written, since keys are case-sensitive.
fn recase(line: &str, f: impl Fn(&str) -> String) -> String {
    let mut words: Vec<String> = line.split_whitespace().map(str::to_string).collect();
    words[0] = f(&words[0]);
    if words.len() > 1 && words[1].chars().all(|c| c.is_ascii_alphabetic()) {
        words[1] = f(&words[1]);
    }
    words.join(" ")
}

#[test]
fn redis_corpus() {
    let cfg = config(REDIS_POLICY);
    let table = CommandTable::builtin();
    for &(t, g, line, action, rule) in REDIS_CASES {
        let target = cfg.targets.iter().position(|x| x.name == t).unwrap();
        for variant in [
            line.to_string(),
            recase(line, |w| w.to_ascii_lowercase()),
            recase(line, mixed_case),
        ] {
            let d = redis_decide(&cfg, &table, t, g, &variant);
            assert_eq!(
                explain(&cfg.policy, target, d),
                (action, rule.to_string()),
                "{t} [{g}] {variant}"
            );
        }
    }
    assert!(REDIS_CASES.len() >= 100, "{}", REDIS_CASES.len());
}

/// The corpus again with 300 more rules (matching nothing it holds) after
/// the others: too many for the decision's bit sets, so every decision
/// walks the rules one by one, and must come out the same.
#[test]
fn redis_corpus_with_too_many_rules_for_the_bit_sets() {
    let mut src = REDIS_POLICY.to_string();
    for i in 0..300 {
        src.push_str(&format!(
            "\n[[rule]]\nid = \"pad-{i}\"\ntarget = \"cache\"\ngroups = [\"*\"]\n\
             command = [\"OBJECT\", \"@write\"]\nkeys = [\"never-{i}:*\", \"*:never-{i}\"]\n\
             action = \"block\"\nreason = \"padding\"\n"
        ));
    }
    let cfg = config(&src);
    let table = CommandTable::builtin();
    for &(t, g, line, action, rule) in REDIS_CASES {
        let target = cfg.targets.iter().position(|x| x.name == t).unwrap();
        let d = redis_decide(&cfg, &table, t, g, line);
        assert_eq!(
            explain(&cfg.policy, target, d),
            (action, rule.to_string()),
            "{t} [{g}] {line}"
        );
    }
    // And the padding does decide where it matches.
    let d = redis_decide(&cfg, &table, "cache", "", "SET never-299:x v");
    let cache = cfg.targets.iter().position(|x| x.name == "cache").unwrap();
    assert_eq!(explain(&cfg.policy, cache, d), (B, "pad-299".to_string()));
}

fn gate(cfg: &Config, target: &str, g: &str) -> RedisGate {
    let handle = Arc::new(PolicyHandle::new(PolicyState {
        policy: cfg.policy.clone(),
        tables: vec![None; cfg.targets.len()],
    }));
    let shard = Rc::new(ShardPolicy::new(handle, 0));
    let target = cfg.targets.iter().position(|x| x.name == target).unwrap();
    let mut id = Identity::anonymous();
    id.groups = groups(g);
    RedisGate::new(shard, target, &id)
}

fn encode(line: &str) -> Vec<u8> {
    let args: Vec<&[u8]> = line.split_whitespace().map(str::as_bytes).collect();
    let mut out = Vec::new();
    resp::encode::command(&mut out, &args);
    out
}

/// What the session would do: head first, the whole frame when asked.
fn through_gate(g: &RedisGate, line: &str) -> Gate {
    let frame = encode(line);
    let Ok(HeadStatus::Multibulk(h)) = resp::command_head(&frame, &Limits::request()) else {
        panic!("{line}")
    };
    match g.check_head(&frame, &h) {
        Gate::NeedFrame(id) => g.check_frame(id, &FrameArgs::parse(&frame).unwrap()),
        other => other,
    }
}

#[test]
fn the_session_gate_agrees_with_the_corpus_and_answers_in_the_documented_words() {
    let cfg = config(REDIS_POLICY);
    for &(t, grp, line, action, rule) in REDIS_CASES {
        if line.starts_with("MULTI") {
            continue;
        }
        let g = gate(&cfg, t, grp);
        let got = through_gate(&g, line);
        match action {
            Action::Allow => assert_eq!(got, Gate::Pass, "{t} [{grp}] {line}"),
            Action::Block => {
                let Gate::Answer { carrier, reply, .. } = got else {
                    panic!("{t} [{grp}] {line}: {got:?}")
                };
                assert_eq!(carrier, gate::PING_CARRIER);
                let reply = String::from_utf8(reply).unwrap();
                assert!(reply.starts_with("-NOPERM custos: "), "{reply}");
                assert!(reply.ends_with(&format!(" (rule {rule})\r\n")), "{reply}");
            }
            Action::Approve => {
                let Gate::Answer { reply, .. } = got else {
                    panic!("{line}: {got:?}")
                };
                let reply = String::from_utf8(reply).unwrap();
                assert!(
                    reply.starts_with("-NOPERM custos: approval required, request "),
                    "{reply}"
                );
            }
        }
        // Inline commands decide the same.
        let inline = resp::split_inline(line.as_bytes()).unwrap();
        let inline_gate = gate(&cfg, t, grp);
        let got = inline_gate.check_args(&inline[..]);
        assert_eq!(
            matches!(got, Gate::Pass),
            action == Action::Allow,
            "inline {line}"
        );
    }
}

#[test]
fn approval_ids_are_unique() {
    let cfg = config(REDIS_POLICY);
    let g = gate(&cfg, "cache", "agents");
    let mut seen = std::collections::HashSet::new();
    for _ in 0..100 {
        let Gate::Answer { reply, .. } = through_gate(&g, "EVAL return 0") else {
            panic!()
        };
        assert!(seen.insert(reply));
    }
}

#[test]
fn a_refused_command_in_multi_aborts_the_transaction() {
    let cfg = config(REDIS_POLICY);
    let g = gate(&cfg, "cache", "");
    assert_eq!(through_gate(&g, "MULTI"), Gate::Pass);
    assert_eq!(through_gate(&g, "SET a 1"), Gate::Pass);
    assert!(matches!(through_gate(&g, "FLUSHALL"), Gate::Answer { .. }));
    assert_eq!(through_gate(&g, "SET b 1"), Gate::Pass);
    assert_eq!(
        through_gate(&g, "exec"),
        Gate::Answer {
            carrier: gate::DISCARD,
            reply: gate::EXECABORT.to_vec(),
            audit: (crate::audit::Decision::Block, "".into()),
        }
    );
    // The next transaction starts clean.
    assert_eq!(through_gate(&g, "MULTI"), Gate::Pass);
    assert_eq!(through_gate(&g, "SET a 1"), Gate::Pass);
    assert_eq!(through_gate(&g, "EXEC"), Gate::Pass);
    // DISCARD and RESET end a poisoned one too.
    for end in ["DISCARD", "RESET"] {
        assert_eq!(through_gate(&g, "MULTI"), Gate::Pass);
        assert!(matches!(
            through_gate(&g, "GET secret:1"),
            Gate::Answer { .. }
        ));
        assert_eq!(through_gate(&g, end), Gate::Pass);
        assert_eq!(through_gate(&g, "EXEC"), Gate::Pass);
    }
    // Connection-level commands are the appliance's, not policy's.
    let strict = gate(&cfg, "strict", "");
    for line in ["AUTH u p", "HELLO 3", "QUIT", "RESET"] {
        assert_eq!(through_gate(&strict, line), Gate::Pass, "{line}");
    }
}

#[test]
fn a_published_policy_takes_effect_at_the_next_command() {
    let cfg = config(REDIS_POLICY);
    let handle = Arc::new(PolicyHandle::new(PolicyState {
        policy: cfg.policy.clone(),
        tables: vec![None; 2],
    }));
    let shard = Rc::new(ShardPolicy::new(handle.clone(), 0));
    let g = RedisGate::new(shard, 0, &Identity::anonymous());
    assert!(matches!(through_gate(&g, "FLUSHALL"), Gate::Answer { .. }));
    let relaxed = config(&REDIS_POLICY.replace(
        "command = [\"FLUSHALL\", \"flushdb\"]\naction = \"block\"",
        "command = [\"FLUSHALL\", \"flushdb\"]\naction = \"allow\"",
    ));
    handle.publish(PolicyState {
        policy: relaxed.policy.clone(),
        tables: vec![None; 2],
    });
    assert_eq!(through_gate(&g, "FLUSHALL"), Gate::Pass);
}

#[test]
fn deciding_a_command_does_not_allocate() {
    let cfg = config(&fifty_rules());
    let g = gate(&cfg, "cache", "team-7");
    let lines: Vec<Vec<u8>> = [
        "GET k",
        "SET k v",
        "set team:7:x v",
        "HGETALL h",
        "MSET a 1 b 2 c 3",
        "PING",
    ]
    .iter()
    .map(|l| encode(l))
    .collect();
    let heads: Vec<_> = lines
        .iter()
        .map(|f| match resp::command_head(f, &Limits::request()) {
            Ok(HeadStatus::Multibulk(h)) => h,
            _ => panic!(),
        })
        .collect();
    // Warm up (first use compiles nothing, but be fair to lazy statics).
    let decide = |f: &[u8], h| match g.check_head(f, h) {
        Gate::NeedFrame(id) => g.check_frame(id, &FrameArgs::parse(f).unwrap()),
        other => other,
    };
    for (f, h) in lines.iter().zip(&heads) {
        assert_eq!(decide(f, h), Gate::Pass);
    }
    let before = allocations();
    let mut passed = 0;
    for _ in 0..1000 {
        for (f, h) in lines.iter().zip(&heads) {
            if decide(f, h) == Gate::Pass {
                passed += 1;
            }
        }
    }
    assert_eq!(allocations() - before, 0);
    assert_eq!(passed, 6000);
}

/// A 50-rule policy on target `cache` (also used by the benchmark).
pub(crate) fn fifty_rules() -> String {
    let mut s = String::from(
        r#"
[[target]]
name = "cache"
protocol = "redis"
listen = "127.0.0.1:16380"
upstream = "127.0.0.1:6379"
auth = "none"
"#,
    );
    for i in 0..46 {
        s.push_str(&format!(
            "\n[[rule]]\nid = \"team-{i}\"\ntarget = \"cache\"\ngroups = [\"team-{i}\"]\ncommand = [\"@write\"]\nkeys = [\"team:{i}:*\"]\naction = \"allow\"\n"
        ));
    }
    s.push_str(
        r#"
[[rule]]
id = "no-flush"
target = "cache"
groups = ["*"]
command = ["FLUSHALL", "FLUSHDB"]
action = "block"
reason = "destructive command"

[[rule]]
id = "no-dangerous"
target = "cache"
groups = ["*"]
command = ["@dangerous"]
action = "block"
reason = "dangerous command"

[[rule]]
id = "scripts"
target = "cache"
groups = ["*"]
command = ["@scripting"]
action = "approve"
reason = "scripts need approval"

[[rule]]
id = "secrets"
target = "cache"
groups = ["*"]
keys = ["secret:*"]
action = "block"
reason = "secret keys"
"#,
    );
    s
}

#[test]
fn rule_errors_name_the_key_and_line() {
    let base = r#"
[[target]]
name = "cache"
protocol = "redis"
listen = "127.0.0.1:16380"
upstream = "127.0.0.1:6379"
auth = "none"
"#;
    let cases: &[(&str, &str)] = &[
        (
            "[[rule]]\ntarget = \"cache\"\ngroups = [\"*\"]\naction = \"allow\"\n",
            "`rule.id`: missing",
        ),
        (
            "[[rule]]\nid = \"a\"\ngroups = [\"*\"]\naction = \"allow\"\n",
            "`rule.target`: missing",
        ),
        (
            "[[rule]]\nid = \"a\"\ntarget = \"cache\"\naction = \"allow\"\n",
            "`rule.groups`: missing",
        ),
        (
            "[[rule]]\nid = \"a\"\ntarget = \"cache\"\ngroups = [\"*\"]\n",
            "`rule.action`: missing",
        ),
        (
            "[[rule]]\nid = \"a\"\ntarget = \"cache\"\ngroups = [\"*\"]\naction = \"deny\"\n",
            "line 12: `rule.action`",
        ),
        (
            "[[rule]]\nid = \"a\"\ntarget = \"cache\"\ngroups = [\"*\"]\naction = \"block\"\n",
            "`rule.reason`: missing",
        ),
        (
            "[[rule]]\nid = \"a\"\ntarget = \"nope\"\ngroups = [\"*\"]\naction = \"allow\"\n",
            "line 10: `rule.target`: no [[target]]",
        ),
        (
            "[[rule]]\nid = \"a\"\ntarget = \"cache\"\ngroups = [\"*\"]\naction = \"allow\"\nstatement = [\"DROP\"]\n",
            "line 13: `rule.statement`: does not apply",
        ),
        (
            "[[rule]]\nid = \"a\"\ntarget = \"cache\"\ngroups = [\"*\"]\naction = \"allow\"\ncommand = [\"@nosuch\"]\n",
            "line 13: `rule.command`",
        ),
        (
            "[[rule]]\nid = \"a\"\ntarget = \"cache\"\ngroups = [\"*\"]\naction = \"allow\"\ncommand = []\n",
            "`rule.command`: must not be empty",
        ),
        (
            "[[rule]]\nid = \"a\"\ntarget = \"cache\"\ngroups = [\"*\"]\naction = \"allow\"\ncolour = \"red\"\n",
            "colour",
        ),
        (
            "[[rule]]\nid = \"default\"\ntarget = \"cache\"\ngroups = [\"*\"]\naction = \"allow\"\n",
            "`rule.id`",
        ),
        (
            "[[rule]]\nid = \"a\"\ntarget = \"cache\"\ngroups = [\"*\"]\naction = \"allow\"\n[[rule]]\nid = \"a\"\ntarget = \"cache\"\ngroups = [\"*\"]\naction = \"allow\"\n",
            "duplicate rule id",
        ),
        (
            "[[rule]]\nid = \"a\"\ntarget = \"cache\"\ngroups = [\"*\", \"x\"]\naction = \"allow\"\n",
            "`rule.groups`",
        ),
        (
            "[[rule]]\nid = \"a\"\ntarget = \"cache\"\ngroups = [\"*\"]\naction = \"block\"\nreason = \"two\\nlines\"\n",
            "`rule.reason`",
        ),
    ];
    for (rule, want) in cases {
        let err = Config::parse(Path::new("custos.toml"), &format!("{base}{rule}"))
            .expect_err(rule)
            .to_string();
        assert!(err.contains(want), "{rule}: {err}");
    }
    let err = Config::parse(
        Path::new("custos.toml"),
        &format!("{base}default_action = \"approve\"\n"),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("`target.default_action`"), "{err}");
}

const SQL_POLICY: &str = r#"
[[target]]
name = "db"
protocol = "postgres"
listen = "127.0.0.1:15433"
upstream = "127.0.0.1:5432"
upstream_user = "app"
allow_plaintext_auth = true
auth = "none"

[[target]]
name = "strict"
protocol = "postgres"
listen = "127.0.0.1:15434"
upstream = "127.0.0.1:5432"
upstream_user = "app"
allow_plaintext_auth = true
auth = "none"
default_action = "block"

[[rule]]
id = "no-ddl"
target = "db"
groups = ["*"]
statement = ["DROP", "TRUNCATE"]
action = "block"
reason = "destructive statement"

[[rule]]
id = "no-mass-update"
target = "db"
groups = ["*"]
without_where = true
action = "block"
reason = "UPDATE or DELETE without WHERE"

[[rule]]
id = "no-file-functions"
target = "db"
groups = ["*"]
functions = ["pg_read_file", "pg_ls_dir", "lo_*"]
action = "block"
reason = "server file access"

[[rule]]
id = "no-copy-program"
target = "db"
groups = ["*"]
statement = ["COPY PROGRAM"]
action = "block"
reason = "shell commands"

[[rule]]
id = "secrets-table"
target = "db"
groups = ["*"]
tables = ["public.secrets", "vault.*"]
action = "block"
reason = "secret tables"

[[rule]]
id = "grants"
target = "db"
groups = ["*"]
statement = ["GRANT", "REVOKE", "SET_ROLE"]
action = "approve"
reason = "privilege change"

[[rule]]
id = "analysts-read"
target = "db"
groups = ["analysts"]
statement = ["SELECT"]
action = "allow"

[[rule]]
id = "analysts-other"
target = "db"
groups = ["analysts"]
action = "block"
reason = "analysts only read"

[[rule]]
id = "dba-dynamic"
target = "db"
groups = ["dba"]
statement = ["UNKNOWN", "DO", "EXECUTE", "PREPARE", "DELETE", "SELECT"]
action = "allow"

[[rule]]
id = "dba-garbage"
target = "db"
groups = ["dba"]
statement = ["UNPARSEABLE"]
action = "allow"

[[rule]]
id = "strict-read"
target = "strict"
groups = ["*"]
statement = ["SELECT", "TRANSACTION", "SHOW", "SET"]
action = "allow"

[[rule]]
id = "writers"
target = "strict"
groups = ["writers"]
statement = ["INSERT", "UPDATE", "SELECT"]
tables = ["app.*"]
action = "allow"
"#;

/// (target, groups, SQL, action, rule)
const SQL_CASES: &[(&str, &str, &str, Action, &str)] = &[
    ("db", "", "SELECT 1", A, "default"),
    ("db", "", "SELECT * FROM users", A, "default"),
    ("db", "", "INSERT INTO users VALUES (1)", A, "default"),
    ("db", "", "DROP TABLE users", B, "no-ddl"),
    ("db", "", "drop table users", B, "no-ddl"),
    ("db", "", "/* x */ DrOp TaBlE \"users\"", B, "no-ddl"),
    ("db", "", "SELECT 1; DROP TABLE users", B, "no-ddl"),
    ("db", "", "SELECT ';DROP TABLE x'", A, "default"),
    ("db", "", "-- DROP TABLE x\nSELECT 1", A, "default"),
    ("db", "", "SELECT $$; DROP TABLE x$$", A, "default"),
    ("db", "", "TRUNCATE users", B, "no-ddl"),
    ("db", "", "truncate table users cascade", B, "no-ddl"),
    ("db", "", "DROP FUNCTION f()", B, "no-ddl"),
    ("db", "", "CREATE TABLE x (a int)", A, "default"),
    ("db", "", "UPDATE users SET a = 1", B, "no-mass-update"),
    (
        "db",
        "",
        "UPDATE users SET a = 1 WHERE id = 2",
        A,
        "default",
    ),
    ("db", "", "DELETE FROM users", B, "no-mass-update"),
    ("db", "", "DELETE FROM users WHERE id = 1", A, "default"),
    (
        "db",
        "",
        "WITH d AS (DELETE FROM users RETURNING *) SELECT * FROM d",
        B,
        "no-mass-update",
    ),
    (
        "db",
        "",
        "WITH d AS (DELETE FROM users WHERE id = 1 RETURNING *) SELECT * FROM d",
        A,
        "default",
    ),
    (
        "db",
        "",
        "EXPLAIN ANALYZE DELETE FROM users",
        B,
        "no-mass-update",
    ),
    (
        "db",
        "",
        "SELECT pg_read_file('/etc/passwd')",
        B,
        "no-file-functions",
    ),
    (
        "db",
        "",
        "SELECT PG_READ_FILE('/etc/passwd')",
        B,
        "no-file-functions",
    ),
    (
        "db",
        "",
        "SELECT pg_catalog.pg_read_file('x')",
        B,
        "no-file-functions",
    ),
    (
        "db",
        "",
        "SELECT lo_import('/etc/passwd')",
        B,
        "no-file-functions",
    ),
    (
        "db",
        "",
        "SELECT * FROM pg_ls_dir('.')",
        B,
        "no-file-functions",
    ),
    ("db", "", "SELECT now()", A, "default"),
    (
        "db",
        "",
        "COPY users TO PROGRAM 'cat'",
        B,
        "no-copy-program",
    ),
    ("db", "", "COPY users TO STDOUT", A, "default"),
    ("db", "", "SELECT * FROM secrets", B, "secrets-table"),
    ("db", "", "SELECT * FROM public.secrets", B, "secrets-table"),
    ("db", "", "SELECT * FROM other.secrets", A, "default"),
    ("db", "", "SELECT * FROM \"secrets\"", B, "secrets-table"),
    ("db", "", "SELECT * FROM vault.keys", B, "secrets-table"),
    (
        "db",
        "",
        "SELECT * FROM users JOIN vault.keys ON true",
        B,
        "secrets-table",
    ),
    (
        "db",
        "",
        "SELECT * FROM users WHERE id IN (SELECT id FROM secrets)",
        B,
        "secrets-table",
    ),
    ("db", "", "GRANT ALL ON users TO bob", P, "grants"),
    ("db", "", "REVOKE ALL ON users FROM bob", P, "grants"),
    ("db", "", "SET ROLE admin", P, "grants"),
    ("db", "", "DO $$BEGIN DROP TABLE users; END$$", B, "no-ddl"),
    (
        "db",
        "",
        "DO $$BEGIN EXECUTE 'DROP TABLE ' || 'users'; END$$",
        B,
        "unclassified",
    ),
    (
        "db",
        "",
        "PREPARE p AS DELETE FROM users",
        B,
        "no-mass-update",
    ),
    ("db", "", "EXECUTE p", B, "unclassified"),
    ("db", "", "SELEC 1", B, "unclassified"),
    ("db", "", "SELECT (", B, "unclassified"),
    ("db", "analysts", "SELECT * FROM users", A, "analysts-read"),
    ("db", "analysts", "select 1", A, "analysts-read"),
    (
        "db",
        "analysts",
        "SELECT 1; DELETE FROM users WHERE id = 1",
        B,
        "analysts-other",
    ),
    (
        "db",
        "analysts",
        "INSERT INTO t VALUES (1)",
        B,
        "analysts-other",
    ),
    (
        "db",
        "analysts",
        "SELECT * FROM secrets",
        B,
        "secrets-table",
    ),
    (
        "db",
        "analysts",
        "WITH x AS (UPDATE t SET a = 1 WHERE b RETURNING 1) SELECT * FROM x",
        B,
        "analysts-other",
    ),
    ("db", "analysts", "SELEC 1", B, "analysts-other"),
    ("db", "analysts", "DROP TABLE t", B, "no-ddl"),
    (
        "db",
        "dba",
        "DO $$BEGIN EXECUTE 'SELECT ' || 'x'; END$$",
        A,
        "dba-dynamic",
    ),
    ("db", "dba", "EXECUTE p", A, "dba-dynamic"),
    ("db", "dba", "SELEC 1", A, "dba-garbage"),
    ("db", "dba", "DROP TABLE t", B, "no-ddl"),
    ("strict", "", "SELECT 1", A, "strict-read"),
    ("strict", "", "BEGIN", A, "strict-read"),
    ("strict", "", "SHOW search_path", A, "strict-read"),
    ("strict", "", "SET search_path = app", A, "strict-read"),
    ("strict", "", "INSERT INTO app.t VALUES (1)", B, "default"),
    ("strict", "", "SELEC", B, "unclassified"),
    (
        "strict",
        "writers",
        "INSERT INTO app.t VALUES (1)",
        A,
        "writers",
    ),
    (
        "strict",
        "writers",
        "INSERT INTO public.t VALUES (1)",
        B,
        "default",
    ),
    (
        "strict",
        "writers",
        "INSERT INTO t VALUES (1)",
        B,
        "default",
    ),
    (
        "strict",
        "writers",
        "UPDATE app.t SET a = 1 WHERE b = 2",
        A,
        "writers",
    ),
    (
        "strict",
        "writers",
        "INSERT INTO app.t SELECT * FROM public.secrets",
        B,
        "default",
    ),
    (
        "strict",
        "writers",
        "DELETE FROM app.t WHERE a = 1",
        B,
        "default",
    ),
];

#[test]
fn sql_corpus() {
    let cfg = config(SQL_POLICY);
    let mut cache = sql::SqlCache::new(64);
    for &(t, g, text, action, rule) in SQL_CASES {
        let target = cfg.targets.iter().position(|x| x.name == t).unwrap();
        let rules = decide::SqlRules::compile(&cfg.policy, target, &groups(g));
        // Cached and uncached classification decide the same.
        for facts in [
            sql::classify(text).map(Rc::new),
            cache.classify(text),
            cache.classify(text),
        ] {
            let d = rules.decide(&facts);
            assert_eq!(
                explain(&cfg.policy, target, d),
                (action, rule.to_string()),
                "{t} [{g}] {text}: {facts:?}"
            );
        }
    }
    assert!(REDIS_CASES.len() + SQL_CASES.len() >= 150);
}

#[test]
fn sql_rule_errors() {
    let base = &SQL_POLICY[..SQL_POLICY.find("[[rule]]").unwrap()];
    for (rule, want) in [
        (
            "[[rule]]\nid = \"a\"\ntarget = \"db\"\ngroups = [\"*\"]\naction = \"allow\"\nstatement = [\"DROPP\"]\n",
            "`rule.statement`",
        ),
        (
            "[[rule]]\nid = \"a\"\ntarget = \"db\"\ngroups = [\"*\"]\naction = \"allow\"\ncommand = [\"GET\"]\n",
            "`rule.command`: does not apply",
        ),
        (
            "[[rule]]\nid = \"a\"\ntarget = \"db\"\ngroups = [\"*\"]\naction = \"allow\"\ntables = [\"a.b.c\"]\n",
            "`rule.tables`",
        ),
        (
            "[[rule]]\nid = \"a\"\ntarget = \"db\"\ngroups = [\"*\"]\naction = \"allow\"\nwithout_where = false\n",
            "`rule.without_where`",
        ),
        (
            "[[rule]]\nid = \"a\"\ntarget = \"*\"\ngroups = [\"*\"]\naction = \"allow\"\nstatement = [\"DROP\"]\nkeys = [\"x\"]\n",
            "mixes",
        ),
    ] {
        let err = Config::parse(Path::new("custos.toml"), &format!("{base}{rule}"))
            .expect_err(rule)
            .to_string();
        assert!(err.contains(want), "{rule}: {err}");
    }
}
