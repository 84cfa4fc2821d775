//! The policy as one Redis session sees it: decide each command, answer the
//! refused ones, and keep transactions coherent.
//!
//! The session calls [`RedisGate::check_head`] for every command before it
//! forwards any of it, with the command's first arguments; the gate says
//! pass, refuse with this reply, or "show me the whole command" (a rule
//! with `keys` may match). A refused command never reaches the store: the
//! session sends a one-word stand-in (`PING`) whose reply is swallowed and
//! replaced, so that the refusal takes its place among pipelined replies.
//!
//! Inside MULTI a refused command poisons the transaction, as a queued
//! command that Redis itself refuses does: the client's EXEC is replaced by
//! DISCARD and answered with `-EXECABORT`, so none of the queued commands
//! run.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;

use custos_parsers::resp::CommandHead;
use tracing::info;

use super::decide::{Decision, RedisRules, Verdict, unknown_names};
use super::redis::{Args, CommandId, CommandTable, FrameArgs};
use super::state::{PolicyState, ShardPolicy};
use super::{Action, DEFAULT_RULE_ID};
use crate::identity::Identity;

/// Stand-in for a refused command: its reply is replaced by the refusal.
pub const PING_CARRIER: &[u8] = b"*1\r\n$4\r\nPING\r\n";
/// Sent instead of the EXEC of a poisoned transaction.
pub const DISCARD: &[u8] = b"*1\r\n$7\r\nDISCARD\r\n";
/// The reply to the EXEC of a poisoned transaction, as Redis words it.
pub const EXECABORT: &[u8] = b"-EXECABORT Transaction discarded because of previous errors.\r\n";

/// What the session does with a command.
#[derive(Debug, PartialEq, Eq)]
pub enum Gate {
    /// Forward it.
    Pass,
    /// A rule looks at keys: call [`RedisGate::check_frame`] with this
    /// command id and the whole command.
    NeedFrame(CommandId),
    /// Do not forward it; send `carrier` to the store instead and answer the
    /// client with `reply` in place of the carrier's reply.
    Answer {
        /// What the store gets.
        carrier: &'static [u8],
        /// What the client gets.
        reply: Vec<u8>,
        /// What the audit trail records: the decision and the rule id
        /// (empty for EXEC of a poisoned transaction, which is no policy
        /// decision of its own).
        audit: (crate::audit::Decision, Box<str>),
    },
}

/// How the shared store connection serves a command (see
/// [`RedisGate::on_shared`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shared {
    /// Forward it.
    Forward,
    /// Refused: answer it with [`RedisGate::refuse`] (a stand-in goes to the
    /// store in its place).
    Refuse(Decision),
    /// Only a connection of the session's own can serve it (a transaction,
    /// or keys that cannot be read).
    Own,
}

/// One session's policy.
pub struct RedisGate {
    shard: Rc<ShardPolicy>,
    target: usize,
    subject: RefCell<String>,
    groups: RefCell<Vec<String>>,
    generation: Cell<u64>,
    state: RefCell<Arc<PolicyState>>,
    table: RefCell<Arc<CommandTable>>,
    rules: RefCell<Rc<RedisRules>>,
    in_multi: Cell<bool>,
    poisoned: Cell<bool>,
}

impl RedisGate {
    /// The gate of a session of target `target` (configuration index) for
    /// `identity`.
    pub fn new(shard: Rc<ShardPolicy>, target: usize, identity: &Identity) -> RedisGate {
        let generation = shard.refresh();
        let state = shard.state();
        let table = state.table(target);
        let rules = shard.redis_rules(target, &identity.groups);
        RedisGate {
            shard,
            target,
            subject: RefCell::new(identity.subject.clone()),
            groups: RefCell::new(identity.groups.clone()),
            generation: Cell::new(generation),
            state: RefCell::new(state),
            table: RefCell::new(table),
            rules: RefCell::new(rules),
            in_multi: Cell::new(false),
            poisoned: Cell::new(false),
        }
    }

    /// The session's identity changed (AUTH with another token).
    pub fn set_identity(&self, identity: &Identity) {
        *self.subject.borrow_mut() = identity.subject.clone();
        *self.groups.borrow_mut() = identity.groups.clone();
        self.recompile(self.shard.refresh());
    }

    fn recompile(&self, generation: u64) {
        let state = self.shard.state();
        *self.table.borrow_mut() = state.table(self.target);
        *self.rules.borrow_mut() = self.shard.redis_rules(self.target, &self.groups.borrow());
        *self.state.borrow_mut() = state;
        self.generation.set(generation);
    }

    /// Takes a newly published policy; one atomic load when there is none.
    #[inline]
    fn sync(&self) {
        let g = self.shard.refresh();
        if g != self.generation.get() {
            self.recompile(g);
        }
    }

