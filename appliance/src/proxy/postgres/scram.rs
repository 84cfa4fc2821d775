//! SCRAM-SHA-256 (RFC 5802, RFC 7677) as a client, for logging in to the
//! store with the appliance's credential; and PostgreSQL's md5 scheme.
//!
//! The expensive part of SCRAM is the salted password (PBKDF2 with the
//! store's iteration count, 4096 by default: a millisecond or more of CPU).
//! The store keeps one salt per role, so the derived keys are cached per
//! shard and target by (salt, iterations): only a shard's first connection
//! to a store pays for them, as in PgBouncer.

use std::cell::RefCell;
use std::num::NonZeroU32;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use md5::{Digest as _, Md5};
use ring::{digest, hmac, pbkdf2, rand::SecureRandom};

/// The mechanism name.
pub const MECHANISM: &str = "SCRAM-SHA-256";
/// Most PBKDF2 iterations accepted from a store (PostgreSQL's default is
/// 4096); more would let a hostile store burn a shard's CPU.
const ITERATIONS_MAX: u32 = 1 << 20;
/// The GS2 header: no channel binding, no authorization identity.
const GS2_HEADER: &str = "n,,";
/// Base64 of [`GS2_HEADER`], as the final message repeats it.
const GS2_HEADER_B64: &str = "biws";

/// Why a SCRAM exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum ScramError {
    /// The store's message is not what the mechanism allows.
    #[error("malformed SCRAM message from the store: {0}")]
    Malformed(&'static str),
    /// The store rejected the exchange (`e=` in its final message).
    #[error("the store ended the SCRAM exchange: {0}")]
    Rejected(String),
    /// The store could not prove it knows the password: not the real store.
    #[error("the store's SCRAM signature does not verify")]
    BadServerSignature,
    /// No randomness from the operating system.
    #[error("no randomness available")]
    Random,
}

/// Keys derived from the password for one (salt, iterations).
#[derive(Clone)]
struct Derived {
    salt: Vec<u8>,
    iterations: u32,
    client_key: [u8; 32],
    server_key: [u8; 32],
}

/// A shard's cache of derived keys for one target.
#[derive(Default)]
pub struct KeyCache(RefCell<Option<Derived>>);

/// One client exchange in progress.
pub struct Client<'a> {
    password: &'a [u8],
    nonce: String,
    first_bare: String,
    /// Set after the server's first message.
    expect: Option<[u8; 32]>,
}

impl<'a> Client<'a> {
    /// Starts an exchange; returns it with the client-first message.
    pub fn start(password: &'a [u8]) -> Result<(Client<'a>, Vec<u8>), ScramError> {
        let mut raw = [0u8; 18];
        ring::rand::SystemRandom::new()
            .fill(&mut raw)
            .map_err(|_| ScramError::Random)?;
        let nonce = B64.encode(raw);
        // PostgreSQL takes the user from the startup message and ignores
        // this one.
        let first_bare = format!("n=,r={nonce}");
        let first = format!("{GS2_HEADER}{first_bare}").into_bytes();
        Ok((
            Client {
                password,
                nonce,
                first_bare,
                expect: None,
            },
            first,
        ))
    }

    /// Answers the server-first message with the client-final message.
    pub fn respond(
        &mut self,
        server_first: &[u8],
        cache: &KeyCache,
    ) -> Result<Vec<u8>, ScramError> {
        let server_first =
            std::str::from_utf8(server_first).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let mut nonce = None;
        let mut salt = None;
        let mut iterations = None;
        for attr in server_first.split(',') {
            match attr.split_at_checked(2) {
                Some(("r=", v)) => nonce = Some(v),
                Some(("s=", v)) => salt = Some(v),
                Some(("i=", v)) => iterations = Some(v),
                Some(("m=", _)) => return Err(ScramError::Malformed("mandatory extension")),
                _ => {}
            }
        }
        let nonce = nonce.ok_or(ScramError::Malformed("no nonce"))?;
        if !nonce.starts_with(&self.nonce) || nonce.len() == self.nonce.len() {
            return Err(ScramError::Malformed("nonce does not extend the client's"));
        }
        let salt = B64
            .decode(salt.ok_or(ScramError::Malformed("no salt"))?)
            .map_err(|_| ScramError::Malformed("salt is not base64"))?;
        let iterations: u32 = iterations
            .ok_or(ScramError::Malformed("no iteration count"))?
            .parse()
            .map_err(|_| ScramError::Malformed("iteration count is not a number"))?;
        if iterations == 0 || iterations > ITERATIONS_MAX {
            return Err(ScramError::Malformed("iteration count out of range"));
        }

        let derived = cache.get_or_derive(self.password, &salt, iterations);
        let final_bare = format!("c={GS2_HEADER_B64},r={nonce}");
        let auth_message = format!("{},{server_first},{final_bare}", self.first_bare);
        let stored_key = digest::digest(&digest::SHA256, &derived.client_key);
        let signature = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, stored_key.as_ref()),
            auth_message.as_bytes(),
        );
        let mut proof = derived.client_key;
        for (p, s) in proof.iter_mut().zip(signature.as_ref()) {
            *p ^= s;
        }
        let server_signature = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, &derived.server_key),
            auth_message.as_bytes(),
        );
        let mut expect = [0u8; 32];
        expect.copy_from_slice(server_signature.as_ref());
        self.expect = Some(expect);
        Ok(format!("{final_bare},p={}", B64.encode(proof)).into_bytes())
    }

    /// Checks the server-final message: the store proves it knew the
    /// password too.
    pub fn finish(&self, server_final: &[u8]) -> Result<(), ScramError> {
        let text =
            std::str::from_utf8(server_final).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        if let Some(e) = text.strip_prefix("e=") {
            return Err(ScramError::Rejected(e.to_owned()));
        }
        let v = text
            .split(',')
            .find_map(|a| a.strip_prefix("v="))
            .ok_or(ScramError::Malformed("no verifier"))?;
        let got = B64
            .decode(v)
            .map_err(|_| ScramError::Malformed("verifier is not base64"))?;
        let expect = self
            .expect
            .ok_or(ScramError::Malformed("final before first"))?;
        if !super::ct_eq(&got, &expect) {
            return Err(ScramError::BadServerSignature);
        }
        Ok(())
    }
}

