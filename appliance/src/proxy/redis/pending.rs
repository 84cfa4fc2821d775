//! The FIFO of commands forwarded and not yet answered, and the pub/sub
//! state needed to tell replies from deliveries.
//!
//! Redis answers the commands of one connection in order, so the oldest
//! entry owns the next reply. Policy, masking and audit hang off this match.
//! A few commands take several replies (SUBSCRIBE with three channels takes
//! three confirmations) or none that reach the client (the appliance's own
//! re-authentication after RESET); the entry says so.

use std::collections::VecDeque;
use std::time::Instant;

use super::commands::SubKind;

/// What the appliance does with the reply (or replies) of one command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Forward the reply.
    Plain,
    /// Forward; a non-error reply switches the protocol to this version.
    Hello(Option<u8>),
    /// Forward; the connection is back to RESP2 with no subscriptions.
    Reset,
    /// Forward; then the session ends.
    Quit,
    /// Subscription confirmations (`left` of them).
    Subscription,
    /// UNSUBSCRIBE without arguments: one confirmation per subscription of
    /// this kind at the time the store runs it (known at the first reply).
    UnsubscribeAll(SubKind),
    /// Swallow the store's reply and send this one instead.
    Replace(&'static [u8]),
    /// The appliance's own AUTH after RESET: swallow; an error ends the session.
    InternalAuth,
    /// Swallow, send the session's terminal error, end the session.
    Terminal,
    /// Swallow and send the oldest of the session's local replies instead
    /// (a command refused by policy: the reply names the rule).
    Local,
}

/// One forwarded command.
#[derive(Debug, Clone, Copy)]
pub struct Entry {
    /// What to do with its replies.
    pub expect: Expect,
    /// Replies still to come; 0 for `UnsubscribeAll` until resolved.
    pub left: u32,
    /// When it was forwarded.
    pub started: Instant,
    /// Which parts of the reply are masked whole (by key or field).
    pub plan: crate::mask::redis::Plan,
}

impl Entry {
    /// An entry expecting one reply.
    #[inline]
    pub fn one(expect: Expect, started: Instant) -> Entry {
        Entry {
            expect,
            left: 1,
            started,
            plan: crate::mask::redis::Plan::Detect,
        }
    }
}

/// Subscription counts as the store reports them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Subscriptions {
    /// Channels (SUBSCRIBE).
    pub channels: u64,
    /// Patterns (PSUBSCRIBE).
    pub patterns: u64,
    /// Shard channels (SSUBSCRIBE).
    pub shard: u64,
}

impl Subscriptions {
    /// Whether the connection is in RESP2 subscribed mode.
    pub fn any(&self) -> bool {
        self.channels + self.patterns + self.shard > 0
    }

    /// Updates the counts from a confirmation: `kind`, and the count the
    /// store reports after it (channels plus patterns for those two kinds,
    /// shard channels for the third).
    pub fn confirm(&mut self, kind: SubKind, subscribed: bool, reported: u64) {
        match kind {
            SubKind::Shard => self.shard = reported,
            SubKind::Channel | SubKind::Pattern => {
                let before = self.channels + self.patterns;
                let this = if kind == SubKind::Channel {
                    &mut self.channels
                } else {
                    &mut self.patterns
                };
                if subscribed {
                    *this += reported.saturating_sub(before);
                } else {
                    *this = this.saturating_sub(before.saturating_sub(reported));
                }
            }
        }
    }

    /// How many confirmations an UNSUBSCRIBE of `kind` without arguments
    /// brings: one per subscription, or one when there is none.
    pub fn unsubscribe_all_replies(&self, kind: SubKind) -> u32 {
        let n = match kind {
            SubKind::Channel => self.channels,
            SubKind::Pattern => self.patterns,
            SubKind::Shard => self.shard,
        };
        n.clamp(1, u32::MAX as u64) as u32
    }
}

/// The FIFO of one connection.
#[derive(Debug, Default)]
pub struct Pending {
    entries: VecDeque<Entry>,
}

