//! Signing keys: parsing a JWKS document into a [`KeySet`], fetching it,
//! and keeping it fresh.
//!
//! Fetching runs only on the control plane (tokio); shards see the result as
//! an immutable snapshot through [`Verifier`]. A key set is replaced whole
//! or not at all: a fetch that fails, times out, is too large or parses to
//! nothing usable leaves the cached set in place, so an identity provider
//! that is down does not lock everyone out, while a token naming a key the
//! cached set lacks still fails.
//!
//! Only signing keys of the types the verifier supports are kept: RSA
//! (2048 to 8192 bits), EC P-256 and P-384, OKP Ed25519. Symmetric (`oct`)
//! entries are never used: the HMAC key comes only from the configuration.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::config::{IdentityConfig, KeySource, check_fetch_url, is_hmac};
use super::{Reject, Verifier, clip};

/// Largest JWKS or discovery document accepted, fetched or read.
pub const DOCUMENT_BYTES_MAX: usize = 1024 * 1024;
/// Deadline of one HTTP fetch, connecting and reading included.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Most entries a key set may have; identity providers publish a handful.
pub const KEYS_MAX: usize = 100;
/// Smallest RSA modulus accepted.
pub const RSA_MODULUS_BITS_MIN: usize = 2048;
/// Largest RSA modulus accepted (ring's limit).
pub const RSA_MODULUS_BITS_MAX: usize = 8192;
/// Redirects followed when fetching.
const REDIRECTS_MAX: usize = 3;
/// First retry delay after a failed fetch; doubles up to `jwks_refresh`.
const RETRY_DELAY_MIN: Duration = Duration::from_secs(1);

/// Key sets tolerate base64url with or without padding: it is the
/// provider's document, and the padding carries no meaning.
const B64_LENIENT: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
);
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// What a key is, which decides the algorithms it may verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    Rsa,
    EcP256,
    EcP384,
    Ed25519,
}

impl KeyKind {
    fn fits(self, alg: Algorithm) -> bool {
        use Algorithm::*;
        match self {
            KeyKind::Rsa => matches!(alg, RS256 | RS384 | RS512 | PS256 | PS384 | PS512),
            KeyKind::EcP256 => alg == ES256,
            KeyKind::EcP384 => alg == ES384,
            KeyKind::Ed25519 => alg == EdDSA,
        }
    }
}

struct Key {
    kid: Option<String>,
    kind: KeyKind,
    /// The JWK's own `alg`, when it names one: then only that algorithm.
    alg: Option<Algorithm>,
    decoding: DecodingKey,
}

impl Key {
    fn fits(&self, alg: Algorithm) -> bool {
        self.kind.fits(alg) && self.alg.is_none_or(|a| a == alg)
    }
}

/// An immutable set of verification keys, parsed from one JWKS document.
#[derive(Default)]
pub struct KeySet {
    keys: Vec<Key>,
    skipped: Vec<String>,
    digest: [u8; 32],
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySet")
            .field("kids", &self.kids())
            .field("skipped", &self.skipped.len())
            .finish()
    }
}

/// The members of a JWK the appliance reads; others (`x5c`, `x5t`, ...)
/// are ignored.
#[derive(Deserialize)]
struct Jwk {
    kty: String,
    kid: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
    alg: Option<String>,
    key_ops: Option<Vec<String>>,
    crv: Option<String>,
    n: Option<String>,
    e: Option<String>,
    x: Option<String>,
    y: Option<String>,
    d: Option<serde::de::IgnoredAny>,
}

