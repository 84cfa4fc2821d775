//! Policy: per identity and per target, decide every Redis command and
//! every SQL statement before it reaches the store.
//!
//! # Rules
//!
//! `[[rule]]` tables in the configuration ([`config`]), tried in file order;
//! the first that matches decides. A rule applies to one target (or `"*"`)
//! and to identities in any of its `groups` (`"*"` is anyone). Its match
//! keys narrow what it covers; a rule without any matches everything its
//! identities send. Nothing matching, the target's `default_action`
//! decides (`"allow"` unless the file says otherwise, so that existing
//! configurations keep working; production should say `"block"`).
//!
//! Redis match keys: `command` (names, `"CONFIG SET"`-style subcommands,
//! `"@category"`), `keys` (Redis globs). PostgreSQL match keys:
//! `statement`, `tables`, `functions`, `without_where`.
//!
//! # Exactness
//!
//! A policy that a disguised command can slip past is worse than none.
//! Redis commands are classified with the store's own command table
//! ([`redis::CommandTable`]): names in any case, ACL categories, key
//! specifications. Where the facts a rule depends on cannot be known, only
//! refusing rules (`block`, `approve`) match:
//!
//! - a command the table does not know matches a rule naming it literally,
//!   and matches a rule on categories only if that rule refuses;
//! - a command whose keys cannot be determined (`SORT ... BY`, a count that
//!   is not a number) matches a rule with `keys` only if that rule refuses;
//! - an `allow` rule with `keys` matches when every key of the command
//!   matches one of its globs (and there is at least one); a refusing rule
//!   matches when any key does.
//!
//! # Speed
//!
//! Each session compiles, once, the rules that apply to its target and its
//! identity's groups against the command table ([`decide::RedisRules`]):
//! per command, the first rule that can match it. Deciding a command is
//! then a table look-up by name and an array index, with no allocation;
//! only rules with `keys` need the arguments.
//!
//! # Snapshots and reload
//!
//! The control plane owns the current [`PolicyState`] (the rules and each
//! Redis target's command table) in a [`state::PolicyHandle`]; SIGHUP
//! builds a new one and publishes it. Each shard keeps its own copy and
//! compares a generation counter (one atomic load) before deciding, so a
//! new policy takes effect on the next command of every live session.

pub mod config;
pub mod decide;
pub mod gate;
pub mod glob;
pub mod pg;
pub mod redis;
pub mod sql;
pub mod state;

#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::Arc;

use crate::config::Protocol;
pub use decide::{Decision, RedisRules};
pub use gate::{Gate, RedisGate};
pub use pg::SqlGate;
pub use state::{PolicyHandle, PolicyState, ShardPolicy};

/// What a rule (or a target's default) does with what it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Forward to the store.
    Allow,
    /// Refuse, naming the rule.
    Block,
    /// Refuse until a person approves; answered with a request id.
    Approve,
}

impl Action {
    /// The word used in the configuration and logs.
    pub fn name(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Block => "block",
            Action::Approve => "approve",
        }
    }

    /// Parses a configuration word.
    pub fn from_name(s: &str) -> Option<Action> {
        match s {
            "allow" => Some(Action::Allow),
            "block" => Some(Action::Block),
            "approve" => Some(Action::Approve),
            _ => None,
        }
    }

    /// Whether the action keeps the request from the store.
    #[inline]
    pub fn refuses(self) -> bool {
        self != Action::Allow
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Index of a rule in [`Policy::rules`].
pub type RuleIndex = u16;

/// Most rules a configuration may hold.
pub const RULES_MAX: usize = 4096;

/// The rule id reported for a target's default action.
pub const DEFAULT_RULE_ID: &str = "default";

/// The rule id reported when SQL is refused because it cannot be
/// classified (it does not parse, or hides what it runs) and no rule
/// explicitly allows that.
pub const UNCLASSIFIED_RULE_ID: &str = "unclassified";

/// The reason given for SQL that cannot be classified.
pub const UNCLASSIFIED_REASON: &str = "statement cannot be classified";

/// Which identities a rule covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Groups {
    /// `"*"`: anyone, the anonymous identity included.
    Any,
    /// Identities in at least one of these groups.
    Some(Vec<String>),
}

impl Groups {
    /// Whether an identity in `groups` is covered.
    pub fn covers(&self, groups: &[String]) -> bool {
        match self {
            Groups::Any => true,
            Groups::Some(list) => list.iter().any(|g| groups.contains(g)),
        }
    }
}

/// One `command` entry of a Redis rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandPattern {
    /// A command (upper case), which covers its subcommands too, or one
    /// subcommand as `CONTAINER|SUB`.
    Name(Box<[u8]>),
    /// An ACL category (a bit of [`redis::Categories`]).
    Category(u8),
}

