//! Deciding: the rules of one (target, groups) compiled against a command
//! table, and the walk that finds the first match.

use super::redis::{Args, Categories, CommandId, CommandTable, Keys};
use super::sql::{SqlError, SqlFacts};
use super::{Action, CommandPattern, Matcher, Policy, RuleIndex, SqlMatch};

/// The outcome for one request: what to do and which rule said so
/// (`None`: the target's default action).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// What to do.
    pub action: Action,
    /// The deciding rule, an index in [`Policy::rules`].
    pub rule: Option<RuleIndex>,
    /// Refused because the request cannot be classified (SQL that does not
    /// parse or hides what it runs) and no rule allows that.
    pub unclassified: bool,
}

impl Decision {
    /// The decision of rule `rule`.
    #[inline]
    pub fn by(action: Action, rule: RuleIndex) -> Decision {
        Decision {
            action,
            rule: Some(rule),
            unclassified: false,
        }
    }

    /// A target's default action.
    #[inline]
    pub fn default_of(action: Action) -> Decision {
        Decision {
            action,
            rule: None,
            unclassified: false,
        }
    }
}

/// The answer of [`RedisRules::decide`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Decided.
    Decided(Decision),
    /// A rule with `keys` may match: decide again with the arguments.
    NeedArgs,
}

/// No rule can match (the default decides).
const NONE: u16 = u16::MAX;

/// Keys of one command collected on the stack for the rule walk; commands
/// with more (a long `MGET`) are walked per rule.
const KEYS_INLINE: usize = 16;

/// The keys of the command being decided.
enum FoundKeys<'a> {
    /// All of them.
    Known(&'a [&'a [u8]]),
    /// Its specifications could not be followed.
    Unknown,
    /// More than [`KEYS_INLINE`].
    Many,
}

/// One applicable rule, compiled.
#[derive(Debug)]
struct Compiled {
    rule: RuleIndex,
    action: Action,
    /// Command ids it matches by name or category, one bit each; `None`
    /// when the rule names no command (it matches every command).
    ids: Option<Box<[u64]>>,
    /// Literal names (`GET`, `CONFIG|SET`), for commands the table lacks.
    names: Box<[Box<[u8]>]>,
    /// Whether it names categories.
    categories: bool,
    /// Key globs; empty: the rule does not look at keys.
    keys: Box<[super::glob::Glob]>,
}

impl Compiled {
    #[inline]
    fn matches_id(&self, id: CommandId) -> bool {
        match &self.ids {
            None => true,
            Some(bits) => bits[id as usize / 64] & (1 << (id % 64)) != 0,
        }
    }

    /// For a command the table does not know: its upper-case name and
    /// `NAME|SUB` form.
    fn matches_unknown(&self, name: &[u8], full: &[u8]) -> bool {
        if self.ids.is_none() {
            return true;
        }
        self.names
            .iter()
            .any(|n| **n == *name || (!full.is_empty() && **n == *full))
            || (self.categories && self.action.refuses())
    }

    /// Whether the keys of a command match, per the rule's action: a
    /// refusing rule when any key matches one of its globs (or the keys
    /// cannot be known), an allow rule when every key does (and there is
    /// one).
    #[inline]
    fn keys_match_found(&self, found: &FoundKeys<'_>) -> bool {
        if self.keys.is_empty() {
            return true;
        }
        let any = |k: &&[u8]| self.keys.iter().any(|g| g.matches(k));
        match found {
            FoundKeys::Unknown => self.action.refuses(),
            FoundKeys::Known(keys) if self.action.refuses() => keys.iter().any(any),
            FoundKeys::Known(keys) => !keys.is_empty() && keys.iter().all(any),
            FoundKeys::Many => unreachable!("decided key by key"),
        }
    }

    /// [`Self::keys_match_found`] for a command with more keys than
    /// [`KEYS_INLINE`]: each key visited as the specifications find it.
    fn keys_match<A: Args + ?Sized>(&self, keys: &super::redis::KeyFinder, args: &A) -> bool {
        if self.keys.is_empty() {
            return true;
        }
        let any = |k: &[u8]| self.keys.iter().any(|g| g.matches(k));
        if self.action.refuses() {
            let mut hit = false;
            match keys.for_each(args, |k| {
                hit = any(k);
                hit
            }) {
                Keys::Known => hit,
                Keys::Unknown => true,
            }
        } else {
            let (mut seen, mut all) = (0usize, true);
            match keys.for_each(args, |k| {
                seen += 1;
                all = any(k);
                !all
            }) {
                Keys::Known => seen > 0 && all,
                Keys::Unknown => false,
            }
        }
    }
}

