//! PostgreSQL password authentication as a client: SCRAM-SHA-256 (RFC 5802,
//! RFC 7677; without channel binding), md5 and cleartext.
//!
//! SCRAM is a consuming state machine: [`ScramClient::start`] gives the
//! client-first message and an [`ExpectServerFirst`], whose `handle` gives
//! the client-final message and an [`ExpectServerFinal`], whose `handle`
//! checks the server's signature. A state cannot be reused or skipped.
//!
//! The salted password (PBKDF2, 4096 rounds by default) costs milliseconds;
//! the churn workload opens thousands of connections per second, so the
//! derived keys are cached per (password, salt, iterations) for the
//! process, as every pooler does. The server's side (the stored verifier
//! check) is still paid on every connection, which is what churn measures.

use std::num::NonZeroU32;
use std::sync::Mutex;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use md5::{Digest as _, Md5};
use ring::rand::SecureRandom as _;
use ring::{digest, hmac, pbkdf2};

use crate::Error;

/// The mechanism name.
pub const SCRAM_SHA_256: &str = "SCRAM-SHA-256";
/// No channel binding, no authorization identity.
const GS2_HEADER: &str = "n,,";
/// Base64 of [`GS2_HEADER`], repeated in the final message.
const GS2_HEADER_B64: &str = "biws";
/// Most PBKDF2 rounds accepted from a server: more would only burn the
/// load generator's CPU.
const ITERATIONS_MAX: u32 = 1 << 20;

/// Keys derived from a password for one salt and iteration count.
#[derive(Clone, PartialEq, Eq)]
struct Keys {
    client_key: [u8; 32],
    server_key: [u8; 32],
}

/// Keys with what they were derived from.
struct CachedKeys {
    password: Vec<u8>,
    salt: Vec<u8>,
    iterations: u32,
    keys: Keys,
}

/// One entry suffices: a run logs in as one role.
static KEY_CACHE: Mutex<Option<CachedKeys>> = Mutex::new(None);

fn derive_keys(password: &[u8], salt: &[u8], iterations: NonZeroU32) -> Keys {
    if let Ok(cache) = KEY_CACHE.lock()
        && let Some(c) = &*cache
        && c.password == password
        && c.salt == salt
        && c.iterations == iterations.get()
    {
        return c.keys.clone();
    }
    let mut salted = [0u8; 32];
    // PostgreSQL applies SASLprep to the password and falls back to the raw
    // bytes when that fails; ASCII passwords and tokens are unchanged by it.
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA256,
        iterations,
        salt,
        password,
        &mut salted,
    );
    let key = hmac::Key::new(hmac::HMAC_SHA256, &salted);
    let mut keys = Keys {
        client_key: [0; 32],
        server_key: [0; 32],
    };
    keys.client_key
        .copy_from_slice(hmac::sign(&key, b"Client Key").as_ref());
    keys.server_key
        .copy_from_slice(hmac::sign(&key, b"Server Key").as_ref());
    if let Ok(mut cache) = KEY_CACHE.lock() {
        *cache = Some(CachedKeys {
            password: password.to_vec(),
            salt: salt.to_vec(),
            iterations: iterations.get(),
            keys: keys.clone(),
        });
    }
    keys
}

/// Starts SCRAM exchanges.
pub struct ScramClient;

/// Waiting for the server-first message.
pub struct ExpectServerFirst {
    password: Vec<u8>,
    nonce: String,
    first_bare: String,
}

/// Waiting for the server-final message.
pub struct ExpectServerFinal {
    server_signature: [u8; 32],
}

impl ScramClient {
    /// Starts an exchange with a fresh random nonce; returns the
    /// client-first message and the next state.
    pub fn start(password: &[u8]) -> Result<(Vec<u8>, ExpectServerFirst), Error> {
        let mut raw = [0u8; 18];
        ring::rand::SystemRandom::new()
            .fill(&mut raw)
            .map_err(|_| Error::Auth("no randomness for the SCRAM nonce".into()))?;
        Ok(Self::start_with_nonce(password, &B64.encode(raw)))
    }

    /// [`ScramClient::start`] with a given nonce (for test vectors). The
    /// user name is left empty: PostgreSQL takes it from the startup
    /// message.
    pub fn start_with_nonce(password: &[u8], nonce: &str) -> (Vec<u8>, ExpectServerFirst) {
        Self::start_as("", password, nonce)
    }

    fn start_as(user: &str, password: &[u8], nonce: &str) -> (Vec<u8>, ExpectServerFirst) {
        let first_bare = format!("n={user},r={nonce}");
        let first = format!("{GS2_HEADER}{first_bare}").into_bytes();
        (
            first,
            ExpectServerFirst {
                password: password.to_vec(),
                nonce: nonce.to_owned(),
                first_bare,
            },
        )
    }
}

fn malformed(what: &str) -> Error {
    Error::Auth(format!("malformed SCRAM message from the server: {what}"))
}

