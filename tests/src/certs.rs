//! Throwaway certificates for the TLS scenarios.
//!
//! Each call makes a fresh certificate authority and a server certificate it
//! signed, valid for `localhost` and `127.0.0.1`, written as PEM files into a
//! temporary folder. Two calls give two unrelated authorities, which is how a
//! test gets a "wrong CA".

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use std::path::{Path, PathBuf};
use tempfile::TempDir;

/// A CA and a server certificate on disk.
#[derive(Debug)]
pub struct Certs {
    dir: TempDir,
}

impl Certs {
    /// Makes a CA and a server certificate for `localhost` and `127.0.0.1`.
    pub fn generate() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("custos-certs-")
            .tempdir()
            .expect("temp dir");

        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "custos test CA");
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_key = KeyPair::generate().expect("CA key");
        let ca_cert = ca_params.self_signed(&ca_key).expect("CA certificate");
        let issuer = Issuer::new(ca_params, ca_key);

        let mut params = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".into()])
            .expect("server params");
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().expect("server key");
        let cert = params.signed_by(&key, &issuer).expect("server certificate");

        std::fs::write(dir.path().join("ca.pem"), ca_cert.pem()).expect("write ca.pem");
        std::fs::write(dir.path().join("cert.pem"), cert.pem()).expect("write cert.pem");
        std::fs::write(dir.path().join("key.pem"), key.serialize_pem()).expect("write key.pem");
        Certs { dir }
    }

    /// The folder holding the files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The CA certificate (`ca.pem`).
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The server certificate (`cert.pem`), signed by [`Certs::ca`].
    pub fn cert(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }

    /// The server certificate's private key (`key.pem`, PKCS#8).
    pub fn key(&self) -> PathBuf {
        self.dir.path().join("key.pem")
    }
}
