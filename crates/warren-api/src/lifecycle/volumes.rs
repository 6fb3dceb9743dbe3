//! Persistent volumes on the create path: the mounts a create names (or a snapshot's copy
//! inherits), checked and found; recorded with the sandbox under the admission lock, which a
//! volume's delete takes too, so that a create mounting a volume and its delete cannot both win.

use warren_store::{MountRecord, SnapshotRecord, VolumeDeleted};
use warren_wire::control::SandboxVolume;

use super::{Lifecycle, LifecycleError, LifecycleResult};

/// Most volumes one sandbox mounts.
const MAX_MOUNTS: usize = 16;

/// Where the sandbox's own machinery lives: no volume may cover these or a directory above them.
const RESERVED: [&str; 5] = ["/proc", "/sys", "/dev", "/.warren", "/run/warren"];

/// Why a mount path is refused: it must be absolute and clean (no `.`, `..`, `//` or trailing
/// `/`), not `/`, and clear of the sandbox's own mounts.
pub(crate) fn check_mount_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') || path == "/" {
        return Err("must be an absolute path below /".into());
    }
    if path.len() > 1024 || path.contains('\0') {
        return Err("is too long or holds a NUL byte".into());
    }
    if path
        .split('/')
        .skip(1)
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err("must be a clean path (no '.', '..', '//' or trailing '/')".into());
    }
    let under =
        |outer: &str, inner: &str| inner == outer || inner.starts_with(&format!("{outer}/"));
    if let Some(r) = RESERVED.iter().find(|r| under(r, path) || under(path, r)) {
        return Err(format!("would cover {r}, which the sandbox needs"));
    }
    Ok(())
}

impl Lifecycle {
    /// The mounts a create asks for, the caller's volumes found by name (or id), in path order
    /// (a parent before what is mounted inside it). A snapshot's copy that names none mounts
    /// what its source sandbox mounted.
    pub(super) async fn asked_volumes(
        &self,
        asked: Option<&[SandboxVolume]>,
        snapshot: Option<&SnapshotRecord>,
        tenant: &str,
    ) -> LifecycleResult<Vec<MountRecord>> {
        let asked = match (asked, snapshot) {
            (Some(asked), _) => asked.to_vec(),
            (None, Some(snap)) => self.inherited(snap).await?,
            (None, None) => return Ok(Vec::new()),
        };
        if asked.len() > MAX_MOUNTS {
            return Err(LifecycleError::Invalid(format!(
                "volumes: at most {MAX_MOUNTS} per sandbox; {} asked",
                asked.len()
            )));
        }
        let mut mounts: Vec<MountRecord> = Vec::with_capacity(asked.len());
        for m in asked {
            check_mount_path(&m.path).map_err(|why| {
                LifecycleError::Invalid(format!("volume mount path {:?} {why}", m.path))
            })?;
            if mounts.iter().any(|seen| seen.path == m.path) {
                return Err(LifecycleError::Invalid(format!(
                    "volume mount path {:?} is named twice",
                    m.path
                )));
            }
            let found = self
                .store
                .find_volume(tenant, &m.name)
                .await?
                .ok_or_else(|| {
                    LifecycleError::Invalid(format!(
                        "volume mount {}: no volume named {:?}",
                        m.path, m.name
                    ))
                })?;
            mounts.push(MountRecord {
                volume_id: found.id,
                name: Some(found.name),
                path: m.path,
                read_only: m.read_only,
            });
        }
        mounts.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(mounts)
    }

    /// What the snapshot's source sandbox mounted: its copies share the same volumes.
    async fn inherited(&self, snap: &SnapshotRecord) -> LifecycleResult<Vec<SandboxVolume>> {
        let mounts = self.store.mounts_of(&snap.source_sandbox_id).await?;
        mounts
            .into_iter()
            .map(|m| match m.name {
                Some(name) => Ok(SandboxVolume {
                    name,
                    path: m.path,
                    read_only: m.read_only,
                }),
                None => Err(LifecycleError::Invalid(format!(
                    "snapshot {}: the volume its sandbox mounted at {} was deleted; name the \
                     volumes to mount instead",
                    snap.id, m.path
                ))),
            })
            .collect()
    }

    /// The mounts as the node makes them. On this machine: each volume's directory, its file
    /// system mounted there (or the shared store's view of it). For a joined node: where the
    /// volume is inside the shared store, which the node resolves in its own view.
    pub(super) async fn node_mounts(
        &self,
        tenant: &str,
        mounts: &[MountRecord],
        joined_node: bool,
    ) -> LifecycleResult<Vec<warren_runtime::VolumeMount>> {
        let mut shown = Vec::with_capacity(mounts.len());
        for m in mounts {
            let source = if joined_node {
                std::path::PathBuf::from(crate::volumes::Volumes::key(tenant, &m.volume_id))
            } else {
                let (volumes, t, id) =
                    (self.volumes.clone(), tenant.to_owned(), m.volume_id.clone());
                tokio::task::spawn_blocking(move || volumes.mount_source(&t, &id))
                    .await
                    .map_err(|e| LifecycleError::Unavailable(format!("mount a volume: {e}")))?
                    .map_err(|e| {
                        LifecycleError::Unavailable(format!("volume at {}: {e}", m.path))
                    })?
            };
            shown.push(warren_runtime::VolumeMount {
                source,
                target: m.path.clone(),
                read_only: m.read_only,
            });
        }
        Ok(shown)
    }

    /// Checks again, with the admission lock held (shared; a delete takes it exclusively), that
    /// each volume still exists: a delete
    /// between the create's check and now would otherwise leave it mounting a removed directory.
    pub(super) async fn volumes_still_there(
        &self,
        tenant: &str,
        mounts: &[MountRecord],
    ) -> LifecycleResult<()> {
        for m in mounts {
            if self
                .store
                .find_volume(tenant, &m.volume_id)
                .await?
                .is_none()
            {
                return Err(LifecycleError::Conflict(format!(
                    "volume {} was deleted while the sandbox was being created",
                    m.name.as_deref().unwrap_or(&m.volume_id)
                )));
            }
        }
        Ok(())
    }

    /// Deletes a volume's record unless a sandbox that has not ended mounts it.
    pub async fn delete_volume(&self, tenant: &str, id: &str) -> LifecycleResult<VolumeDeleted> {
        let _admission = self.admission.write().await;
        Ok(self.store.delete_volume(tenant, id).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::check_mount_path;

    #[test]
    fn mount_paths_are_absolute_clean_and_clear_of_the_sandboxs_own() {
        for ok in [
            "/mnt/data",
            "/workspace/shared",
            "/home/user/models",
            "/runtime",
        ] {
            assert_eq!(check_mount_path(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "/",
            "mnt",
            "/mnt/",
            "/mnt//x",
            "/mnt/./x",
            "/mnt/../etc",
            "/proc",
            "/proc/self",
            "/dev/shm",
            "/run",
            "/run/warren",
            "/.warren",
            "/sys/fs",
        ] {
            assert!(check_mount_path(bad).is_err(), "{bad}");
        }
    }
}
