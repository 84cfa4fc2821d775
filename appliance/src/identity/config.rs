//! The `[identity]` section: the file as written ([`RawIdentity`]) and the
//! checked settings the verifier runs with ([`IdentityConfig`]).
//!
//! Everything that could weaken verification is refused here, at start,
//! with the key and the line: the `none` algorithm, HMAC algorithms without
//! a secret of their own, plain `http://` to anything but this machine, a
//! leeway long enough to make expiry meaningless.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use jsonwebtoken::Algorithm;
use serde::Deserialize;
use toml::Spanned;

use crate::config::ConfigError;
use crate::secret::Secret;

/// Default `token_bytes_max`: larger than any token an IdP issues with a
/// sane number of groups, small enough to bound the work of a bad one.
pub const TOKEN_BYTES_MAX_DEFAULT: usize = 16 * 1024;
/// Smallest accepted `token_bytes_max`.
pub const TOKEN_BYTES_MAX_FLOOR: usize = 1024;
/// Largest accepted `token_bytes_max`.
pub const TOKEN_BYTES_MAX_CEILING: usize = 64 * 1024;
/// Default `leeway_s`.
pub const LEEWAY_S_DEFAULT: u64 = 30;
/// Largest accepted `leeway_s`: more would make short-lived tokens long-lived.
pub const LEEWAY_S_MAX: u64 = 300;
/// Default `jwks_refresh_s`.
pub const JWKS_REFRESH_S_DEFAULT: u64 = 300;
/// Accepted range of `jwks_refresh_s`; the floor keeps the appliance from
/// hammering the identity provider.
pub const JWKS_REFRESH_S_RANGE: std::ops::RangeInclusive<u64> = 10..=86_400;
/// Default `unknown_kid_refresh_min_s`.
pub const UNKNOWN_KID_REFRESH_MIN_S_DEFAULT: u64 = 10;
/// Accepted range of `unknown_kid_refresh_min_s`: at least one second, since
/// any client can present a token with an unknown `kid`.
pub const UNKNOWN_KID_REFRESH_MIN_S_RANGE: std::ops::RangeInclusive<u64> = 1..=3_600;
/// Largest accepted `expiry_grace_s`.
pub const EXPIRY_GRACE_S_MAX: u64 = 3_600;
/// Shortest accepted HMAC secret (RFC 7518 §3.2: at least the hash size).
pub const HMAC_SECRET_BYTES_MIN: usize = 32;
/// Algorithms allowed when `algorithms` is not set.
pub const ALGORITHMS_DEFAULT: [Algorithm; 7] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];
/// Added to the defaults when `hmac_secret_file` is set and `algorithms` is not.
const HMAC_ALGORITHMS: [Algorithm; 3] = [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];

/// The path under an issuer where OIDC discovery publishes its document.
pub const DISCOVERY_PATH: &str = "/.well-known/openid-configuration";

/// One string or a list of strings, as TOML lets the operator write
/// `audience = "custos"` or `audience = ["custos", "memory"]`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum StringOrList {
    /// A single value.
    One(String),
    /// Several values.
    Many(Vec<String>),
}

impl StringOrList {
    fn to_vec(&self) -> Vec<String> {
        match self {
            StringOrList::One(s) => vec![s.clone()],
            StringOrList::Many(v) => v.clone(),
        }
    }
}

/// The `[identity]` section as written. Every key is optional except
/// `issuer` and `audience`; [`validate`] applies the defaults.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIdentity {
    issuer: Spanned<String>,
    audience: Spanned<StringOrList>,
    jwks_file: Option<Spanned<PathBuf>>,
    jwks_url: Option<Spanned<String>>,
    discovery_url: Option<Spanned<String>>,
    jwks_ca_file: Option<Spanned<PathBuf>>,
    algorithms: Option<Spanned<Vec<String>>>,
    hmac_secret_file: Option<Spanned<PathBuf>>,
    subject_claim: Option<Spanned<String>>,
    groups_claim: Option<Spanned<String>>,
    required_claims: Option<Spanned<toml::Table>>,
    leeway_s: Option<Spanned<u64>>,
    token_bytes_max: Option<Spanned<usize>>,
    jwks_refresh_s: Option<Spanned<u64>>,
    unknown_kid_refresh_min_s: Option<Spanned<u64>>,
    expiry_grace_s: Option<Spanned<u64>>,
    match_user: Option<bool>,
}

