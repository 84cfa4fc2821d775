//! Where the data plane finds the current policy.
//!
//! The control plane publishes immutable [`PolicyState`]s through one
//! [`PolicyHandle`] (an `ArcSwap` and a generation counter). Each shard
//! holds a [`ShardPolicy`]: its copy of the state, the generation it has
//! seen, and the rules it compiled for the sessions it serves. Checking for
//! a new policy costs one atomic load; a shard that sees a new generation
//! takes the new state and drops what it compiled for the old one.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;

use super::Policy;
use super::decide::{RedisRules, SqlRules};
use super::redis::CommandTable;
use super::sql::SqlCache;

/// What the data plane decides with: the rules and, per target (by
/// configuration index), the store's command table (Redis targets only).
#[derive(Debug)]
pub struct PolicyState {
    /// The rules.
    pub policy: Arc<Policy>,
    /// Per target: the command table of a Redis target.
    pub tables: Vec<Option<Arc<CommandTable>>>,
}

impl PolicyState {
    /// The command table of target `target`: the store's, or the built-in
    /// one when the store could not be asked.
    pub fn table(&self, target: usize) -> Arc<CommandTable> {
        match self.tables.get(target) {
            Some(Some(t)) => t.clone(),
            _ => CommandTable::builtin(),
        }
    }
}

/// The current state, shared by every thread.
#[derive(Debug)]
pub struct PolicyHandle {
    state: ArcSwap<PolicyState>,
    generation: AtomicU64,
}

impl PolicyHandle {
    /// A handle holding `state`.
    pub fn new(state: PolicyState) -> PolicyHandle {
        PolicyHandle {
            state: ArcSwap::from_pointee(state),
            generation: AtomicU64::new(1),
        }
    }

    /// Makes `state` current; every shard takes it before its next decision.
    pub fn publish(&self, state: PolicyState) {
        self.state.store(Arc::new(state));
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// The current state.
    pub fn load(&self) -> Arc<PolicyState> {
        self.state.load_full()
    }

    /// The generation of the current state; it changes on every publish.
    #[inline]
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }
}

/// Compiled rule sets kept per shard before the cache is emptied.
const COMPILED_MAX: usize = 1024;

/// Classified SQL texts kept per shard.
pub const SQL_CACHE_ENTRIES: usize = 4096;

type CacheKey = (usize, Box<[String]>);

fn cache_key(target: usize, groups: &[String]) -> CacheKey {
    let mut g: Vec<String> = groups.to_vec();
    g.sort_unstable();
    g.dedup();
    (target, g.into_boxed_slice())
}

/// A shard's view of the policy.
pub struct ShardPolicy {
    handle: Arc<PolicyHandle>,
    seen: Cell<u64>,
    state: RefCell<Arc<PolicyState>>,
    compiled: RefCell<HashMap<CacheKey, Rc<RedisRules>>>,
    compiled_sql: RefCell<HashMap<CacheKey, Rc<SqlRules>>>,
    /// Classified SQL texts, shared by the shard's PostgreSQL sessions.
    pub sql_cache: RefCell<SqlCache>,
    shard: usize,
    /// Approval requests issued by this shard.
    approvals: Cell<u64>,
    /// Random, per process and shard: request ids do not repeat across
    /// restarts.
    approval_prefix: u32,
}

impl ShardPolicy {
    /// The view of shard `shard`.
    pub fn new(handle: Arc<PolicyHandle>, shard: usize) -> ShardPolicy {
        let seen = handle.generation();
        let state = handle.load();
        let mut prefix = [0u8; 4];
        // Uniqueness, not secrecy: a failing system RNG leaves the shard
        // number and the counter to tell requests apart.
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut prefix);
        ShardPolicy {
            handle,
            seen: Cell::new(seen),
            state: RefCell::new(state),
            compiled: RefCell::new(HashMap::new()),
            compiled_sql: RefCell::new(HashMap::new()),
            sql_cache: RefCell::new(SqlCache::new(SQL_CACHE_ENTRIES)),
            shard,
            approvals: Cell::new(0),
            approval_prefix: u32::from_le_bytes(prefix),
        }
    }

    /// Takes a newly published state, if any; returns the generation in use.
    #[inline]
    pub fn refresh(&self) -> u64 {
        let g = self.handle.generation();
        if g != self.seen.get() {
            *self.state.borrow_mut() = self.handle.load();
            self.compiled.borrow_mut().clear();
            self.compiled_sql.borrow_mut().clear();
            self.seen.set(g);
        }
        g
    }

    /// The state in use.
    pub fn state(&self) -> Arc<PolicyState> {
        self.state.borrow().clone()
    }

    /// The Redis rules of `target` for `groups`, compiled against the
    /// target's table (cached per shard until the policy changes).
    pub fn redis_rules(&self, target: usize, groups: &[String]) -> Rc<RedisRules> {
        self.refresh();
        let key = cache_key(target, groups);
        if let Some(r) = self.compiled.borrow().get(&key) {
            return r.clone();
        }
        let state = self.state();
        let table = state.table(target);
        let rules = Rc::new(RedisRules::compile(&state.policy, target, groups, &table));
        let mut cache = self.compiled.borrow_mut();
        if cache.len() >= COMPILED_MAX {
            cache.clear();
        }
        cache.insert(key, rules.clone());
        rules
    }

    /// The PostgreSQL rules of `target` for `groups` (cached per shard
    /// until the policy changes).
    pub fn sql_rules(&self, target: usize, groups: &[String]) -> Rc<SqlRules> {
        self.refresh();
        let key = cache_key(target, groups);
        if let Some(r) = self.compiled_sql.borrow().get(&key) {
            return r.clone();
        }
        let rules = Rc::new(SqlRules::compile(&self.state().policy, target, groups));
        let mut cache = self.compiled_sql.borrow_mut();
        if cache.len() >= COMPILED_MAX {
            cache.clear();
        }
        cache.insert(key, rules.clone());
        rules
    }

    /// A new approval request id: unique per process run (random prefix,
    /// shard, counter).
    pub fn approval_id(&self) -> String {
        let n = self.approvals.get() + 1;
        self.approvals.set(n);
        format!("{:08x}-{}-{n}", self.approval_prefix, self.shard)
    }
}
