//! A single-waiter wake-up for two tasks of one connection on one shard.
//!
//! Both halves of a proxied connection run on the same thread, so the
//! signal between them needs neither a lock nor an atomic: a flag and a
//! waker slot in `Cell`s. Notifying before anyone waits is remembered, so a
//! wake-up is never lost.

use std::cell::Cell;
use std::future::poll_fn;
use std::task::{Poll, Waker};

/// Wakes one waiting task; a notification sent while nobody waits is kept
/// for the next wait.
#[derive(Default)]
pub struct LocalNotify {
    notified: Cell<bool>,
    waker: Cell<Option<Waker>>,
}

impl LocalNotify {
    /// Marks the notification and wakes the waiter, if any.
    pub fn notify(&self) {
        self.notified.set(true);
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    /// Completes once [`notify`](Self::notify) has been called since the
    /// last completed wait; consumes the notification.
    pub async fn notified(&self) {
        poll_fn(|cx| {
            if self.notified.replace(false) {
                Poll::Ready(())
            } else {
                let w = self.waker.take();
                match w {
                    Some(w) if w.will_wake(cx.waker()) => self.waker.set(Some(w)),
                    _ => self.waker.set(Some(cx.waker().clone())),
                }
                Poll::Pending
            }
        })
        .await
    }

    /// Drops a pending notification.
    pub fn clear(&self) {
        self.notified.set(false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;

    #[test]
    fn notification_before_wait_is_not_lost() {
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .build()
            .unwrap();
        rt.block_on(async {
            let n = LocalNotify::default();
            n.notify();
            n.notified().await;
        });
    }

    #[test]
    fn wakes_a_waiting_task() {
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .build()
            .unwrap();
        rt.block_on(async {
            let n = Rc::new(LocalNotify::default());
            let n2 = n.clone();
            let waiter = monoio::spawn(async move {
                n2.notified().await;
                7
            });
            monoio::spawn(async move { n.notify() });
            assert_eq!(waiter.await, 7);
        });
    }
}