impl ExpectServerFirst {
    /// Answers the server-first message with the client-final message.
    pub fn handle(self, server_first: &[u8]) -> Result<(Vec<u8>, ExpectServerFinal), Error> {
        let text = std::str::from_utf8(server_first).map_err(|_| malformed("not UTF-8"))?;
        let (mut nonce, mut salt, mut iterations) = (None, None, None);
        for attr in text.split(',') {
            match attr.split_at_checked(2) {
                Some(("r=", v)) => nonce = Some(v),
                Some(("s=", v)) => salt = Some(v),
                Some(("i=", v)) => iterations = Some(v),
                Some(("m=", _)) => return Err(malformed("unsupported mandatory extension")),
                _ => {}
            }
        }
        let nonce = nonce.ok_or_else(|| malformed("no nonce"))?;
        if !nonce.starts_with(&self.nonce) || nonce.len() == self.nonce.len() {
            return Err(malformed("the nonce does not extend the client's"));
        }
        let salt = B64
            .decode(salt.ok_or_else(|| malformed("no salt"))?)
            .map_err(|_| malformed("the salt is not base64"))?;
        let iterations = iterations
            .ok_or_else(|| malformed("no iteration count"))?
            .parse::<u32>()
            .ok()
            .filter(|&i| i <= ITERATIONS_MAX)
            .and_then(NonZeroU32::new)
            .ok_or_else(|| malformed("iteration count out of range"))?;

        let keys = derive_keys(&self.password, &salt, iterations);
        let final_bare = format!("c={GS2_HEADER_B64},r={nonce}");
        let auth_message = format!("{},{text},{final_bare}", self.first_bare);
        let stored_key = digest::digest(&digest::SHA256, &keys.client_key);
        let signature = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, stored_key.as_ref()),
            auth_message.as_bytes(),
        );
        let mut proof = keys.client_key;
        for (p, s) in proof.iter_mut().zip(signature.as_ref()) {
            *p ^= s;
        }
        let mut server_signature = [0u8; 32];
        server_signature.copy_from_slice(
            hmac::sign(
                &hmac::Key::new(hmac::HMAC_SHA256, &keys.server_key),
                auth_message.as_bytes(),
            )
            .as_ref(),
        );
        Ok((
            format!("{final_bare},p={}", B64.encode(proof)).into_bytes(),
            ExpectServerFinal { server_signature },
        ))
    }
}

impl ExpectServerFinal {
    /// Checks that the server knew the password too.
    pub fn handle(self, server_final: &[u8]) -> Result<(), Error> {
        let text = std::str::from_utf8(server_final).map_err(|_| malformed("not UTF-8"))?;
        if let Some(e) = text.strip_prefix("e=") {
            return Err(Error::Auth(format!("the server ended SCRAM: {e}")));
        }
        let v = text
            .split(',')
            .find_map(|a| a.strip_prefix("v="))
            .ok_or_else(|| malformed("no verifier"))?;
        let got = B64
            .decode(v)
            .map_err(|_| malformed("the verifier is not base64"))?;
        // Compared without an early exit, so timing tells nothing.
        let differs = got.len() != self.server_signature.len()
            || got
                .iter()
                .zip(&self.server_signature)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                != 0;
        if differs {
            return Err(Error::Auth(
                "the server's SCRAM signature does not verify".into(),
            ));
        }
        Ok(())
    }
}

/// The md5 method's answer: `"md5" + md5hex(md5hex(password + user) + salt)`.
pub fn md5_password(user: &str, password: &str, salt: [u8; 4]) -> String {
    let inner = hex(&Md5::digest(
        [password.as_bytes(), user.as_bytes()].concat(),
    ));
    let outer = hex(&Md5::digest([inner.as_bytes(), &salt].concat()));
    format!("md5{outer}")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677, section 3. The server signature printed in the RFC is
    /// wrong (a known erratum); the value here is HMAC(ServerKey,
    /// AuthMessage) for the RFC's exchange, which servers send.
    #[test]
    fn rfc7677_test_vector() {
        let (first, state) = ScramClient::start_as("user", b"pencil", "rOprNGfwEbeRWgbNEkqO");
        assert_eq!(first, b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        let server_first = b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                             s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let (client_final, state) = state.handle(server_first).unwrap();
        assert_eq!(
            std::str::from_utf8(&client_final).unwrap(),
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
             p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        state
            .handle(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
            .unwrap();
    }

    #[test]
    fn a_wrong_server_signature_is_refused() {
        let (_, state) = ScramClient::start_as("user", b"pencil", "rOprNGfwEbeRWgbNEkqO");
        let (_, state) = state
            .handle(b"r=rOprNGfwEbeRWgbNEkqOxyz,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
            .unwrap();
        let err = state
            .handle(b"v=6rriTRBVBX8Ddv5T9JIWe7a1Tk7dDNMqSaSxLdzyFa4=")
            .unwrap_err();
        assert!(err.to_string().contains("does not verify"), "{err}");
    }

    #[test]
    fn malformed_server_first_messages() {
        for bad in [
            &b"r=other,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"[..],
            b"r=abc,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
            b"r=abcdef,s=***,i=4096",
            b"r=abcdef,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=0",
            b"r=abcdef,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=99999999",
            b"r=abcdef,s=W22ZaJ0SNY7soEsUEjb6gQ==",
            b"m=ext,r=abcdef,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
        ] {
            let (_, state) = ScramClient::start_with_nonce(b"pw", "abc");
            assert!(
                state.handle(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn server_error_ends_the_exchange() {
        let (_, state) = ScramClient::start_with_nonce(b"pw", "abc");
        let (_, state) = state
            .handle(b"r=abcdef,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=16")
            .unwrap();
        let err = state.handle(b"e=invalid-proof").unwrap_err();
        assert!(err.to_string().contains("invalid-proof"), "{err}");
    }

    #[test]
    fn md5_answer() {
        // The formula itself; the integration tests log in to a server
        // with md5 authentication.
        let got = md5_password("alice", "secret", [1, 2, 3, 4]);
        assert_eq!(got.len(), 35);
        assert!(got.starts_with("md5"));
        let inner = hex(&Md5::digest(b"secretalice"));
        let want = hex(&Md5::digest([inner.as_bytes(), &[1, 2, 3, 4]].concat()));
        assert_eq!(got, format!("md5{want}"));
    }
}
