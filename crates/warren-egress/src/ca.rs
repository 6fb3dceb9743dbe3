//! The node's own CA, with which the proxy terminates TLS for hosts a sandbox has secrets for.
//! Its certificate is put in the sandbox's trust store (see warren-runtime); its key never
//! leaves the host's data dir. Leaf certificates are minted per name and kept.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    #[error("certificate: {0}")]
    Cert(#[from] rcgen::Error),
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
}

pub struct NodeCa {
    /// What sandboxes trust.
    pub cert_pem: String,
    issuer: rcgen::Certificate,
    key: KeyPair,
    leaves: Mutex<HashMap<String, Arc<rustls::ServerConfig>>>,
}

/// A self-signed CA kept in a directory as `ca.key` (readable by root only) and `ca.pem`, made
/// on first use and re-derived from the stored key at every start. The node's egress CA and the
/// API's local TLS CA (warren-api's `tls`) are both this.
pub struct LocalCa {
    pub issuer: rcgen::Certificate,
    pub key: KeyPair,
    /// The certificate as first written: what clients were told to trust.
    pub cert_pem: String,
    pub cert_path: PathBuf,
}

impl LocalCa {
    pub fn load_or_make(dir: &Path, common_name: &str) -> Result<Self, CaError> {
        let io = |what: &str| {
            let what = format!("{what} {}", dir.display());
            move |e| CaError::Io(what, e)
        };
        std::fs::create_dir_all(dir).map_err(io("create"))?;
        let (key_path, cert_path) = (dir.join("ca.key"), dir.join("ca.pem"));
        let key = match std::fs::read_to_string(&key_path) {
            Ok(pem) => KeyPair::from_pem(&pem)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = KeyPair::generate()?;
                create_private(&key_path, key.serialize_pem().as_bytes())
                    .map_err(io("write the key in"))?;
                key
            }
            Err(e) => return Err(io("read the key in")(e)),
        };
        let issuer = ca_params(common_name)?.self_signed(&key)?;
        let cert_pem = match std::fs::read_to_string(&cert_path) {
            Ok(pem) => pem,
            Err(_) => {
                let pem = issuer.pem();
                std::fs::write(&cert_path, &pem).map_err(io("write the certificate in"))?;
                pem
            }
        };
        Ok(Self {
            issuer,
            key,
            cert_pem,
            cert_path,
        })
    }
}

fn ca_params(common_name: &str) -> Result<CertificateParams, rcgen::Error> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.distinguished_name.push(DnType::CommonName, common_name);
    p.distinguished_name
        .push(DnType::OrganizationName, "Warren");
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    // Fixed dates: the CA is re-derived from its stored key at each start and must keep the same
    // subject and validity.
    p.not_before = rcgen::date_time_ymd(2024, 1, 1);
    p.not_after = rcgen::date_time_ymd(2044, 1, 1);
    Ok(p)
}

/// Writes a new file only root can read; an existing file is an error, never overwritten (a
/// replaced key would orphan everything made with the old one).
pub fn create_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(data)
}

impl NodeCa {
    /// Loads the CA kept in `dir`, or makes one there.
    pub fn load_or_create(dir: &Path) -> Result<Self, CaError> {
        let ca = LocalCa::load_or_make(dir, "Warren egress proxy CA")?;
        Ok(Self {
            cert_pem: ca.cert_pem,
            issuer: ca.issuer,
            key: ca.key,
            leaves: Mutex::default(),
        })
    }

    /// A TLS server configuration presenting a certificate for `name` (HTTP/1.1 only: the proxy
    /// reads each request).
    pub fn server_config(&self, name: &str) -> Result<Arc<rustls::ServerConfig>, CaError> {
        let mut leaves = self.leaves.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = leaves.get(name) {
            return Ok(c.clone());
        }
        let mut params = CertificateParams::new(vec![name.to_owned()])?;
        params.distinguished_name.push(DnType::CommonName, name);
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(90);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let leaf_key = KeyPair::generate()?;
        let leaf = params.signed_by(&leaf_key, &self.issuer, &self.key)?;
        let chain = vec![
            CertificateDer::from(leaf.der().to_vec()),
            CertificateDer::from(self.issuer.der().to_vec()),
        ];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
        let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        let cfg = Arc::new(cfg);
        // Names are few per node (the hosts secrets are bound to); still, keep the map bounded.
        if leaves.len() > 4096 {
            leaves.clear();
        }
        leaves.insert(name.to_owned(), cfg.clone());
        Ok(cfg)
    }
}

/// The roots the proxy checks upstream certificates against: the web's (webpki-roots) and the
/// operator's extra CAs (`--egress-upstream-ca`).
pub fn upstream_config(extra_pem: &[String]) -> Result<Arc<rustls::ClientConfig>, CaError> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    for pem in extra_pem {
        for cert in rustls_pemfile::certs(&mut pem.as_bytes()) {
            let cert = cert.map_err(|e| CaError::Io("read an upstream CA".into(), e))?;
            roots.add(cert)?;
        }
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_local_ca_is_made_once_with_a_private_key_and_kept_across_starts() {
        let dir = tempfile::tempdir().expect("temp dir");
        let first = LocalCa::load_or_make(dir.path(), "Test CA").expect("CA");
        let mode = std::fs::metadata(dir.path().join("ca.key"))
            .expect("key file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = LocalCa::load_or_make(dir.path(), "Test CA").expect("CA");
        assert_eq!(first.cert_pem, again.cert_pem);
        assert_eq!(first.key.serialize_pem(), again.key.serialize_pem());
        // An existing key is never overwritten.
        assert!(create_private(&dir.path().join("ca.key"), b"x").is_err());
    }
}