/// The rules of one target for one set of groups, compiled against one
/// command table. Built once per session (and cached per shard); deciding
/// does not allocate.
#[derive(Debug)]
pub struct RedisRules {
    rules: Vec<Compiled>,
    /// Per command id: index in `rules` of the first rule whose command
    /// part matches, or [`NONE`].
    first: Box<[u16]>,
    /// Bit sets that find the deciding rule without visiting the others;
    /// `None` with more than [`FAST_RULES`] rules or key globs.
    fast: Option<Box<Fast>>,
    default: Decision,
}

/// Rules, and key globs, a bit set of [`FAST_WORDS`] words covers.
const FAST_RULES: usize = 64 * FAST_WORDS;
const FAST_WORDS: usize = 4;

/// A set of rules (indices into [`RedisRules::rules`]) or of key globs
/// (in rule order), one bit each.
type BitSet = [u64; FAST_WORDS];

/// Precomputed sets: a decision intersects a few of them and checks only
/// the rules left, in order, so its cost hardly grows with the rules a
/// command or its keys cannot match.
#[derive(Debug)]
struct Fast {
    /// Per command id: the rules whose command part matches it.
    by_id: Box<[BitSet]>,
    /// Rules without key globs.
    keyless: BitSet,
    /// Rules with key globs whose action refuses (any key matching is a
    /// hit); the other rules with globs allow (every key must match).
    refusing: BitSet,
    /// Per glob: its rule.
    rule_of: Box<[u16]>,
    /// Per byte: the globs a key starting with that byte can match.
    first_byte: Box<[BitSet; 256]>,
    /// Per byte: the globs a key ending with that byte can match.
    last_byte: Box<[BitSet; 256]>,
}

impl Fast {
    fn build(rules: &[Compiled], table: &CommandTable) -> Option<Box<Fast>> {
        let globs: usize = rules.iter().map(|r| r.keys.len()).sum();
        if rules.len() > FAST_RULES || globs > FAST_RULES {
            return None;
        }
        let mut fast = Box::new(Fast {
            by_id: vec![[0; FAST_WORDS]; table.len()].into_boxed_slice(),
            keyless: [0; FAST_WORDS],
            refusing: [0; FAST_WORDS],
            rule_of: Box::default(),
            first_byte: Box::new([[0; FAST_WORDS]; 256]),
            last_byte: Box::new([[0; FAST_WORDS]; 256]),
        });
        let mut rule_of = Vec::with_capacity(globs);
        for (i, r) in rules.iter().enumerate() {
            let (w, bit) = (i / 64, 1u64 << (i % 64));
            for (id, set) in fast.by_id.iter_mut().enumerate() {
                if r.matches_id(id as CommandId) {
                    set[w] |= bit;
                }
            }
            if r.keys.is_empty() {
                fast.keyless[w] |= bit;
                continue;
            }
            if r.action.refuses() {
                fast.refusing[w] |= bit;
            }
            for g in r.keys.iter() {
                let gi = rule_of.len();
                rule_of.push(i as u16);
                let (gw, gbit) = (gi / 64, 1u64 << (gi % 64));
                let (first, last) = g.end_bytes();
                for b in 0..256usize {
                    if first.is_none_or(|f| usize::from(f) == b) {
                        fast.first_byte[b][gw] |= gbit;
                    }
                    if last.is_none_or(|l| usize::from(l) == b) {
                        fast.last_byte[b][gw] |= gbit;
                    }
                }
            }
        }
        fast.rule_of = rule_of.into_boxed_slice();
        Some(fast)
    }