/// What a Redis rule matches.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RedisMatch {
    /// Commands; empty means every command.
    pub commands: Vec<CommandPattern>,
    /// Key globs; empty means any keys (or none).
    pub keys: Vec<glob::Glob>,
}

/// What a PostgreSQL rule matches (see [`decide::SqlRules`] for the
/// semantics).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SqlMatch {
    /// Statement kinds; `None` means any.
    pub statements: Option<sql::KindSet>,
    /// `statement` lists `UNKNOWN`: statements whose effect cannot be
    /// fully known (dynamic SQL in a `DO` block, say).
    pub unknown: bool,
    /// `statement` lists `UNPARSEABLE`: text PostgreSQL's parser rejects.
    pub unparseable: bool,
    /// Table patterns; empty means any.
    pub tables: Vec<TablePattern>,
    /// Function globs (lower case); empty means any.
    pub functions: Vec<glob::Glob>,
    /// Only strings with an UPDATE or DELETE without WHERE.
    pub without_where: bool,
}

/// A `tables` entry: `table` (any schema) or `schema.table`, each part a
/// glob. A qualified pattern also matches an unqualified reference, which
/// PostgreSQL resolves through `search_path` (by default `public` first):
/// `public.users` matches `users`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TablePattern {
    /// Schema glob, when qualified.
    pub schema: Option<glob::Glob>,
    /// Relation glob.
    pub name: glob::Glob,
}

impl TablePattern {
    /// Whether `t` matches.
    pub fn matches(&self, t: &sql::TableRef) -> bool {
        self.name.matches(t.name.as_bytes())
            && match (&self.schema, &t.schema) {
                (None, _) => true,
                (Some(p), Some(s)) => p.matches(s.as_bytes()),
                (Some(p), None) => p.matches(b"public"),
            }
    }
}

/// What a rule matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Matcher {
    /// No match key: everything.
    Any,
    /// Redis commands.
    Redis(RedisMatch),
    /// SQL statements.
    Sql(SqlMatch),
}

/// One `[[rule]]`.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Unique id, reported to clients and the audit trail.
    pub id: Arc<str>,
    /// The target it applies to (index in the configuration), or every one.
    pub target: Option<usize>,
    /// Whom it applies to.
    pub groups: Groups,
    /// What it does.
    pub action: Action,
    /// Why, told to refused clients.
    pub reason: Arc<str>,
    /// What it matches.
    pub matcher: Matcher,
    /// Line of the rule in the file, for logs.
    pub line: usize,
    /// The Redis refusal (`-NOPERM custos: <reason> (rule <id>)`).
    pub redis_reply: Box<[u8]>,
}

/// What the policy says about one target.
#[derive(Debug, Clone)]
pub struct TargetPolicy {
    /// The target's name.
    pub name: String,
    /// Its protocol.
    pub protocol: Protocol,
    /// The action when no rule matches.
    pub default_action: Action,
    /// The rules that can apply to it, in file order.
    pub rules: Vec<RuleIndex>,
    /// The Redis refusal for the default action.
    pub default_reply: Box<[u8]>,
}

/// A whole, validated policy: immutable once built.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Every rule, in file order.
    pub rules: Vec<Rule>,
    /// Per target, by configuration index.
    pub targets: Vec<TargetPolicy>,
}

/// The reason given for a target's default action.
pub const DEFAULT_REASON: &str = "no rule allows this";

impl Policy {
    /// The rule or default behind `decision` on target `target`: (id, reason).
    pub fn explain(&self, target: usize, decision: Decision) -> (&str, &str) {
        if decision.unclassified {
            return (UNCLASSIFIED_RULE_ID, UNCLASSIFIED_REASON);
        }
        match decision.rule {
            Some(r) => {
                let r = &self.rules[r as usize];
                (&r.id, &r.reason)
            }
            None => {
                let _ = target;
                (DEFAULT_RULE_ID, DEFAULT_REASON)
            }
        }
    }

    /// The Redis error for a refused `decision` on target `target`.
    pub fn redis_refusal(&self, target: usize, decision: Decision) -> &[u8] {
        match decision.rule {
            _ if decision.unclassified => &self.targets[target].default_reply,
            Some(r) => &self.rules[r as usize].redis_reply,
            None => &self.targets[target].default_reply,
        }
    }

    /// Whether any rule is configured.
    pub fn has_rules(&self) -> bool {
        !self.rules.is_empty()
    }
}

/// `-NOPERM custos: <reason> (rule <id>)\r\n`.
pub fn redis_refusal_text(reason: &str, id: &str) -> Box<[u8]> {
    let mut out = Vec::with_capacity(32 + reason.len() + id.len());
    out.extend_from_slice(b"-NOPERM custos: ");
    out.extend(
        reason
            .bytes()
            .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
    );
    out.extend_from_slice(b" (rule ");
    out.extend(
        id.bytes()
            .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
    );
    out.extend_from_slice(b")\r\n");
    out.into_boxed_slice()
}
