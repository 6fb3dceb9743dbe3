//! Shapes between control planes and nodes: a node joining and reporting (`/v1/internal/nodes/*`
//! on a control plane) and a control plane's commands to a node (`/node/v1/*` on the node).
//! Neither is part of the Hopx contract; both sides are Warren, built from one tree.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What a node can hold.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeCapacity {
    pub vcpu: u32,
    pub memory_mb: u64,
    pub disk_mb: u64,
    /// Most sandboxes it runs at once.
    pub sandboxes: u32,
}

/// What a node holds now.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeUse {
    pub sandboxes: u32,
    /// Memory promised to its sandboxes (their limits, not what they touch).
    pub memory_mb: u64,
    pub vcpu: u32,
}

/// The node link's protocol: what a control plane and its nodes must share. Raised by a change
/// the other side would misread; a control plane takes nodes speaking
/// `MIN_NODE_PROTOCOL..=NODE_PROTOCOL` and refuses others with a message naming both versions.
pub const NODE_PROTOCOL: u32 = 1;
pub const MIN_NODE_PROTOCOL: u32 = 1;

/// Nodes of 0.1.0 sent no protocol: they speak the first.
fn first_protocol() -> u32 {
    1
}

/// `POST /v1/internal/nodes/join`, with `Authorization: Bearer <join secret>`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinRequest {
    /// Chosen by the node once and kept in its data dir: the same node after a restart.
    pub node_id: String,
    pub name: String,
    /// Where control planes reach the node's API (`http://127.0.0.2:7070`).
    pub api_url: String,
    /// The host its sandboxes' `public_host` URLs name.
    pub public_host: String,
    /// `http` or `https`, for those URLs.
    pub public_scheme: String,
    pub labels: BTreeMap<String, String>,
    pub report: NodeReport,
    /// The CA (PEM) the node's HTTPS certificate chains to, when it generated one: control
    /// planes trust it for this node only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_pem: Option<String>,
    /// The node link protocol it speaks (`NODE_PROTOCOL` of its build).
    #[serde(default = "first_protocol")]
    pub protocol: u32,
    /// Its Warren version and commit, for messages.
    #[serde(default)]
    pub version: String,
}

/// The answer to a join.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinResponse {
    /// The node's own credential for heartbeats and audit records (the control plane keeps only
    /// its hash).
    pub node_key: String,
    /// Ed25519 public key (base64) that sandbox tokens and control-plane calls are signed with.
    pub token_public_key: String,
    /// Requests per second one organization may make to its sandboxes on this node.
    pub tenant_requests_per_second: u32,
    /// Seconds between heartbeats.
    pub heartbeat_seconds: u64,
}

/// A node's state, sent at join and with every heartbeat (`POST /v1/internal/nodes/heartbeat`,
/// `Authorization: Bearer <node id>:<node key>`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NodeReport {
    /// Tiers it runs, its default first.
    pub tiers: Vec<String>,
    pub capacity: NodeCapacity,
    pub used: NodeUse,
    /// Built-in templates whose root file system it holds.
    pub templates: Vec<String>,
    /// Built templates' layers (by key) it holds.
    pub layers: Vec<String>,
    /// Its live sandboxes.
    pub sandboxes: Vec<NodeSandbox>,
    /// Sandboxes that ended on their own since the last report (init exited: out of memory,
    /// `kill 1`, a crashed VM), with the exit code.
    pub exited: Vec<(String, i32)>,
    /// Sandboxes it took over after a restart whose brokered secrets it no longer holds (it
    /// never writes their values down): the control plane puts their network back, with them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub awaiting_secrets: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeSandbox {
    pub id: String,
    /// `running` or `paused`.
    pub state: String,
    pub port: Option<u16>,
}

/// The answer to a heartbeat.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeartbeatResponse {
    /// `active` or `draining`.
    pub state: String,
    /// Sandboxes the node runs that the cluster no longer has live there: stop them.
    #[serde(default)]
    pub destroy: Vec<String>,
}

/// `POST /v1/internal/nodes/audit`: agent calls the node's proxy audited, in a batch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditBatch {
    pub records: Vec<AuditRecord>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Unix milliseconds.
    pub at: i64,
    pub sandbox_id: String,
    pub tenant: String,
    pub key_id: Option<String>,
    pub action: String,
    pub input_bytes: u64,
    pub input_sha256: Option<String>,
    pub outcome: String,
    pub status_code: u16,
    pub duration_ms: u64,
    pub request_id: String,
}

/// What a sandbox starts from on a node.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TemplateSource {
    /// A built-in template, prepared by the node itself.
    Builtin { name: String },
    /// A built template's layers by key, topmost first; a node that lacks one fetches it from
    /// the control plane (`GET /v1/internal/layers/{key}`).
    Layers { keys: Vec<String> },
}

