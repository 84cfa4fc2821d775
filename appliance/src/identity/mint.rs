//! Development and test tokens: `custos token mint`, `custos token jwks`,
//! `custos token keygen`.
//!
//! These sign with a local private key, so that a demo or an integration
//! test needs no identity provider: `keygen` writes a key, `jwks` publishes
//! its public half for `identity.jwks_file`, `mint` signs tokens the
//! appliance then accepts. Production tokens come from the organisation's
//! identity provider, never from here.
//!
//! Keys are PEM: PKCS#8 (`PRIVATE KEY`, what `openssl genpkey` and `keygen`
//! write) for every type, or PKCS#1 (`RSA PRIVATE KEY`) for RSA.

use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::rand::SecureRandom as _;
use ring::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair,
    KeyPair as _, RsaKeyPair, RsaPublicKeyComponents,
};
use serde_json::{Map, Value, json};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// What to put in a token and how to sign it.
#[derive(Debug, Clone)]
pub struct MintOptions {
    /// The PEM private key that signs.
    pub key_pem: Vec<u8>,
    /// `iss`.
    pub issuer: String,
    /// `aud`.
    pub audience: String,
    /// `sub`.
    pub subject: String,
    /// `groups`.
    pub groups: Vec<String>,
    /// `exp` is `now + ttl`.
    pub ttl: Duration,
    /// The header's `kid`; the key's RFC 7638 thumbprint when `None`.
    pub kid: Option<String>,
    /// The signing algorithm; the key type's usual one when `None`.
    pub algorithm: Option<Algorithm>,
    /// More claims; they replace the standard ones of the same name.
    pub extra: Map<String, Value>,
}

/// A private key and its public parameters.
enum PrivateKey {
    /// PEM kept as given: jsonwebtoken reads PKCS#1 and PKCS#8 RSA keys.
    Rsa {
        pem: Vec<u8>,
        n: Vec<u8>,
        e: Vec<u8>,
    },
    /// PKCS#8 DER, the point's coordinates, and whether the curve is P-384.
    Ec {
        der: Vec<u8>,
        x: Vec<u8>,
        y: Vec<u8>,
        p384: bool,
    },
    /// PKCS#8 DER and the public key.
    Ed25519 { der: Vec<u8>, x: Vec<u8> },
}

