//! What a PostgreSQL query string does, as PostgreSQL's own parser sees it.
//!
//! The policy decides on [`SqlFacts`]: every statement kind, relation and
//! function in the string, nested ones included. The facts come from
//! libpg_query (the server's grammar compiled as a library, through the
//! `pg_query` crate), so case, comments, quoting, Unicode escapes, dollar
//! quoting and `;` hidden in strings parse exactly as the server would parse
//! them. Nothing is matched on text.
//!
//! Rules of the classification, each chosen so that a deny rule cannot be
//! stepped around:
//! - Every statement of a multi-statement string counts, and so does every
//!   statement nested in another: data-modifying CTEs, `EXPLAIN` targets
//!   (with or without `ANALYZE`: the kinds say what the text could run),
//!   `CREATE TABLE AS`, `COPY (query)`, `PREPARE` bodies, rule actions,
//!   view queries, cursor queries, `DO` bodies and SQL or PL/pgSQL function
//!   bodies.
//! - `INSERT ... ON CONFLICT DO UPDATE` also counts as UPDATE, and `MERGE`
//!   counts as each action it can take (INSERT, UPDATE, DELETE).
//! - References to CTE names are reported as tables too: a CTE may share a
//!   table's name, and reporting both keeps a rule on that name sound.
//! - `DO` blocks and function bodies are parsed with the PL/pgSQL parser;
//!   what cannot be known (dynamic `EXECUTE` of a computed string, another
//!   language, `EXECUTE` of a statement never prepared in the session) sets
//!   [`SqlFacts::unknown`], which the policy refuses unless a rule allows it.
//! - Text that does not parse is an error, never "no facts": the policy fails
//!   closed.
//! - Strings are split as with `standard_conforming_strings = on` (the
//!   server default since 9.1). Turning it off in SQL is unknown; a session
//!   whose server reports it off (ParameterStatus, e.g. set by a startup
//!   `options` parameter or the server's configuration) must not rely on
//!   these facts.

mod cache;
mod classify;
mod plpgsql;
#[cfg(test)]
mod tests;
#[rustfmt::skip]
mod walk;

use std::fmt;

pub use cache::{CACHE_TEXT_BYTES_MAX, SESSION_PREPARED_MAX, SessionSql, SqlCache};

/// Longest query string that is parsed at all. Longer text is refused
/// rather than handed to the parser: a policy must bound its own work.
pub const SQL_BYTES_MAX: usize = 1 << 20;

/// Deepest nesting of SQL held in strings that is followed: a `DO` block
/// whose body runs `EXECUTE 'DO ...'`, a function created inside a `DO`, and
/// so on. Deeper nesting is reported as unknown.
pub const SQL_NESTING_MAX: u32 = 8;

/// What kind of statement something is. One string may hold many.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(missing_docs)] // the names are the SQL commands
pub enum StatementKind {
    Select,
    Insert,
    Update,
    Delete,
    Merge,
    Create,
    Alter,
    Drop,
    Truncate,
    Grant,
    Revoke,
    Copy,
    /// `COPY ... TO PROGRAM` / `FROM PROGRAM`: runs a shell command on the
    /// database server (always reported together with `Copy`).
    CopyProgram,
    Do,
    Call,
    /// `SET ROLE`, `SET SESSION AUTHORIZATION`, their `RESET` forms, and
    /// `set_config('role', ...)` with a constant setting name.
    SetRole,
    Prepare,
    Execute,
    Deallocate,
    Vacuum,
    Analyze,
    Listen,
    Notify,
    Unlisten,
    Set,
    Reset,
    Show,
    /// `BEGIN`, `COMMIT`, `ROLLBACK`, savepoints, two-phase commit.
    Transaction,
    Explain,
    Lock,
    Comment,
    Refresh,
    Reindex,
    Cluster,
    Discard,
    /// Cursors: `DECLARE`, `FETCH`, `MOVE`, `CLOSE`.
    Fetch,
    Checkpoint,
    Load,
    /// A statement with no kind of its own above (`SECURITY LABEL`,
    /// `ALTER ... REPLICA IDENTITY`, ...).
    Other,
}

