//! Secrets (the store's credentials) as a type that cannot be printed.
//!
//! `Debug` and `Display` show a placeholder, so a secret cannot reach a log
//! line or an error message by accident; the bytes are reachable only through
//! [`Secret::expose`], which is easy to audit for.

use std::fmt;
use std::path::Path;

/// Largest secret file read; a credential is never this big, a wrong path
/// (a log file, a device) might be.
const SECRET_BYTES_MAX: u64 = 64 * 1024;

/// A credential the appliance uses but never shows.
#[derive(Clone)]
pub struct Secret(Box<[u8]>);

impl Secret {
    /// Reads a secret from `path`; surrounding whitespace (a trailing newline
    /// from `echo`) is removed.
    pub fn from_file(path: &Path) -> Result<Secret, String> {
        let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
        if meta.len() > SECRET_BYTES_MAX {
            return Err(format!(
                "larger than {SECRET_BYTES_MAX} bytes; not a credential file"
            ));
        }
        let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
        Secret::from_bytes(&bytes)
    }

    /// Reads a secret from the environment variable `name`.
    pub fn from_env(name: &str) -> Result<Secret, String> {
        match std::env::var_os(name) {
            Some(v) => Secret::from_bytes(v.as_encoded_bytes()),
            None => Err(format!("environment variable {name} is not set")),
        }
    }

    fn from_bytes(bytes: &[u8]) -> Result<Secret, String> {
        let trimmed = bytes.trim_ascii();
        if trimmed.is_empty() {
            return Err("empty".into());
        }
        if trimmed.iter().any(|&b| b == b'\r' || b == b'\n') {
            return Err("contains a line break".into());
        }
        Ok(Secret(trimmed.into()))
    }

    /// The secret's bytes. Every call site is a place where the secret
    /// leaves this type; keep them few.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(****)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("****")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_printed() {
        let s = Secret::from_bytes(b"hunter2\n").unwrap();
        assert_eq!(s.expose(), b"hunter2");
        assert!(!format!("{s} {s:?}").contains("hunter2"));
    }

    #[test]
    fn refuses_empty_and_multiline() {
        assert!(Secret::from_bytes(b"  \n").is_err());
        assert!(Secret::from_bytes(b"a\nb").is_err());
    }
}
