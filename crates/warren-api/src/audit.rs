//! The audit trail (Hopx: "log all code executions for audit trails"). Every mutating control-plane
//! call (`ControlAction`, named by its route) and every agent action that runs code or changes
//! files or env (`warren_node::AgentAction`, named by the node's proxy) is recorded with time,
//! tenant, key id (never the key), sandbox, action, the input's size and SHA-256 (never its
//! content), outcome and duration. Events go through a bounded channel to one writer task that
//! batches them into the store; a full channel slows requests down rather than dropping events.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use warren_store::{AuditEvent, Store};

const CHANNEL_DEPTH: usize = 4096;
const BATCH: usize = 256;

pub struct Auditor {
    tx: mpsc::Sender<AuditEvent>,
}

impl Auditor {
    /// Starts the writer.
    pub fn start(store: Store) -> Arc<Self> {
        let (tx, mut rx) = mpsc::channel::<AuditEvent>(CHANNEL_DEPTH);
        let writer_store = store;
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(BATCH);
            while rx.recv_many(&mut batch, BATCH).await > 0 {
                if let Err(e) = writer_store.append_audit(&batch).await {
                    tracing::error!(error = %e, events = batch.len(), "cannot write audit events");
                }
                batch.clear();
            }
        });
        Arc::new(Self { tx })
    }

    pub async fn record(&self, event: AuditEvent) {
        if self.tx.send(event).await.is_err() {
            tracing::error!("audit writer is gone; event lost");
        }
    }
}

/// Removes audit events older than `retention`, at start and then hourly.
pub async fn purge_forever(store: Store, retention: Duration) {
    loop {
        let cutoff = now_ms() - retention.as_millis() as i64;
        match store.purge_audit(cutoff).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(purged = n, "audit events past retention removed"),
            Err(e) => tracing::warn!(error = %e, "audit purge failed"),
        }
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
}

pub use crate::clock::now_ms;

/// A mutating control-plane action, as its route declares it (`routes::audited`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlAction {
    SandboxCreate,
    SandboxDelete,
    SandboxPause,
    SandboxResume,
    SandboxStop,
    SandboxStart,
    SandboxTimeout,
    SandboxNetwork,
    SandboxTokenRefresh,
    SandboxSnapshot,
    SnapshotDelete,
    /// The server's own: a sandbox's timeout passed.
    SandboxExpire,
    /// The server's own: a sandbox unused for `--idle-pause` was paused.
    SandboxIdlePause,
    TemplateBuild,
    TemplateDelete,
    TemplateUploadLink,
    KeyCreate,
    KeyRevoke,
    KeyRotate,
    NodeDrain,
    NodeActivate,
    SecretPut,
    SecretDelete,
    VolumeCreate,
    VolumeDelete,
    VolumeClone,
}

impl ControlAction {
    /// The name in the audit trail.
    pub fn as_str(self) -> &'static str {
        use ControlAction::*;
        match self {
            SandboxCreate => "sandbox.create",
            SandboxDelete => "sandbox.delete",
            SandboxPause => "sandbox.pause",
            SandboxResume => "sandbox.resume",
            SandboxStop => "sandbox.stop",
            SandboxStart => "sandbox.start",
            SandboxTimeout => "sandbox.timeout",
            SandboxNetwork => "sandbox.network",
            SandboxTokenRefresh => "sandbox.token_refresh",
            SandboxSnapshot => "sandbox.snapshot",
            SnapshotDelete => "snapshot.delete",
            SandboxExpire => "sandbox.expire",
            SandboxIdlePause => "sandbox.idle_pause",
            TemplateBuild => "template.build",
            TemplateDelete => "template.delete",
            TemplateUploadLink => "template.upload_link",
            KeyCreate => "key.create",
            KeyRevoke => "key.revoke",
            KeyRotate => "key.rotate",
            NodeDrain => "node.drain",
            NodeActivate => "node.activate",
            SecretPut => "secret.put",
            SecretDelete => "secret.delete",
            VolumeCreate => "volume.create",
            VolumeDelete => "volume.delete",
            VolumeClone => "volume.clone",
        }
    }

    /// Whether the route's `{id}` names the sandbox acted on.
    pub fn names_sandbox(self) -> bool {
        use ControlAction::*;
        matches!(
            self,
            SandboxDelete
                | SandboxPause
                | SandboxResume
                | SandboxStop
                | SandboxStart
                | SandboxTimeout
                | SandboxNetwork
                | SandboxTokenRefresh
                | SandboxSnapshot
        )
    }
}

/// The audit record of one agent call the node's proxy saw.
pub fn agent_event(call: warren_node::AgentCall) -> AuditEvent {
    AuditEvent {
        at: now_ms(),
        tenant: call.owner,
        key_id: call.key_id,
        sandbox_id: Some(call.sandbox.to_string()),
        action: call.action.as_str().to_owned(),
        input_bytes: Some(i64::try_from(call.input_bytes).unwrap_or(i64::MAX)),
        input_sha256: call.input_sha256,
        outcome: call.outcome,
        status_code: Some(i64::from(call.status_code)),
        duration_ms: i64::try_from(call.duration.as_millis()).unwrap_or(i64::MAX),
        request_id: Some(call.request_id),
        ..Default::default()
    }
}
