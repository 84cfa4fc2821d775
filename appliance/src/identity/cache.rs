//! Per-shard cache of verified tokens.
//!
//! Connection pools open many connections with the same token, and an RSA
//! verification costs far more than a SHA-256 of the token and a map
//! look-up. Each shard owns its cache (single thread, `RefCell`, no lock).
//!
//! Only successes are cached: a failure may be a key the control plane is
//! about to fetch, and caching refusals would let anyone fill the cache with
//! garbage. An entry is used only while the token is unexpired (by the same
//! rule as the verifier) and while the key set it was verified against is
//! still the current one: after a rotation, a token signed by a key that has
//! been withdrawn is refused at its next use. The cache keeps the token's
//! hash, never the token.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};

use super::verify::valid_at;
use super::{Identity, Reject, Verifier};

/// Entries per shard when the configuration does not say otherwise.
pub const TOKEN_CACHE_ENTRIES_DEFAULT: usize = 4096;

type TokenHash = [u8; 32];

struct Entry {
    identity: Identity,
    expires_at: u64,
    generation: u64,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<TokenHash, Entry>,
    /// Insertion order, for evicting the oldest; may name entries already
    /// removed, which eviction skips.
    order: VecDeque<TokenHash>,
}

/// A shard's verified-token cache: SHA-256 of the token → identity, bounded,
/// evicting expired entries first, then the oldest.
pub struct TokenCache {
    inner: RefCell<Inner>,
    capacity: usize,
}

impl Default for TokenCache {
    fn default() -> Self {
        TokenCache::new(TOKEN_CACHE_ENTRIES_DEFAULT)
    }
}

impl TokenCache {
    /// A cache of at most `capacity` tokens; 0 disables caching.
    pub fn new(capacity: usize) -> TokenCache {
        TokenCache {
            inner: RefCell::new(Inner::default()),
            capacity,
        }
    }

    /// Cached identity when this exact token was verified before, has not
    /// expired and the key set is unchanged; otherwise verifies and caches
    /// successes only.
    pub fn verify(
        &self,
        verifier: &Verifier,
        token: &[u8],
        now_unix: u64,
    ) -> Result<Identity, Reject> {
        // The size limit first, so an oversized token is not even hashed.
        if token.len() > verifier.config().token_bytes_max {
            return Err(Reject::TooLarge);
        }
        let hash = sha256(token);
        let generation = verifier.generation();
        let leeway = verifier.config().leeway_s;
        if let Some(e) = self.inner.borrow().entries.get(&hash)
            && e.generation == generation
            && valid_at(e.expires_at, leeway, now_unix)
        {
            return Ok(e.identity.clone());
        }
        let result = verifier.verify(token, now_unix);
        let mut inner = self.inner.borrow_mut();
        match &result {
            Ok(identity) if self.capacity > 0 => {
                let entry = Entry {
                    identity: identity.clone(),
                    // Verified tokens always carry exp.
                    expires_at: identity.expires_at.unwrap_or(0),
                    generation,
                };
                if inner.entries.insert(hash, entry).is_none() {
                    inner.order.push_back(hash);
                    inner.evict(self.capacity, leeway, now_unix);
                }
            }
            Ok(_) => {}
            Err(_) => {
                inner.entries.remove(&hash);
            }
        }
        result
    }

