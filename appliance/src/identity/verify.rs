//! Token verification: bytes from a client in, an [`Identity`] or a
//! [`Reject`] out.
//!
//! The order of the checks is the point: the size first (before a single
//! byte is decoded), then the structure and the header, then the algorithm
//! against the allow-list and the key it names, then the signature, and only
//! then the payload, so that unauthenticated input reaches no JSON parser
//! except the small header's. Time checks use the caller's clock (`now_unix`)
//! so that shards, tests and the cache agree on one notion of "now".
//!
//! Asymmetric keys come only from the current [`KeySet`]; the HMAC key only
//! from `identity.hmac_secret_file`. A token's own `jku`, `jwk`, `x5u` or
//! `x5c` headers are never looked at: a token does not get to choose the key
//! that verifies it.

use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;
use serde_json::{Map, Value};
use tokio::sync::Notify;

use super::config::{IdentityConfig, is_hmac};
use super::{Identity, KeySet, Reject, clip, lookup};

/// Longest subject accepted; it is written into every audit record.
pub const SUBJECT_BYTES_MAX: usize = 1024;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Verifies tokens for every shard. Shared (`Arc`) between the shards, which
/// call [`Verifier::verify`], and the control plane, which installs new key
/// sets; the keys are an `ArcSwap` snapshot, so neither side takes a lock.
pub struct Verifier {
    config: IdentityConfig,
    keys: ArcSwap<KeySet>,
    generation: AtomicU64,
    refresh: Notify,
    hmac: Option<DecodingKey>,
}

// Shards and the control plane share one verifier.
const _: () = {
    const fn shared<T: Send + Sync>() {}
    shared::<Verifier>();
};

impl std::fmt::Debug for Verifier {
    // Not derived: the HMAC key must not reach a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("issuer", &self.config.issuer)
            .field("keys", &self.keys.load().len())
            .field("generation", &self.generation())
            .finish_non_exhaustive()
    }
}

/// The JOSE header fields the verifier reads. Unknown fields are ignored,
/// except `crit`, which names extensions a verifier must understand.
#[derive(Deserialize)]
struct Header {
    alg: String,
    kid: Option<String>,
    crit: Option<serde::de::IgnoredAny>,
}

impl Verifier {
    /// A verifier for `config`, with no asymmetric keys until the control
    /// plane installs a set ([`super::keys::load_initial`]).
    pub fn new(config: IdentityConfig) -> Verifier {
        let hmac = config
            .hmac_secret
            .as_ref()
            .map(|s| DecodingKey::from_secret(s.expose()));
        Verifier {
            config,
            keys: ArcSwap::from_pointee(KeySet::default()),
            generation: AtomicU64::new(0),
            refresh: Notify::new(),
            hmac,
        }
    }

    /// The settings this verifier runs with.
    pub fn config(&self) -> &IdentityConfig {
        &self.config
    }

    /// Verifies signature (jsonwebtoken, ring backend), alg in allow-list and
    /// matching the key's kty/alg, iss, aud, exp (required), nbf, iat (not in
    /// the future beyond leeway), size, required claims; extracts subject
    /// (subject_claim) and groups (groups_claim path; string or array of
    /// strings).
    ///
    /// A token naming a key the current set does not have also asks the
    /// control plane for a refresh ([`Verifier::request_refresh`]); the
    /// caller may wait for [`Verifier::generation`] to change and retry.
    pub fn verify(&self, token: &[u8], now_unix: u64) -> Result<Identity, Reject> {
        if token.len() > self.config.token_bytes_max {
            return Err(Reject::TooLarge);
        }
        let (header_b64, payload_b64, signature_b64) = split(token)?;
        let header: Header = decode_json(header_b64)?;
        let alg = match Algorithm::from_str(&header.alg) {
            Ok(a) if self.config.algorithms.contains(&a) => a,
            _ => return Err(Reject::DisallowedAlgorithm(clip(&header.alg))),
        };
        if signature_b64.is_empty() {
            return Err(Reject::Malformed);
        }
        if header.crit.is_some() {
            // No extension is understood, so a token that makes one critical
            // must be refused (RFC 7515 §4.1.11).
            return Err(Reject::Malformed);
        }

        let signed = &token[..header_b64.len() + 1 + payload_b64.len()];
        let keys;
        let key = if is_hmac(alg) {
            // Only from the configured secret; never a key-set entry, which
            // would let anyone holding a public key sign.
            self.hmac
                .as_ref()
                .ok_or_else(|| Reject::DisallowedAlgorithm(clip(&header.alg)))?
        } else {
            keys = self.keys.load();
            if keys.is_empty() {
                self.request_refresh();
                return Err(Reject::NoKeys);
            }
            match keys.select(header.kid.as_deref(), alg) {
                Ok(k) => k,
                Err(e) => {
                    if matches!(e, Reject::UnknownKey(_)) {
                        self.request_refresh();
                    }
                    return Err(e);
                }
            }
        };
        // `split` checked the alphabet, so the signature is ASCII.
        let signature = std::str::from_utf8(signature_b64).map_err(|_| Reject::Malformed)?;
        match jsonwebtoken::crypto::verify(signature, signed, key, alg) {
            Ok(true) => {}
            Ok(false) | Err(_) => return Err(Reject::BadSignature),
        }

        let claims: Map<String, Value> = decode_json(payload_b64)?;
        self.check_claims(&claims, now_unix)
    }