    /// The rules with a glob that key `k` may match (a superset of those
    /// with a glob it does match).
    #[inline]
    fn candidates(&self, k: &[u8]) -> BitSet {
        let globs: BitSet = match (k.first(), k.last()) {
            (Some(&f), Some(&l)) => {
                let (a, b) = (
                    &self.first_byte[usize::from(f)],
                    &self.last_byte[usize::from(l)],
                );
                std::array::from_fn(|w| a[w] & b[w])
            }
            // The empty key: only globs that match anything can match it.
            _ => {
                let mut all = [0; FAST_WORDS];
                for g in 0..self.rule_of.len() {
                    all[g / 64] |= 1 << (g % 64);
                }
                all
            }
        };
        let mut rules = [0; FAST_WORDS];
        for (w, mut bits) in globs.into_iter().enumerate() {
            while bits != 0 {
                let g = w * 64 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                let r = usize::from(self.rule_of[g]);
                rules[r / 64] |= 1 << (r % 64);
            }
        }
        rules
    }
}

impl RedisRules {
    /// Compiles the rules of `target` that cover `groups`.
    pub fn compile(
        policy: &Policy,
        target: usize,
        groups: &[String],
        table: &CommandTable,
    ) -> RedisRules {
        let tp = &policy.targets[target];
        let words = table.len().div_ceil(64);
        let mut rules = Vec::new();
        for &ri in &tp.rules {
            let r = &policy.rules[ri as usize];
            if !r.groups.covers(groups) {
                continue;
            }
            let (ids, names, categories, keys) = match &r.matcher {
                Matcher::Any => (None, Vec::new(), false, Vec::new()),
                Matcher::Sql(_) => continue,
                Matcher::Redis(m) if m.commands.is_empty() => {
                    (None, Vec::new(), false, m.keys.clone())
                }
                Matcher::Redis(m) => {
                    let mut bits = vec![0u64; words].into_boxed_slice();
                    let mut cats = Categories::default();
                    let mut names = Vec::new();
                    for p in &m.commands {
                        match p {
                            CommandPattern::Category(b) => cats.insert(*b),
                            CommandPattern::Name(n) => names.push(n.clone()),
                        }
                    }
                    for (id, c) in table.iter() {
                        let parent = c.parent.map(|p| table.get(p).name.as_bytes());
                        let hit = c.categories.intersects(cats)
                            || names.iter().any(|n| {
                                **n == *c.name.as_bytes() || parent.is_some_and(|p| **n == *p)
                            });
                        if hit {
                            bits[id as usize / 64] |= 1 << (id % 64);
                        }
                    }
                    (Some(bits), names, cats.0 != 0, m.keys.clone())
                }
            };
            rules.push(Compiled {
                rule: ri,
                action: r.action,
                ids,
                names: names.into(),
                categories,
                keys: keys.into(),
            });
        }
        let first = (0..table.len())
            .map(|id| {
                rules
                    .iter()
                    .position(|r| r.matches_id(id as CommandId))
                    .map_or(NONE, |i| i as u16)
            })
            .collect();
        RedisRules {
            fast: Fast::build(&rules, table),
            rules,
            first,
            default: Decision::default_of(tp.default_action),
        }
    }

    /// Number of rules that apply.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether no rule applies (the default decides everything).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Decides a known command from its id alone when no rule with `keys`
    /// stands in the way.
    #[inline]
    pub fn decide_id(&self, id: CommandId) -> Verdict {
        let i = self.first[id as usize];
        if i == NONE {
            return Verdict::Decided(self.default);
        }
        let r = &self.rules[i as usize];
        if r.keys.is_empty() {
            Verdict::Decided(Decision::by(r.action, r.rule))
        } else {
            Verdict::NeedArgs
        }
    }

    /// Decides a known command with its arguments.
    pub fn decide_with_args<A: Args + ?Sized>(
        &self,
        table: &CommandTable,
        id: CommandId,
        args: &A,
    ) -> Decision {
        let start = self.first[id as usize];
        if start == NONE {
            return self.default;
        }
        let keys = &table.get(id).keys;
        // Find the keys once for all the rules that look at them; only a
        // command with more keys than fit on the stack is walked per rule.
        let mut inline: [&[u8]; KEYS_INLINE] = [&[]; KEYS_INLINE];
        let mut n = 0usize;
        let mut many = false;
        let found = match keys.for_each(args, |k| {
            if n == KEYS_INLINE {
                many = true;
                return true;
            }
            inline[n] = k;
            n += 1;
            false
        }) {
            _ if many => FoundKeys::Many,
            Keys::Known => FoundKeys::Known(&inline[..n]),
            Keys::Unknown => FoundKeys::Unknown,
        };
        if let (Some(fast), false) = (&self.fast, matches!(found, FoundKeys::Many)) {
            return self.decide_fast(fast, id, &found);
        }
        for r in &self.rules[start as usize..] {
            if !r.matches_id(id) {
                continue;
            }
            let hit = match found {
                FoundKeys::Many => r.keys_match(keys, args),
                _ => r.keys_match_found(&found),
            };
            if hit {
                return Decision::by(r.action, r.rule);
            }
        }
        self.default
    }

