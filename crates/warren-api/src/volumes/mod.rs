//! Persistent volumes, single-machine backend: a directory per volume under
//! `<data-dir>/volumes/<tenant digest>/<id>`, indexed in the store (`VolumeRecord`). Both APIs
//! create, list and delete them; E2B's content API reads and writes their files with a token
//! scoped to one volume (`content`). Mounting into sandboxes comes next (issue 32): until then a
//! create that asks for one is refused by name.

pub mod content;

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::tokens::TokenSigner;
use content::{ContentError, VolumeFiles, ID_BASE};

/// E2B's rule for volume names.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

pub fn new_id() -> String {
    format!("vol_{}", hex::encode(rand::random::<[u8; 8]>()))
}

/// What a volume token's subject is: tokens are the sandbox tokens' kind (EdDSA, one subject),
/// and no sandbox id has this shape.
fn subject(volume_id: &str) -> String {
    format!("volume:{volume_id}")
}

/// A token for the content API of one volume (24 h).
pub fn token_for(
    signer: &TokenSigner,
    volume_id: &str,
    now: i64,
) -> Result<String, jsonwebtoken::errors::Error> {
    signer.issue(&subject(volume_id), None, now).map(|(t, _)| t)
}

/// Whether `token` is a valid, unexpired token for this volume.
pub fn token_allows(signer: &TokenSigner, token: &str, volume_id: &str) -> bool {
    signer
        .verifier()
        .sandbox(token, &subject(volume_id))
        .is_some()
}

pub struct Volumes {
    root: PathBuf,
}

impl Volumes {
    pub fn new(data_dir: &Path) -> Self {
        Self {
            root: data_dir.join("volumes"),
        }
    }

    fn dir(&self, tenant: &str, id: &str) -> PathBuf {
        self.root
            .join(hex::encode(Sha256::digest(tenant.as_bytes())))
            .join(id)
    }

    /// Makes the volume's empty directory, owned by root inside sandboxes.
    pub fn create(&self, tenant: &str, id: &str) -> std::io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let dir = self.dir(tenant, id);
        if let Some(parent) = dir.parent() {
            std::fs::create_dir_all(parent)?;
            std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o700))?;
        }
        std::fs::create_dir(&dir)?;
        std::os::unix::fs::chown(&dir, Some(ID_BASE), Some(ID_BASE))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
    }

    pub fn files(&self, tenant: &str, id: &str) -> Result<VolumeFiles, ContentError> {
        VolumeFiles::open(&self.dir(tenant, id))
    }

    /// Deletes the volume's files (std's `remove_dir_all` does not follow symlinks).
    pub async fn remove(&self, tenant: &str, id: &str) -> std::io::Result<()> {
        let dir = self.dir(tenant, id);
        match tokio::task::spawn_blocking(move || std::fs::remove_dir_all(dir)).await {
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Ok(r) => r,
            Err(_) => Err(std::io::Error::other("removing the volume panicked")),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_follow_e2b() {
        assert!(super::valid_name("data_set-1"));
        assert!(!super::valid_name(""));
        assert!(!super::valid_name("a/b"));
        assert!(!super::valid_name("a b"));
        assert!(!super::valid_name(&"x".repeat(65)));
    }
}
