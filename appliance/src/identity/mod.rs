//! Who a client is: OIDC tokens (JWTs) presented as the password.
//!
//! This module owns everything between "the client sent a password" and "the
//! session knows an [`Identity`]", and nothing about the protocols: the Redis
//! and PostgreSQL sessions hand it the password bytes and get back an
//! identity or a [`Reject`].
//!
//! # The flow
//!
//! 1. **Configuration** ([`config`]): the `[identity]` section names the
//!    issuer, the audiences, where the signing keys come from (a JWKS file, a
//!    JWKS URL or an OIDC discovery URL), the algorithms allowed and how to
//!    read the subject and groups. Anything dubious (`none`, HMAC without a
//!    secret, plain `http://` to a remote host) is refused at start.
//! 2. **Keys** ([`keys`]): the control plane (tokio) loads the key set once
//!    at start ([`keys::load_initial`]), then refreshes it every
//!    `jwks_refresh_s` and when a shard meets an unknown `kid`
//!    ([`keys::refresh_loop`]). Each new set is an immutable snapshot that the
//!    shards read through an `ArcSwap`, with no lock. When the provider is
//!    unreachable the cached set keeps working; an unknown key still fails.
//! 3. **Verification** ([`verify`]): a [`Verifier`] shared by every shard
//!    checks size, structure, algorithm, key, signature and claims, in that
//!    order, and extracts the identity. It never fetches anything itself.
//! 4. **Cache** ([`cache`]): each shard keeps a [`TokenCache`] of tokens it
//!    has verified, keyed by their SHA-256, so that a client reconnecting with
//!    the same token (every connection of a pool does) costs a hash and a map
//!    look-up instead of an RSA verification.
//! 5. **Development tokens** ([`mint`]): `custos token mint|jwks|keygen`
//!    sign tokens with a local key, for tests and demos.
//!
//! A token never reaches a log line, an error message or an audit record:
//! [`Reject`]'s `Display` speaks only of what was wrong with it, and the
//! cache keeps only its hash.

pub mod cache;
pub mod config;
pub mod keys;
pub mod mint;
pub mod verify;

pub use cache::TokenCache;
pub use config::{IdentityConfig, KeySource, RawIdentity};
pub use keys::KeySet;
pub use verify::Verifier;

/// Longest claim path accepted in `groups_claim` and `required_claims`.
pub const CLAIM_PATH_DEPTH_MAX: usize = 8;

/// Longest token-supplied text (a `kid`, an `alg`) kept in a [`Reject`],
/// which goes to the log.
const REJECT_TEXT_CHARS_MAX: usize = 64;

/// Who is on the other end of a session, as far as policy and audit know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The subject (a person or an agent); `anonymous` under `auth = "none"`.
    pub subject: String,
    /// Groups the subject belongs to, as the token lists them.
    pub groups: Vec<String>,
    /// The token's issuer; empty for the anonymous identity.
    pub issuer: String,
    /// The token's `jti`, when it has one.
    pub token_id: Option<String>,
    /// Unix seconds of the token's `exp`; `None` for the anonymous identity.
    pub expires_at: Option<u64>,
}

impl Identity {
    /// The identity of a client of a target with `auth = "none"`.
    pub fn anonymous() -> Identity {
        Identity {
            subject: "anonymous".into(),
            groups: Vec::new(),
            issuer: String::new(),
            token_id: None,
            expires_at: None,
        }
    }
}

/// Why a token was refused.
///
/// [`Reject::class`] is what the client is told: a fixed phrase with no
/// internals. `Display` is for the log; it never contains the token, and the
/// token-supplied texts it may carry (a `kid`, an `alg`) are clipped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Reject {
    /// Not three base64url parts, not JSON, a claim of the wrong type.
    #[error("malformed token")]
    Malformed,
    /// Longer than `identity.token_bytes_max`; refused before any decoding.
    #[error("token larger than identity.token_bytes_max")]
    TooLarge,
    /// The header's `alg` is not allowed (or does not fit the key it names).
    #[error("algorithm {0:?} not allowed")]
    DisallowedAlgorithm(String),
    /// No key in the current set matches the token's `kid` (or, without a
    /// `kid`, there is not exactly one key of the token's type).
    #[error("unknown signing key (kid {})", .0.as_deref().map_or("none".into(), |k| format!("{k:?}")))]
    UnknownKey(Option<String>),
    /// The signature does not verify.
    #[error("bad signature")]
    BadSignature,
    /// `exp` has passed (beyond the leeway).
    #[error("token expired")]
    Expired,
    /// `nbf` or `iat` is in the future (beyond the leeway).
    #[error("token not yet valid")]
    NotYetValid,
    /// `iss` is not the configured issuer.
    #[error("wrong issuer")]
    WrongIssuer,
    /// `aud` names none of the configured audiences.
    #[error("wrong audience")]
    WrongAudience,
    /// A claim the configuration requires is absent.
    #[error("missing claim {0:?}")]
    MissingClaim(String),
    /// A claim in `identity.required_claims` has none of the required values.
    #[error("claim {0:?} does not have a required value")]
    ClaimMismatch(String),
    /// No signing keys are loaded (yet).
    #[error("no signing keys loaded")]
    NoKeys,
}