    /// The first rule that matches command `id` with keys `found`: the
    /// rules the bit sets leave, in order, each checked in full.
    #[inline]
    fn decide_fast(&self, fast: &Fast, id: CommandId, found: &FoundKeys<'_>) -> Decision {
        // Rules with globs that some key may match (for refusing rules),
        // and that every key may match (for allow rules).
        let (any, all) = match found {
            FoundKeys::Known([]) => ([0; FAST_WORDS], [0; FAST_WORDS]),
            FoundKeys::Known(keys) => {
                let mut any = [0; FAST_WORDS];
                let mut all = [!0; FAST_WORDS];
                for k in keys.iter() {
                    let c = fast.candidates(k);
                    for w in 0..FAST_WORDS {
                        any[w] |= c[w];
                        all[w] &= c[w];
                    }
                }
                (any, all)
            }
            // Unknown keys: every refusing rule with globs may match, no
            // allow rule with globs does.
            _ => ([!0; FAST_WORDS], [0; FAST_WORDS]),
        };
        let by_id = &fast.by_id[id as usize];
        for w in 0..FAST_WORDS {
            let mut left = by_id[w]
                & (fast.keyless[w] | (any[w] & fast.refusing[w]) | (all[w] & !fast.refusing[w]));
            while left != 0 {
                let i = w * 64 + left.trailing_zeros() as usize;
                left &= left - 1;
                let r = &self.rules[i];
                if r.keys_match_found(found) {
                    return Decision::by(r.action, r.rule);
                }
            }
        }
        self.default
    }

    /// Decides a command the table does not know: `name` upper-case, `full`
    /// its `NAME|SUB` form (empty without a second argument). Its keys are
    /// unknown.
    pub fn decide_unknown(&self, name: &[u8], full: &[u8]) -> Decision {
        for r in &self.rules {
            if r.matches_unknown(name, full) && (r.keys.is_empty() || r.action.refuses()) {
                return Decision::by(r.action, r.rule);
            }
        }
        self.default
    }

    /// Decides the command whose arguments are `args` (name first), the
    /// slow way: look-up, then arguments as needed.
    pub fn decide<A: Args + ?Sized>(&self, table: &CommandTable, args: &A) -> Decision {
        if args.count() == 0 {
            return self.default;
        }
        let sub = (args.count() > 1).then(|| args.arg(1));
        match table.lookup(args.arg(0), sub) {
            Some(id) => match self.decide_id(id) {
                Verdict::Decided(d) => d,
                Verdict::NeedArgs => self.decide_with_args(table, id, args),
            },
            None => {
                let (mut name, mut full) = ([0u8; 64], [0u8; 129]);
                let (n, f) = unknown_names(args.arg(0), sub, &mut name, &mut full);
                self.decide_unknown(n, f)
            }
        }
    }
}

/// Upper-case forms of an unknown command's name and `NAME|SUB`, in stack
/// buffers; over-long names are cut (they match no rule name, which are at
/// most [`super::redis::NAME_BYTES_MAX`] bytes a word).
pub fn unknown_names<'a>(
    name: &[u8],
    sub: Option<&[u8]>,
    name_buf: &'a mut [u8; 64],
    full_buf: &'a mut [u8; 129],
) -> (&'a [u8], &'a [u8]) {
    let n = name.len().min(64);
    for (o, b) in name_buf.iter_mut().zip(&name[..n]) {
        *o = b.to_ascii_uppercase();
    }
    let full_len = match sub {
        Some(sub) if name.len() <= 64 && sub.len() <= 64 => {
            full_buf[..n].copy_from_slice(&name_buf[..n]);
            full_buf[n] = b'|';
            for (o, b) in full_buf[n + 1..].iter_mut().zip(sub) {
                *o = b.to_ascii_uppercase();
            }
            n + 1 + sub.len()
        }
        _ => 0,
    };
    (&name_buf[..n], &full_buf[..full_len])
}