    /// How the shared store connection serves the command in `head`,
    /// decided without changing any state (nothing is logged, no approval
    /// is requested: the caller may still hand the whole batch to a
    /// connection of the session's own, which decides again). `buf` starts
    /// with the whole command (the caller has checked it), so rules with
    /// key globs are decided here too.
    pub fn on_shared(&self, buf: &[u8], head: &CommandHead) -> Shared {
        self.sync();
        let name = head.arg(buf, 0).unwrap_or_default();
        if matches!(self.exempt_kind(name), Some(true)) {
            return Shared::Forward;
        }
        let sub = head.arg(buf, 1);
        let d = match self.decide_head(name, sub) {
            Ok(d) => d,
            Err(id) => match FrameArgs::parse(buf) {
                Some(args) => self
                    .rules
                    .borrow()
                    .decide_with_args(&self.table.borrow(), id, &args),
                None => return Shared::Own,
            },
        };
        shared_verdict(d, name)
    }

    /// The refusal of a whole command `frame` that [`RedisGate::on_shared`]
    /// found refused by `d`: logged (and, for an approval rule, requested)
    /// now. `None` if `frame` is not a command.
    pub fn refuse(&self, d: Decision, frame: &[u8]) -> Option<Gate> {
        let args = FrameArgs::parse(frame)?;
        if args.count() == 0 {
            return None;
        }
        let sub = (args.count() > 1).then(|| args.arg(1));
        Some(self.apply(d, args.arg(0), sub))
    }

    /// The decision for a command from its name and subcommand alone, or
    /// the id of a known command that a rule with key globs must see whole.
    #[inline]
    fn decide_head(&self, name: &[u8], sub: Option<&[u8]>) -> Result<Decision, CommandId> {
        let table = self.table.borrow();
        let rules = self.rules.borrow();
        match table.lookup(name, sub) {
            Some(id) => match rules.decide_id(id) {
                Verdict::Decided(d) => Ok(d),
                Verdict::NeedArgs => Err(id),
            },
            None => {
                let (mut n, mut f) = ([0u8; 64], [0u8; 129]);
                let (n, f) = unknown_names(name, sub, &mut n, &mut f);
                Ok(rules.decide_unknown(n, f))
            }
        }
    }

    /// Decides the command whose first arguments are in `head` (views into
    /// `buf`). No allocation unless the command is refused.
    #[inline]
    pub fn check_head(&self, buf: &[u8], head: &CommandHead) -> Gate {
        self.sync();
        let name = head.arg(buf, 0).unwrap_or_default();
        if let Some(g) = self.exempt(name) {
            return g;
        }
        let sub = head.arg(buf, 1);
        let d = match self.decide_head(name, sub) {
            Ok(d) => d,
            Err(id) => return Gate::NeedFrame(id),
        };
        self.apply(d, name, sub)
    }

    /// Decides a command from all its arguments (an inline command, or one
    /// a rule with `keys` needs whole).
    pub fn check_args<A: Args + ?Sized>(&self, args: &A) -> Gate {
        self.sync();
        if args.count() == 0 {
            return Gate::Pass;
        }
        if let Some(g) = self.exempt(args.arg(0)) {
            return g;
        }
        let d = self.rules.borrow().decide(&self.table.borrow(), args);
        let sub = (args.count() > 1).then(|| args.arg(1));
        self.apply(d, args.arg(0), sub)
    }

    /// Decides the command [`RedisGate::check_head`] answered
    /// [`Gate::NeedFrame`] for, from all its arguments: the look-up and the
    /// checks of the head are not repeated.
    pub fn check_frame<A: Args + ?Sized>(&self, id: CommandId, args: &A) -> Gate {
        let d = self
            .rules
            .borrow()
            .decide_with_args(&self.table.borrow(), id, args);
        let sub = (args.count() > 1).then(|| args.arg(1));
        self.apply(d, args.arg(0), sub)
    }

    /// Refuses a command whose keys cannot be inspected (larger than the
    /// session's buffer) when a rule depends on them.
    pub fn refuse_uninspectable(&self, name: &[u8]) -> Gate {
        let d = Decision::default_of(Action::Block);
        self.log(d, name, None, "keys could not be inspected");
        if self.in_multi.get() {
            self.poisoned.set(true);
        }
        let mut reply = b"-NOPERM custos: command too large to inspect its keys".to_vec();
        reply.extend_from_slice(b" (rule ");
        reply.extend_from_slice(DEFAULT_RULE_ID.as_bytes());
        reply.extend_from_slice(b")\r\n");
        Gate::Answer {
            carrier: PING_CARRIER,
            reply,
            audit: (crate::audit::Decision::Block, DEFAULT_RULE_ID.into()),
        }
    }

