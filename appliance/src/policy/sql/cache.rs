//! Per-shard cache of SQL facts, and per-session prepared statements.
//!
//! The cache is keyed by the exact query text. Keying by a normalized text
//! (literals replaced by `$n`) would merge more statements, but PostgreSQL's
//! normalization is itself a full parse, so a miss would cost two parses and
//! a hit would save little (see `bench/benches/sql_classify.rs`), and it
//! would merge texts whose facts differ by a literal: `DO` bodies, function
//! bodies, `set_config('role', ...)`. Drivers that use the extended protocol
//! send the same text with `$n` parameters, which the exact key serves.
//!
//! Keys are hashed with the standard library's randomly seeded SipHash: the
//! text comes from clients, who must not be able to aim collisions at a
//! shard. The map is bounded ([`SqlCache::new`]) and evicts with CLOCK
//! (second chance), which keeps hot statements at O(1) cost per access.

use std::collections::HashMap;
use std::collections::hash_map::Entry as MapEntry;
use std::rc::Rc;

use super::classify::{self, Classified, SessionOp};
use super::{SqlError, SqlFacts};

/// Longest text that is cached; longer statements are parsed every time.
/// Bounds the cache's memory at about `entries_max * CACHE_TEXT_BYTES_MAX`.
pub const CACHE_TEXT_BYTES_MAX: usize = 4096;

/// Most SQL-level prepared statements a session may hold; an `EXECUTE` of
/// one prepared beyond this is unknown (and refused).
pub const SESSION_PREPARED_MAX: usize = 1024;

/// What is cached for one text: the facts as [`SqlCache::classify`] returns
/// them, and, when the text touches prepared statements, what
/// [`SessionSql`] needs to resolve it.
#[derive(Clone)]
struct Outcome {
    facts: Result<Rc<SqlFacts>, SqlError>,
    session: Option<Rc<Classified>>,
}

impl Outcome {
    fn of(sql: &str) -> Outcome {
        match classify::classify(sql) {
            Ok(c) if c.ops.is_empty() => Outcome {
                facts: Ok(Rc::new(c.facts)),
                session: None,
            },
            Ok(c) => Outcome {
                facts: Ok(Rc::new(c.facts())),
                session: Some(Rc::new(c)),
            },
            Err(e) => Outcome {
                facts: Err(e),
                session: None,
            },
        }
    }
}

struct Slot {
    text: Rc<str>,
    outcome: Outcome,
    /// Set on every hit, cleared as the clock hand passes.
    referenced: bool,
}

/// Bounded per-shard cache of [`SqlFacts`], keyed by the exact query text.
/// A shard is one thread, so entries are shared with `Rc` and there are no
/// locks. Parse errors are cached too: a client repeating bad SQL costs one
/// parse.
pub struct SqlCache {
    index: HashMap<Rc<str>, usize>,
    slots: Vec<Slot>,
    hand: usize,
    entries_max: usize,
    hits: u64,
    misses: u64,
}

impl SqlCache {
    /// A cache holding at most `entries_max` statements (0 disables it).
    pub fn new(entries_max: usize) -> Self {
        SqlCache {
            index: HashMap::with_capacity(entries_max.min(1 << 16)),
            slots: Vec::with_capacity(entries_max.min(1 << 16)),
            hand: 0,
            entries_max,
            hits: 0,
            misses: 0,
        }
    }

    /// The facts of `sql`, from the cache or parsed and then cached.
    /// `EXECUTE` is unknown here; [`SessionSql::classify`] follows it.
    pub fn classify(&mut self, sql: &str) -> Result<Rc<SqlFacts>, SqlError> {
        self.outcome(sql).facts
    }

    /// Statements cached.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Lookups answered from the cache.
    pub fn hits(&self) -> u64 {
        self.hits
    }

    /// Lookups that parsed (including texts too long to cache).
    pub fn misses(&self) -> u64 {
        self.misses
    }

    fn outcome(&mut self, sql: &str) -> Outcome {
        if let Some(&i) = self.index.get(sql) {
            self.hits += 1;
            let slot = &mut self.slots[i];
            slot.referenced = true;
            return slot.outcome.clone();
        }
        self.misses += 1;
        let outcome = Outcome::of(sql);
        if self.entries_max > 0 && sql.len() <= CACHE_TEXT_BYTES_MAX {
            self.insert(sql, outcome.clone());
        }
        outcome
    }

    fn insert(&mut self, sql: &str, outcome: Outcome) {
        let text: Rc<str> = Rc::from(sql);
        if self.slots.len() < self.entries_max {
            self.index.insert(Rc::clone(&text), self.slots.len());
            self.slots.push(Slot {
                text,
                outcome,
                referenced: false,
            });
            return;
        }
        // CLOCK: pass over referenced entries (clearing the mark) until one
        // that was not used since the hand last passed. Ends within one
        // turn, since the first turn clears every mark.
        loop {
            let i = self.hand;
            self.hand = (self.hand + 1) % self.slots.len();
            let slot = &mut self.slots[i];
            if slot.referenced {
                slot.referenced = false;
                continue;
            }
            self.index.remove(&slot.text);
            self.index.insert(Rc::clone(&text), i);
            *slot = Slot {
                text,
                outcome,
                referenced: false,
            };
            return;
        }
    }
}

/// A session's SQL-level prepared statements (`PREPARE`, `EXECUTE`,
/// `DEALLOCATE [ALL]`, `DISCARD ALL`), so that `EXECUTE name` is decided on
/// what it runs.
///
/// The map follows the statements as they are classified, before the server
/// has run them. Where the server may end up differing, the map errs on the
/// side of knowing more: a second `PREPARE` of a name the map holds (which
/// the server refuses if the first one stands) keeps the facts of both
/// bodies, and a name dropped from the map only makes a later `EXECUTE`
/// unknown.
#[derive(Default)]
pub struct SessionSql {
    prepared: HashMap<String, Rc<SqlFacts>>,
}

impl SessionSql {
    /// The facts of `sql` as run in this session: an `EXECUTE` brings in
    /// the facts of the body it runs (or is unknown when no body is known).
    /// `PREPARE` and `DEALLOCATE` in `sql` update the session as they are
    /// classified.
    pub fn classify(&mut self, cache: &mut SqlCache, sql: &str) -> Result<Rc<SqlFacts>, SqlError> {
        let outcome = cache.outcome(sql);
        let Some(classified) = outcome.session else {
            return outcome.facts;
        };
        let mut facts = classified.facts.clone();
        for op in &classified.ops {
            match op {
                SessionOp::Prepare { name, body } => {
                    let full = self.prepared.len() >= SESSION_PREPARED_MAX;
                    match self.prepared.entry(name.clone()) {
                        MapEntry::Occupied(mut held) => {
                            let mut both = SqlFacts::clone(held.get());
                            both.merge(body);
                            held.insert(Rc::new(both));
                        }
                        MapEntry::Vacant(slot) if !full => {
                            slot.insert(Rc::clone(body));
                        }
                        MapEntry::Vacant(_) => {}
                    }
                }
                SessionOp::Execute { name } => match self.prepared.get(name) {
                    Some(body) => facts.merge(body),
                    None => facts.set_unknown(|| {
                        format!(
                            "EXECUTE {name}: no statement of that name was prepared in this session"
                        )
                    }),
                },
                SessionOp::Deallocate { name } => {
                    self.prepared.remove(name);
                }
                SessionOp::DeallocateAll => self.prepared.clear(),
            }
        }
        Ok(Rc::new(facts))
    }

    /// Prepared statements the session holds.
    pub fn prepared(&self) -> usize {
        self.prepared.len()
    }
}
