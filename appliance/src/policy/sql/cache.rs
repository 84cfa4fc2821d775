//! Per-shard cache of SQL facts, and per-session prepared statements.
//!
//! Two keys lead to a cached entry:
//! - the exact text, hashed: drivers using the extended protocol send the
//!   same text with `$n` parameters, and a hit costs one hash and compare;
//! - the text normalized by libpg_query (literals replaced by `$n`), for
//!   clients that inline literals (psql, client-side interpolation). It is
//!   computed only when the exact text misses; normalizing costs about a
//!   fifth of a classification (`bench/benches/sql_classify.rs`), so a
//!   normalized hit saves most of a parse and a full miss costs a fifth
//!   more.
//!
//! - before the normalized text, the text's literal shape
//!   ([`literal_shape`]): plain statements (`SELECT ... WHERE aid = 42`)
//!   with their numbers and quoted strings replaced, found by one pass over
//!   the bytes, so a client that inlines literals (`pgbench -M simple`)
//!   pays a hash instead of the parser's normalization. Texts whose lexing
//!   is not plain (comments, quoted identifiers, dollar quotes, escapes,
//!   non-ASCII) have no shape and go through libpg_query.
//!
//! Texts whose facts depend on a literal (`DO` bodies, function bodies,
//! `set_config('role', ...)`, `query_to_xml('...')`; see
//! `Classified::literal_sensitive`) are never entered under their
//! normalized form: `DO $$ ... DROP ... $$` and `DO $$ ... SELECT ... $$`
//! normalize alike. Parse errors are cached under the exact text only.
//!
//! Keys are hashed with the standard library's randomly seeded SipHash: the
//! text comes from clients, who must not be able to aim collisions at a
//! shard. The cache is bounded ([`SqlCache::new`]) and evicts with CLOCK
//! (second chance), which keeps hot statements at O(1) cost per access.

use std::collections::HashMap;
use std::collections::hash_map::Entry as MapEntry;
use std::rc::Rc;

use super::classify::{self, Classified, SessionOp};
use super::{SqlError, SqlFacts};

/// Longest text that is cached; longer statements are parsed every time.
/// Bounds the cache's memory at about `2 * entries_max * CACHE_TEXT_BYTES_MAX`
/// (exact and normalized keys).
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
    /// The outcome of `sql`, and whether texts that normalize alike share it.
    fn of(sql: &str) -> (Outcome, bool) {
        match classify::classify(sql) {
            Ok(c) if c.ops.is_empty() => {
                let shared = !c.literal_sensitive;
                (
                    Outcome {
                        facts: Ok(Rc::new(c.facts)),
                        session: None,
                    },
                    shared,
                )
            }
            Ok(c) => {
                let shared = !c.literal_sensitive;
                (
                    Outcome {
                        facts: Ok(Rc::new(c.facts())),
                        session: Some(Rc::new(c)),
                    },
                    shared,
                )
            }
            Err(e) => (
                Outcome {
                    facts: Err(e),
                    session: None,
                },
                false,
            ),
        }
    }
}

struct Slot {
    text: Rc<str>,
    /// The normalized text, when the entry is also found under it.
    normalized: Option<Rc<str>>,
    /// The literal shape, when the entry is also found under it.
    shape: Option<Rc<str>>,
    outcome: Outcome,
    /// Set on every hit, cleared as the clock hand passes.
    referenced: bool,
}

/// Bounded per-shard cache of [`SqlFacts`], keyed by the exact and the
/// normalized query text. A shard is one thread, so entries are shared with
/// `Rc` and there are no locks. Parse errors are cached too: a client
/// repeating bad SQL costs one parse.
pub struct SqlCache {
    exact: HashMap<Rc<str>, usize>,
    normalized: HashMap<Rc<str>, usize>,
    shapes: HashMap<Rc<str>, usize>,
    /// The shape of the text being looked up (reused).
    shape_buf: String,
    slots: Vec<Slot>,
    hand: usize,
    entries_max: usize,
    hits: u64,
    normalized_hits: u64,
    misses: u64,
}