impl Reject {
    /// What the client is told.
    pub fn class(&self) -> &'static str {
        match self {
            Reject::Malformed => "malformed token",
            Reject::TooLarge => "token too large",
            Reject::DisallowedAlgorithm(_) => "algorithm not allowed",
            Reject::UnknownKey(_) => "unknown signing key",
            Reject::BadSignature => "bad signature",
            Reject::Expired => "token expired",
            Reject::NotYetValid => "token not yet valid",
            Reject::WrongIssuer => "wrong issuer",
            Reject::WrongAudience => "wrong audience",
            Reject::MissingClaim(_) => "missing claim",
            Reject::ClaimMismatch(_) => "claim mismatch",
            Reject::NoKeys => "no signing keys",
        }
    }
}

/// `s` cut to at most [`REJECT_TEXT_CHARS_MAX`] characters, for texts that
/// come from a token and end up in a log line.
fn clip(s: &str) -> String {
    match s.char_indices().nth(REJECT_TEXT_CHARS_MAX) {
        Some((at, _)) => format!("{}...", &s[..at]),
        None => s.to_owned(),
    }
}

/// Splits a claim path as written in the configuration.
///
/// Dots separate segments (`realm_access.roles`), except in a name that
/// contains a `:` (`cognito:groups`, `https://example.com/roles`): such names
/// are URIs or namespaced claims, whose dots are part of the name.
pub fn claim_path(s: &str) -> Result<Vec<String>, String> {
    if s.is_empty() {
        return Err("empty claim name".into());
    }
    if s.contains(':') {
        return Ok(vec![s.to_owned()]);
    }
    let path: Vec<String> = s.split('.').map(str::to_owned).collect();
    if path.iter().any(String::is_empty) {
        return Err(format!("{s:?} has an empty path segment"));
    }
    if path.len() > CLAIM_PATH_DEPTH_MAX {
        return Err(format!(
            "{s:?} is deeper than {CLAIM_PATH_DEPTH_MAX} segments"
        ));
    }
    Ok(path)
}

/// The value at `path` in a token's claims, if every segment is there.
fn lookup<'a>(
    claims: &'a serde_json::Map<String, serde_json::Value>,
    path: &[String],
) -> Option<&'a serde_json::Value> {
    let (first, rest) = path.split_first()?;
    let mut v = claims.get(first)?;
    for seg in rest {
        v = v.as_object()?.get(seg)?;
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_paths() {
        for (s, want) in [
            ("groups", vec!["groups"]),
            ("realm_access.roles", vec!["realm_access", "roles"]),
            ("cognito:groups", vec!["cognito:groups"]),
            (
                "https://example.com/roles",
                vec!["https://example.com/roles"],
            ),
        ] {
            assert_eq!(claim_path(s).unwrap(), want, "{s}");
        }
        for bad in ["", "a..b", ".a", "a.", "a.b.c.d.e.f.g.h.i"] {
            assert!(claim_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn reject_texts_are_clipped_and_classes_fixed() {
        let long = "k".repeat(1000);
        let r = Reject::UnknownKey(Some(clip(&long)));
        assert!(r.to_string().len() < 100, "{r}");
        assert_eq!(
            Reject::UnknownKey(None).to_string(),
            "unknown signing key (kid none)"
        );
        assert_eq!(r.class(), "unknown signing key");
        assert_eq!(clip("short"), "short");
    }

    #[test]
    fn anonymous_has_no_issuer_or_expiry() {
        let a = Identity::anonymous();
        assert_eq!(a.subject, "anonymous");
        assert!(a.issuer.is_empty() && a.expires_at.is_none() && a.token_id.is_none());
    }
}