impl KeySet {
    /// Parses a JWKS document (RFC 7517 §5).
    ///
    /// Entries that are not usable signing keys (encryption keys, other
    /// types or curves, symmetric keys, RSA under 2048 bits, malformed
    /// parameters) are skipped and listed in [`KeySet::skipped`]; a document
    /// with entries but none usable, or that is not a key set at all, is an
    /// error. `{"keys": []}` is an empty set.
    pub fn from_jwks(json: &[u8]) -> Result<KeySet, String> {
        #[derive(Deserialize)]
        struct Doc {
            keys: Vec<serde_json::Value>,
        }
        if json.len() > DOCUMENT_BYTES_MAX {
            return Err(format!("larger than {DOCUMENT_BYTES_MAX} bytes"));
        }
        let doc: Doc =
            serde_json::from_slice(json).map_err(|e| format!("not a JWKS document: {e}"))?;
        if doc.keys.len() > KEYS_MAX {
            return Err(format!(
                "{} keys; more than {KEYS_MAX} is not a key set an identity provider publishes",
                doc.keys.len()
            ));
        }
        let mut set = KeySet {
            keys: Vec::with_capacity(doc.keys.len()),
            skipped: Vec::new(),
            digest: digest(json),
        };
        for (i, v) in doc.keys.iter().enumerate() {
            let kid = v.get("kid").and_then(|k| k.as_str()).map(clip);
            match parse_jwk(v) {
                Ok(key) => set.keys.push(key),
                Err(why) => set.skipped.push(format!("key {i} (kid {kid:?}): {why}")),
            }
        }
        if set.keys.is_empty() && !set.skipped.is_empty() {
            return Err(format!("no usable signing key: {}", set.skipped.join("; ")));
        }
        Ok(set)
    }

    /// Number of usable keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the set has no usable key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The `kid` of each usable key, for logs (`-` for a key without one).
    pub fn kids(&self) -> Vec<&str> {
        self.keys
            .iter()
            .map(|k| k.kid.as_deref().unwrap_or("-"))
            .collect()
    }

    /// Why each unusable entry of the document was skipped.
    pub fn skipped(&self) -> &[String] {
        &self.skipped
    }

    /// SHA-256 of the document the set was parsed from; a refresh that
    /// fetches the same document installs nothing.
    pub fn digest(&self) -> [u8; 32] {
        self.digest
    }