    /// The claim checks, on a payload whose signature has been verified.
    fn check_claims(&self, c: &Map<String, Value>, now: u64) -> Result<Identity, Reject> {
        let leeway = self.config.leeway_s;
        let exp = numeric_date(c, "exp")?.ok_or_else(|| Reject::MissingClaim("exp".into()))?;
        if !valid_at(exp, leeway, now) {
            return Err(Reject::Expired);
        }
        if let Some(nbf) = numeric_date(c, "nbf")?
            && nbf > now.saturating_add(leeway)
        {
            return Err(Reject::NotYetValid);
        }
        if let Some(iat) = numeric_date(c, "iat")?
            && iat > now.saturating_add(leeway)
        {
            return Err(Reject::NotYetValid);
        }

        match c.get("iss") {
            None => return Err(Reject::MissingClaim("iss".into())),
            Some(Value::String(iss)) if *iss == self.config.issuer => {}
            Some(_) => return Err(Reject::WrongIssuer),
        }
        let aud_ok = match c.get("aud") {
            None => return Err(Reject::MissingClaim("aud".into())),
            Some(Value::String(a)) => self.config.audience.contains(a),
            Some(Value::Array(list)) => list.iter().any(|a| {
                a.as_str()
                    .is_some_and(|a| self.config.audience.iter().any(|x| x == a))
            }),
            Some(_) => false,
        };
        if !aud_ok {
            return Err(Reject::WrongAudience);
        }

        let subject = match c.get(&self.config.subject_claim) {
            None | Some(Value::Null) => {
                return Err(Reject::MissingClaim(self.config.subject_claim.clone()));
            }
            Some(Value::String(s)) if s.is_empty() => {
                return Err(Reject::MissingClaim(self.config.subject_claim.clone()));
            }
            Some(Value::String(s))
                if s.len() <= SUBJECT_BYTES_MAX && !s.chars().any(char::is_control) =>
            {
                s.clone()
            }
            Some(_) => return Err(Reject::Malformed),
        };

        for (path, wanted) in &self.config.required_claims {
            let name = || path.join(".");
            let value = match lookup(c, path) {
                None | Some(Value::Null) => return Err(Reject::MissingClaim(name())),
                Some(v) => v,
            };
            let matches = |v: &Value| wanted.iter().any(|w| same_value(v, w));
            let ok = match value {
                Value::Array(items) => items.iter().any(matches),
                v => matches(v),
            };
            if !ok {
                return Err(Reject::ClaimMismatch(name()));
            }
        }

        // Groups grant rights and may also be what a blocking rule matches,
        // so a groups claim of the wrong shape refuses the token rather than
        // dropping what cannot be read.
        let groups = match lookup(c, &self.config.groups_claim) {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(g)) => vec![g.clone()],
            Some(Value::Array(items)) => items
                .iter()
                .map(|g| g.as_str().map(str::to_owned).ok_or(Reject::Malformed))
                .collect::<Result<Vec<_>, _>>()?,
            Some(_) => return Err(Reject::Malformed),
        };
        let token_id = match c.get("jti") {
            None | Some(Value::Null) => None,
            Some(Value::String(j)) => Some(j.clone()),
            Some(_) => return Err(Reject::Malformed),
        };

