//! HTTPS for the API and every sandbox listener (rustls). Either the operator's certificate
//! (`--tls-cert/--tls-key`) or a local CA generated on first start in `<data>/tls/`: `ca.pem` is
//! what SDK users trust (`SSL_CERT_FILE`, `REQUESTS_CA_BUNDLE`, `NODE_EXTRA_CA_CERTS`); the server
//! certificate is re-issued from it at every start for the names the server answers to.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use rcgen::{CertificateParams, DnType, KeyPair, KeyUsagePurpose};
use tokio_rustls::TlsAcceptor;

/// How the server gets its certificate.
#[derive(Debug, Clone)]
pub enum TlsSource {
    Files {
        cert: PathBuf,
        key: PathBuf,
    },
    /// A local CA in the data dir, for these host names and addresses.
    Generated {
        names: Vec<String>,
    },
}

/// Loads or creates the local CA and issues a server certificate for `names`. Returns the PEM
/// chain and key, and the path of the CA certificate clients should trust.
fn generated(data_dir: &Path, names: &[String]) -> anyhow::Result<(String, String, PathBuf)> {
    let ca = warren_egress::ca::LocalCa::load_or_make(&data_dir.join("tls"), "Warren local CA")?;
    let mut params = CertificateParams::new(names.to_vec())?;
    params.distinguished_name.push(
        DnType::CommonName,
        names.first().map_or("warren", String::as_str),
    );
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    // Under 398 days, which clients accept for server certificates; re-issued at every start.
    params.not_after = now + time::Duration::days(390);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &ca.issuer, &ca.key)?;
    Ok((
        cert.pem() + &ca.issuer.pem(),
        key.serialize_pem(),
        ca.cert_path,
    ))
}

/// Builds the acceptor; for a generated CA also returns the CA path to print.
pub fn acceptor(
    source: &TlsSource,
    data_dir: &Path,
) -> anyhow::Result<(TlsAcceptor, Option<PathBuf>)> {
    let (cert_pem, key_pem, ca) = match source {
        TlsSource::Files { cert, key } => (
            std::fs::read_to_string(cert).with_context(|| format!("read {}", cert.display()))?,
            std::fs::read_to_string(key).with_context(|| format!("read {}", key.display()))?,
            None,
        ),
        TlsSource::Generated { names } => {
            let (c, k, ca) = generated(data_dir, names)?;
            (c, k, Some(ca))
        }
    };
    let certs = rustls_pemfile::certs(&mut cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .context("parse certificate PEM")?;
    let key = rustls_pemfile::private_key(&mut key_pem.as_bytes())
        .context("parse private key PEM")?
        .context("no private key in the key file")?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("certificate and key do not match")?;
    // HTTP/2 where the client offers it (E2B's Python SDK does), else HTTP/1.1; WebSockets stay
    // on HTTP/1.1 connections (no extended CONNECT is announced).
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((TlsAcceptor::from(Arc::new(config)), ca))
}