    /// Number of cached tokens.
    pub fn len(&self) -> usize {
        self.inner.borrow().entries.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Inner {
    /// Brings the cache back within `capacity`. When full it drops every
    /// expired entry, then the oldest ones down to 7/8 of the capacity, so
    /// the full sweep runs once per capacity/8 insertions rather than at
    /// each one.
    fn evict(&mut self, capacity: usize, leeway: u64, now: u64) {
        if self.entries.len() <= capacity {
            return;
        }
        self.entries
            .retain(|_, e| valid_at(e.expires_at, leeway, now));
        let target = capacity - capacity / 8;
        while self.entries.len() > target {
            match self.order.pop_front() {
                Some(h) => {
                    self.entries.remove(&h);
                }
                None => break,
            }
        }
        let entries = &self.entries;
        self.order.retain(|h| entries.contains_key(h));
    }
}

fn sha256(bytes: &[u8]) -> TokenHash {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::identity::mint;
    use crate::identity::verify::tests::{NOW, config, ed25519_pem, options, verifier_with};

    #[test]
    fn hit_returns_the_same_identity_until_exp() {
        let ed = ed25519_pem();
        let v = verifier_with(config(), &[&ed]);
        let cache = TokenCache::new(16);
        let t = mint::mint(&options(&ed), NOW).unwrap();
        let first = cache.verify(&v, t.as_bytes(), NOW).unwrap();
        assert_eq!(cache.len(), 1);
        let again = cache.verify(&v, t.as_bytes(), NOW + 10).unwrap();
        assert_eq!(first, again);
        let exp = NOW + 900;
        assert!(
            cache.verify(&v, t.as_bytes(), exp + 29).is_ok(),
            "leeway as the verifier"
        );
        assert_eq!(
            cache.verify(&v, t.as_bytes(), exp + 30),
            Err(Reject::Expired)
        );
        assert!(cache.is_empty(), "a failure removes the entry");
    }

    #[test]
    fn hits_skip_verification() {
        let ed = ed25519_pem();
        let v = verifier_with(config(), &[&ed]);
        let cache = TokenCache::new(16);
        let t = mint::mint(&options(&ed), NOW).unwrap();
        cache.verify(&v, t.as_bytes(), NOW).unwrap();
        // Withdraw the keys without changing the generation: only a cached
        // identity can still answer.
        let same_gen = Verifier::new(config());
        same_gen.install(crate::identity::KeySet::default());
        assert_eq!(same_gen.generation(), v.generation());
        assert!(same_gen.verify(t.as_bytes(), NOW).is_err());
        assert!(cache.verify(&same_gen, t.as_bytes(), NOW).is_ok());
    }

    #[test]
    fn failures_are_not_cached_and_rotation_rechecks() {
        let (ed, other) = (ed25519_pem(), ed25519_pem());
        let v = verifier_with(config(), &[&other]);
        let cache = TokenCache::new(16);
        let t = mint::mint(&options(&ed), NOW).unwrap();
        assert!(cache.verify(&v, t.as_bytes(), NOW).is_err());
        assert!(cache.is_empty());
        // The key appears: the same token now verifies.
        let v = verifier_with(config(), &[&ed]);
        assert!(cache.verify(&v, t.as_bytes(), NOW).is_ok());
        // The key is withdrawn: the cached entry is from an older
        // generation, so the token is checked again and refused.
        v.install(
            crate::identity::KeySet::from_jwks(mint::jwks(&other, None).unwrap().as_bytes())
                .unwrap(),
        );
        assert!(matches!(
            cache.verify(&v, t.as_bytes(), NOW),
            Err(Reject::UnknownKey(_))
        ));
    }

    #[test]
    fn bounded_evicting_expired_then_oldest() {
        let ed = ed25519_pem();
        let v = verifier_with(config(), &[&ed]);
        let cache = TokenCache::new(8);
        let mut o = options(&ed);
        o.ttl = Duration::from_secs(60);
        let short: Vec<String> = (0..4).map(|_| mint::mint(&o, NOW).unwrap()).collect();
        o.ttl = Duration::from_secs(3600);
        let long: Vec<String> = (0..20).map(|_| mint::mint(&o, NOW).unwrap()).collect();
        for t in &short {
            cache.verify(&v, t.as_bytes(), NOW).unwrap();
        }
        let later = NOW + 120;
        for t in &long {
            cache.verify(&v, t.as_bytes(), later).unwrap();
            assert!(cache.len() <= 8);
        }
        let inner = cache.inner.borrow();
        assert!(inner.order.len() == inner.entries.len());
        // The newest token is cached; the expired ones are not.
        assert!(inner.entries.contains_key(&sha256(long[19].as_bytes())));
        assert!(!inner.entries.contains_key(&sha256(short[3].as_bytes())));
    }

    #[test]
    fn too_large_is_refused_before_hashing_and_zero_capacity_caches_nothing() {
        let ed = ed25519_pem();
        let v = verifier_with(config(), &[&ed]);
        let cache = TokenCache::new(0);
        assert_eq!(
            cache.verify(&v, &vec![b'a'; 90 * 1024], NOW),
            Err(Reject::TooLarge)
        );
        let t = mint::mint(&options(&ed), NOW).unwrap();
        assert!(cache.verify(&v, t.as_bytes(), NOW).is_ok());
        assert!(cache.is_empty());
    }
}
