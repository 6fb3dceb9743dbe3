//! Snapshots and fork: `POST /v1/sandboxes/{id}/snapshot` copies what a running sandbox changed
//! in its file system into a layer of its own (the node's driver does the copy, the sandbox
//! frozen meanwhile and running on after); a create with `snapshot_id` starts a sandbox on that
//! layer stacked on the source's layers. Copies share the layer read-only, each with its own
//! writable layer, so a write in one is never seen by another or by the source. A snapshot is
//! its tenant's; it is deleted with its layer once no sandbox runs from it.
//!
//! On the microVM tier a snapshot is the whole machine, memory included (the driver saves the
//! guest's state and copies its writable disk, the guest running on after): copies resume from
//! it with the source's processes, interpreter state and files, each on its own disk.

use warren_core::{SandboxId, SandboxStatus};
use warren_runtime::{Snapshot, SnapshotTaken};
use warren_store::{SandboxRecord, SnapshotRecord};

use super::{Lifecycle, LifecycleError, LifecycleResult};
use crate::clock::now;
use crate::template_spec::TemplateSpec;

/// Snapshots one tenant may keep: each holds up to its sandbox's disk size on the host's disk.
pub const MAX_SNAPSHOTS_PER_TENANT: usize = 100;

impl Lifecycle {
    /// How the sandbox `rec` runs: its snapshot's spec, or its template's.
    pub(super) async fn run_spec_of(&self, rec: &SandboxRecord) -> LifecycleResult<TemplateSpec> {
        if let Some(snap) = &rec.snapshot_id {
            let found = self
                .store
                .get_snapshot(snap, &rec.tenant)
                .await?
                .ok_or_else(|| LifecycleError::SnapshotNotFound(snap.clone()))?;
            return snapshot_spec(&found);
        }
        let template = self
            .store
            .find_template(&rec.template_id, &rec.tenant)
            .await?
            .ok_or_else(|| LifecycleError::TemplateNotFound(rec.template_name.clone()))?;
        self.templates.runnable(&template).await
    }

    /// Takes a snapshot of a running (or paused) sandbox of `tenant`.
    pub async fn snapshot(&self, id: &SandboxId, tenant: &str) -> LifecycleResult<SnapshotRecord> {
        self.snapshot_as(id, tenant, None, false).await
    }

    /// `snapshot` with a name (E2B's), or as a fork's own snapshot (`ephemeral`: removed once no
    /// copy runs from it, see `remove_unused_fork_snapshots`).
    pub async fn snapshot_as(
        &self,
        id: &SandboxId,
        tenant: &str,
        name: Option<&str>,
        ephemeral: bool,
    ) -> LifecycleResult<SnapshotRecord> {
        let rec = self.get_owned(id, tenant).await?;
        if !matches!(rec.status, SandboxStatus::Running | SandboxStatus::Paused) {
            return Err(LifecycleError::InvalidState {
                action: "snapshot",
                status: rec.status,
            });
        }
        let node = self.node_of(&rec).ok_or(LifecycleError::SandboxNotFound)?;
        let kept = self.store.list_snapshots(tenant).await?.len();
        if kept >= MAX_SNAPSHOTS_PER_TENANT {
            // Each holds up to its sandbox's disk size on this machine's disk.
            return Err(LifecycleError::Conflict(format!(
                "this organization keeps {kept} snapshots, the most it may; delete some first"
            )));
        }
        let snap_id = format!("snap_{}", SandboxId::generate());
        let dir = self.snapshots_dir.join(&snap_id);
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| LifecycleError::Unavailable(format!("snapshot directory: {e}")))?;
        // The copy, how the source runs (stacked under it), and its record; nothing is kept
        // if one of them fails.
        let made = async {
            let taken = node
                .snapshot(id, &dir)
                .await
                .map_err(|e| LifecycleError::from_node(e, "snapshot", rec.status))?;
            let run = self.run_spec_of(&rec).await?;
            let record = snapshot_record(&snap_id, &rec, taken, run, name, ephemeral)?;
            self.store.insert_snapshot(&record).await?;
            Ok::<_, LifecycleError>(record)
        }
        .await;
        match made {
            Ok(record) => {
                tracing::info!(sandbox = %id, snapshot = %record.id, bytes = record.size_bytes, "snapshot taken");
                Ok(record)
            }
            Err(e) => {
                let _ = tokio::fs::remove_dir_all(&dir).await;
                Err(e)
            }
        }
    }

    /// A tenant's snapshot (another tenant's is not found, like a missing one).
    pub async fn owned_snapshot(&self, id: &str, tenant: &str) -> LifecycleResult<SnapshotRecord> {
        self.store
            .get_snapshot(id, tenant)
            .await?
            .ok_or_else(|| LifecycleError::SnapshotNotFound(id.to_owned()))
    }

    pub async fn list_snapshots(&self, tenant: &str) -> LifecycleResult<Vec<SnapshotRecord>> {
        Ok(self.store.list_snapshots(tenant).await?)
    }

    /// Deletes a snapshot and its layer; refused while sandboxes run from it (they have the layer
    /// mounted).
    pub async fn delete_snapshot(&self, id: &str, tenant: &str) -> LifecycleResult<()> {
        let snap = self.owned_snapshot(id, tenant).await?;
        let users = self.store.snapshot_users(id).await?;
        if users > 0 {
            return Err(LifecycleError::Conflict(format!(
                "{users} sandbox(es) still run from snapshot {id}; kill them first"
            )));
        }
        self.store.delete_snapshot(id).await?;
        // Its directory holds the layer or the saved machine (ids are generated, never a path).
        let dir = self.snapshots_dir.join(&snap.id);
        if let Err(e) = tokio::fs::remove_dir_all(&dir).await {
            tracing::warn!(snapshot = id, error = %e, "cannot remove the snapshot's files");
        }
        Ok(())
    }
}

