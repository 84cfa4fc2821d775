//! The appliance's audit signing key (Ed25519) and checkpoint signatures.
//!
//! The key is a PKCS#8 document in a PEM file (`PRIVATE KEY`), created with
//! mode 0600 on first start when missing. Auditors get the public half as
//! one line, `ed25519:<base64 of the 32 bytes>` (`custos audit pubkey`), and
//! pass it to `custos audit verify --pubkey FILE`.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use base64::Engine as _;
use ring::signature::{self, Ed25519KeyPair, KeyPair as _};

/// Prefix of the public key's text form.
pub const PUBLIC_KEY_PREFIX: &str = "ed25519:";
/// Bytes of an Ed25519 signature.
pub const SIGNATURE_BYTES: usize = 64;
/// Bytes of an Ed25519 public key.
pub const PUBLIC_KEY_BYTES: usize = 32;
const PEM_TAG: &str = "PRIVATE KEY";

/// The signing key.
pub struct SigningKey {
    pair: Ed25519KeyPair,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({})", self.public_text())
    }
}

impl SigningKey {
    /// Loads the key at `path`, creating it (mode 0600) when it does not
    /// exist. Returns whether it was created.
    pub fn load_or_create(path: &Path) -> Result<(SigningKey, bool), String> {
        match std::fs::read(path) {
            Ok(bytes) => Ok((SigningKey::from_pem(&bytes, path)?, false)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let rng = ring::rand::SystemRandom::new();
                let doc = Ed25519KeyPair::generate_pkcs8(&rng)
                    .map_err(|_| "cannot generate an Ed25519 key".to_string())?;
                let text = pem::encode(&pem::Pem::new(PEM_TAG, doc.as_ref().to_vec()));
                if let Some(dir) = path.parent()
                    && !dir.as_os_str().is_empty()
                {
                    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
                }
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                f.write_all(text.as_bytes())
                    .and_then(|()| f.sync_all())
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                Ok((SigningKey::from_pem(text.as_bytes(), path)?, true))
            }
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    /// Loads an existing key.
    pub fn load(path: &Path) -> Result<SigningKey, String> {
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        SigningKey::from_pem(&bytes, path)
    }

    fn from_pem(bytes: &[u8], path: &Path) -> Result<SigningKey, String> {
        let p = pem::parse(bytes).map_err(|e| format!("{}: {e}", path.display()))?;
        if p.tag() != PEM_TAG {
            return Err(format!(
                "{}: expected a PEM \"{PEM_TAG}\" (PKCS#8 Ed25519), found \"{}\"",
                path.display(),
                p.tag()
            ));
        }
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(p.contents())
            .map_err(|e| format!("{}: not a PKCS#8 Ed25519 key: {e}", path.display()))?;
        Ok(SigningKey { pair })
    }

    /// Signs `msg`.
    pub fn sign(&self, msg: &[u8]) -> [u8; SIGNATURE_BYTES] {
        let mut out = [0u8; SIGNATURE_BYTES];
        out.copy_from_slice(self.pair.sign(msg).as_ref());
        out
    }

    /// The public key.
    pub fn public(&self) -> [u8; PUBLIC_KEY_BYTES] {
        let mut out = [0u8; PUBLIC_KEY_BYTES];
        out.copy_from_slice(self.pair.public_key().as_ref());
        out
    }

    /// The public key as auditors receive it.
    pub fn public_text(&self) -> String {
        public_text(&self.public())
    }
}

/// `ed25519:<base64>`.
pub fn public_text(key: &[u8; PUBLIC_KEY_BYTES]) -> String {
    format!(
        "{PUBLIC_KEY_PREFIX}{}",
        base64::engine::general_purpose::STANDARD.encode(key)
    )
}

/// Parses the text form (surrounding whitespace allowed).
pub fn parse_public(text: &str) -> Result<[u8; PUBLIC_KEY_BYTES], String> {
    let b64 = text
        .trim()
        .strip_prefix(PUBLIC_KEY_PREFIX)
        .ok_or_else(|| format!("a public key starts with {PUBLIC_KEY_PREFIX:?}"))?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| format!("public key: {e}"))?;
    raw.try_into()
        .map_err(|_| format!("public key: expected {PUBLIC_KEY_BYTES} bytes"))
}

/// Whether `sig` is `key`'s signature of `msg`.
pub fn verify(key: &[u8; PUBLIC_KEY_BYTES], msg: &[u8], sig: &[u8]) -> bool {
    signature::UnparsedPublicKey::new(&signature::ED25519, key)
        .verify(msg, sig)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn created_once_with_0600_and_signatures_verify() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/audit.key");
        let (k, created) = SigningKey::load_or_create(&path).unwrap();
        assert!(created);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (again, created) = SigningKey::load_or_create(&path).unwrap();
        assert!(!created);
        assert_eq!(k.public(), again.public());
        let sig = k.sign(b"heads");
        let public = parse_public(&k.public_text()).unwrap();
        assert!(verify(&public, b"heads", &sig));
        assert!(!verify(&public, b"heads!", &sig));
    }
}