    fn apply(&self, d: Decision, name: &[u8], sub: Option<&[u8]>) -> Gate {
        match d.action {
            Action::Allow => self.track(name),
            Action::Block => {
                if self.in_multi.get() {
                    self.poisoned.set(true);
                }
                let state = self.state.borrow();
                self.log(d, name, sub, "blocked");
                let (rule, _) = state.policy.explain(self.target, d);
                Gate::Answer {
                    carrier: PING_CARRIER,
                    reply: state.policy.redis_refusal(self.target, d).to_vec(),
                    audit: (crate::audit::Decision::Block, rule.into()),
                }
            }
            Action::Approve => {
                if self.in_multi.get() {
                    self.poisoned.set(true);
                }
                let id = self.shard.approval_id();
                self.log(d, name, sub, &id);
                let mut reply = b"-NOPERM custos: approval required, request ".to_vec();
                reply.extend_from_slice(id.as_bytes());
                reply.extend_from_slice(b"\r\n");
                let state = self.state.borrow();
                let (rule, _) = state.policy.explain(self.target, d);
                Gate::Answer {
                    carrier: PING_CARRIER,
                    reply,
                    audit: (crate::audit::Decision::Approve, rule.into()),
                }
            }
        }
    }

    /// The connection-level commands the appliance itself handles (the
    /// session's identity, protocol and end) are not policy's to refuse.
    #[inline]
    fn exempt(&self, name: &[u8]) -> Option<Gate> {
        match name.len() {
            4 if name.eq_ignore_ascii_case(b"AUTH") || name.eq_ignore_ascii_case(b"QUIT") => {
                Some(Gate::Pass)
            }
            5 if name.eq_ignore_ascii_case(b"HELLO") => Some(Gate::Pass),
            5 if name.eq_ignore_ascii_case(b"RESET") => Some(self.track(name)),
            _ => None,
        }
    }

    /// `Some(true)` for the exempt commands that change no gate state.
    fn exempt_kind(&self, name: &[u8]) -> Option<bool> {
        match name.len() {
            4 if name.eq_ignore_ascii_case(b"AUTH") || name.eq_ignore_ascii_case(b"QUIT") => {
                Some(true)
            }
            5 if name.eq_ignore_ascii_case(b"HELLO") => Some(true),
            _ => None,
        }
    }

    /// Follows MULTI / EXEC / DISCARD / RESET of an allowed command.
    #[inline]
    fn track(&self, name: &[u8]) -> Gate {
        match name.len() {
            5 if name.eq_ignore_ascii_case(b"MULTI") => self.in_multi.set(true),
            4 if name.eq_ignore_ascii_case(b"EXEC") => {
                let poisoned = self.poisoned.replace(false);
                self.in_multi.set(false);
                if poisoned {
                    return Gate::Answer {
                        carrier: DISCARD,
                        reply: EXECABORT.to_vec(),
                        audit: (crate::audit::Decision::Block, "".into()),
                    };
                }
            }
            7 if name.eq_ignore_ascii_case(b"DISCARD") => {
                self.in_multi.set(false);
                self.poisoned.set(false);
            }
            5 if name.eq_ignore_ascii_case(b"RESET") => {
                self.in_multi.set(false);
                self.poisoned.set(false);
            }
            _ => {}
        }
        Gate::Pass
    }

    /// One structured line per refusal: who, where, which rule, which
    /// command (its name only, never an argument).
    fn log(&self, d: Decision, name: &[u8], sub: Option<&[u8]>, what: &str) {
        let state = self.state.borrow();
        let (rule, _) = state.policy.explain(self.target, d);
        let table = self.table.borrow();
        let command = match table.lookup(name, sub) {
            Some(id) => table.get(id).name.to_string(),
            None => String::from_utf8_lossy(&name[..name.len().min(64)]).to_ascii_uppercase(),
        };
        let target = &state.policy.targets[self.target].name;
        match d.action {
            Action::Approve => info!(
                event = "approval_requested",
                target = %target,
                subject = %self.subject.borrow(),
                groups = ?self.groups.borrow(),
                rule,
                command = %command,
                request = what,
                "approval required"
            ),
            _ => info!(
                event = "block",
                target = %target,
                subject = %self.subject.borrow(),
                groups = ?self.groups.borrow(),
                rule,
                command = %command,
                why = what,
                "command refused by policy"
            ),
        }
    }
}

/// The shared connection's verdict on decision `d` for command `name`:
/// commands of a transaction (and so their refusals, which poison it) are
/// served by a connection of the session's own.
fn shared_verdict(d: Decision, name: &[u8]) -> Shared {
    if transactional(name) {
        return Shared::Own;
    }
    match d.action {
        Action::Allow => Shared::Forward,
        Action::Block | Action::Approve => Shared::Refuse(d),
    }
}

/// Commands whose effect on the session the gate must see (so they are
/// never served on the shared store connection).
fn transactional(name: &[u8]) -> bool {
    [&b"MULTI"[..], b"EXEC", b"DISCARD", b"RESET"]
        .iter()
        .any(|n| name.eq_ignore_ascii_case(n))
}
