//! COPY contexts: `POST /v1/templates/files/upload-link` hands out a one-time URL on this server;
//! the SDK PUTs the gzip tarball there without credentials (spec §3.9 step 3), so the URL itself is
//! the credential: 128 random bits, bound to one tenant and hash, valid for an hour.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;

use sha2::{Digest, Sha256};

const LINK_TTL_SECONDS: i64 = 3600;

struct Link {
    tenant: String,
    files_hash: String,
    max_bytes: u64,
    expires_at: i64,
}

/// The hash an upload link is asked for is not a hex digest.
#[derive(Debug, thiserror::Error)]
#[error("files_hash must be a hex digest")]
pub struct BadFilesHash;

pub struct Uploads {
    dir: PathBuf,
    links: Mutex<HashMap<String, Link>>,
}

fn valid_hash(h: &str) -> bool {
    !h.is_empty() && h.len() <= 128 && h.bytes().all(|b| b.is_ascii_hexdigit())
}

fn tenant_dir(tenant: &str) -> String {
    hex::encode(Sha256::digest(tenant.as_bytes()))
}

impl Uploads {
    pub fn new(data_dir: &std::path::Path) -> Self {
        Self {
            dir: data_dir.join("uploads"),
            links: Mutex::new(HashMap::new()),
        }
    }

    /// A one-time upload token for `files_hash`, or an error for a malformed hash.
    pub fn link(
        &self,
        tenant: &str,
        files_hash: &str,
        max_bytes: u64,
        now: i64,
    ) -> Result<(String, i64), BadFilesHash> {
        if !valid_hash(files_hash) {
            return Err(BadFilesHash);
        }
        let token = hex::encode(rand::random::<[u8; 16]>());
        let expires_at = now + LINK_TTL_SECONDS;
        let mut links = self.links.lock().unwrap_or_else(|p| p.into_inner());
        links.retain(|_, l| l.expires_at > now);
        links.insert(
            token.clone(),
            Link {
                tenant: tenant.to_owned(),
                files_hash: files_hash.to_owned(),
                max_bytes,
                expires_at,
            },
        );
        Ok((token, expires_at))
    }

    /// Consumes a token: where to write the upload, and the most bytes it may have.
    pub fn redeem(&self, token: &str, now: i64) -> Option<(PathBuf, u64)> {
        let link = self
            .links
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(token)?;
        (link.expires_at > now).then(|| (self.path(&link.tenant, &link.files_hash), link.max_bytes))
    }

    fn path(&self, tenant: &str, files_hash: &str) -> PathBuf {
        self.dir
            .join(tenant_dir(tenant))
            .join(format!("{files_hash}.tar.gz"))
    }

    /// The stored upload for a hash: (SHA-256 of its uncompressed tar, path). The client's hash
    /// is only a name (for directories it does not cover their contents), and the gzip wrapper
    /// carries the time it was made; caching keys on the tar stream, which changes exactly when
    /// a file's name, mode, size, mtime or content does.
    pub fn stored(&self, tenant: &str, files_hash: &str) -> Option<(String, PathBuf)> {
        if !valid_hash(files_hash) {
            return None;
        }
        let path = self.path(tenant, files_hash);
        let file = std::fs::File::open(&path).ok()?;
        let mut tar = warren_runtime::layers::maybe_gunzip(file).ok()?;
        let mut hasher = Sha256::new();
        std::io::copy(&mut tar, &mut hasher).ok()?;
        Some((hex::encode(hasher.finalize()), path))
    }
}
