//! TLS settings: the certificate clients see, and how the store's is checked.
//!
//! One crypto backend (ring) serves every TLS connection the appliance makes
//! or accepts. Configurations are built once, when the configuration file is
//! loaded, so a bad certificate is a configuration error naming its key, not
//! a surprise at the first connection.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

/// The ALPN protocol name PostgreSQL clients offer for direct TLS.
pub const ALPN_POSTGRESQL: &[u8] = b"postgresql";

/// The crypto provider every configuration uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A server configuration from PEM files: the certificate chain (leaf
/// first) and its private key (PKCS#8, PKCS#1 or SEC1).
pub fn server_config(cert: &Path, key: &Path, alpn: &[&[u8]]) -> Result<Arc<ServerConfig>, String> {
    let chain = read_certs(cert)?;
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("{}: no usable private key: {e}", key.display()))?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("certificate and key do not match or are unusable: {e}"))?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// How the appliance checks the certificate of a store it connects to.
#[derive(Clone)]
pub struct UpstreamTls {
    /// The client configuration.
    pub config: Arc<ClientConfig>,
    /// Whether the chain and host name are verified (a CA was configured).
    pub verified: bool,
}

impl fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("verified", &self.verified)
            .finish_non_exhaustive()
    }
}

/// A client configuration for connections to a store. With `ca`, the
/// store's chain must lead to one of its certificates and name the host
/// (PostgreSQL's `verify-full`); without, the connection is encrypted but
/// the certificate is not checked (`require`), as the store's own clients
/// do by default.
pub fn upstream_config(ca: Option<&Path>) -> Result<UpstreamTls, String> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let (config, verified) = match ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in read_certs(ca)? {
                roots
                    .add(cert)
                    .map_err(|e| format!("{}: unusable CA certificate: {e}", ca.display()))?;
            }
            (
                builder.with_root_certificates(roots).with_no_client_auth(),
                true,
            )
        }
        None => {
            let algorithms = provider().signature_verification_algorithms;
            (
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(EncryptOnly { algorithms }))
                    .with_no_client_auth(),
                false,
            )
        }
    };
    Ok(UpstreamTls {
        config: Arc::new(config),
        verified,
    })
}

/// The server name to present and verify for an upstream `host:port`.
pub fn server_name(upstream: &str) -> Result<ServerName<'static>, String> {
    let host = match upstream.rsplit_once(':') {
        Some((h, _)) => h.trim_start_matches('[').trim_end_matches(']'),
        None => upstream,
    };
    ServerName::try_from(host.to_owned()).map_err(|e| format!("{host:?}: {e}"))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate in the file", path.display()));
    }
    Ok(certs)
}

/// Accepts any certificate but still checks that the handshake is signed by
/// its key, so the session is encrypted to whoever holds that key.
#[derive(Debug)]
struct EncryptOnly {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