/// The PostgreSQL rules of one target for one set of groups.
///
/// A rule's keys must all match (and). How each key matches depends on
/// whether the rule refuses, so that a string holding several statements
/// cannot borrow an allow rule meant for one of them:
///
/// - an `allow` rule matches when *every* statement kind, table and
///   function in the string is covered by its lists (and there is at least
///   one of each it lists);
/// - a `block` or `approve` rule matches when *any* is;
/// - `without_where = true` matches strings with an UPDATE or DELETE
///   without WHERE.
///
/// Strings whose effect cannot be fully known (`EXECUTE` of a computed
/// string in a `DO` block, say) are matched on what is known by refusing
/// rules, and by allow rules only when those list `UNKNOWN` in `statement`.
/// Text that does not parse matches only refusing rules without match keys
/// and rules listing `UNPARSEABLE`. When no rule matches such a string it is
/// refused, whatever the target's default (rule id `unclassified`).
#[derive(Debug)]
pub struct SqlRules {
    rules: Vec<(RuleIndex, Action, Option<SqlMatch>)>,
    default: Decision,
}

impl SqlRules {
    /// Compiles the rules of `target` that cover `groups`.
    pub fn compile(policy: &Policy, target: usize, groups: &[String]) -> SqlRules {
        let tp = &policy.targets[target];
        let rules = tp
            .rules
            .iter()
            .map(|&ri| (ri, &policy.rules[ri as usize]))
            .filter(|(_, r)| r.groups.covers(groups))
            .filter_map(|(ri, r)| match &r.matcher {
                Matcher::Any => Some((ri, r.action, None)),
                Matcher::Sql(m) => Some((ri, r.action, Some(m.clone()))),
                Matcher::Redis(_) => None,
            })
            .collect();
        SqlRules {
            rules,
            default: Decision::default_of(tp.default_action),
        }
    }

    /// Decides one query string from its classification.
    pub fn decide(&self, facts: &Result<std::rc::Rc<SqlFacts>, SqlError>) -> Decision {
        let classified = match facts {
            Ok(f) => f.unknown.is_none(),
            Err(_) => false,
        };
        for (ri, action, m) in &self.rules {
            let hit = match facts {
                Ok(f) => sql_matches(m.as_ref(), *action, f),
                Err(_) => match m {
                    None => action.refuses(),
                    Some(m) => m.unparseable,
                },
            };
            if hit {
                return Decision::by(*action, *ri);
            }
        }
        if classified {
            self.default
        } else {
            Decision {
                action: Action::Block,
                rule: None,
                unclassified: true,
            }
        }
    }
}

fn sql_matches(m: Option<&SqlMatch>, action: Action, f: &SqlFacts) -> bool {
    let refuses = action.refuses();
    let unknown = f.unknown.is_some();
    let Some(m) = m else {
        // A rule without match keys: everything its identities send, except
        // that allowing what cannot be known takes an explicit `UNKNOWN`.
        return refuses || !unknown;
    };
    if unknown && !m.unknown {
        return false;
    }
    let statements = match m.statements {
        Some(kinds) if refuses => f.kinds.intersects(kinds),
        Some(kinds) => !f.kinds.is_empty() && f.kinds.iter().all(|k| kinds.contains(k)),
        // Only UNKNOWN / UNPARSEABLE listed: about those strings alone.
        None if m.unknown || m.unparseable => unknown,
        None => true,
    };
    let tables = m.tables.is_empty()
        || if refuses {
            f.tables
                .iter()
                .any(|t| m.tables.iter().any(|p| p.matches(t)))
        } else {
            !f.tables.is_empty()
                && f.tables
                    .iter()
                    .all(|t| m.tables.iter().any(|p| p.matches(t)))
        };
    let functions = m.functions.is_empty()
        || if refuses {
            f.functions
                .iter()
                .any(|x| m.functions.iter().any(|g| g.matches(x.as_bytes())))
        } else {
            !f.functions.is_empty()
                && f.functions
                    .iter()
                    .all(|x| m.functions.iter().any(|g| g.matches(x.as_bytes())))
        };
    let without_where = !m.without_where || f.without_where;
    statements && tables && functions && without_where
}