/// Where the signing keys come from. Exactly one is configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// A JWKS document on disk, re-read at every refresh (rotation by
    /// replacing the file).
    File(PathBuf),
    /// A JWKS document over HTTPS.
    Url(String),
    /// The URL of an OIDC discovery document (ending in
    /// [`DISCOVERY_PATH`]), whose `jwks_uri` names the JWKS.
    Discovery(String),
}

impl std::fmt::Display for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySource::File(p) => write!(f, "jwks_file {}", p.display()),
            KeySource::Url(u) => write!(f, "jwks_url {u}"),
            KeySource::Discovery(u) => write!(f, "discovery_url {u}"),
        }
    }
}

/// The checked `[identity]` settings.
#[derive(Debug, Clone)]
pub struct IdentityConfig {
    /// The exact `iss` every token must carry.
    pub issuer: String,
    /// Accepted `aud` values; a token must name at least one.
    pub audience: Vec<String>,
    /// Where the signing keys come from.
    pub source: KeySource,
    /// An extra trusted root for fetching keys (a private IdP, tests).
    pub ca_file: Option<PathBuf>,
    /// Accepted `alg` values; never `none`, HMAC only with `hmac_secret`.
    pub algorithms: Vec<Algorithm>,
    /// The key of HS256/384/512 tokens; never taken from a key set.
    pub hmac_secret: Option<Secret>,
    /// The claim that names the subject (`sub`, `email`, ...).
    pub subject_claim: String,
    /// Path of the groups claim (`["realm_access", "roles"]`).
    pub groups_claim: Vec<String>,
    /// Claim paths and the values (any of) each must have.
    pub required_claims: Vec<(Vec<String>, Vec<serde_json::Value>)>,
    /// Clock skew tolerated on `exp`, `nbf` and `iat`.
    pub leeway_s: u64,
    /// Longest token accepted; checked before any decoding.
    pub token_bytes_max: usize,
    /// How often the key set is refetched.
    pub jwks_refresh: Duration,
    /// Least time between two refetches asked for by unknown `kid`s.
    pub unknown_kid_refresh_min: Duration,
    /// How long commands already in flight may finish after a session's
    /// token expires.
    pub expiry_grace: Duration,
    /// PostgreSQL: the startup user must equal the subject.
    pub match_user: bool,
}

impl IdentityConfig {
    /// Settings with every default, for a key source; used by tests and by
    /// the development commands.
    pub fn new(issuer: &str, audience: &str, source: KeySource) -> IdentityConfig {
        IdentityConfig {
            issuer: issuer.to_owned(),
            audience: vec![audience.to_owned()],
            source,
            ca_file: None,
            algorithms: ALGORITHMS_DEFAULT.to_vec(),
            hmac_secret: None,
            subject_claim: "sub".into(),
            groups_claim: vec!["groups".into()],
            required_claims: Vec::new(),
            leeway_s: LEEWAY_S_DEFAULT,
            token_bytes_max: TOKEN_BYTES_MAX_DEFAULT,
            jwks_refresh: Duration::from_secs(JWKS_REFRESH_S_DEFAULT),
            unknown_kid_refresh_min: Duration::from_secs(UNKNOWN_KID_REFRESH_MIN_S_DEFAULT),
            expiry_grace: Duration::ZERO,
            match_user: false,
        }
    }
}

/// Whether `alg` is one of the HMAC algorithms.
pub fn is_hmac(alg: Algorithm) -> bool {
    HMAC_ALGORITHMS.contains(&alg)
}