        Ok(Identity {
            subject,
            groups,
            issuer: self.config.issuer.clone(),
            token_id,
            expires_at: Some(exp),
        })
    }

    /// Asks the control plane to refetch keys (rate-limited there); returns
    /// the current key generation. Cheap and callable from any thread.
    pub fn request_refresh(&self) -> u64 {
        self.refresh.notify_one();
        self.generation()
    }

    /// Increments whenever a new key set is installed.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Makes `keys` the current set; tokens verified from now on use it.
    pub fn install(&self, keys: KeySet) {
        self.keys.store(std::sync::Arc::new(keys));
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// The current key set.
    pub fn keys(&self) -> arc_swap::Guard<std::sync::Arc<KeySet>> {
        self.keys.load()
    }

    /// What [`Verifier::request_refresh`] wakes; the refresh loop waits on it.
    pub(super) fn refresh_requested(&self) -> &Notify {
        &self.refresh
    }
}

/// Whether a token with this `exp` is still valid at `now`: RFC 7519 wants
/// "now" before `exp`; the leeway absorbs clock skew.
pub(super) fn valid_at(exp: u64, leeway_s: u64, now: u64) -> bool {
    now < exp.saturating_add(leeway_s)
}

/// The three base64url parts of a compact JWS. Anything else (a JWE's five
/// parts, padding, whitespace, empty parts) is malformed.
type Parts<'a> = (&'a [u8], &'a [u8], &'a [u8]);

fn split(token: &[u8]) -> Result<Parts<'_>, Reject> {
    let mut parts = token.split(|&b| b == b'.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Reject::Malformed);
    };
    let b64url = |b: &u8| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_';
    // An empty signature is judged after the header: `alg: none` tokens
    // have one, and are refused for their algorithm.
    if h.is_empty() || p.is_empty() || !token.iter().all(|b| *b == b'.' || b64url(b)) {
        return Err(Reject::Malformed);
    }
    Ok((h, p, s))
}

fn decode_json<T: serde::de::DeserializeOwned>(part: &[u8]) -> Result<T, Reject> {
    let bytes = B64.decode(part).map_err(|_| Reject::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| Reject::Malformed)
}

/// A NumericDate claim (RFC 7519 §2): seconds, possibly fractional. Absent
/// is `None`; present but not a non-negative number is malformed.
fn numeric_date(c: &Map<String, Value>, name: &str) -> Result<Option<u64>, Reject> {
    match c.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => match (n.as_u64(), n.as_f64()) {
            (Some(u), _) => Ok(Some(u)),
            (None, Some(f)) if f.is_finite() && f >= 0.0 => Ok(Some(f as u64)),
            _ => Err(Reject::Malformed),
        },
        Some(_) => Err(Reject::Malformed),
    }
}