impl KeyCache {
    fn get_or_derive(&self, password: &[u8], salt: &[u8], iterations: u32) -> Derived {
        if let Some(d) = &*self.0.borrow()
            && d.salt == salt
            && d.iterations == iterations
        {
            return d.clone();
        }
        let mut salted = [0u8; 32];
        let n = NonZeroU32::new(iterations).unwrap_or(NonZeroU32::MIN);
        // PostgreSQL applies SASLprep to the password and uses the raw bytes
        // when that fails; ASCII passwords (what the appliance generates and
        // operators are told to use) are unchanged by it.
        pbkdf2::derive(pbkdf2::PBKDF2_HMAC_SHA256, n, salt, password, &mut salted);
        let key = hmac::Key::new(hmac::HMAC_SHA256, &salted);
        let mut client_key = [0u8; 32];
        client_key.copy_from_slice(hmac::sign(&key, b"Client Key").as_ref());
        let mut server_key = [0u8; 32];
        server_key.copy_from_slice(hmac::sign(&key, b"Server Key").as_ref());
        let d = Derived {
            salt: salt.to_vec(),
            iterations,
            client_key,
            server_key,
        };
        *self.0.borrow_mut() = Some(d.clone());
        d
    }
}

/// PostgreSQL's md5 password answer: `"md5" + md5hex(md5hex(password + user) + salt)`.
pub fn md5_password(user: &[u8], password: &[u8], salt: [u8; 4]) -> Vec<u8> {
    let inner = hex(&Md5::new()
        .chain_update(password)
        .chain_update(user)
        .finalize());
    let outer = hex(&Md5::new()
        .chain_update(&inner)
        .chain_update(salt)
        .finalize());
    let mut out = b"md5".to_vec();
    out.extend_from_slice(&outer);
    out
}

fn hex(bytes: &[u8]) -> Vec<u8> {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = Vec::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)]);
        out.push(DIGITS[usize::from(b & 0xf)]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677's example exchange, with the client nonce fixed.
    #[test]
    fn rfc7677_example() {
        let mut c = Client {
            password: b"pencil",
            nonce: "rOprNGfwEbeRWgbNEkqO".into(),
            first_bare: "n=user,r=rOprNGfwEbeRWgbNEkqO".into(),
            expect: None,
        };
        let server_first = b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let cache = KeyCache::default();
        let fin = c.respond(server_first, &cache).unwrap();
        assert_eq!(
            std::str::from_utf8(&fin).unwrap(),
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        c.finish(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
            .unwrap();
        assert!(matches!(
            c.finish(b"v=AAAATRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="),
            Err(ScramError::BadServerSignature)
        ));
        // The second exchange uses the cached keys and gets the same proof.
        assert!(cache.0.borrow().is_some());
        assert_eq!(c.respond(server_first, &cache).unwrap(), fin);
    }

    #[test]
    fn hostile_server_first_messages_are_refused() {
        let (mut c, _) = Client::start(b"pw").unwrap();
        let cache = KeyCache::default();
        let n = c.nonce.clone();
        for bad in [
            "r=someone-else,s=AAAA,i=4096".to_string(),
            format!("r={n},s=AAAA,i=4096"),
            format!("r={n}x,s=!!!,i=4096"),
            format!("r={n}x,s=AAAA,i=0"),
            format!("r={n}x,s=AAAA,i=999999999"),
            format!("m=ext,r={n}x,s=AAAA,i=4096"),
        ] {
            assert!(c.respond(bad.as_bytes(), &cache).is_err(), "{bad}");
        }
        assert!(matches!(
            c.finish(b"e=invalid-proof"),
            Err(ScramError::Rejected(_))
        ));
    }

    #[test]
    fn md5_matches_postgres() {
        // The stored form of user "postgres" with password "postgres" is
        // md53175bce1d3201d16594cebf9d7eb3f9d; the answer hashes it again
        // with the salt.
        let inner = b"3175bce1d3201d16594cebf9d7eb3f9d";
        assert_eq!(hex(&Md5::digest(b"postgrespostgres")), inner);
        let got = md5_password(b"postgres", b"postgres", [1, 2, 3, 4]);
        let want = hex(&Md5::new()
            .chain_update(inner)
            .chain_update([1, 2, 3, 4])
            .finalize());
        assert_eq!(&got[..3], b"md5");
        assert_eq!(&got[3..], &want[..]);
    }
}
