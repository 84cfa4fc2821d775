//! The policy as one PostgreSQL session sees it.
//!
//! The session hands [`SqlGate::check`] the text of every simple Query and
//! every Parse before forwarding it. A refused text never reaches the
//! store. In its place the store gets a stand-in that raises the refusal
//! as a real error, SQLSTATE 42501 (`insufficient_privilege`), with the
//! message `custos: <reason> (rule <id>)` and, for approvals, a HINT
//! carrying the request id:
//!
//! ```sql
//! DO $custos$BEGIN RAISE EXCEPTION USING ERRCODE = '42501', MESSAGE = '...'; END$custos$
//! ```
//!
//! Because the store itself raises the error, everything after it is what
//! PostgreSQL does after any error, with no bookkeeping in the appliance:
//! inside a transaction block the transaction is failed (`E`) and a later
//! COMMIT rolls back; in the extended protocol the store discards messages
//! until Sync and answers it with ReadyForQuery; replies stay in order.
//! For a refused Parse the stand-in is a Parse, Bind and Execute of the
//! unnamed statement, so that the error arrives where the client expects
//! the Parse's answer; the session swallows the stand-in's ParseComplete and
//! BindComplete ([`CARRIER_EXTRA_REPLIES`]). A statement name whose Parse
//! was refused is never created at the store, so a later Bind or Execute of
//! it fails there (26000) and never runs anything.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;

use tracing::info;

use super::decide::{Decision, SqlRules};
use super::sql::{SessionSql, SqlError, SqlFacts};
use super::state::{PolicyState, ShardPolicy};
use super::{Action, DEFAULT_REASON};
use crate::identity::Identity;

/// Replies of a Parse stand-in that the client must not see: ParseComplete
/// and BindComplete.
pub const CARRIER_EXTRA_REPLIES: usize = 2;

/// One session's SQL policy.
pub struct SqlGate {
    shard: Rc<ShardPolicy>,
    target: usize,
    subject: String,
    groups: Vec<String>,
    generation: Cell<u64>,
    state: RefCell<Arc<PolicyState>>,
    rules: RefCell<Rc<SqlRules>>,
    session: RefCell<SessionSql>,
    /// The last refusal's decision and rule id, for the audit trail.
    refused: RefCell<Option<(crate::audit::Decision, Box<str>)>>,
}

impl SqlGate {
    /// The gate of a session of target `target` for `identity`.
    pub fn new(shard: Rc<ShardPolicy>, target: usize, identity: &Identity) -> SqlGate {
        let generation = shard.refresh();
        SqlGate {
            state: RefCell::new(shard.state()),
            rules: RefCell::new(shard.sql_rules(target, &identity.groups)),
            shard,
            target,
            subject: identity.subject.clone(),
            groups: identity.groups.clone(),
            generation: Cell::new(generation),
            session: RefCell::new(SessionSql::default()),
            refused: RefCell::new(None),
        }
    }

    fn sync(&self) {
        let g = self.shard.refresh();
        if g != self.generation.get() {
            *self.state.borrow_mut() = self.shard.state();
            *self.rules.borrow_mut() = self.shard.sql_rules(self.target, &self.groups);
            self.generation.set(g);
        }
    }

    /// Decides the SQL text of a Query or Parse. `None`: forward it;
    /// `Some(stand_in)`: send the SQL `stand_in` instead.
    pub fn check(&self, sql: &[u8]) -> Option<String> {
        self.sync();
        let facts: Result<Rc<SqlFacts>, SqlError> = match std::str::from_utf8(sql) {
            Ok(text) => {
                let mut cache = self.shard.sql_cache.borrow_mut();
                self.session.borrow_mut().classify(&mut cache, text)
            }
            Err(_) => Err(SqlError::Parse("not UTF-8".into())),
        };
        let d = self.rules.borrow().decide(&facts);
        if d.action == Action::Allow {
            return None;
        }
        Some(self.refusal(d, &facts))
    }

    /// The decision and rule id of the refusal [`SqlGate::check`] last
    /// returned, once.
    pub fn take_refusal(&self) -> Option<(crate::audit::Decision, Box<str>)> {
        self.refused.take()
    }

    fn refusal(&self, d: Decision, facts: &Result<Rc<SqlFacts>, SqlError>) -> String {
        let state = self.state.borrow();
        let (rule, reason) = state.policy.explain(self.target, d);
        let decision = match d.action {
            Action::Approve => crate::audit::Decision::Approve,
            _ => crate::audit::Decision::Block,
        };
        self.refused.replace(Some((decision, rule.into())));
        let target = &state.policy.targets[self.target].name;
        let kinds: Vec<&str> = match facts {
            Ok(f) => f.kinds.iter().map(|k| k.name()).collect(),
            Err(_) => vec!["UNPARSEABLE"],
        };
        let unknown = matches!(facts, Ok(f) if f.unknown.is_some());
        match d.action {
            Action::Approve => {
                let id = self.shard.approval_id();
                info!(
                    event = "approval_requested",
                    target = %target,
                    subject = %self.subject,
                    groups = ?self.groups,
                    rule,
                    statements = ?kinds,
                    request = %id,
                    "approval required"
                );
                stand_in(
                    &format!("custos: approval required (rule {rule})"),
                    Some(&format!("approval request {id}")),
                )
            }
            _ => {
                info!(
                    event = "block",
                    target = %target,
                    subject = %self.subject,
                    groups = ?self.groups,
                    rule,
                    statements = ?kinds,
                    unknown,
                    "statement refused by policy"
                );
                let reason = if d.rule.is_none() && !d.unclassified {
                    DEFAULT_REASON
                } else {
                    reason
                };
                stand_in(&format!("custos: {reason} (rule {rule})"), None)
            }
        }
    }
}