impl StatementKind {
    /// Every kind, in declaration order.
    pub const ALL: &[StatementKind] = &[
        Self::Select,
        Self::Insert,
        Self::Update,
        Self::Delete,
        Self::Merge,
        Self::Create,
        Self::Alter,
        Self::Drop,
        Self::Truncate,
        Self::Grant,
        Self::Revoke,
        Self::Copy,
        Self::CopyProgram,
        Self::Do,
        Self::Call,
        Self::SetRole,
        Self::Prepare,
        Self::Execute,
        Self::Deallocate,
        Self::Vacuum,
        Self::Analyze,
        Self::Listen,
        Self::Notify,
        Self::Unlisten,
        Self::Set,
        Self::Reset,
        Self::Show,
        Self::Transaction,
        Self::Explain,
        Self::Lock,
        Self::Comment,
        Self::Refresh,
        Self::Reindex,
        Self::Cluster,
        Self::Discard,
        Self::Fetch,
        Self::Checkpoint,
        Self::Load,
        Self::Other,
    ];

    /// The name used in configuration and audit records: `SELECT`,
    /// `COPY_PROGRAM`, `SET_ROLE`, ...
    pub fn name(self) -> &'static str {
        match self {
            Self::Select => "SELECT",
            Self::Insert => "INSERT",
            Self::Update => "UPDATE",
            Self::Delete => "DELETE",
            Self::Merge => "MERGE",
            Self::Create => "CREATE",
            Self::Alter => "ALTER",
            Self::Drop => "DROP",
            Self::Truncate => "TRUNCATE",
            Self::Grant => "GRANT",
            Self::Revoke => "REVOKE",
            Self::Copy => "COPY",
            Self::CopyProgram => "COPY_PROGRAM",
            Self::Do => "DO",
            Self::Call => "CALL",
            Self::SetRole => "SET_ROLE",
            Self::Prepare => "PREPARE",
            Self::Execute => "EXECUTE",
            Self::Deallocate => "DEALLOCATE",
            Self::Vacuum => "VACUUM",
            Self::Analyze => "ANALYZE",
            Self::Listen => "LISTEN",
            Self::Notify => "NOTIFY",
            Self::Unlisten => "UNLISTEN",
            Self::Set => "SET",
            Self::Reset => "RESET",
            Self::Show => "SHOW",
            Self::Transaction => "TRANSACTION",
            Self::Explain => "EXPLAIN",
            Self::Lock => "LOCK",
            Self::Comment => "COMMENT",
            Self::Refresh => "REFRESH",
            Self::Reindex => "REINDEX",
            Self::Cluster => "CLUSTER",
            Self::Discard => "DISCARD",
            Self::Fetch => "FETCH",
            Self::Checkpoint => "CHECKPOINT",
            Self::Load => "LOAD",
            Self::Other => "OTHER",
        }
    }

    /// The kind named `s`, in any case; `COPY PROGRAM` and `SET ROLE` may
    /// be written with a space or a `-` instead of the `_`.
    pub fn from_name(s: &str) -> Option<Self> {
        let s = s.trim();
        Self::ALL.iter().copied().find(|k| {
            let name = k.name();
            name.len() == s.len()
                && name.bytes().zip(s.bytes()).all(|(a, b)| {
                    a == b.to_ascii_uppercase() || (a == b'_' && (b == b' ' || b == b'-'))
                })
        })
    }

    fn bit(self) -> u64 {
        1 << (self as u32)
    }
}

impl fmt::Display for StatementKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of [`StatementKind`]s, one bit each.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct KindSet(u64);

impl KindSet {
    /// The empty set.
    pub const EMPTY: KindSet = KindSet(0);

    /// Adds `kind`.
    pub fn insert(&mut self, kind: StatementKind) {
        self.0 |= kind.bit();
    }

    /// Whether `kind` is in the set.
    pub fn contains(self, kind: StatementKind) -> bool {
        self.0 & kind.bit() != 0
    }

