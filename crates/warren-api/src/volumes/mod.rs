//! Persistent volumes: a directory per volume, `<tenant digest>/<id>`, indexed in the store
//! (`VolumeRecord`). Two backends hold the directories: on one machine, each volume is its own
//! ext4 image under `<data-dir>/volumes` (`image.rs`); in a cluster, a directory of the shared
//! JuiceFS store every node mounts (`warren-volume-fs`), sized by a JuiceFS directory quota.
//! Both APIs create, list and delete them; E2B's content API reads and writes their files with
//! a token scoped to one volume (`content`). Creates mount them (`lifecycle/volumes.rs`): the
//! namespace tier through idmapped mounts, gVisor through its gofer.

pub mod content;
mod image;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use warren_volume_fs::SharedStore;

use crate::tokens::TokenSigner;
use content::{ContentError, VolumeFiles, ID_BASE};
pub use image::ImageError;

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
    /// The cluster's shared store, when volumes live there (`--volumes-juicefs`).
    shared: Option<Arc<SharedStore>>,
}

fn store_error(e: warren_volume_fs::StoreError) -> ImageError {
    ImageError::Tool {
        tool: "juicefs",
        output: e.to_string(),
    }
}

impl Volumes {
    pub fn new(data_dir: &Path) -> Self {
        Self {
            root: data_dir.join("volumes"),
            shared: None,
        }
    }

    /// Volumes in the cluster's shared store, which this machine has attached.
    pub fn shared(data_dir: &Path, store: Arc<SharedStore>) -> Self {
        Self {
            root: data_dir.join("volumes"),
            shared: Some(store),
        }
    }

    /// Whether every node of the cluster reaches the volumes (else only this machine does).
    pub fn is_shared(&self) -> bool {
        self.shared.is_some()
    }

    /// Where the volume is inside its backend's root: the same on every node.
    pub fn key(tenant: &str, id: &str) -> String {
        format!("{}/{id}", hex::encode(Sha256::digest(tenant.as_bytes())))
    }

    /// The volume's directory on this machine.
    pub fn dir(&self, tenant: &str, id: &str) -> PathBuf {
        match &self.shared {
            Some(store) => store.files().join(Self::key(tenant, id)),
            None => self.root.join(Self::key(tenant, id)),
        }
    }

    /// What a sandbox on this machine mounts: the shared store's id-keeping view of the volume,
    /// or the volume's own file system, mounted.
    pub fn mount_source(&self, tenant: &str, id: &str) -> Result<PathBuf, ImageError> {
        match &self.shared {
            Some(store) => Ok(store.view().join(Self::key(tenant, id))),
            None => self.mounted(tenant, id),
        }
    }