impl Pending {
    /// Commands awaiting replies.
    #[inline]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is in flight.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Adds a forwarded command.
    #[inline]
    pub fn push(&mut self, e: Entry) {
        self.entries.push_back(e);
    }

    /// The oldest command.
    #[inline]
    pub fn front(&self) -> Option<&Entry> {
        self.entries.front()
    }

    /// Fixes the reply count of an UNSUBSCRIBE-all at the front from the
    /// counts as they are before its first confirmation.
    pub fn resolve_front(&mut self, subs: &Subscriptions) {
        if let Some(front) = self.entries.front_mut()
            && let Expect::UnsubscribeAll(kind) = front.expect
            && front.left == 0
        {
            front.left = subs.unsubscribe_all_replies(kind);
        }
    }

    /// Counts one reply against the oldest command; returns the entry when
    /// that was its last reply. `error` ends a multi-reply entry at once (a
    /// refused SUBSCRIBE answers with one error).
    pub fn reply(&mut self, subs: &Subscriptions, error: bool) -> Option<Entry> {
        self.resolve_front(subs);
        let front = self.entries.front_mut()?;
        front.left = front.left.saturating_sub(1);
        if front.left == 0 || error {
            self.entries.pop_front()
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_reply_entries_complete_on_their_last_reply() {
        let now = Instant::now();
        let subs = Subscriptions::default();
        let mut p = Pending::default();
        p.push(Entry {
            expect: Expect::Subscription,
            left: 3,
            started: now,
            plan: crate::mask::redis::Plan::Detect,
        });
        p.push(Entry::one(Expect::Plain, now));
        assert!(p.reply(&subs, false).is_none());
        assert!(p.reply(&subs, false).is_none());
        assert_eq!(p.reply(&subs, false).unwrap().expect, Expect::Subscription);
        assert_eq!(p.reply(&subs, false).unwrap().expect, Expect::Plain);
        assert!(p.reply(&subs, false).is_none(), "nothing pending");
    }

    #[test]
    fn an_error_ends_a_multi_reply_entry() {
        let now = Instant::now();
        let mut p = Pending::default();
        p.push(Entry {
            expect: Expect::Subscription,
            left: 2,
            started: now,
            plan: crate::mask::redis::Plan::Detect,
        });
        assert!(p.reply(&Subscriptions::default(), true).is_some());
        assert!(p.is_empty());
    }

    #[test]
    fn unsubscribe_all_resolves_from_the_counts_at_its_first_reply() {
        let now = Instant::now();
        let mut subs = Subscriptions::default();
        subs.confirm(SubKind::Channel, true, 1);
        subs.confirm(SubKind::Channel, true, 2);
        subs.confirm(SubKind::Pattern, true, 3);
        assert_eq!((subs.channels, subs.patterns), (2, 1));
        let mut p = Pending::default();
        p.push(Entry {
            expect: Expect::UnsubscribeAll(SubKind::Channel),
            left: 0,
            started: now,
            plan: crate::mask::redis::Plan::Detect,
        });
        assert!(p.reply(&subs, false).is_none());
        subs.confirm(SubKind::Channel, false, 2);
        assert!(p.reply(&subs, false).is_some());
        subs.confirm(SubKind::Channel, false, 1);
        assert_eq!((subs.channels, subs.patterns), (0, 1));
        assert!(subs.any());
        // With nothing subscribed, the store still sends one confirmation.
        p.push(Entry {
            expect: Expect::UnsubscribeAll(SubKind::Channel),
            left: 0,
            started: now,
            plan: crate::mask::redis::Plan::Detect,
        });
        assert!(p.reply(&subs, false).is_some());
    }

    #[test]
    fn duplicate_subscriptions_do_not_count_twice() {
        let mut subs = Subscriptions::default();
        subs.confirm(SubKind::Channel, true, 1);
        subs.confirm(SubKind::Channel, true, 1);
        assert_eq!(subs.channels, 1);
        subs.confirm(SubKind::Shard, true, 2);
        assert_eq!(subs.shard, 2);
        subs.confirm(SubKind::Shard, false, 0);
        subs.confirm(SubKind::Channel, false, 0);
        assert!(!subs.any());
    }
}