    /// Whether any kind of `other` is in the set.
    pub fn intersects(self, other: KindSet) -> bool {
        self.0 & other.0 != 0
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Number of kinds in the set.
    pub fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    /// Kinds in either set.
    #[must_use]
    pub fn union(self, other: KindSet) -> KindSet {
        KindSet(self.0 | other.0)
    }

    /// The kinds, in [`StatementKind::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = StatementKind> {
        StatementKind::ALL
            .iter()
            .copied()
            .filter(move |k| self.contains(*k))
    }
}

impl FromIterator<StatementKind> for KindSet {
    fn from_iter<I: IntoIterator<Item = StatementKind>>(iter: I) -> Self {
        let mut set = KindSet::EMPTY;
        for kind in iter {
            set.insert(kind);
        }
        set
    }
}

impl fmt::Debug for KindSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

/// A relation named in a statement, as PostgreSQL resolves the identifiers:
/// unquoted names folded to lower case, quoted names kept, Unicode escapes
/// decoded. A database name (`db.schema.table`) is not kept: PostgreSQL
/// only accepts the current database there.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TableRef {
    /// Schema, when the statement names one.
    pub schema: Option<String>,
    /// Relation name.
    pub name: String,
}

impl fmt::Display for TableRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.schema {
            Some(schema) => write!(f, "{schema}.{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// Everything the policy matches on, for one query string.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SqlFacts {
    /// Every statement kind, nested ones included.
    pub kinds: KindSet,
    /// Every relation referenced, read or written, deduplicated, in order of
    /// first appearance.
    pub tables: Vec<TableRef>,
    /// Every function called, lower-cased: the bare name, and also the
    /// qualified `schema.name` when the call is qualified. Deduplicated.
    pub functions: Vec<String>,
    /// Some UPDATE or DELETE has no WHERE clause (`WHERE CURRENT OF` counts
    /// as one).
    pub without_where: bool,
    /// Why the effect of the string cannot be fully known, when it cannot.
    pub unknown: Option<String>,
    /// Top-level statements in the string.
    pub statements: u32,
}

impl SqlFacts {
    /// Adds everything in `other` (kinds, tables, functions, flags) to `self`;
    /// the statement count is left alone and the first unknown reason kept.
    pub fn merge(&mut self, other: &SqlFacts) {
        self.kinds = self.kinds.union(other.kinds);
        for t in &other.tables {
            self.add_table(t.clone());
        }
        for f in &other.functions {
            self.add_function(f);
        }
        self.without_where |= other.without_where;
        if self.unknown.is_none() {
            self.unknown.clone_from(&other.unknown);
        }
    }

    /// Whether any referenced function is `name` (already lower-cased).
    pub fn calls(&self, name: &str) -> bool {
        self.functions.iter().any(|f| f == name)
    }

    fn add_table(&mut self, table: TableRef) {
        if !self.tables.contains(&table) {
            self.tables.push(table);
        }
    }

    fn add_function(&mut self, name: &str) {
        if !self.functions.iter().any(|f| f == name) {
            self.functions.push(name.to_owned());
        }
    }

    fn set_unknown(&mut self, why: impl FnOnce() -> String) {
        if self.unknown.is_none() {
            self.unknown = Some(why());
        }
    }
}

/// Why a query string has no facts. The policy refuses it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SqlError {
    /// PostgreSQL's parser rejects the text (or a `DO` / function body in it).
    #[error("SQL does not parse: {0}")]
    Parse(String),
    /// The text is longer than [`SQL_BYTES_MAX`].
    #[error("SQL text of {bytes} bytes is longer than the {max} bytes that are parsed")]
    TooLong {
        /// Length of the text.
        bytes: usize,
        /// The limit.
        max: usize,
    },
}

/// The facts of `sql`, parsed afresh. [`SqlCache::classify`] is the same with
/// a cache in front; [`SessionSql::classify`] also follows `EXECUTE` to what
/// was `PREPARE`d. Here an `EXECUTE` is unknown, since its body lives in the
/// session.
pub fn classify(sql: &str) -> Result<SqlFacts, SqlError> {
    let classified = classify::classify(sql)?;
    Ok(classified.facts())
}