    /// The key that verifies a token with this `kid` and `alg`.
    ///
    /// With a `kid`, the key of that id whose type (and JWK `alg`, if any)
    /// fits; without one, the only key of a fitting type, if there is
    /// exactly one, since trying several would let a token pick among them.
    pub(super) fn select(&self, kid: Option<&str>, alg: Algorithm) -> Result<&DecodingKey, Reject> {
        match kid {
            Some(kid) => {
                let mut named = self
                    .keys
                    .iter()
                    .filter(|k| k.kid.as_deref() == Some(kid))
                    .peekable();
                if named.peek().is_none() {
                    return Err(Reject::UnknownKey(Some(clip(kid))));
                }
                named
                    .find(|k| k.fits(alg))
                    .map(|k| &k.decoding)
                    .ok_or_else(|| Reject::DisallowedAlgorithm(format!("{alg:?}")))
            }
            None => {
                let mut fitting = self.keys.iter().filter(|k| k.fits(alg));
                match (fitting.next(), fitting.next()) {
                    (Some(k), None) => Ok(&k.decoding),
                    _ => Err(Reject::UnknownKey(None)),
                }
            }
        }
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

fn parse_jwk(v: &serde_json::Value) -> Result<Key, String> {
    let jwk: Jwk = serde_json::from_value(v.clone()).map_err(|e| format!("not a JWK: {e}"))?;
    if jwk.d.is_some() {
        return Err("contains private key material; refusing to use it".into());
    }
    if let Some(u) = &jwk.use_
        && u != "sig"
    {
        return Err(format!("use {:?}, not a signing key", clip(u)));
    }
    if let Some(ops) = &jwk.key_ops
        && !ops.iter().any(|o| o == "verify")
    {
        return Err("key_ops does not include \"verify\"".into());
    }
    let alg = match &jwk.alg {
        None => None,
        Some(a) => match a.parse::<Algorithm>() {
            Ok(a) if !is_hmac(a) => Some(a),
            _ => {
                return Err(format!(
                    "algorithm {:?} is not supported for signing keys",
                    clip(a)
                ));
            }
        },
    };
    let param = |name: &str, v: &Option<String>| -> Result<Vec<u8>, String> {
        let s = v.as_deref().ok_or_else(|| format!("missing {name}"))?;
        B64_LENIENT
            .decode(s)
            .map_err(|_| format!("{name} is not base64url"))
    };
    let (kind, decoding) = match jwk.kty.as_str() {
        "RSA" => {
            let n = param("n", &jwk.n)?;
            let e = param("e", &jwk.e)?;
            let n = strip_leading_zeros(&n);
            let e = strip_leading_zeros(&e);
            let bits = n
                .first()
                .map_or(0, |b| (n.len() - 1) * 8 + (8 - b.leading_zeros() as usize));
            if !(RSA_MODULUS_BITS_MIN..=RSA_MODULUS_BITS_MAX).contains(&bits) {
                return Err(format!(
                    "RSA modulus of {bits} bits; accepted are {RSA_MODULUS_BITS_MIN} to {RSA_MODULUS_BITS_MAX}"
                ));
            }
            let e_value = e.iter().fold(0u64, |acc, b| {
                acc.saturating_mul(256).saturating_add(u64::from(*b))
            });
            if e.len() > 5 || e_value < 3 || e_value % 2 == 0 || e_value >= 1 << 33 {
                return Err("RSA exponent out of range".into());
            }
            (KeyKind::Rsa, DecodingKey::from_rsa_raw_components(n, e))
        }
        "EC" => {
            let (kind, len) = match jwk.crv.as_deref() {
                Some("P-256") => (KeyKind::EcP256, 32),
                Some("P-384") => (KeyKind::EcP384, 48),
                Some(c) => return Err(format!("curve {:?} is not supported", clip(c))),
                None => return Err("missing crv".into()),
            };
            let x = param("x", &jwk.x)?;
            let y = param("y", &jwk.y)?;
            if x.len() != len || y.len() != len {
                return Err(format!(
                    "x and y must be {len} bytes for {:?}",
                    jwk.crv.as_deref().unwrap_or("")
                ));
            }
            let key = DecodingKey::from_ec_components(&B64.encode(&x), &B64.encode(&y))
                .map_err(|e| e.to_string())?;
            (kind, key)
        }
        "OKP" => {
            match jwk.crv.as_deref() {
                Some("Ed25519") => {}
                Some(c) => return Err(format!("curve {:?} is not supported", clip(c))),
                None => return Err("missing crv".into()),
            }
            let x = param("x", &jwk.x)?;
            if x.len() != ring::signature::ED25519_PUBLIC_KEY_LEN {
                return Err("x must be 32 bytes for Ed25519".into());
            }
            let key =
                DecodingKey::from_ed_components(&B64.encode(&x)).map_err(|e| e.to_string())?;
            (KeyKind::Ed25519, key)
        }
        "oct" => {
            return Err("symmetric key; HMAC keys come only from identity.hmac_secret_file".into());
        }
        other => return Err(format!("key type {:?} is not supported", clip(other))),
    };
    if let Some(a) = alg
        && !kind.fits(a)
    {
        return Err(format!("alg {a:?} does not fit a {kind:?} key"));
    }
    Ok(Key {
        kid: jwk.kid,
        kind,
        alg,
        decoding,
    })
}

fn strip_leading_zeros(b: &[u8]) -> &[u8] {
    let first = b.iter().position(|&x| x != 0).unwrap_or(b.len());
    &b[first..]
}

/// Reads a JWKS file, refusing anything larger than [`DOCUMENT_BYTES_MAX`].
pub(crate) fn read_jwks_file(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read as _;
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut bytes = Vec::new();
    file.take(DOCUMENT_BYTES_MAX as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() > DOCUMENT_BYTES_MAX {
        return Err(format!("larger than {DOCUMENT_BYTES_MAX} bytes"));
    }
    Ok(bytes)
}

/// Reads the PEM certificates of `identity.jwks_ca_file`.
pub(crate) fn read_ca_file(path: &Path) -> Result<Vec<reqwest::Certificate>, String> {
    let pem = read_jwks_file(path)?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| error_chain(&e))?;
    if certs.is_empty() {
        return Err("no PEM certificate in the file".into());
    }
    Ok(certs)
}

/// An error with its causes, which reqwest keeps out of `Display`.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

/// Gets key sets from the configured source.
struct Fetcher {
    client: Option<reqwest::Client>,
}

impl Fetcher {
    fn new(config: &IdentityConfig) -> Result<Fetcher, String> {
        let url = match &config.source {
            KeySource::File(_) => return Ok(Fetcher { client: None }),
            KeySource::Url(u) | KeySource::Discovery(u) => u,
        };
        let https = url.starts_with("https://");
        let mut b = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .connect_timeout(FETCH_TIMEOUT)
            // One request every few minutes: a pooled connection would only
            // hold a socket open at the provider.
            .pool_max_idle_per_host(0)
            .https_only(https)
            .user_agent(concat!("custos/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::custom(|attempt| {
                if attempt.previous().len() >= REDIRECTS_MAX {
                    attempt.error("too many redirects")
                } else if let Err(e) = check_fetch_url(attempt.url().as_str()) {
                    attempt.error(format!("redirect refused: {e}"))
                } else {
                    attempt.follow()
                }
            }));
        if !https {
            // Plain http is allowed only to this machine; a proxy from the
            // environment must not carry it elsewhere.
            b = b.no_proxy();
        }
        if let Some(ca) = &config.ca_file {
            for cert in read_ca_file(ca).map_err(|e| format!("{}: {e}", ca.display()))? {
                b = b.add_root_certificate(cert);
            }
        }
        let client = b.build().map_err(|e| error_chain(&e))?;
        Ok(Fetcher {
            client: Some(client),
        })
    }

    async fn fetch(&self, config: &IdentityConfig) -> Result<KeySet, String> {
        match (&config.source, &self.client) {
            // A local file read is quick; it stays on the control-plane
            // thread rather than needing tokio's blocking pool.
            (KeySource::File(p), _) => KeySet::from_jwks(&read_jwks_file(p)?),
            (KeySource::Url(u), Some(client)) => {
                KeySet::from_jwks(&get(client, u).await?).map_err(|e| format!("{u}: {e}"))
            }
            (KeySource::Discovery(d), Some(client)) => {
                #[derive(Deserialize)]
                struct Discovery {
                    issuer: String,
                    jwks_uri: String,
                }
                let doc = get(client, d).await?;
                let doc: Discovery = serde_json::from_slice(&doc)
                    .map_err(|e| format!("{d}: not an OpenID discovery document: {e}"))?;
                if doc.issuer != config.issuer {
                    return Err(format!(
                        "{d}: the document's issuer {:?} is not identity.issuer {:?}",
                        clip(&doc.issuer),
                        config.issuer
                    ));
                }
                check_fetch_url(&doc.jwks_uri).map_err(|e| format!("{d}: jwks_uri {e}"))?;
                KeySet::from_jwks(&get(client, &doc.jwks_uri).await?)
                    .map_err(|e| format!("{}: {e}", doc.jwks_uri))
            }
            (_, None) => Err("no HTTP client for a URL source".into()),
        }
    }
}

/// GETs `url`, refusing a body larger than [`DOCUMENT_BYTES_MAX`] without
/// reading past the limit.
async fn get(client: &reqwest::Client, url: &str) -> Result<Vec<u8>, String> {
    let mut resp = client
        .get(url)
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| error_chain(&e))?;
    if !resp.status().is_success() {
        return Err(format!("{url}: HTTP {}", resp.status()));
    }
    let too_large = || format!("{url}: larger than {DOCUMENT_BYTES_MAX} bytes");
    if resp
        .content_length()
        .is_some_and(|n| n > DOCUMENT_BYTES_MAX as u64)
    {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| error_chain(&e))? {
        if body.len() + chunk.len() > DOCUMENT_BYTES_MAX {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn log_skipped(set: &KeySet) {
    for why in set.skipped() {
        warn!(reason = %why, "ignoring an entry of the key set");
    }
}

/// Loads the keys once at start (file or URL); fails start when nothing can
/// be loaded. Runs on the control-plane tokio runtime.
pub async fn load_initial(verifier: &Verifier) -> Result<(), String> {
    let config = verifier.config();
    let fetcher = Fetcher::new(config).map_err(|e| format!("{}: {e}", config.source))?;
    let set = fetcher
        .fetch(config)
        .await
        .map_err(|e| format!("{}: {e}", config.source))?;
    if set.is_empty() && config.hmac_secret.is_none() {
        return Err(format!("{}: no signing keys", config.source));
    }
    log_skipped(&set);
    info!(source = %config.source, kids = ?set.kids(), "signing keys loaded");
    verifier.install(set);
    Ok(())
}

/// Refresh loop: every `jwks_refresh`, and on [`Verifier::request_refresh`]
/// no more often than `unknown_kid_refresh_min`. Provider down: keeps the
/// cached set, logs a warning with backoff; stops when `stop` resolves.
///
/// The file source is re-read on refresh too (key rotation by replacing the
/// file). A document identical to the installed one installs nothing, so
/// the generation (and the shards' caches) move only on a real change.
pub async fn refresh_loop(verifier: Arc<Verifier>, stop: impl Future<Output = ()>) {
    tokio::pin!(stop);
    let config = verifier.config();
    let fetcher = match Fetcher::new(config) {
        Ok(f) => f,
        Err(e) => {
            // `load_initial` built the same client, so this does not happen
            // after a good start; keep the keys and say why they go stale.
            warn!(source = %config.source, error = %e, "cannot refresh signing keys");
            stop.await;
            return;
        }
    };
    let mut last_fetch = Instant::now();
    let mut next = last_fetch + config.jwks_refresh;
    let mut failures: u32 = 0;
    loop {
        let requested = tokio::select! {
            () = &mut stop => return,
            () = tokio::time::sleep_until(next) => false,
            () = verifier.refresh_requested().notified() => true,
        };
        if requested {
            let earliest = last_fetch + config.unknown_kid_refresh_min;
            tokio::select! {
                () = &mut stop => return,
                () = tokio::time::sleep_until(earliest) => {}
            }
        }
        last_fetch = Instant::now();
        let fetched = tokio::select! {
            () = &mut stop => return,
            r = fetcher.fetch(config) => r,
        };
        match fetched {
            Ok(set) if set.is_empty() && config.hmac_secret.is_none() => {
                failures += 1;
                next = retry_at(config, failures);
                warn!(source = %config.source, failures, "the key set has no signing keys; keeping the cached set");
            }
            Ok(set) => {
                if failures > 0 {
                    info!(source = %config.source, failures, "signing keys reachable again");
                }
                failures = 0;
                next = Instant::now() + config.jwks_refresh;
                if set.digest() == verifier.keys().digest() {
                    debug!(source = %config.source, "signing keys unchanged");
                    continue;
                }
                log_skipped(&set);
                info!(source = %config.source, kids = ?set.kids(), requested, "signing keys refreshed");
                verifier.install(set);
            }
            Err(e) => {
                failures += 1;
                next = retry_at(config, failures);
                // Warn on the 1st, 2nd, 4th, 8th... failure in a row, so an
                // outage is loud at first and then does not flood the log.
                if failures.is_power_of_two() {
                    warn!(source = %config.source, error = %e, failures, "cannot refresh signing keys; keeping the cached set");
                } else {
                    debug!(source = %config.source, error = %e, failures, "cannot refresh signing keys; keeping the cached set");
                }
            }
        }
    }
}

/// When to try again after `failures` failed fetches in a row: doubling from
/// [`RETRY_DELAY_MIN`] up to the regular refresh period.
fn retry_at(config: &IdentityConfig, failures: u32) -> Instant {
    let delay = RETRY_DELAY_MIN
        .saturating_mul(1 << failures.saturating_sub(1).min(16))
        .min(config.jwks_refresh);
    Instant::now() + delay
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};

    use serde_json::{Value, json};

    use super::*;
    use crate::identity::mint;
    use crate::identity::verify::tests::{NOW, RSA_PEM, config, ed25519_pem, options};

    fn jwk(pem: &[u8], kid: &str) -> Value {
        let doc: Value = serde_json::from_str(&mint::jwks(pem, Some(kid)).unwrap()).unwrap();
        doc["keys"][0].clone()
    }

    fn set_of(keys: Vec<Value>) -> Result<KeySet, String> {
        KeySet::from_jwks(json!({ "keys": keys }).to_string().as_bytes())
    }

    #[test]
    fn parses_rsa_ec_and_okp_keys() {
        let rsa = jwk(RSA_PEM, "r");
        let ec = jwk(&mint::generate_key("ec").unwrap(), "e");
        let ec384 = jwk(&mint::generate_key("ec-p384").unwrap(), "e384");
        let ed = jwk(&ed25519_pem(), "o");
        assert_eq!(rsa["kty"], "RSA");
        assert_eq!(ec["crv"], "P-256");
        assert_eq!(ec384["crv"], "P-384");
        assert_eq!(ed["kty"], "OKP");
        let set = set_of(vec![rsa.clone(), ec, ec384, ed]).unwrap();
        assert_eq!(set.kids(), ["r", "e", "e384", "o"]);
        assert!(set.skipped().is_empty());
        assert!(set.select(Some("r"), Algorithm::RS256).is_ok());
        assert!(set.select(Some("r"), Algorithm::PS512).is_ok());
        assert!(set.select(Some("e"), Algorithm::ES256).is_ok());
        assert!(set.select(Some("e384"), Algorithm::ES384).is_ok());
        assert!(set.select(Some("e384"), Algorithm::ES256).is_err());
        assert!(set.select(Some("o"), Algorithm::EdDSA).is_ok());
        assert!(set.select(Some("o"), Algorithm::RS256).is_err());
        // Padded base64url and extra members (x5c, ...) are tolerated.
        let mut padded = rsa;
        padded["e"] = json!("AQAB");
        padded["x5c"] = json!(["MIIB..."]);
        padded["use"] = json!("sig");
        padded["key_ops"] = json!(["verify"]);
        padded["alg"] = json!("RS256");
        assert_eq!(set_of(vec![padded]).unwrap().len(), 1);
        assert!(set_of(vec![]).unwrap().is_empty());
    }

    #[test]
    fn junk_is_refused_or_skipped() {
        for junk in [
            &b""[..],
            b"not json",
            b"[]",
            b"{}",
            b"{\"keys\": {}}",
            b"{\"keys\": [1]}",
            b"{\"keys\": [{\"kty\": \"RSA\"}]}",
        ] {
            assert!(
                KeySet::from_jwks(junk).is_err(),
                "{}",
                String::from_utf8_lossy(junk)
            );
        }
        let too_many = vec![jwk(&ed25519_pem(), "x"); KEYS_MAX + 1];
        assert!(set_of(too_many).unwrap_err().contains("more than"));
        assert!(KeySet::from_jwks(&vec![b' '; DOCUMENT_BYTES_MAX + 1]).is_err());

        let good = jwk(&ed25519_pem(), "good");
        let rsa = jwk(RSA_PEM, "r");
        let ec = jwk(&mint::generate_key("ec").unwrap(), "e");
        let mut bad = Vec::new();
        let mut with = |base: &Value, k: &str, v: Value| {
            let mut j = base.clone();
            j[k] = v;
            bad.push(j);
        };
        with(&rsa, "use", json!("enc"));
        with(&rsa, "key_ops", json!(["encrypt"]));
        with(&rsa, "alg", json!("RSA-OAEP"));
        with(&rsa, "alg", json!("HS256"));
        with(&rsa, "alg", json!("ES256"));
        with(&rsa, "n", json!("AQAB"));
        with(&rsa, "n", json!("***"));
        with(&rsa, "e", json!("AAE"));
        with(&rsa, "d", json!("c2VjcmV0"));
        with(&ec, "crv", json!("P-521"));
        with(&ec, "x", json!("AAAA"));
        with(&good, "crv", json!("X25519"));
        with(&good, "kid", json!(7));
        bad.push(json!({"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"}));
        bad.push(json!({"kty": "RSA", "kid": "no-n", "e": "AQAB"}));
        let n = bad.len();
        let mut all = bad.clone();
        all.push(good);
        let set = set_of(all).unwrap();
        assert_eq!(set.kids(), ["good"]);
        assert_eq!(set.skipped().len(), n, "{:#?}", set.skipped());
        assert!(set.skipped().iter().any(|s| s.contains("symmetric")));
        assert!(
            set_of(bad)
                .unwrap_err()
                .starts_with("no usable signing key")
        );
    }

    /// A JWKS server on 127.0.0.1 whose document and availability the test
    /// controls.
    struct Provider {
        addr: std::net::SocketAddr,
        jwks: Arc<Mutex<String>>,
        failing: Arc<AtomicBool>,
        task: tokio::task::JoinHandle<()>,
    }

    async fn provider(issuer_in_discovery: &str) -> Provider {
        use axum::routing::get;
        let jwks = Arc::new(Mutex::new(String::new()));
        let failing = Arc::new(AtomicBool::new(false));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let discovery = json!({
            "issuer": issuer_in_discovery,
            "jwks_uri": format!("http://{addr}/jwks"),
        })
        .to_string();
        let (j, f) = (jwks.clone(), failing.clone());
        let app = axum::Router::new()
            .route(
                "/jwks",
                get(move || {
                    let (j, f) = (j.clone(), f.clone());
                    async move {
                        if f.load(Ordering::SeqCst) {
                            Err(axum::http::StatusCode::SERVICE_UNAVAILABLE)
                        } else {
                            Ok(j.lock().unwrap().clone())
                        }
                    }
                }),
            )
            .route(
                "/.well-known/openid-configuration",
                get(move || {
                    let d = discovery.clone();
                    async move { d }
                }),
            )
            .route(
                "/huge",
                get(|| async { "x".repeat(DOCUMENT_BYTES_MAX + 10) }),
            );
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Provider {
            addr,
            jwks,
            failing,
            task,
        }
    }

    fn jwks_doc(pem: &[u8], kid: &str) -> String {
        mint::jwks(pem, Some(kid)).unwrap()
    }

    async fn wait_for_generation(v: &Verifier, want: u64) {
        tokio::time::timeout(Duration::from_secs(5), async {
            while v.generation() < want {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("key set installed in time");
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn refresh_picks_up_a_rotated_key_and_survives_the_provider_going_down() {
        rt().block_on(async {
            let p = provider("unused").await;
            let (old, new) = (ed25519_pem(), ed25519_pem());
            *p.jwks.lock().unwrap() = jwks_doc(&old, "old");
            let mut c = config();
            c.source = KeySource::Url(format!("http://{}/jwks", p.addr));
            c.unknown_kid_refresh_min = Duration::from_millis(50);
            c.jwks_refresh = Duration::from_secs(3600);
            let v = Arc::new(Verifier::new(c));
            load_initial(&v).await.unwrap();
            assert_eq!((v.generation(), v.keys().kids()), (1, vec!["old"]));

            let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
            let refresher = tokio::spawn(refresh_loop(v.clone(), async move {
                let _ = stop_rx.await;
            }));

            // Rotation: a token with the new kid fails, asks for a refresh,
            // and verifies once the new set is in.
            *p.jwks.lock().unwrap() = jwks_doc(&new, "new");
            let mut o = options(&new);
            o.kid = Some("new".into());
            let t = mint::mint(&o, NOW).unwrap();
            assert_eq!(
                v.verify(t.as_bytes(), NOW),
                Err(Reject::UnknownKey(Some("new".into())))
            );
            wait_for_generation(&v, 2).await;
            assert_eq!(v.keys().kids(), ["new"]);
            assert_eq!(v.verify(t.as_bytes(), NOW).unwrap().subject, "alice");

            // An unchanged document installs nothing.
            let g = v.request_refresh();
            tokio::time::sleep(Duration::from_millis(200)).await;
            assert_eq!(v.generation(), g);

            // Provider answering 503, then gone: the cached set keeps
            // working, an unknown kid still fails.
            p.failing.store(true, Ordering::SeqCst);
            v.request_refresh();
            tokio::time::sleep(Duration::from_millis(200)).await;
            p.task.abort();
            let _ = p.task.await;
            let mut o2 = options(&old);
            o2.kid = Some("old".into());
            let t_old = mint::mint(&o2, NOW).unwrap();
            for _ in 0..3 {
                assert!(matches!(
                    v.verify(t_old.as_bytes(), NOW),
                    Err(Reject::UnknownKey(_))
                ));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            assert_eq!(v.generation(), g);
            assert_eq!(v.verify(t.as_bytes(), NOW).unwrap().subject, "alice");

            let _ = stop_tx.send(());
            tokio::time::timeout(Duration::from_secs(2), refresher)
                .await
                .expect("refresh loop stops")
                .unwrap();
        });
    }

    #[test]
    fn discovery_finds_the_jwks_and_checks_the_issuer() {
        rt().block_on(async {
            let ed = ed25519_pem();
            let p = provider(crate::identity::verify::tests::ISS).await;
            *p.jwks.lock().unwrap() = jwks_doc(&ed, "d1");
            let mut c = config();
            c.source = KeySource::Discovery(format!(
                "http://{}/.well-known/openid-configuration",
                p.addr
            ));
            let v = Verifier::new(c.clone());
            load_initial(&v).await.unwrap();
            assert_eq!(v.keys().kids(), ["d1"]);

            c.issuer = "https://someone-else.example.com/".into();
            let e = load_initial(&Verifier::new(c)).await.unwrap_err();
            assert!(e.contains("is not identity.issuer"), "{e}");
        });
    }

    #[test]
    fn fetch_failures_fail_start() {
        rt().block_on(async {
            let p = provider("unused").await;
            let mut c = config();
            for (path, want) in [
                ("huge", "larger than"),
                ("jwks", "not a JWKS document"),
                ("missing", "HTTP 404"),
            ] {
                c.source = KeySource::Url(format!("http://{}/{path}", p.addr));
                let e = load_initial(&Verifier::new(c.clone())).await.unwrap_err();
                assert!(e.contains(want), "{path}: {e}");
            }
            *p.jwks.lock().unwrap() = "{\"keys\":[]}".into();
            c.source = KeySource::Url(format!("http://{}/jwks", p.addr));
            let e = load_initial(&Verifier::new(c.clone())).await.unwrap_err();
            assert!(e.contains("no signing keys"), "{e}");
            p.task.abort();
            let _ = p.task.await;
            let e = load_initial(&Verifier::new(c)).await.unwrap_err();
            assert!(e.contains(&p.addr.to_string()), "{e}");
        });
    }

    #[test]
    fn file_source_is_reread_on_refresh() {
        rt().block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let file = dir.path().join("jwks.json");
            let (a, b) = (ed25519_pem(), ed25519_pem());
            std::fs::write(&file, jwks_doc(&a, "a")).unwrap();
            let mut c = config();
            c.source = KeySource::File(file.clone());
            c.unknown_kid_refresh_min = Duration::from_millis(10);
            let v = Arc::new(Verifier::new(c));
            load_initial(&v).await.unwrap();
            let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
            let refresher = tokio::spawn(refresh_loop(v.clone(), async move {
                let _ = stop_rx.await;
            }));
            std::fs::write(&file, jwks_doc(&b, "b")).unwrap();
            v.request_refresh();
            wait_for_generation(&v, 2).await;
            assert_eq!(v.keys().kids(), ["b"]);
            // A broken file keeps the set.
            std::fs::write(&file, "{").unwrap();
            v.request_refresh();
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert_eq!((v.generation(), v.keys().kids()), (2, vec!["b"]));
            let _ = stop_tx.send(());
            refresher.await.unwrap();
        });
    }
}
