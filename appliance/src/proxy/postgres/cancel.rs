//! Cancel keys: the appliance gives each client a key of its own and maps
//! it to the key of the session's store connection.
//!
//! A client cancels a running statement by opening a new connection and
//! sending the (process id, secret) pair it got in BackendKeyData. That
//! connection may land on any shard, so the table is process-wide. It is
//! touched once when a session starts, once when it ends and once per
//! cancel request, never per statement, so a lock costs nothing measurable.
//! The store's own key never reaches the client, and a key that does not
//! match exactly cancels nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use ring::rand::{SecureRandom, SystemRandom};

/// Length of the secrets the appliance issues (protocol 3.0's fixed size).
pub const SECRET_BYTES: usize = 4;

/// What a client's key stands for.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// Index of the target in the configuration.
    pub target: usize,
    /// The store connection's process id.
    pub pid: u32,
    /// The store connection's secret.
    pub secret: Box<[u8]>,
}

#[derive(Debug)]
struct Entry {
    secret: [u8; SECRET_BYTES],
    upstream: Upstream,
}

/// The process-wide table of issued keys.
#[derive(Debug, Default)]
pub struct CancelKeys {
    map: Mutex<HashMap<u32, Entry>>,
}

/// A key issued to one session; removed from the table when dropped.
#[derive(Debug)]
pub struct CancelKey {
    /// The process id the client is told.
    pub pid: u32,
    /// The secret the client is told.
    pub secret: [u8; SECRET_BYTES],
    keys: Arc<CancelKeys>,
}

impl Drop for CancelKey {
    fn drop(&mut self) {
        self.keys.lock().remove(&self.pid);
    }
}

impl CancelKeys {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Entry>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Issues a fresh random key for a session whose store connection has
    /// `upstream`'s key. `None` only when the system has no randomness.
    pub fn issue(self: &Arc<Self>, upstream: Upstream) -> Option<CancelKey> {
        let rng = SystemRandom::new();
        let mut map = self.lock();
        for _ in 0..16 {
            let mut raw = [0u8; 4 + SECRET_BYTES];
            rng.fill(&mut raw).ok()?;
            // Positive, non-zero: clients keep the pid in a signed 32-bit int.
            let pid = u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]) & 0x7fff_ffff;
            if pid == 0 || map.contains_key(&pid) {
                continue;
            }
            let mut secret = [0u8; SECRET_BYTES];
            secret.copy_from_slice(&raw[4..]);
            map.insert(pid, Entry { secret, upstream });
            return Some(CancelKey {
                pid,
                secret,
                keys: self.clone(),
            });
        }
        None
    }

    /// The store connection a client's key stands for, if the key matches
    /// one issued and still live.
    pub fn lookup(&self, pid: u32, secret: &[u8]) -> Option<Upstream> {
        let map = self.lock();
        let e = map.get(&pid)?;
        if !super::ct_eq(&e.secret, secret) {
            return None;
        }
        Some(e.upstream.clone())
    }

    /// Keys issued and live.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no key is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up(pid: u32) -> Upstream {
        Upstream {
            target: 0,
            pid,
            secret: vec![9, 9, 9, 9].into(),
        }
    }

    #[test]
    fn only_the_exact_key_finds_the_store_connection() {
        let keys = Arc::new(CancelKeys::default());
        let k = keys.issue(up(4242)).unwrap();
        assert!(k.pid > 0 && k.pid < 1 << 31);
        assert_eq!(keys.lookup(k.pid, &k.secret).unwrap().pid, 4242);
        let mut wrong = k.secret;
        wrong[3] ^= 1;
        assert!(keys.lookup(k.pid, &wrong).is_none());
        assert!(keys.lookup(k.pid, &k.secret[..3]).is_none());
        assert!(keys.lookup(k.pid ^ 1, &k.secret).is_none());
    }

    #[test]
    fn a_key_dies_with_its_session() {
        let keys = Arc::new(CancelKeys::default());
        let a = keys.issue(up(1)).unwrap();
        let b = keys.issue(up(2)).unwrap();
        assert_ne!(a.pid, b.pid);
        assert_eq!(keys.len(), 2);
        let (pid, secret) = (a.pid, a.secret);
        drop(a);
        assert!(keys.lookup(pid, &secret).is_none());
        assert_eq!(keys.len(), 1);
    }
}