/// A string literal for the stand-in: quotes doubled, and no backslash
/// (whose meaning depends on `standard_conforming_strings`) or dollar-quote
/// delimiter left.
fn literal(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\\' => out.push('/'),
            '$' => out.push('S'),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// The SQL that makes the store raise the refusal.
pub fn stand_in(message: &str, hint: Option<&str>) -> String {
    let mut sql =
        String::from("DO $custos$BEGIN RAISE EXCEPTION USING ERRCODE = '42501', MESSAGE = ");
    sql.push_str(&literal(message));
    if let Some(h) = hint {
        sql.push_str(", HINT = ");
        sql.push_str(&literal(h));
    }
    sql.push_str("; END$custos$");
    sql
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stand_in_cannot_be_broken_out_of() {
        let sql = stand_in("custos: it's $custos$ \\ bad\n (rule x)", Some("h'"));
        assert_eq!(
            sql,
            "DO $custos$BEGIN RAISE EXCEPTION USING ERRCODE = '42501', MESSAGE = 'custos: it''s ScustosS / bad  (rule x)', HINT = 'h'''; END$custos$"
        );
        let facts = super::super::sql::classify(&sql).unwrap();
        assert_eq!(facts.statements, 1);
    }
}

/// Which of the store's replies belong to Parse stand-ins, so the session
/// can swallow their ParseComplete and BindComplete.
///
/// The client side reports every message it forwards and every stand-in it
/// sends; the store side reports every message it receives. A batch ends
/// at each message that the store answers with ReadyForQuery (Query, Sync,
/// FunctionCall). Within a batch, replies come in message order, one
/// ParseComplete per Parse and one BindComplete per Bind, and nothing at
/// all after the first error; so the stand-in's replies are the `n`th
/// ParseComplete and BindComplete of its batch, if they come at all, and
/// only the first stand-in of a batch can produce any.
#[derive(Debug, Default)]
pub struct StandIns {
    sent_batches: Cell<u64>,
    sent_parses: Cell<u32>,
    sent_binds: Cell<u32>,
    stand_in_in_batch: Cell<bool>,
    pending: RefCell<std::collections::VecDeque<(u64, u32, u32)>>,
    seen_batches: Cell<u64>,
    seen_parses: Cell<u32>,
    seen_binds: Cell<u32>,
}

impl StandIns {
    /// The client side forwarded a message with frontend tag `tag`.
    #[inline]
    pub fn client_message(&self, tag: u8) {
        use custos_parsers::pgwire::frontend::tag as fe;
        match tag {
            fe::PARSE => self.sent_parses.set(self.sent_parses.get() + 1),
            fe::BIND => self.sent_binds.set(self.sent_binds.get() + 1),
            fe::SYNC | fe::QUERY | fe::FUNCTION_CALL => {
                self.sent_batches.set(self.sent_batches.get() + 1);
                self.sent_parses.set(0);
                self.sent_binds.set(0);
                self.stand_in_in_batch.set(false);
            }
            _ => {}
        }
    }

    /// The client side sent a Parse stand-in (Parse, Bind, Execute).
    pub fn client_stand_in(&self) {
        if !self.stand_in_in_batch.replace(true) {
            self.pending.borrow_mut().push_back((
                self.sent_batches.get(),
                self.sent_parses.get(),
                self.sent_binds.get(),
            ));
        }
        self.sent_parses.set(self.sent_parses.get() + 1);
        self.sent_binds.set(self.sent_binds.get() + 1);
    }

    /// The store sent a message with backend tag `tag`; `true`: it answers
    /// a stand-in and must not reach the client.
    #[inline]
    pub fn store_message(&self, tag: u8) -> bool {
        use custos_parsers::pgwire::backend::tag as be;
        match tag {
            be::PARSE_COMPLETE => {
                let n = self.seen_parses.replace(self.seen_parses.get() + 1);
                self.is_stand_in(|p| p.1 == n)
            }
            be::BIND_COMPLETE => {
                let n = self.seen_binds.replace(self.seen_binds.get() + 1);
                self.is_stand_in(|p| p.2 == n)
            }
            be::READY_FOR_QUERY => {
                let done = self.seen_batches.get();
                self.pending.borrow_mut().retain(|p| p.0 > done);
                self.seen_batches.set(done + 1);
                self.seen_parses.set(0);
                self.seen_binds.set(0);
                false
            }
            _ => false,
        }
    }

    fn is_stand_in(&self, at: impl Fn(&(u64, u32, u32)) -> bool) -> bool {
        self.pending
            .borrow()
            .front()
            .is_some_and(|p| p.0 == self.seen_batches.get() && at(p))
    }
}

/// The messages that replace a refused Parse: the stand-in as the unnamed
/// statement, bound and executed, so that the store raises the refusal.
pub fn parse_stand_in(out: &mut Vec<u8>, stand_in: &str) {
    use custos_parsers::pgwire::encode;
    encode::parse(out, b"", stand_in.as_bytes(), &[]);
    encode::bind(out, b"", b"", &[], &[], &[]);
    encode::execute(out, b"", 0);
}