impl PrivateKey {
    fn parse(pem_bytes: &[u8]) -> Result<PrivateKey, String> {
        let p = pem::parse(pem_bytes).map_err(|e| format!("not a PEM key: {e}"))?;
        let der = p.contents();
        match p.tag() {
            "RSA PRIVATE KEY" => {
                let pair = RsaKeyPair::from_der(der).map_err(|e| format!("RSA key: {e}"))?;
                Ok(Self::rsa(pem_bytes, &pair))
            }
            "PRIVATE KEY" => {
                if let Ok(pair) = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der) {
                    return Ok(PrivateKey::Ed25519 {
                        der: der.to_vec(),
                        x: pair.public_key().as_ref().to_vec(),
                    });
                }
                let rng = ring::rand::SystemRandom::new();
                for (alg, p384) in [
                    (&ECDSA_P256_SHA256_FIXED_SIGNING, false),
                    (&ECDSA_P384_SHA384_FIXED_SIGNING, true),
                ] {
                    if let Ok(pair) = EcdsaKeyPair::from_pkcs8(alg, der, &rng) {
                        // An uncompressed point: 0x04, x, y.
                        let point = pair.public_key().as_ref();
                        let half = (point.len() - 1) / 2;
                        return Ok(PrivateKey::Ec {
                            der: der.to_vec(),
                            x: point[1..1 + half].to_vec(),
                            y: point[1 + half..].to_vec(),
                            p384,
                        });
                    }
                }
                match RsaKeyPair::from_pkcs8(der) {
                    Ok(pair) => Ok(Self::rsa(pem_bytes, &pair)),
                    Err(e) => Err(format!(
                        "not an Ed25519, EC P-256/P-384 or RSA (2048 bits or more) private key: {e}"
                    )),
                }
            }
            "EC PRIVATE KEY" => {
                Err("SEC1 EC key; convert it to PKCS#8 with `openssl pkcs8 -topk8 -nocrypt`".into())
            }
            other => Err(format!("PEM {other:?} is not a private key")),
        }
    }

    fn rsa(pem: &[u8], pair: &RsaKeyPair) -> PrivateKey {
        let c = RsaPublicKeyComponents::<Vec<u8>>::from(pair.public());
        PrivateKey::Rsa {
            pem: pem.to_vec(),
            n: c.n,
            e: c.e,
        }
    }

    fn default_algorithm(&self) -> Algorithm {
        match self {
            PrivateKey::Rsa { .. } => Algorithm::RS256,
            PrivateKey::Ec { p384: false, .. } => Algorithm::ES256,
            PrivateKey::Ec { p384: true, .. } => Algorithm::ES384,
            PrivateKey::Ed25519 { .. } => Algorithm::EdDSA,
        }
    }

    fn fits(&self, alg: Algorithm) -> bool {
        use Algorithm::*;
        match self {
            PrivateKey::Rsa { .. } => matches!(alg, RS256 | RS384 | RS512 | PS256 | PS384 | PS512),
            _ => alg == self.default_algorithm(),
        }
    }

    /// The public JWK members required by RFC 7638, in its order.
    fn public_members(&self) -> Vec<(&'static str, String)> {
        match self {
            PrivateKey::Rsa { n, e, .. } => {
                vec![
                    ("e", B64.encode(e)),
                    ("kty", "RSA".into()),
                    ("n", B64.encode(n)),
                ]
            }
            PrivateKey::Ec { x, y, p384, .. } => vec![
                ("crv", if *p384 { "P-384" } else { "P-256" }.into()),
                ("kty", "EC".into()),
                ("x", B64.encode(x)),
                ("y", B64.encode(y)),
            ],
            PrivateKey::Ed25519 { x, .. } => vec![
                ("crv", "Ed25519".into()),
                ("kty", "OKP".into()),
                ("x", B64.encode(x)),
            ],
        }
    }

    /// RFC 7638 JWK thumbprint (SHA-256), base64url.
    fn thumbprint(&self) -> String {
        let members: Vec<String> = self
            .public_members()
            .into_iter()
            .map(|(k, v)| format!("{}:{}", json!(k), json!(v)))
            .collect();
        let canonical = format!("{{{}}}", members.join(","));
        B64.encode(ring::digest::digest(
            &ring::digest::SHA256,
            canonical.as_bytes(),
        ))
    }

    fn encoding_key(&self) -> Result<EncodingKey, String> {
        match self {
            PrivateKey::Rsa { pem, .. } => {
                EncodingKey::from_rsa_pem(pem).map_err(|e| e.to_string())
            }
            PrivateKey::Ec { der, .. } => Ok(EncodingKey::from_ec_der(der)),
            PrivateKey::Ed25519 { der, .. } => Ok(EncodingKey::from_ed_der(der)),
        }
    }
}

/// Signs a token with a PEM private key (RSA → RS256, EC P-256 → ES256,
/// P-384 → ES384, Ed25519 → EdDSA; overridable), kid = RFC 7638 JWK
/// thumbprint of the public key unless given.
///
/// The claims are `iss`, `aud`, `sub`, `groups`, `iat` and `nbf` (both
/// `now_unix`), `exp` (`now_unix + ttl`) and a random `jti`, then `extra`.
pub fn mint(opts: &MintOptions, now_unix: u64) -> Result<String, String> {
    let key = PrivateKey::parse(&opts.key_pem)?;
    let alg = opts.algorithm.unwrap_or_else(|| key.default_algorithm());
    if !key.fits(alg) {
        return Err(format!("{alg:?} cannot be signed with this key"));
    }
    let mut header = Header::new(alg);
    header.kid = Some(opts.kid.clone().unwrap_or_else(|| key.thumbprint()));
    let mut jti = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut jti)
        .map_err(|_| "no randomness for jti".to_string())?;
    let mut claims = Map::new();
    claims.insert("iss".into(), json!(opts.issuer));
    claims.insert("aud".into(), json!(opts.audience));
    claims.insert("sub".into(), json!(opts.subject));
    claims.insert("groups".into(), json!(opts.groups));
    claims.insert("iat".into(), json!(now_unix));
    claims.insert("nbf".into(), json!(now_unix));
    claims.insert(
        "exp".into(),
        json!(now_unix.saturating_add(opts.ttl.as_secs())),
    );
    claims.insert("jti".into(), json!(B64.encode(jti)));
    for (k, v) in &opts.extra {
        claims.insert(k.clone(), v.clone());
    }
    jsonwebtoken::encode(&header, &claims, &key.encoding_key()?).map_err(|e| e.to_string())
}