/// Equality of a claim value and a required value, with numbers compared by
/// value (`2` equals `2.0`).
fn same_value(v: &Value, w: &Value) -> bool {
    match (v, w) {
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        _ => v == w,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::Duration;

    use jsonwebtoken::EncodingKey;
    use serde_json::json;

    use super::*;
    use crate::identity::config::KeySource;
    use crate::identity::mint::{self, MintOptions};
    use crate::secret::Secret;

    pub(crate) const ISS: &str = "https://idp.example.com/";
    pub(crate) const AUD: &str = "custos";
    pub(crate) const NOW: u64 = 1_750_000_000;
    /// A 2048-bit RSA key made with `openssl genpkey`, for tests only.
    pub(crate) const RSA_PEM: &[u8] = include_bytes!("testdata/rsa2048.pem");

    pub(crate) fn config() -> IdentityConfig {
        IdentityConfig::new(ISS, AUD, KeySource::File("unused.json".into()))
    }

    pub(crate) fn ed25519_pem() -> Vec<u8> {
        mint::generate_key("ed25519").unwrap()
    }

    pub(crate) fn ec_pem() -> Vec<u8> {
        mint::generate_key("ec").unwrap()
    }

    pub(crate) fn options(key_pem: &[u8]) -> MintOptions {
        MintOptions {
            key_pem: key_pem.to_vec(),
            issuer: ISS.into(),
            audience: AUD.into(),
            subject: "alice".into(),
            groups: vec!["dev".into(), "ops".into()],
            ttl: Duration::from_secs(900),
            kid: None,
            algorithm: None,
            extra: Map::new(),
        }
    }

    /// A verifier that knows the public keys of `pems`.
    pub(crate) fn verifier_with(config: IdentityConfig, pems: &[&[u8]]) -> Verifier {
        let v = Verifier::new(config);
        let mut keys = Vec::new();
        for pem in pems {
            let doc: Value = serde_json::from_str(&mint::jwks(pem, None).unwrap()).unwrap();
            keys.extend(doc["keys"].as_array().unwrap().iter().cloned());
        }
        let set = KeySet::from_jwks(json!({ "keys": keys }).to_string().as_bytes()).unwrap();
        v.install(set);
        v
    }

    fn token(opts: &MintOptions) -> String {
        mint::mint(opts, NOW).unwrap()
    }

    /// Signs `claims` with `header` by hand, for tokens `mint` would not make.
    fn sign_raw(header: &Value, claims: &Value, alg: Algorithm, key: &EncodingKey) -> String {
        let h = B64.encode(header.to_string());
        let p = B64.encode(claims.to_string());
        let msg = format!("{h}.{p}");
        let sig = jsonwebtoken::crypto::sign(msg.as_bytes(), key, alg).unwrap();
        format!("{msg}.{sig}")
    }

    fn claims() -> Value {
        json!({ "iss": ISS, "aud": AUD, "sub": "alice", "exp": NOW + 600, "iat": NOW })
    }

    #[test]
    fn valid_tokens_of_each_key_type() {
        let (rsa, ec, ed) = (RSA_PEM.to_vec(), ec_pem(), ed25519_pem());
        let v = verifier_with(config(), &[&rsa, &ec, &ed]);
        assert_eq!(v.keys().len(), 3);
        for (pem, alg) in [
            (&rsa, Algorithm::RS256),
            (&rsa, Algorithm::RS512),
            (&rsa, Algorithm::PS256),
            (&ec, Algorithm::ES256),
            (&ed, Algorithm::EdDSA),
        ] {
            let mut o = options(pem);
            o.algorithm = Some(alg);
            o.extra.insert("jti".into(), json!("t-1"));
            let id = v
                .verify(token(&o).as_bytes(), NOW + 1)
                .unwrap_or_else(|e| panic!("{alg:?}: {e}"));
            assert_eq!(id.subject, "alice");
            assert_eq!(id.groups, ["dev", "ops"]);
            assert_eq!(id.issuer, ISS);
            assert_eq!(id.token_id.as_deref(), Some("t-1"));
            assert_eq!(id.expires_at, Some(NOW + 900));
        }
    }

    /// Tokens an attacker would try. Each must be refused with its reason.
    #[test]
    fn hostile_token_corpus() {
        let rsa = RSA_PEM.to_vec();
        let v = verifier_with(config(), &[&rsa]);
        let good = token(&options(&rsa));
        assert!(v.verify(good.as_bytes(), NOW).is_ok());
        let (h, rest) = good.split_once('.').unwrap();
        let (p, s) = rest.split_once('.').unwrap();
        let kid = mint::jwks(&rsa, None).unwrap();
        let kid = serde_json::from_str::<Value>(&kid).unwrap()["keys"][0]["kid"]
            .as_str()
            .unwrap()
            .to_owned();

        // The RSA public key as the attacker would find it in the JWKS or a
        // PEM file, used as an HMAC secret (key confusion).
        let public_jwk = mint::jwks(&rsa, None).unwrap();
        let public_pem = {
            let pair =
                ring::signature::RsaKeyPair::from_pkcs8(pem::parse(&rsa).unwrap().contents())
                    .unwrap();
            pem::encode(&pem::Pem::new(
                "RSA PUBLIC KEY",
                pair.public().as_ref().to_vec(),
            ))
        };

        let mut tampered = serde_json::from_slice::<Value>(&B64.decode(p).unwrap()).unwrap();
        tampered["sub"] = json!("root");
        tampered["groups"] = json!(["admin"]);
        let tampered = format!("{h}.{}.{s}", B64.encode(tampered.to_string()));

        let mut cases: Vec<(&str, String, Reject)> = vec![
            (
                "alg none",
                format!(
                    "{}.{p}.AAAA",
                    B64.encode(json!({"alg": "none", "kid": kid}).to_string())
                ),
                Reject::DisallowedAlgorithm("none".into()),
            ),
            (
                "alg none, no signature",
                format!("{}.{p}.", B64.encode(json!({"alg": "none"}).to_string())),
                Reject::DisallowedAlgorithm("none".into()),
            ),
            (
                "alg None",
                format!(
                    "{}.{p}.AAAA",
                    B64.encode(json!({"alg": "None"}).to_string())
                ),
                Reject::DisallowedAlgorithm("None".into()),
            ),
            ("tampered payload", tampered, Reject::BadSignature),
            (
                "truncated",
                good[..good.len() - 10].to_owned(),
                Reject::BadSignature,
            ),
            (
                "truncated to two parts",
                format!("{h}.{p}"),
                Reject::Malformed,
            ),
            ("oversized", "a".repeat(90 * 1024), Reject::TooLarge),
            ("five parts (JWE)", format!("{good}.x.y"), Reject::Malformed),
            ("padding", format!("{good}="), Reject::Malformed),
            ("whitespace", format!("{good}\n"), Reject::Malformed),
            ("empty", String::new(), Reject::Malformed),
            (
                "header not JSON",
                format!("{}.{p}.{s}", B64.encode("alg")),
                Reject::Malformed,
            ),
            (
                "header not base64",
                format!("!!.{p}.{s}"),
                Reject::Malformed,
            ),
            (
                "crit header",
                format!(
                    "{}.{p}.{s}",
                    B64.encode(json!({"alg": "RS256", "kid": kid, "crit": ["exp"]}).to_string())
                ),
                Reject::Malformed,
            ),
            (
                "duplicate alg",
                format!("{}.{p}.{s}", B64.encode(r#"{"alg":"RS256","alg":"HS256"}"#)),
                Reject::Malformed,
            ),
        ];
        for secret in [public_jwk.as_bytes(), public_pem.as_bytes()] {
            cases.push((
                "HS256 signed with the RSA public key",
                sign_raw(
                    &json!({"alg": "HS256", "kid": kid}),
                    &claims(),
                    Algorithm::HS256,
                    &EncodingKey::from_secret(secret),
                ),
                Reject::DisallowedAlgorithm("HS256".into()),
            ));
        }
        let mut unknown = options(&rsa);
        unknown.kid = Some("rotated-away".into());
        cases.push((
            "unknown kid",
            token(&unknown),
            Reject::UnknownKey(Some("rotated-away".into())),
        ));
        let other = mint::generate_key("ec").unwrap();
        let mut no_kid = options(&other);
        no_kid.kid = None;
        let t = token(&no_kid);
        let (_, rest) = t.split_once('.').unwrap();
        cases.push((
            "no kid, no key of its type",
            format!("{}.{rest}", B64.encode(json!({"alg": "ES256"}).to_string())),
            Reject::UnknownKey(None),
        ));
        let mut es_with_rsa_kid = options(&other);
        es_with_rsa_kid.kid = Some(kid.clone());
        cases.push((
            "ES256 naming the RSA key",
            token(&es_with_rsa_kid),
            Reject::DisallowedAlgorithm("ES256".into()),
        ));
        let rs = |c: Value| {
            sign_raw(
                &json!({"alg": "RS256", "kid": kid}),
                &c,
                Algorithm::RS256,
                &EncodingKey::from_rsa_pem(&rsa).unwrap(),
            )
        };
        let with = |k: &str, val: Value| {
            let mut c = claims();
            c[k] = val;
            rs(c)
        };
        let without = |k: &str| {
            let mut c = claims();
            c.as_object_mut().unwrap().remove(k);
            rs(c)
        };
        cases.extend([
            ("expired", with("exp", json!(NOW - 31)), Reject::Expired),
            (
                "nbf in the future",
                with("nbf", json!(NOW + 31)),
                Reject::NotYetValid,
            ),
            (
                "iat in the future",
                with("iat", json!(NOW + 31)),
                Reject::NotYetValid,
            ),
            (
                "wrong iss",
                with("iss", json!("https://evil.example.com/")),
                Reject::WrongIssuer,
            ),
            (
                "iss with trailing change",
                with("iss", json!("https://idp.example.com")),
                Reject::WrongIssuer,
            ),
            (
                "wrong aud",
                with("aud", json!("other")),
                Reject::WrongAudience,
            ),
            (
                "wrong aud list",
                with("aud", json!(["a", "b"])),
                Reject::WrongAudience,
            ),
            (
                "aud not a string",
                with("aud", json!(1)),
                Reject::WrongAudience,
            ),
            (
                "missing exp",
                without("exp"),
                Reject::MissingClaim("exp".into()),
            ),
            (
                "exp a string",
                with("exp", json!("tomorrow")),
                Reject::Malformed,
            ),
            ("exp negative", with("exp", json!(-1)), Reject::Malformed),
            (
                "missing iss",
                without("iss"),
                Reject::MissingClaim("iss".into()),
            ),
            (
                "missing aud",
                without("aud"),
                Reject::MissingClaim("aud".into()),
            ),
            (
                "missing sub",
                without("sub"),
                Reject::MissingClaim("sub".into()),
            ),
            (
                "sub with a newline",
                with("sub", json!("alice\nadmin")),
                Reject::Malformed,
            ),
            (
                "groups an object",
                with("groups", json!({"a": 1})),
                Reject::Malformed,
            ),
            (
                "groups with a number",
                with("groups", json!(["a", 1])),
                Reject::Malformed,
            ),
            (
                "payload not JSON",
                rs_raw(&rsa, &kid, b"not json"),
                Reject::Malformed,
            ),
        ]);
        for (name, t, want) in cases {
            assert_eq!(v.verify(t.as_bytes(), NOW), Err(want), "{name}");
        }
    }

    fn rs_raw(rsa: &[u8], kid: &str, payload: &[u8]) -> String {
        let h = B64.encode(json!({"alg": "RS256", "kid": kid}).to_string());
        let msg = format!("{h}.{}", B64.encode(payload));
        let key = EncodingKey::from_rsa_pem(rsa).unwrap();
        let sig = jsonwebtoken::crypto::sign(msg.as_bytes(), &key, Algorithm::RS256).unwrap();
        format!("{msg}.{sig}")
    }

    #[test]
    fn leeway_and_boundaries() {
        let ed = ed25519_pem();
        let v = verifier_with(config(), &[&ed]);
        let t = token(&options(&ed));
        let exp = NOW + 900;
        assert!(v.verify(t.as_bytes(), exp + 29).is_ok(), "within leeway");
        assert_eq!(v.verify(t.as_bytes(), exp + 30), Err(Reject::Expired));
        let mut c = config();
        c.leeway_s = 0;
        let v = verifier_with(c, &[&ed]);
        assert!(v.verify(t.as_bytes(), exp - 1).is_ok());
        assert_eq!(v.verify(t.as_bytes(), exp), Err(Reject::Expired));
        assert_eq!(v.verify(t.as_bytes(), NOW - 1), Err(Reject::NotYetValid));
    }

    #[test]
    fn hmac_only_from_the_configured_secret() {
        let secret = "0123456789abcdef0123456789abcdef";
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("s"), secret).unwrap();
        let mut c = config();
        c.hmac_secret = Some(Secret::from_file(&dir.path().join("s")).unwrap());
        c.algorithms.push(Algorithm::HS256);
        let rsa = RSA_PEM.to_vec();
        let v = verifier_with(c, &[&rsa]);
        let hs = |key: &[u8], header: Value| {
            sign_raw(
                &header,
                &claims(),
                Algorithm::HS256,
                &EncodingKey::from_secret(key),
            )
        };
        let good = hs(secret.as_bytes(), json!({"alg": "HS256"}));
        assert_eq!(v.verify(good.as_bytes(), NOW).unwrap().subject, "alice");
        // Key confusion: the RSA public key as HMAC secret, with its kid.
        let public = mint::jwks(&rsa, None).unwrap();
        let kid = serde_json::from_str::<Value>(&public).unwrap()["keys"][0]["kid"].clone();
        let pair =
            ring::signature::RsaKeyPair::from_pkcs8(pem::parse(&rsa).unwrap().contents()).unwrap();
        for key in [public.as_bytes(), pair.public().as_ref()] {
            let t = hs(key, json!({"alg": "HS256", "kid": kid}));
            assert_eq!(v.verify(t.as_bytes(), NOW), Err(Reject::BadSignature));
        }
        // HS384 is not in the allow-list.
        let t = sign_raw(
            &json!({"alg": "HS384"}),
            &claims(),
            Algorithm::HS384,
            &EncodingKey::from_secret(secret.as_bytes()),
        );
        assert_eq!(
            v.verify(t.as_bytes(), NOW),
            Err(Reject::DisallowedAlgorithm("HS384".into()))
        );
    }

    #[test]
    fn algorithm_allow_list_and_key_alg() {
        let rsa = RSA_PEM.to_vec();
        let mut c = config();
        c.algorithms = vec![Algorithm::RS256];
        let v = verifier_with(c, &[&rsa]);
        let mut o = options(&rsa);
        o.algorithm = Some(Algorithm::PS256);
        assert_eq!(
            v.verify(token(&o).as_bytes(), NOW),
            Err(Reject::DisallowedAlgorithm("PS256".into()))
        );
        // A key whose JWK says RS256 does not verify RS512 tokens.
        let doc: Value = serde_json::from_str(&mint::jwks(&rsa, None).unwrap()).unwrap();
        let mut key = doc["keys"][0].clone();
        key["alg"] = json!("RS256");
        let v = Verifier::new(config());
        v.install(KeySet::from_jwks(json!({ "keys": [key] }).to_string().as_bytes()).unwrap());
        o.algorithm = Some(Algorithm::RS512);
        assert_eq!(
            v.verify(token(&o).as_bytes(), NOW),
            Err(Reject::DisallowedAlgorithm("RS512".into()))
        );
        o.algorithm = Some(Algorithm::RS256);
        assert!(v.verify(token(&o).as_bytes(), NOW).is_ok());
    }

    #[test]
    fn token_without_kid_needs_exactly_one_key_of_its_type() {
        let (a, b, ed) = (ec_pem(), ec_pem(), ed25519_pem());
        let der = pem::parse(&a).unwrap().contents().to_vec();
        let t = sign_raw(
            &json!({"alg": "ES256"}),
            &claims(),
            Algorithm::ES256,
            &EncodingKey::from_ec_der(&der),
        );
        // The set has one EC key and one Ed25519 key: the EC one is tried.
        let v = verifier_with(config(), &[&a, &ed]);
        assert_eq!(v.verify(t.as_bytes(), NOW).unwrap().subject, "alice");
        // Two EC keys: ambiguous, refused.
        let v = verifier_with(config(), &[&a, &b, &ed]);
        assert_eq!(v.verify(t.as_bytes(), NOW), Err(Reject::UnknownKey(None)));
    }

    #[test]
    fn no_keys_and_unknown_kid_ask_for_a_refresh() {
        let ed = ed25519_pem();
        let v = Verifier::new(config());
        let t = token(&options(&ed));
        assert_eq!(v.verify(t.as_bytes(), NOW), Err(Reject::NoKeys));
        assert_eq!(v.generation(), 0);
        let other = ed25519_pem();
        let v = verifier_with(config(), &[&other]);
        assert_eq!(v.generation(), 1);
        assert!(matches!(
            v.verify(t.as_bytes(), NOW),
            Err(Reject::UnknownKey(Some(_)))
        ));
        // The request left a permit for the refresh loop.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(1), v.refresh_requested().notified())
                .await
                .expect("refresh requested");
        });
    }

    #[test]
    fn subject_and_group_claims() {
        let ed = ed25519_pem();
        let mk = |subject_claim: &str, groups_claim: &str| {
            let mut c = config();
            c.subject_claim = subject_claim.into();
            c.groups_claim = crate::identity::claim_path(groups_claim).unwrap();
            verifier_with(c, &[&ed])
        };
        let with = |extra: Value| {
            let mut o = options(&ed);
            o.groups.clear();
            o.extra = extra.as_object().unwrap().clone();
            token(&o)
        };
        /// subject_claim, groups_claim, extra claims, subject wanted, groups wanted.
        type Case<'a> = (&'a str, &'a str, Value, Option<&'a str>, &'a [&'a str]);
        let cases: &[Case<'_>] = &[
            (
                "sub",
                "groups",
                json!({"groups": "solo"}),
                Some("alice"),
                &["solo"],
            ),
            ("sub", "groups", json!({}), Some("alice"), &[]),
            ("sub", "groups", json!({"groups": null}), Some("alice"), &[]),
            (
                "sub",
                "roles",
                json!({"roles": ["r1", "r2"]}),
                Some("alice"),
                &["r1", "r2"],
            ),
            (
                "sub",
                "realm_access.roles",
                json!({"realm_access": {"roles": ["admin", "user"]}}),
                Some("alice"),
                &["admin", "user"],
            ),
            (
                "sub",
                "realm_access.roles",
                json!({"realm_access": "x"}),
                Some("alice"),
                &[],
            ),
            (
                "sub",
                "cognito:groups",
                json!({"cognito:groups": ["eu-ops"]}),
                Some("alice"),
                &["eu-ops"],
            ),
            (
                "email",
                "groups",
                json!({"email": "alice@example.com", "groups": ["g"]}),
                Some("alice@example.com"),
                &["g"],
            ),
            (
                "preferred_username",
                "groups",
                json!({"preferred_username": "al"}),
                Some("al"),
                &[],
            ),
            ("email", "groups", json!({}), None, &[]),
        ];
        for (sc, gc, extra, subject, groups) in cases {
            let v = mk(sc, gc);
            let r = v.verify(with(extra.clone()).as_bytes(), NOW);
            match subject {
                Some(s) => {
                    let id = r.unwrap_or_else(|e| panic!("{sc} {gc} {extra}: {e}"));
                    assert_eq!(id.subject, *s);
                    assert_eq!(id.groups, *groups, "{gc} {extra}");
                }
                None => assert_eq!(r, Err(Reject::MissingClaim((*sc).into()))),
            }
        }
    }

    #[test]
    fn required_claims() {
        let ed = ed25519_pem();
        let mut c = config();
        c.required_claims = vec![
            (vec!["email_verified".into()], vec![json!(true)]),
            (
                vec!["org".into(), "tier".into()],
                vec![json!("gold"), json!(2)],
            ),
            (vec!["amr".into()], vec![json!("mfa")]),
        ];
        let v = verifier_with(c, &[&ed]);
        let with = |extra: Value| {
            let mut o = options(&ed);
            o.extra = extra.as_object().unwrap().clone();
            v.verify(token(&o).as_bytes(), NOW).map(|i| i.subject)
        };
        let base = json!({"email_verified": true, "org": {"tier": "gold"}, "amr": ["pwd", "mfa"]});
        assert_eq!(with(base.clone()), Ok("alice".into()));
        let mut two = base.clone();
        two["org"]["tier"] = json!(2.0);
        assert_eq!(with(two), Ok("alice".into()));
        let mut bad = base.clone();
        bad["email_verified"] = json!("true");
        assert_eq!(
            with(bad),
            Err(Reject::ClaimMismatch("email_verified".into()))
        );
        let mut bad = base.clone();
        bad["org"]["tier"] = json!("silver");
        assert_eq!(with(bad), Err(Reject::ClaimMismatch("org.tier".into())));
        let mut bad = base.clone();
        bad["amr"] = json!(["pwd"]);
        assert_eq!(with(bad), Err(Reject::ClaimMismatch("amr".into())));
        let mut bad = base;
        bad.as_object_mut().unwrap().remove("org");
        assert_eq!(with(bad), Err(Reject::MissingClaim("org.tier".into())));
    }

    #[test]
    fn audience_list_and_fractional_dates() {
        let ed = ed25519_pem();
        let mut c = config();
        c.audience = vec!["memory".into(), "custos".into()];
        let v = verifier_with(c, &[&ed]);
        let mut o = options(&ed);
        o.extra.insert("aud".into(), json!(["other", "custos"]));
        o.extra.insert("exp".into(), json!((NOW + 60) as f64 + 0.5));
        let id = v.verify(token(&o).as_bytes(), NOW).unwrap();
        assert_eq!(id.expires_at, Some(NOW + 60));
    }

    #[test]
    fn header_values_go_to_the_log_clipped() {
        let ed = ed25519_pem();
        let v = verifier_with(config(), &[&ed]);
        let mut o = options(&ed);
        o.kid = Some("k".repeat(5000));
        let e = v.verify(token(&o).as_bytes(), NOW).unwrap_err();
        assert!(
            matches!(e, Reject::UnknownKey(Some(ref k)) if k.len() < 80),
            "{e:?}"
        );
    }
}
