//! TLS client setup shared by the HTTPS probe and the webhook sender: rustls with the
//! `ring` provider (installed in each configuration, never as a process default),
//! TLS 1.2 and 1.3, and the certificate check the pfile chose.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// A TLS client configuration that cannot be built (no trust anchors, a bad CA file).
#[derive(thiserror::Error, Debug)]
#[error("{0}")]
pub struct TlsError(String);

/// How a TLS client (an HTTPS probe, a webhook) checks its server.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsOptions {
    /// How the server certificate is checked.
    pub verify: TlsVerify,
    /// Server name sent as SNI and checked against the certificate. Default: the host
    /// field when it is a DNS name; no SNI (and an IP-address check) for IP addresses.
    pub sni: Option<String>,
}

/// How the server certificate is checked.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum TlsVerify {
    /// Against the system's trust store (`/etc/ssl/certs`, or `SSL_CERT_FILE` /
    /// `SSL_CERT_DIR`), read with `rustls-native-certs`.
    #[default]
    SystemRoots,
    /// Against the certificates in this PEM file only.
    CaFile(PathBuf),
    /// Not at all (self-signed localhost certificates). The handshake signatures are
    /// still checked, so the peer must hold the key of the certificate it shows.
    Off,
}

/// Builds the client configuration for `opts`: TLS 1.2 and 1.3, ALPN `http/1.1`, and
/// the chosen certificate check. Reads the CA file or the system trust store
/// synchronously, so build it once per target (see [`crate::probe::Prober`]) or webhook set.
pub fn tls_config(opts: &TlsOptions) -> Result<Arc<ClientConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError(format!("TLS versions: {e}")))?;
    let mut config = match &opts.verify {
        TlsVerify::SystemRoots => builder
            .with_root_certificates(system_roots()?)
            .with_no_client_auth(),
        TlsVerify::CaFile(path) => builder
            .with_root_certificates(ca_file_roots(path)?)
            .with_no_client_auth(),
        TlsVerify::Off => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCert { provider }))
            .with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The system trust store, as OpenSSL on this machine would find it (`SSL_CERT_FILE`,
/// `SSL_CERT_DIR`, or the distribution's bundle and directory). Works offline.
fn system_roots() -> Result<RootCertStore, TlsError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = found
            .errors
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("; ");
        return Err(TlsError(format!(
            "no usable system root certificates{}{why}",
            if why.is_empty() { "" } else { ": " }
        )));
    }
    Ok(roots)
}

/// Every certificate in a PEM file as a trust anchor (a self-signed server certificate
/// works too).
fn ca_file_roots(path: &std::path::Path) -> Result<RootCertStore, TlsError> {
    let shown = path.display();
    let mut roots = RootCertStore::empty();
    let iter = CertificateDer::pem_file_iter(path)
        .map_err(|e| TlsError(format!("CA file {shown}: {e}")))?;
    for cert in iter {
        let cert = cert.map_err(|e| TlsError(format!("CA file {shown}: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| TlsError(format!("CA file {shown}: {e}")))?;
    }
    if roots.is_empty() {
        return Err(TlsError(format!("CA file {shown}: no certificates")));
    }
    Ok(roots)
}

/// `TlsVerify::Off`: accepts any certificate chain and name, but still verifies the
/// handshake signatures with the provider's algorithms, so the server must own the key
/// of the certificate it presents.
#[derive(Debug)]
struct AcceptAnyCert {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for AcceptAnyCert {
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
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_errors() {
        let missing = TlsOptions {
            verify: TlsVerify::CaFile("/nonexistent/ca.pem".into()),
            sni: None,
        };
        let e = tls_config(&missing).unwrap_err().to_string();
        assert!(e.starts_with("CA file /nonexistent/ca.pem: "), "{e}");
        let empty = tempfile::NamedTempFile::new().unwrap();
        let empty = TlsOptions {
            verify: TlsVerify::CaFile(empty.path().to_path_buf()),
            sni: None,
        };
        let e = tls_config(&empty).unwrap_err().to_string();
        assert!(e.ends_with(": no certificates"), "{e}");
        assert!(tls_config(&TlsOptions::default()).is_ok(), "system roots");
    }
}