/// The JWKS (JSON text) holding the public key of a PEM private key, with
/// the same kid rule.
pub fn jwks(key_pem: &[u8], kid: Option<&str>) -> Result<String, String> {
    let key = PrivateKey::parse(key_pem)?;
    let mut jwk = Map::new();
    for (k, v) in key.public_members() {
        jwk.insert(k.into(), json!(v));
    }
    jwk.insert("use".into(), json!("sig"));
    jwk.insert(
        "alg".into(),
        json!(format!("{:?}", key.default_algorithm())),
    );
    jwk.insert(
        "kid".into(),
        json!(kid.map_or_else(|| key.thumbprint(), str::to_owned)),
    );
    // An RSA key signs PS* as well as RS*; naming one algorithm in the JWK
    // would restrict it to that one.
    if matches!(key, PrivateKey::Rsa { .. }) {
        jwk.remove("alg");
    }
    serde_json::to_string_pretty(&json!({ "keys": [jwk] })).map_err(|e| e.to_string())
}

/// Generates a new private key PEM (PKCS#8): `ed25519` (the default kind),
/// `ec` (P-256), `ec-p384`, or `rsa` (2048 bits). ring generates the first
/// three; it cannot generate RSA keys, so `rsa` runs
/// `openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048`.
pub fn generate_key(kind: &str) -> Result<Vec<u8>, String> {
    let rng = ring::rand::SystemRandom::new();
    let der = match kind {
        "ed25519" | "" => Ed25519KeyPair::generate_pkcs8(&rng).map_err(|e| e.to_string())?,
        "ec" | "ec-p256" | "p256" => {
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                .map_err(|e| e.to_string())?
        }
        "ec-p384" | "p384" => EcdsaKeyPair::generate_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &rng)
            .map_err(|e| e.to_string())?,
        "rsa" => {
            let out = std::process::Command::new("openssl")
                .args([
                    "genpkey",
                    "-algorithm",
                    "RSA",
                    "-pkeyopt",
                    "rsa_keygen_bits:2048",
                ])
                .stderr(std::process::Stdio::inherit())
                .output()
                .map_err(|e| format!("RSA keys are made with `openssl genpkey`: {e}"))?;
            if !out.status.success() {
                return Err(format!("openssl genpkey failed: {}", out.status));
            }
            PrivateKey::parse(&out.stdout)?;
            return Ok(out.stdout);
        }
        other => {
            return Err(format!(
                "unknown key type {other:?}; expected ed25519, ec, ec-p384 or rsa"
            ));
        }
    };
    let pem = pem::encode_config(
        &pem::Pem::new("PRIVATE KEY", der.as_ref().to_vec()),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    );
    Ok(pem.into_bytes())
}

/// Writes a private key readable by its owner only; an existing file is not
/// overwritten.
pub fn write_private_key(path: &Path, pem: &[u8]) -> Result<(), String> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    f.write_all(pem)
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Parses a duration as `90s`, `15m`, `1h`, `2d`, a sum like `1h30m`, or
/// bare seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("{s:?} is not a duration like 90s, 15m, 1h or 1h30m");
    if s.is_empty() {
        return Err(bad());
    }
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total: u64 = 0;
    let mut digits = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3_600,
            'd' => 86_400,
            _ => return Err(bad()),
        };
        let n: u64 = digits.parse().map_err(|_| bad())?;
        digits.clear();
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
    }
    if !digits.is_empty() {
        return Err(bad());
    }
    Ok(Duration::from_secs(total))
}

/// `--claim k=v`: `v` as JSON when it parses as JSON (numbers, booleans,
/// lists), else as a string.
pub fn parse_claim(s: &str) -> Result<(String, Value), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not key=value"))?;
    if k.is_empty() {
        return Err(format!("{s:?} has an empty claim name"));
    }
    let v = serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.to_owned()));
    Ok((k.to_owned(), v))
}