/// Checks a URL the appliance will fetch keys from: `https://`, or plain
/// `http://` to this machine only (development and tests), never to a host
/// where someone on the path could swap the keys.
pub fn check_fetch_url(url: &str) -> Result<(), String> {
    let u = reqwest::Url::parse(url).map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    let loopback = match u.host_str() {
        Some("localhost") => true,
        Some(h) => h
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback()),
        None => false,
    };
    match u.scheme() {
        "https" if u.host_str().is_some() => Ok(()),
        "http" if loopback => Ok(()),
        _ => Err(format!(
            "{url:?}: must be https:// (plain http:// only to 127.0.0.1, [::1] or localhost)"
        )),
    }
}

/// The discovery document's URL for what the operator wrote: the issuer's
/// base URL or the document's full URL.
fn discovery_document_url(s: &str) -> String {
    if s.ends_with(DISCOVERY_PATH) {
        s.to_owned()
    } else {
        format!("{}{DISCOVERY_PATH}", s.trim_end_matches('/'))
    }
}

/// Checks the `[identity]` section and loads the files it names. Errors name
/// the file, the line and the key, like the rest of the configuration.
pub fn validate(
    path: &Path,
    src: &str,
    base: &Path,
    raw: &RawIdentity,
) -> Result<IdentityConfig, ConfigError> {
    let err = |span: std::ops::Range<usize>, key: &str, msg: String| {
        ConfigError::at(path, src, span, &format!("identity.{key}"), msg)
    };

    let issuer = raw.issuer.get_ref().clone();
    if issuer.is_empty() {
        return Err(err(raw.issuer.span(), "issuer", "must not be empty".into()));
    }
    let audience = raw.audience.get_ref().to_vec();
    if audience.is_empty() || audience.iter().any(String::is_empty) {
        return Err(err(
            raw.audience.span(),
            "audience",
            "must name at least one audience, none of them empty".into(),
        ));
    }

    let given: Vec<(&str, std::ops::Range<usize>)> = [
        ("jwks_file", raw.jwks_file.as_ref().map(|s| s.span())),
        ("jwks_url", raw.jwks_url.as_ref().map(|s| s.span())),
        (
            "discovery_url",
            raw.discovery_url.as_ref().map(|s| s.span()),
        ),
    ]
    .into_iter()
    .filter_map(|(k, s)| s.map(|s| (k, s)))
    .collect();
    if let Some((key, span)) = given.get(1) {
        return Err(err(
            span.clone(),
            key,
            "set only one of jwks_file, jwks_url or discovery_url".into(),
        ));
    }
    let source = match (&raw.jwks_file, &raw.jwks_url, &raw.discovery_url) {
        (Some(f), _, _) => {
            let file = base.join(f.get_ref());
            super::keys::read_jwks_file(&file)
                .and_then(|bytes| super::keys::KeySet::from_jwks(&bytes))
                .map_err(|e| err(f.span(), "jwks_file", format!("{}: {e}", file.display())))?;
            KeySource::File(file)
        }
        (None, Some(u), _) => {
            check_fetch_url(u.get_ref()).map_err(|e| err(u.span(), "jwks_url", e))?;
            KeySource::Url(u.get_ref().clone())
        }
        (None, None, Some(u)) => {
            let doc = discovery_document_url(u.get_ref());
            check_fetch_url(&doc).map_err(|e| err(u.span(), "discovery_url", e))?;
            KeySource::Discovery(doc)
        }
        (None, None, None) => {
            return Err(err(
                raw.issuer.span(),
                "jwks_file",
                "missing: set one of jwks_file, jwks_url or discovery_url".into(),
            ));
        }
    };

    let ca_file = match &raw.jwks_ca_file {
        None => None,
        Some(c) if matches!(source, KeySource::File(_)) => {
            return Err(err(
                c.span(),
                "jwks_ca_file",
                "only meaningful with jwks_url or discovery_url".into(),
            ));
        }
        Some(c) => {
            let file = base.join(c.get_ref());
            super::keys::read_ca_file(&file)
                .map_err(|e| err(c.span(), "jwks_ca_file", format!("{}: {e}", file.display())))?;
            Some(file)
        }
    };

    let hmac_secret = match &raw.hmac_secret_file {
        None => None,
        Some(f) => {
            let file = base.join(f.get_ref());
            let secret = Secret::from_file(&file).map_err(|e| {
                err(
                    f.span(),
                    "hmac_secret_file",
                    format!("{}: {e}", file.display()),
                )
            })?;
            if secret.expose().len() < HMAC_SECRET_BYTES_MIN {
                return Err(err(
                    f.span(),
                    "hmac_secret_file",
                    format!(
                        "{}: shorter than {HMAC_SECRET_BYTES_MIN} bytes; an HMAC key must be \
                         at least as long as its hash",
                        file.display()
                    ),
                ));
            }
            Some(secret)
        }
    };

    let algorithms = match &raw.algorithms {
        None => {
            let mut a = ALGORITHMS_DEFAULT.to_vec();
            if hmac_secret.is_some() {
                a.extend(HMAC_ALGORITHMS);
            }
            a
        }
        Some(list) => {
            let mut out = Vec::with_capacity(list.get_ref().len());
            for name in list.get_ref() {
                let alg = parse_algorithm(name).map_err(|e| err(list.span(), "algorithms", e))?;
                if is_hmac(alg) && hmac_secret.is_none() {
                    return Err(err(
                        list.span(),
                        "algorithms",
                        format!(
                            "{name} needs hmac_secret_file; HMAC keys are never taken from a \
                             key set, where anyone holding the public key could sign"
                        ),
                    ));
                }
                if !out.contains(&alg) {
                    out.push(alg);
                }
            }
            if out.is_empty() {
                return Err(err(list.span(), "algorithms", "must not be empty".into()));
            }
            out
        }
    };
    if let Some(f) = &raw.hmac_secret_file
        && !algorithms.iter().any(|a| is_hmac(*a))
    {
        return Err(err(
            f.span(),
            "hmac_secret_file",
            "set, but identity.algorithms allows none of HS256, HS384, HS512".into(),
        ));
    }

    let subject_claim = match &raw.subject_claim {
        None => "sub".to_owned(),
        Some(s) if s.get_ref().is_empty() => {
            return Err(err(s.span(), "subject_claim", "must not be empty".into()));
        }
        Some(s) => s.get_ref().clone(),
    };
    let groups_claim = match &raw.groups_claim {
        None => vec!["groups".to_owned()],
        Some(g) => super::claim_path(g.get_ref()).map_err(|e| err(g.span(), "groups_claim", e))?,
    };

    let mut required_claims = Vec::new();
    if let Some(table) = &raw.required_claims {
        for (name, value) in table.get_ref() {
            let key = format!("required_claims.{name}");
            let claim = super::claim_path(name).map_err(|e| err(table.span(), &key, e))?;
            let values = match value {
                toml::Value::Array(items) if items.is_empty() => {
                    return Err(err(
                        table.span(),
                        &key,
                        "an empty list matches nothing".into(),
                    ));
                }
                toml::Value::Array(items) => items
                    .iter()
                    .map(toml_scalar)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| err(table.span(), &key, e))?,
                v => vec![toml_scalar(v).map_err(|e| err(table.span(), &key, e))?],
            };
            required_claims.push((claim, values));
        }
    }

    let ranged = |v: &Option<Spanned<u64>>,
                  key: &str,
                  default: u64,
                  range: std::ops::RangeInclusive<u64>|
     -> Result<u64, ConfigError> {
        match v {
            None => Ok(default),
            Some(s) if range.contains(s.get_ref()) => Ok(*s.get_ref()),
            Some(s) => Err(err(
                s.span(),
                key,
                format!(
                    "{} is out of range {}..={}",
                    s.get_ref(),
                    range.start(),
                    range.end()
                ),
            )),
        }
    };
    let leeway_s = ranged(
        &raw.leeway_s,
        "leeway_s",
        LEEWAY_S_DEFAULT,
        0..=LEEWAY_S_MAX,
    )?;
    let jwks_refresh_s = ranged(
        &raw.jwks_refresh_s,
        "jwks_refresh_s",
        JWKS_REFRESH_S_DEFAULT,
        JWKS_REFRESH_S_RANGE,
    )?;
    let unknown_kid_refresh_min_s = ranged(
        &raw.unknown_kid_refresh_min_s,
        "unknown_kid_refresh_min_s",
        UNKNOWN_KID_REFRESH_MIN_S_DEFAULT,
        UNKNOWN_KID_REFRESH_MIN_S_RANGE,
    )?;
    let expiry_grace_s = ranged(
        &raw.expiry_grace_s,
        "expiry_grace_s",
        0,
        0..=EXPIRY_GRACE_S_MAX,
    )?;
    let token_bytes_max = match &raw.token_bytes_max {
        None => TOKEN_BYTES_MAX_DEFAULT,
        Some(t) if (TOKEN_BYTES_MAX_FLOOR..=TOKEN_BYTES_MAX_CEILING).contains(t.get_ref()) => {
            *t.get_ref()
        }
        Some(t) => {
            return Err(err(
                t.span(),
                "token_bytes_max",
                format!(
                    "{} is out of range {TOKEN_BYTES_MAX_FLOOR}..={TOKEN_BYTES_MAX_CEILING}",
                    t.get_ref()
                ),
            ));
        }
    };

    Ok(IdentityConfig {
        issuer,
        audience,
        source,
        ca_file,
        algorithms,
        hmac_secret,
        subject_claim,
        groups_claim,
        required_claims,
        leeway_s,
        token_bytes_max,
        jwks_refresh: Duration::from_secs(jwks_refresh_s),
        unknown_kid_refresh_min: Duration::from_secs(unknown_kid_refresh_min_s),
        expiry_grace: Duration::from_secs(expiry_grace_s),
        match_user: raw.match_user.unwrap_or(false),
    })
}