/// `POST /node/v1/sandboxes`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StartRequest {
    pub id: String,
    pub template_name: String,
    pub source: TemplateSource,
    pub workdir: Option<String>,
    pub vcpu: u32,
    pub memory_mb: u32,
    pub disk_mb: u32,
    pub internet_access: bool,
    /// Egress beyond on/off (allowed and denied CIDRs), when the sandbox has a policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<crate::control::EgressPolicy>,
    pub env_vars: BTreeMap<String, String>,
    pub tier: Option<String>,
    pub owner: String,
    /// The template's start command, run in the background before the ready check.
    pub start_cmd: Option<String>,
    pub ready: Option<ReadyProbe>,
    /// Secrets the node's egress proxy brokers for it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<SecretBinding>,
    /// Volumes of the shared store to mount.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<SharedVolumeMount>,
}

/// A volume of the cluster's shared store, mounted into a sandbox on a node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SharedVolumeMount {
    /// Where the volume is inside the store (`<tenant digest>/<volume id>`).
    pub key: String,
    /// Where the sandbox sees it.
    pub path: String,
    pub read_only: bool,
}

/// The answer to a start.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StartReply {
    pub tier: String,
    pub port: Option<u16>,
    /// The runtime handle (opaque JSON), kept by the control plane for the record.
    pub handle: String,
}

/// What a sandbox uses, measured by its node from outside it (cgroups, its disk).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MeasuredUsage {
    /// CPU over the last moments, in per cent of one CPU (200 = two CPUs busy).
    pub cpu_pct_of_one: f64,
    pub cpu_time_ms: u64,
    pub memory_bytes: u64,
    pub disk_bytes: Option<u64>,
    pub processes: u32,
}

/// An error from a node's API.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeApiError {
    pub code: String,
    pub message: String,
}

/// One node as `GET /v1/admin/nodes` and `warren nodes list` show it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeSummary {
    pub id: String,
    pub name: String,
    /// `healthy`, `unhealthy` or `draining`.
    pub state: String,
    pub api_url: String,
    pub public_host: String,
    pub labels: BTreeMap<String, String>,
    pub tiers: Vec<String>,
    pub capacity: NodeCapacity,
    pub used: NodeUse,
    pub sandboxes: u32,
    pub templates: Vec<String>,
    /// Seconds since its last heartbeat.
    pub last_seen_seconds_ago: f64,
}

/// A template's ready check, as the shell command that succeeds once the sandbox is ready.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReadyProbe {
    /// The readyCmd type it came from (`port`, `url`, ...), for messages.
    pub kind: String,
    pub command: String,
    pub timeout_ms: u64,
    pub interval_ms: u64,
}

/// `POST /node/v1/builds/steps`: run one RUN step of a template build on the node, in a build
/// sandbox over `layers`; its writable layer becomes layer `key` in the node's cache. The answer
/// streams `log <line>` lines, then `exit <code>` (or `fail <message>`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BuildStepRequest {
    /// Layer keys, topmost first (`builtin:<name>` for a built-in template's root file system).
    pub layers: Vec<String>,
    pub key: String,
    pub command: String,
    pub env: BTreeMap<String, String>,
    pub workdir: Option<String>,
    pub vcpu: u32,
    pub memory_mb: u32,
    pub disk_mb: u32,
    pub owner: String,
}

/// A layer key naming a built-in template's root file system.
pub fn builtin_layer_key(template: &str) -> String {
    format!("builtin:{template}")
}

/// `GET /v1/admin/nodes`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeList {
    pub object: String,
    pub data: Vec<NodeSummary>,
    /// Whether the control plane runs sandboxes itself too.
    pub local_node: bool,
    pub has_more: bool,
    pub request_id: String,
}

/// The answer to `POST /v1/admin/nodes/{id}/drain` and `/activate`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeAnswer {
    pub node: Option<NodeSummary>,
}

/// A sandbox's egress policy replaced (`PUT /node/v1/sandboxes/{id}/network`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NetworkUpdate {
    /// What its start returned (the node finds its link by it).
    pub handle: String,
    /// None: internet access alone decides.
    pub egress: Option<crate::control::EgressPolicy>,
    pub internet_access: bool,
    #[serde(default)]
    pub secrets: Vec<SecretBinding>,
}

/// A secret given to a sandbox, as its node needs it: the placeholder the sandbox holds and the
/// value the node's egress proxy puts in its place for the bound hosts (sent over the node link
/// only).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretBinding {
    pub name: String,
    pub placeholder: String,
    pub value: String,
    pub hosts: Vec<String>,
    /// Given for a `network.rules` header only (E2B): never put in place of a placeholder the
    /// sandbox wrote itself.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rule_only: bool,
}

impl std::fmt::Debug for SecretBinding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretBinding")
            .field("name", &self.name)
            .field("placeholder", &self.placeholder)
            .field("value", &"<redacted>")
            .field("hosts", &self.hosts)
            .field("rule_only", &self.rule_only)
            .finish()
    }
}