/// The issuer and first audience of a configuration file's `[identity]`
/// section, for the defaults of `custos token mint`. Only those two keys
/// are read; the section is not validated here.
pub fn defaults_from_config(path: &Path) -> Result<(Option<String>, Option<String>), String> {
    let src = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let doc: toml::Table = toml::from_str(&src).map_err(|e| format!("{}: {e}", path.display()))?;
    let Some(identity) = doc.get("identity").and_then(|i| i.as_table()) else {
        return Ok((None, None));
    };
    let issuer = identity
        .get("issuer")
        .and_then(|v| v.as_str())
        .map(str::to_owned);
    let audience = match identity.get("audience") {
        Some(toml::Value::String(s)) => Some(s.clone()),
        Some(toml::Value::Array(a)) => a.first().and_then(|v| v.as_str()).map(str::to_owned),
        _ => None,
    };
    Ok((issuer, audience))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::verify::tests::{NOW, RSA_PEM, config, options, verifier_with};

    #[test]
    fn minted_tokens_verify_against_their_jwks() {
        for pem in [
            RSA_PEM.to_vec(),
            generate_key("ed25519").unwrap(),
            generate_key("ec").unwrap(),
            generate_key("ec-p384").unwrap(),
        ] {
            let v = verifier_with(config(), &[&pem]);
            let t = mint(&options(&pem), NOW).unwrap();
            let id = v.verify(t.as_bytes(), NOW).unwrap();
            assert_eq!((id.subject.as_str(), id.groups.len()), ("alice", 2));
            assert!(id.token_id.is_some());
        }
    }

    #[test]
    fn kid_is_the_rfc7638_thumbprint() {
        // RFC 7638 §3.1's example key and thumbprint.
        let n = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
        let key = PrivateKey::Rsa {
            pem: Vec::new(),
            n: B64.decode(n).unwrap(),
            e: B64.decode("AQAB").unwrap(),
        };
        assert_eq!(
            key.thumbprint(),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
        let ed = generate_key("ed25519").unwrap();
        let doc: Value = serde_json::from_str(&jwks(&ed, None).unwrap()).unwrap();
        let t = mint(&options(&ed), NOW).unwrap();
        let header: Value =
            serde_json::from_slice(&B64.decode(t.split('.').next().unwrap()).unwrap()).unwrap();
        assert_eq!(header["kid"], doc["keys"][0]["kid"]);
        assert_eq!(doc["keys"][0]["alg"], "EdDSA");
        let doc: Value = serde_json::from_str(&jwks(&ed, Some("mine")).unwrap()).unwrap();
        assert_eq!(doc["keys"][0]["kid"], "mine");
    }

    #[test]
    fn algorithm_must_fit_the_key() {
        let ed = generate_key("ed25519").unwrap();
        let mut o = options(&ed);
        o.algorithm = Some(Algorithm::RS256);
        assert!(mint(&o, NOW).is_err());
        let mut o = options(RSA_PEM);
        o.algorithm = Some(Algorithm::PS384);
        assert!(mint(&o, NOW).is_ok());
        o.algorithm = Some(Algorithm::HS256);
        assert!(mint(&o, NOW).is_err());
    }

    #[test]
    fn bad_keys_are_refused() {
        for junk in [
            &b""[..],
            b"not pem",
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        ] {
            assert!(jwks(junk, None).is_err());
        }
        assert!(generate_key("dsa").is_err());
    }

    #[test]
    fn keys_are_written_owner_only_and_never_overwritten() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.pem");
        let pem = generate_key("ed25519").unwrap();
        assert!(pem.starts_with(b"-----BEGIN PRIVATE KEY-----\n") && !pem.contains(&b'\r'));
        write_private_key(&path, &pem).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(write_private_key(&path, &pem).is_err());
        assert_eq!(std::fs::read(&path).unwrap(), pem);
    }

    #[test]
    fn durations_and_claims() {
        for (s, secs) in [
            ("90s", 90),
            ("15m", 900),
            ("1h", 3600),
            ("1h30m", 5400),
            ("2d", 172_800),
            ("45", 45),
        ] {
            assert_eq!(parse_duration(s).unwrap(), Duration::from_secs(secs), "{s}");
        }
        for bad in ["", "m", "1x", "15m3", "-5s", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_claim("tier=2").unwrap(), ("tier".into(), json!(2)));
        assert_eq!(
            parse_claim("mfa=true").unwrap(),
            ("mfa".into(), json!(true))
        );
        assert_eq!(
            parse_claim("org=acme").unwrap(),
            ("org".into(), json!("acme"))
        );
        assert_eq!(
            parse_claim("a=[\"x\"]").unwrap(),
            ("a".into(), json!(["x"]))
        );
        assert!(parse_claim("novalue").is_err() && parse_claim("=v").is_err());
    }

    #[test]
    fn defaults_come_from_the_identity_section() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "[identity]\nissuer = \"https://i/\"\naudience = [\"a\", \"b\"]\n",
        )
        .unwrap();
        assert_eq!(
            defaults_from_config(&path).unwrap(),
            (Some("https://i/".into()), Some("a".into()))
        );
        std::fs::write(&path, "[server]\nworkers = 1\n").unwrap();
        assert_eq!(defaults_from_config(&path).unwrap(), (None, None));
    }
}