/// An algorithm name from the configuration or a command line.
pub fn parse_algorithm(name: &str) -> Result<Algorithm, String> {
    if name.eq_ignore_ascii_case("none") {
        return Err("\"none\" is never accepted: it means an unsigned token".into());
    }
    Algorithm::from_str(name).map_err(|_| {
        format!(
            "unknown algorithm {name:?}; expected one of RS256, RS384, RS512, PS256, PS384, \
             PS512, ES256, ES384, EdDSA, HS256, HS384, HS512"
        )
    })
}

/// A required claim value: a string, a boolean or a number.
fn toml_scalar(v: &toml::Value) -> Result<serde_json::Value, String> {
    match v {
        toml::Value::String(s) => Ok(serde_json::Value::String(s.clone())),
        toml::Value::Boolean(b) => Ok(serde_json::Value::Bool(*b)),
        toml::Value::Integer(i) => Ok(serde_json::Value::from(*i)),
        toml::Value::Float(f) => serde_json::Number::from_f64(*f)
            .map(serde_json::Value::Number)
            .ok_or_else(|| format!("{f} is not a finite number")),
        other => Err(format!(
            "{} is not a string, boolean, number or list of those",
            other.type_str()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Doc {
        identity: RawIdentity,
    }

    const JWKS: &str = r#"{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"k1","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#;

    /// Writes the key set next to a config file and validates `body` as its
    /// `[identity]` section (line 1 is `[identity]`).
    fn check(body: &str) -> Result<IdentityConfig, String> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("jwks.json"), JWKS).unwrap();
        std::fs::write(
            dir.path().join("hmac"),
            "0123456789abcdef0123456789abcdef\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("short"), "tooshort\n").unwrap();
        let src = format!("[identity]\n{body}");
        let path = dir.path().join("custos.toml");
        let doc: Doc = toml::from_str(&src).map_err(|e| e.to_string())?;
        validate(&path, &src, dir.path(), &doc.identity).map_err(|e| e.to_string())
    }

    const BASE: &str =
        "issuer = \"https://idp.example.com/\"\naudience = \"custos\"\njwks_file = \"jwks.json\"\n";

    #[test]
    fn defaults() {
        let c = check(BASE).unwrap();
        assert_eq!(c.issuer, "https://idp.example.com/");
        assert_eq!(c.audience, ["custos"]);
        assert!(matches!(c.source, KeySource::File(ref p) if p.ends_with("jwks.json")));
        assert_eq!(c.algorithms, ALGORITHMS_DEFAULT);
        assert_eq!(c.subject_claim, "sub");
        assert_eq!(c.groups_claim, ["groups"]);
        assert_eq!(c.leeway_s, 30);
        assert_eq!(c.token_bytes_max, 16 * 1024);
        assert_eq!(c.jwks_refresh, Duration::from_secs(300));
        assert_eq!(c.unknown_kid_refresh_min, Duration::from_secs(10));
        assert_eq!(c.expiry_grace, Duration::ZERO);
        assert!(!c.match_user && c.hmac_secret.is_none());
    }

    #[test]
    fn everything_set() {
        let c = check(
            "issuer = \"https://idp.example.com/realms/x\"\n\
             audience = [\"custos\", \"memory\"]\n\
             discovery_url = \"https://idp.example.com/realms/x/\"\n\
             algorithms = [\"RS256\", \"HS256\"]\n\
             hmac_secret_file = \"hmac\"\n\
             subject_claim = \"email\"\n\
             groups_claim = \"realm_access.roles\"\n\
             required_claims = { email_verified = true, \"cognito:tier\" = [\"gold\", 2] }\n\
             leeway_s = 0\ntoken_bytes_max = 4096\njwks_refresh_s = 60\n\
             unknown_kid_refresh_min_s = 5\nexpiry_grace_s = 10\nmatch_user = true\n",
        )
        .unwrap();
        assert_eq!(
            c.source,
            KeySource::Discovery(
                "https://idp.example.com/realms/x/.well-known/openid-configuration".into()
            )
        );
        assert_eq!(c.audience, ["custos", "memory"]);
        assert_eq!(c.algorithms, [Algorithm::RS256, Algorithm::HS256]);
        assert_eq!(c.hmac_secret.as_ref().unwrap().expose().len(), 32);
        assert_eq!(c.groups_claim, ["realm_access", "roles"]);
        assert_eq!(c.subject_claim, "email");
        assert_eq!(c.required_claims.len(), 2);
        assert!(c.required_claims.contains(&(
            vec!["cognito:tier".into()],
            vec![serde_json::json!("gold"), serde_json::json!(2)]
        )));
        assert!(c.match_user && c.leeway_s == 0 && c.token_bytes_max == 4096);
        assert!(
            !format!("{c:?}").contains("0123456789abcdef"),
            "secret in Debug"
        );
    }

    #[test]
    fn hmac_secret_adds_hs_algorithms_to_the_defaults() {
        let c = check(&format!("{BASE}hmac_secret_file = \"hmac\"\n")).unwrap();
        assert!(
            c.algorithms.contains(&Algorithm::HS256) && c.algorithms.contains(&Algorithm::RS256)
        );
    }

    #[test]
    fn urls_must_be_https_except_to_this_machine() {
        for ok in [
            "https://idp.example.com/jwks",
            "http://127.0.0.1:8080/jwks",
            "http://localhost/jwks",
            "http://[::1]:9/jwks",
        ] {
            assert!(check_fetch_url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://idp.example.com/jwks",
            "ftp://127.0.0.1/x",
            "file:///etc/jwks",
            "jwks",
        ] {
            assert!(check_fetch_url(bad).is_err(), "{bad}");
        }
    }

    /// Each bad section is refused with the key and the line it is on.
    #[test]
    fn errors_name_key_and_line() {
        let cases: &[(&str, &str)] = &[
            (
                "algorithms = [\"none\"]\n",
                "line 5: `identity.algorithms`: \"none\" is never accepted",
            ),
            (
                "algorithms = [\"HS256\"]\n",
                "line 5: `identity.algorithms`: HS256 needs hmac_secret_file",
            ),
            (
                "algorithms = [\"ES512\"]\n",
                "line 5: `identity.algorithms`: unknown algorithm",
            ),
            (
                "algorithms = []\n",
                "line 5: `identity.algorithms`: must not be empty",
            ),
            (
                "hmac_secret_file = \"short\"\n",
                "line 5: `identity.hmac_secret_file`: ",
            ),
            (
                "hmac_secret_file = \"hmac\"\nalgorithms = [\"RS256\"]\n",
                "line 5: `identity.hmac_secret_file`: set, but",
            ),
            (
                "hmac_secret_file = \"missing\"\n",
                "line 5: `identity.hmac_secret_file`",
            ),
            (
                "jwks_url = \"https://idp.example.com/k\"\n",
                "line 5: `identity.jwks_url`: set only one",
            ),
            (
                "jwks_ca_file = \"jwks.json\"\n",
                "line 5: `identity.jwks_ca_file`: only meaningful",
            ),
            (
                "groups_claim = \"a..b\"\n",
                "line 5: `identity.groups_claim`",
            ),
            ("subject_claim = \"\"\n", "line 5: `identity.subject_claim`"),
            (
                "leeway_s = 3600\n",
                "line 5: `identity.leeway_s`: 3600 is out of range",
            ),
            (
                "token_bytes_max = 10\n",
                "line 5: `identity.token_bytes_max`",
            ),
            ("jwks_refresh_s = 1\n", "line 5: `identity.jwks_refresh_s`"),
            (
                "unknown_kid_refresh_min_s = 0\n",
                "line 5: `identity.unknown_kid_refresh_min_s`",
            ),
            (
                "expiry_grace_s = 99999\n",
                "line 5: `identity.expiry_grace_s`",
            ),
            (
                "required_claims = { tenant = { a = 1 } }\n",
                "line 5: `identity.required_claims.tenant`",
            ),
            (
                "required_claims = { tenant = [] }\n",
                "line 5: `identity.required_claims.tenant`",
            ),
            ("colour = \"blue\"\n", "colour"),
        ];
        for (extra, want) in cases {
            let e = check(&format!("{BASE}{extra}")).unwrap_err();
            assert!(e.contains(want), "{extra:?}: {e:?} should contain {want:?}");
        }
        let body_cases: &[(&str, &str)] = &[
            (
                "issuer = \"\"\naudience = \"a\"\njwks_file = \"jwks.json\"\n",
                "line 2: `identity.issuer`",
            ),
            (
                "issuer = \"i\"\naudience = []\njwks_file = \"jwks.json\"\n",
                "line 3: `identity.audience`",
            ),
            (
                "issuer = \"i\"\naudience = \"a\"\n",
                "line 2: `identity.jwks_file`: missing",
            ),
            (
                "issuer = \"i\"\naudience = \"a\"\njwks_url = \"http://idp.example.com/k\"\n",
                "line 4: `identity.jwks_url`: \"http://idp.example.com/k\": must be https://",
            ),
            (
                "issuer = \"i\"\naudience = \"a\"\ndiscovery_url = \"http://10.0.0.1/\"\n",
                "line 4: `identity.discovery_url`",
            ),
            (
                "issuer = \"i\"\naudience = \"a\"\njwks_file = \"missing.json\"\n",
                "line 4: `identity.jwks_file`",
            ),
            (
                "issuer = \"i\"\naudience = \"a\"\njwks_url = \"https://x/k\"\njwks_ca_file = \"nope.pem\"\n",
                "line 5: `identity.jwks_ca_file`",
            ),
        ];
        for (body, want) in body_cases {
            let e = check(body).unwrap_err();
            assert!(e.contains(want), "{body:?}: {e:?} should contain {want:?}");
            assert!(e.contains("custos.toml"), "{e}");
        }
    }

    #[test]
    fn jwks_file_that_is_not_a_key_set_is_refused_at_start() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("jwks.json"), "{\"nope\":1}").unwrap();
        let src = format!("[identity]\n{BASE}");
        let doc: Doc = toml::from_str(&src).unwrap();
        let e = validate(&dir.path().join("c.toml"), &src, dir.path(), &doc.identity)
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 4: `identity.jwks_file`"), "{e}");
    }
}