    /// Makes the volume: an empty file system of `bytes` (`image.rs`), mounted at its
    /// directory, whose root is root's inside sandboxes and open to every user of them (mode
    /// 0777): Hopx's SDKs run as root, E2B's as `user`, and both write to it.
    pub fn create(&self, tenant: &str, id: &str, bytes: u64) -> Result<(), ImageError> {
        use std::os::unix::fs::PermissionsExt;
        let dir = self.dir(tenant, id);
        let fail = |what| move |source| ImageError::Io { what, source };
        if let Some(store) = &self.shared {
            return self.create_shared(store, tenant, id, bytes);
        }
        if let Some(parent) = dir.parent() {
            std::fs::create_dir_all(parent).map_err(fail("make the tenant's volume directory"))?;
            std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o700))
                .map_err(fail("protect the tenant's volume directory"))?;
        }
        let made = image::make(&image::image_of(&dir), bytes, ID_BASE)
            .and_then(|()| image::mount(&image::image_of(&dir), &dir))
            .and_then(|()| {
                // mkfs's lost+found is fsck's, not the user's; fsck makes it again if it needs one.
                let _ = std::fs::remove_dir(dir.join("lost+found"));
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777))
                    .map_err(fail("open the volume to its sandboxes' users"))
            });
        if made.is_err() {
            let _ = image::unmount(&dir);
            let _ = std::fs::remove_file(image::image_of(&dir));
            let _ = std::fs::remove_dir(&dir);
        }
        made
    }

    /// A directory of the shared store, root's inside sandboxes and open to all their users,
    /// limited to `bytes` by a JuiceFS quota.
    fn create_shared(
        &self,
        store: &SharedStore,
        tenant: &str,
        id: &str,
        bytes: u64,
    ) -> Result<(), ImageError> {
        use std::os::unix::fs::PermissionsExt;
        let dir = self.dir(tenant, id);
        let fail = |what| move |source| ImageError::Io { what, source };
        if let Some(parent) = dir.parent() {
            std::fs::create_dir_all(parent).map_err(fail("make the tenant's volume directory"))?;
            std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o700))
                .map_err(fail("protect the tenant's volume directory"))?;
        }
        std::fs::create_dir(&dir).map_err(fail("make the volume's directory"))?;
        let made = std::os::unix::fs::chown(&dir, Some(ID_BASE), Some(ID_BASE))
            .and_then(|()| std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)))
            .map_err(fail("hand the volume to its sandboxes' users"))
            .and_then(|()| {
                store
                    .set_size(&Self::key(tenant, id), bytes)
                    .map_err(store_error)
            });
        if made.is_err() {
            let _ = std::fs::remove_dir(&dir);
        }
        made
    }

    /// The volume's directory, its file system mounted there (after a restart of the machine,
    /// or of a server that unmounted it on its way out).
    pub fn mounted(&self, tenant: &str, id: &str) -> Result<PathBuf, ImageError> {
        let dir = self.dir(tenant, id);
        if self.shared.is_some() {
            return Ok(dir);
        }
        let img = image::image_of(&dir);
        // A volume made before volumes had images is a plain directory, without a size limit.
        if img.exists() || !dir.is_dir() {
            image::mount(&img, &dir)?;
        }
        Ok(dir)
    }

    pub fn files(&self, tenant: &str, id: &str) -> Result<VolumeFiles, ContentError> {
        let dir = self.mounted(tenant, id).map_err(|e| ContentError::Io {
            what: "mount the volume",
            path: "/".into(),
            source: std::io::Error::other(e.to_string()),
        })?;
        VolumeFiles::open(&dir)
    }

    /// Copies every file of volume `from` into the (new, empty) volume `to`: owners, modes,
    /// times, links and extended attributes kept, symlinks copied as links, never followed.
    /// coreutils' `cp -a` does this with an argv; a recursive copier by hand would have to get
    /// every file type, hard link and xattr right again.
    pub fn copy_files(&self, tenant: &str, from: &str, to: &str) -> Result<(), ImageError> {
        let (src, dst) = (self.mounted(tenant, from)?, self.mounted(tenant, to)?);
        let out = std::process::Command::new("cp")
            .args(["-a", "--reflink=auto", "--"])
            .arg(src.join("."))
            .arg(&dst)
            .output()
            .map_err(|source| ImageError::Io {
                what: "run cp",
                source,
            })?;
        if out.status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        // A full image says ENOSPC; a JuiceFS quota says EDQUOT.
        Err(
            if stderr.contains("No space left") || stderr.contains("quota exceeded") {
                ImageError::Full(stderr)
            } else {
                ImageError::Tool {
                    tool: "cp",
                    output: stderr,
                }
            },
        )
    }

    /// Bytes the volume's files take.
    pub fn usage(&self, tenant: &str, id: &str) -> Result<u64, ImageError> {
        match &self.shared {
            Some(store) => store.used(&Self::key(tenant, id)).map_err(store_error),
            None => image::usage(&self.mounted(tenant, id)?).map(|(used, _)| used),
        }
    }

    /// Deletes the volume's files: unmounts its file system and removes the image.
    pub async fn remove(&self, tenant: &str, id: &str) -> Result<(), ImageError> {
        let dir = self.dir(tenant, id);
        let (shared, key) = (self.shared.clone(), Self::key(tenant, id));
        let removed = tokio::task::spawn_blocking(move || {
            if let Some(store) = shared {
                // A quota left on a removed directory would count against nothing, but JuiceFS
                // keeps it: drop it first.
                let _ = store.drop_size(&key);
                return match std::fs::remove_dir_all(&dir) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(ImageError::Io {
                        what: "remove the volume's files",
                        source: e,
                    }),
                    _ => Ok(()),
                };
            }
            image::unmount(&dir)?;
            let gone = |r: std::io::Result<()>| match r {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            };
            gone(std::fs::remove_file(image::image_of(&dir)))
                .and_then(|()| gone(std::fs::remove_dir(&dir)))
                .map_err(|source| ImageError::Io {
                    what: "remove the volume's image",
                    source,
                })
        })
        .await;
        removed.unwrap_or_else(|_| {
            Err(ImageError::Io {
                what: "remove the volume",
                source: std::io::Error::other("the removal panicked"),
            })
        })
    }

    /// Unmounts every volume's file system from this machine's view (at shutdown): sandboxes
    /// that run on keep their own mounts, and the loop device goes with the last of them.
    pub fn unmount_all(&self) {
        if let Some(store) = &self.shared {
            store.detach();
            return;
        }
        let Ok(tenants) = std::fs::read_dir(&self.root) else {
            return;
        };
        for tenant in tenants.flatten() {
            let Ok(volumes) = std::fs::read_dir(tenant.path()) else {
                continue;
            };
            for v in volumes.flatten() {
                if let Err(e) = image::unmount(&v.path()) {
                    tracing::warn!(volume = %v.path().display(), error = %e, "cannot unmount a volume");
                }
            }
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