impl Lifecycle {
    /// Deletes fork snapshots taken here that no sandbox runs from any more (ten seconds after
    /// they were taken at the earliest: the fork records its copies just after taking it).
    pub(super) async fn remove_unused_fork_snapshots(&self) {
        let unused = match self.store.ephemeral_unused(now() - 10).await {
            Ok(u) => u,
            Err(e) => {
                tracing::warn!(error = %e, "cannot look for unused fork snapshots");
                return;
            }
        };
        // Another control plane's are on its own machine.
        for snap in unused
            .iter()
            .filter(|s| std::path::Path::new(&s.layer_dir).starts_with(&self.snapshots_dir))
        {
            if let Err(e) = self.delete_snapshot(&snap.id, &snap.tenant).await {
                tracing::warn!(snapshot = %snap.id, error = %e, "cannot remove an unused fork snapshot");
            }
        }
    }
}

/// How a copy of the snapshot runs.
pub(super) fn snapshot_spec(snap: &SnapshotRecord) -> LifecycleResult<TemplateSpec> {
    serde_json::from_str(&snap.spec).map_err(|e| {
        LifecycleError::Unavailable(format!("snapshot {} is unreadable: {e}", snap.id))
    })
}

/// The record of snapshot `id` of sandbox `rec`: what was `taken` on top of how the source runs.
fn snapshot_record(
    id: &str,
    rec: &SandboxRecord,
    taken: SnapshotTaken,
    run: TemplateSpec,
    name: Option<&str>,
    ephemeral: bool,
) -> LifecycleResult<SnapshotRecord> {
    let mut spec = run;
    let content = match taken.snapshot {
        Snapshot::Layer(layer) => {
            spec.layers.insert(0, layer.clone());
            layer
        }
        Snapshot::SavedState(saved) => {
            spec.saved_state = Some(saved.clone());
            saved
        }
    };
    Ok(SnapshotRecord {
        id: id.to_owned(),
        tenant: rec.tenant.clone(),
        source_sandbox_id: rec.id.to_string(),
        template_id: rec.template_id.clone(),
        template_name: rec.template_name.clone(),
        isolation: rec.isolation,
        spec: serde_json::to_string(&spec)
            .map_err(|e| LifecycleError::Unavailable(e.to_string()))?,
        layer_dir: content.display().to_string(),
        size_bytes: i64::try_from(taken.bytes).unwrap_or(i64::MAX),
        created_at: now(),
        name: name.map(str::to_owned),
        ephemeral,
    })
}