impl SqlCache {
    /// A cache holding at most `entries_max` statements (0 disables it).
    pub fn new(entries_max: usize) -> Self {
        let capacity = entries_max.min(1 << 16);
        SqlCache {
            exact: HashMap::with_capacity(capacity),
            normalized: HashMap::with_capacity(capacity),
            shapes: HashMap::with_capacity(capacity),
            shape_buf: String::new(),
            slots: Vec::with_capacity(capacity),
            hand: 0,
            entries_max,
            hits: 0,
            normalized_hits: 0,
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

    /// Lookups answered from the cache (by exact or normalized text).
    pub fn hits(&self) -> u64 {
        self.hits
    }

    /// Of the [`hits`](Self::hits), those found by the normalized text.
    pub fn normalized_hits(&self) -> u64 {
        self.normalized_hits
    }

    /// Lookups that parsed (including texts too long to cache).
    pub fn misses(&self) -> u64 {
        self.misses
    }

    fn outcome(&mut self, sql: &str) -> Outcome {
        if let Some(&i) = self.exact.get(sql) {
            self.hits += 1;
            return self.touch(i);
        }
        let cacheable = self.entries_max > 0 && sql.len() <= CACHE_TEXT_BYTES_MAX;
        let mut shape = std::mem::take(&mut self.shape_buf);
        let shaped = cacheable && literal_shape(sql, &mut shape);
        if shaped && let Some(&i) = self.shapes.get(shape.as_str()) {
            self.shape_buf = shape;
            self.hits += 1;
            self.normalized_hits += 1;
            return self.touch(i);
        }
        // A text that does not normalize does not parse either; it is
        // classified (to an error) and cached by its exact text.
        let normalized = if cacheable {
            pg_query::normalize(sql).ok()
        } else {
            None
        };
        if let Some(n) = &normalized
            && let Some(&i) = self.normalized.get(n.as_str())
        {
            self.shape_buf = shape;
            self.hits += 1;
            self.normalized_hits += 1;
            return self.touch(i);
        }
        self.misses += 1;
        let (outcome, shared) = Outcome::of(sql);
        if cacheable {
            let normalized = normalized.filter(|n| shared && n != sql).map(Rc::from);
            let shape_key = (shared && shaped && shape != sql).then(|| Rc::from(shape.as_str()));
            self.insert(sql, normalized, shape_key, outcome.clone());
        }
        self.shape_buf = shape;
        outcome
    }

    fn touch(&mut self, i: usize) -> Outcome {
        let slot = &mut self.slots[i];
        slot.referenced = true;
        slot.outcome.clone()
    }

    fn insert(
        &mut self,
        sql: &str,
        normalized: Option<Rc<str>>,
        shape: Option<Rc<str>>,
        outcome: Outcome,
    ) {
        let text: Rc<str> = Rc::from(sql);
        let i = if self.slots.len() < self.entries_max {
            self.slots.push(Slot {
                text: Rc::clone(&text),
                normalized: None,
                shape: None,
                outcome,
                referenced: false,
            });
            self.slots.len() - 1
        } else {
            let i = self.victim();
            let old = std::mem::replace(
                &mut self.slots[i],
                Slot {
                    text: Rc::clone(&text),
                    normalized: None,
                    shape: None,
                    outcome,
                    referenced: false,
                },
            );
            self.exact.remove(&old.text);
            if let Some(n) = old.normalized {
                self.normalized.remove(&n);
            }
            if let Some(k) = old.shape {
                self.shapes.remove(&k);
            }
            i
        };
        self.exact.insert(text, i);
        // Another text with the same normalized form may have been entered
        // under it already (one whose facts were literal-sensitive is not);
        // the first keeps the key.
        if let Some(n) = normalized
            && let MapEntry::Vacant(v) = self.normalized.entry(Rc::clone(&n))
        {
            v.insert(i);
            self.slots[i].normalized = Some(n);
        }
        if let Some(k) = shape
            && let MapEntry::Vacant(v) = self.shapes.entry(Rc::clone(&k))
        {
            v.insert(i);
            self.slots[i].shape = Some(k);
        }
    }

    /// CLOCK: pass over referenced entries (clearing the mark) until one
    /// that was not used since the hand last passed. Ends within one turn,
    /// since the first turn clears every mark.
    fn victim(&mut self) -> usize {
        loop {
            let i = self.hand;
            self.hand = (self.hand + 1) % self.slots.len();
            let slot = &mut self.slots[i];
            if !slot.referenced {
                return i;
            }
            slot.referenced = false;
        }
    }
}

/// Stands for a literal in a [`literal_shape`]; texts holding it have none.
const LITERAL: char = '\u{1}';

/// Writes into `out` the literal shape of `sql`: the text with every
/// numeric constant and every plain quoted string replaced by one
/// placeholder byte; `false` (and `out` unusable) when the text is not
/// plain enough to be sure of its tokens without PostgreSQL's lexer.
///
/// Two texts with the same shape differ only inside constants, which the
/// parser's own normalization replaces too, so they share facts unless
/// those depend on a literal (which the cache checks before entering a
/// shape). To be sure of that, a text has no shape when it holds
/// non-ASCII bytes, the placeholder, a double quote (quoted identifiers),
/// `$` (parameters, dollar quotes), a backslash (escapes, and strings when
/// `standard_conforming_strings` is off), a comment, a string with a
/// prefix (`E'...'`, `B'...'`, `U&'...'`) or one left open. Digits that
/// continue a word (`t1`, `1e5`'s exponent) are kept as written.
pub(crate) fn literal_shape(sql: &str, out: &mut String) -> bool {
    out.clear();
    let b = sql.as_bytes();
    // Anywhere, inside strings too.
    if b.iter()
        .any(|&c| matches!(c, 0x01 | b'"' | b'$' | b'\\' | 0x80..))
    {
        return false;
    }
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b'-' if b.get(i + 1) == Some(&b'-') => return false,
            b'/' if b.get(i + 1) == Some(&b'*') => return false,
            b'\'' => {
                if i > 0 && (word(b[i - 1]) || b[i - 1] == b'&') {
                    return false;
                }
                // To the closing quote; `''` inside is a quote.
                let mut j = i + 1;
                loop {
                    match b.get(j) {
                        None => return false,
                        Some(b'\'') if b.get(j + 1) == Some(&b'\'') => j += 2,
                        Some(b'\'') => break,
                        Some(_) => j += 1,
                    }
                }
                out.push(LITERAL);
                i = j + 1;
            }
            b'0'..=b'9' if i == 0 || !word(b[i - 1]) => {
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1;
                }
                out.push(LITERAL);
            }
            _ => {
                out.push(c as char);
                i += 1;
            }
        }
    }
    true
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
