//! The sessions a shard is serving, so that shutdown can reach them.
//!
//! Registering happens once per connection, never per command. At shutdown
//! the shard marks every session as draining and wakes it: an idle session
//! closes at once, a busy one after its in-flight replies. At the deadline
//! every remaining session is told to close now.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use super::notify::LocalNotify;

/// How a session is asked to end from outside.
#[derive(Default)]
pub struct SessionControl {
    /// Finish what is in flight, then close.
    pub draining: Cell<bool>,
    /// Close now.
    pub abort: Cell<bool>,
    /// Wakes the half that reads from the client.
    pub wake_client_side: LocalNotify,
    /// Wakes the half that reads from the store.
    pub wake_upstream_side: LocalNotify,
}

impl SessionControl {
    /// Draining wakes only the client side: it stops reading new commands,
    /// while the upstream side keeps reading the replies still owed (waking
    /// it would cancel a read that may hold them).
    fn wake_for_drain(&self) {
        self.wake_client_side.notify();
    }

    fn wake_for_abort(&self) {
        self.wake_client_side.notify();
        self.wake_upstream_side.notify();
    }
}

/// A shard's live sessions.
#[derive(Default)]
pub struct Registry {
    slots: RefCell<Vec<Option<Rc<SessionControl>>>>,
    free: RefCell<Vec<usize>>,
    live: Cell<usize>,
}

/// Removes its session from the registry when dropped.
pub struct Registration {
    registry: Rc<Registry>,
    slot: usize,
    /// The session's control block.
    pub control: Rc<SessionControl>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.slots.borrow_mut()[self.slot] = None;
        self.registry.free.borrow_mut().push(self.slot);
        self.registry.live.set(self.registry.live.get() - 1);
    }
}

impl Registry {
    /// Registers a new session.
    pub fn register(self: &Rc<Self>) -> Registration {
        let control = Rc::new(SessionControl::default());
        let mut slots = self.slots.borrow_mut();
        let slot = match self.free.borrow_mut().pop() {
            Some(i) => {
                slots[i] = Some(control.clone());
                i
            }
            None => {
                slots.push(Some(control.clone()));
                slots.len() - 1
            }
        };
        self.live.set(self.live.get() + 1);
        Registration {
            registry: self.clone(),
            slot,
            control,
        }
    }

    /// Sessions open now.
    pub fn live(&self) -> usize {
        self.live.get()
    }

    /// Asks every session to finish its in-flight work and close.
    pub fn drain_all(&self) {
        for c in self.slots.borrow().iter().flatten() {
            c.draining.set(true);
            c.wake_for_drain();
        }
    }

    /// Tells every session to close now.
    pub fn abort_all(&self) {
        for c in self.slots.borrow().iter().flatten() {
            c.abort.set(true);
            c.wake_for_abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_reused_and_counted() {
        let r = Rc::new(Registry::default());
        let a = r.register();
        let b = r.register();
        assert_eq!(r.live(), 2);
        drop(a);
        assert_eq!(r.live(), 1);
        let c = r.register();
        assert_eq!(r.slots.borrow().len(), 2, "freed slot reused");
        r.drain_all();
        assert!(b.control.draining.get() && c.control.draining.get());
        r.abort_all();
        assert!(b.control.abort.get());
    }
}
