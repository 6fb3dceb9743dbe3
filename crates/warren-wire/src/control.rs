//! Control-plane shapes (`/v1/sandboxes`, `/v1/templates`, errors).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `POST /v1/sandboxes`. Both SDKs drop unset keys; `vcpu`/`memory_mb` are never sent.
#[derive(Debug, Default, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSandboxRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_name: Option<String>,
    /// Isolation tier for this sandbox (Warren extension): "namespaces" or "gvisor"; the
    /// server's default when absent.
    #[serde(default)]
    pub isolation: Option<String>,
    /// Both SDKs stringify the id; the MCP server may send a number, which we also accept.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "string_or_number"
    )]
    pub template_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub internet_access: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_vars: Option<BTreeMap<String, String>>,
    /// Warren extension (E2B's `metadata`): strings a client attaches to find the sandbox again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<BTreeMap<String, String>>,
    /// Warren extension (E2B's `network`): egress beyond on/off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<EgressPolicy>,
    /// Warren extension: secrets the sandbox uses without holding them. Each env var named here
    /// gets an opaque placeholder; the host's egress proxy puts the secret's value in its place
    /// only in HTTPS requests to the hosts the secret is bound to (`POST /v1/secrets`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets: Option<BTreeMap<String, String>>,
    /// Warren extension (E2B's `autoPause`): pause the sandbox at its timeout instead of
    /// stopping it; it then waits, without a timeout, to be resumed or deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_pause: Option<bool>,
    /// Warren extension (E2B's `autoResume`), with `auto_pause`: a sandbox paused at its timeout
    /// is resumed by the next request that reaches it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_resume: Option<bool>,
    /// Warren extension: start a copy of this snapshot (`POST /v1/sandboxes/{id}/snapshot`)
    /// instead of a fresh template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_id: Option<String>,
    /// Warren extension: create this many alike sandboxes at once; above 1 the answer is
    /// `{"sandboxes": [...]}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    /// Warren extension (E2B's `volumeMounts`): persistent volumes (`/v1/volumes`) to mount.
    /// A copy of a snapshot naming none mounts its source sandbox's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<Vec<SandboxVolume>>,
}

/// A persistent volume mounted into a sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SandboxVolume {
    /// The volume's name (or id).
    pub name: String,
    /// Where it shows in the sandbox: an absolute path.
    pub path: String,
    /// Writes through this mount fail with EROFS.
    #[serde(default)]
    pub read_only: bool,
}

/// A snapshot of a running sandbox (Warren extension).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Snapshot {
    pub id: String,
    pub object: String,
    /// The sandbox it was taken of.
    pub sandbox_id: String,
    pub template_id: String,
    pub template_name: String,
    pub isolation: String,
    /// Bytes the snapshot holds on the host's disk: the file data it adds to its template, and
    /// with memory, the saved machine.
    pub size_bytes: i64,
    /// Whether copies resume with the source's memory (its processes, interpreter variables):
    /// snapshots of microVM sandboxes. Namespace-tier snapshots carry the file system only.
    pub with_memory: bool,
    pub created_at: String,
}

/// What a sandbox uses right now, measured by the machine that runs it from outside the sandbox
/// (its cgroups and its writable disk), so code inside cannot change what it says (Warren
/// extension).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SandboxUsage {
    pub sandbox_id: String,
    pub status: String,
    /// RFC 3339, when the figures were read.
    pub measured_at: String,
    /// The sandbox's vCPUs.
    pub cpu_count: u32,
    /// CPU over the last moments, in per cent of the sandbox's vCPUs (0 to 100).
    pub cpu_used_pct: f64,
    /// CPU time used since the sandbox started (all its processes), in milliseconds.
    pub cpu_time_ms: u64,
    pub memory_used_bytes: u64,
    pub memory_limit_bytes: u64,
    /// Bytes its writable file system holds; null where the tier cannot tell from outside
    /// (gVisor keeps them in the sandbox's own memory).
    pub disk_used_bytes: Option<u64>,
    pub disk_limit_bytes: u64,
    pub processes: u32,
}

/// Which destinations a sandbox may reach, beyond `internet_access` (Warren extension, E2B's
/// `network`). `allow_out` takes IPv4 addresses, CIDRs and domain names (`example.com`,
/// `*.example.com` for the names under it, `*` for every name); `deny_out` addresses and CIDRs.
/// An allowed destination wins over a denied one. Naming a domain requires `deny_out` to hold
/// `0.0.0.0/0`: the sandbox's TCP then goes through a proxy on the host that lets through only
/// connections whose TLS server name or HTTP Host is allowed (and dials that name itself), and
/// its DNS answers only allowed names. The host, other sandboxes, private ranges and metadata
/// addresses stay denied whatever the lists say.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EgressPolicy {
    #[serde(default, alias = "allowOut", skip_serializing_if = "Vec::is_empty")]
    pub allow_out: Vec<String>,
    #[serde(default, alias = "denyOut", skip_serializing_if = "Vec::is_empty")]
    pub deny_out: Vec<String>,
    /// DNS servers all traffic to which is allowed (E2B's `dnsServers`).
    #[serde(default, alias = "dnsServers", skip_serializing_if = "Vec::is_empty")]
    pub dns_servers: Vec<String>,
    /// E2B's per-host transforms: headers the host's proxy sets on HTTPS requests to that host
    /// (replacing the sandbox's own), where `${e2b.secrets.NAME}` stands for a secret's value.
    /// A host named here must still be allowed by `allow_out` (or by internet access).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub rules: BTreeMap<String, Vec<NetworkRule>>,
}

/// One of E2B's `network.rules` entries for a host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NetworkRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transform: Option<NetworkTransform>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NetworkTransform {
    /// Header name → value, set on every HTTPS request to the rule's host.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

impl EgressPolicy {
    pub fn is_empty(&self) -> bool {
        self.allow_out.is_empty()
            && self.deny_out.is_empty()
            && self.dns_servers.is_empty()
            && self.rules.is_empty()
    }

    /// Each rule host with the headers its transforms set, in order.
    pub fn rule_headers(&self) -> impl Iterator<Item = (&str, Vec<(&str, &str)>)> {
        self.rules.iter().map(|(host, rules)| {
            let headers = rules
                .iter()
                .filter_map(|r| r.transform.as_ref())
                .flat_map(|t| t.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .collect();
            (host.as_str(), headers)
        })
    }
}

fn string_or_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(_) => return Err(serde::de::Error::custom("template_id must be a string")),
    })
}

/// `resources` on a sandbox: Py requires all three keys whenever the object is present.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SandboxResources {
    pub vcpu: u32,
    pub memory_mb: u32,
    pub disk_mb: u32,
}

/// The sandbox object (spec §4.1). `organization_id` is an integer here (a string on templates).
/// Absent values are left out rather than sent as `null`: the vendor's schema types them as
/// plain strings and integers, and both SDKs read a missing key as "none".
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Sandbox {
    pub id: String,
    pub object: String,
    pub status: String,
    pub public_host: String,
    pub direct_url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_name: Option<String>,
    pub organization_id: i64,
    pub node_id: String,
    pub region: String,
    pub resources: SandboxResources,
    pub internet_access: bool,
    pub live_mode: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    pub created_at: String,
    /// Which isolation tier runs this sandbox (a Warren extension; extra keys are safe here).
    pub isolation: String,
    /// Why the server stopped the sandbox (it died, its timeout passed, it did not survive a
    /// server restart); absent while it lives and when a user stopped it. A Warren extension.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_expires_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The persistent volumes it mounts (Warren extension), shown on `GET /v1/sandboxes/{id}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<Vec<SandboxVolume>>,
}

/// A page of a list. `has_more: true` must come with a usable `next_cursor` or Py's `iter` loops.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ListPage<T> {
    pub object: String,
    pub data: Vec<T>,
    pub has_more: bool,
    pub next_cursor: Option<String>,
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SetTimeoutRequest {
    pub timeout_seconds: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TokenResponse {
    pub id: String,
    pub auth_token: String,
    /// `YYYY-MM-DDTHH:MM:SSZ`: Py parses it with `fromisoformat` outside any try block.
    pub token_expires_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// Template resources use `disk_gb`, unlike the sandbox's `disk_mb`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TemplateResources {
    pub vcpu: u32,
    pub memory_mb: u32,
    pub disk_gb: u32,
}

/// The template object (spec §4.3). `id` and `organization_id` must be strings; `features`,
/// `tags` and `is_active` must never be null.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Template {
    pub id: String,
    pub object: String,
    pub name: String,
    pub display_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    pub default_resources: TemplateResources,
    pub features: Vec<String>,
    pub tags: Vec<String>,
    pub is_active: bool,
    pub is_public: bool,
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization_id: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub isolation: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// The error body of the control plane: a hybrid that both SDKs read correctly (spec §2.2).
/// Py reads `error.{message,code,request_id,details}`; JS reads the top-level `code`/`message`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorEnvelope {
    pub error: ErrorObject,
    pub code: String,
    pub message: String,
    pub request_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorObject {
    pub code: String,
    pub message: String,
    pub request_id: String,
    /// Always an object, never null: Py calls `details.get(..)` unguarded on 403 and 429.
    #[schema(value_type = Object)]
    pub details: serde_json::Map<String, Value>,
}

impl ErrorEnvelope {
    pub fn new(
        code: &str,
        message: &str,
        request_id: &str,
        details: serde_json::Map<String, Value>,
    ) -> Self {
        Self {
            error: ErrorObject {
                code: code.to_owned(),
                message: message.to_owned(),
                request_id: request_id.to_owned(),
                details,
            },
            code: code.to_owned(),
            message: message.to_owned(),
            request_id: request_id.to_owned(),
        }
    }
}

/// One record of the audit trail (`GET /v1/audit`).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditEntry {
    pub seq: i64,
    /// RFC 3339 with milliseconds.
    pub at: String,
    pub tenant: String,
    pub key_id: Option<String>,
    pub sandbox_id: Option<String>,
    pub action: String,
    pub input_bytes: Option<i64>,
    pub input_sha256: Option<String>,
    pub outcome: String,
    pub status_code: Option<i64>,
    pub duration_ms: i64,
    pub request_id: Option<String>,
}

/// A page of the audit trail.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditPage {
    pub object: String,
    pub data: Vec<AuditEntry>,
    pub has_more: bool,
    pub next_cursor: Option<String>,
    pub request_id: String,
}

/// The answer to `POST /v1/templates/files/upload-link` (spec §3.9): no keys beyond these.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UploadLink {
    pub present: bool,
    pub upload_url: String,
    pub expires_at: String,
    pub files_hash: String,
    pub request_id: String,
}

/// The answer to `POST /v1/templates/build`: no keys beyond these.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BuildStarted {
    pub build_id: String,
    pub template_id: String,
    pub status: String,
    pub logs_url: String,
    pub request_id: String,
}

/// `GET /v1/templates/build/{id}/status`: no keys beyond these; the optional ones are left out
/// rather than null.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BuildStatus {
    pub build_id: String,
    pub template_id: String,
    /// `building`, `active` or `failed`.
    pub status: String,
    pub progress: u32,
    pub started_at: String,
    pub request_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_step: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_duration_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
}

/// `GET /v1/templates/build/{id}/logs?offset=N`: the log from byte N, and where the next read
/// starts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BuildLogs {
    pub logs: String,
    pub offset: usize,
    pub status: String,
    pub complete: bool,
    pub request_id: String,
}

/// `POST /v1/secrets` (Warren extension): a secret the host brokers. Creating an existing name
/// replaces its value and hosts (a rotation; sandboxes already running keep the old value until
/// their policy is next set).
#[derive(Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSecret {
    /// Letters, digits, `_` and `-`, at most 128.
    pub name: String,
    /// Write-only: never shown again, never logged.
    pub value: String,
    /// The hosts it is sent to: names or `*.name` (at most 32).
    pub hosts: Vec<String>,
}

impl std::fmt::Debug for NewSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewSecret")
            .field("name", &self.name)
            .field("value", &"<redacted>")
            .field("hosts", &self.hosts)
            .finish()
    }
}

/// A secret as the API shows it: never its value.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SecretInfo {
    pub name: String,
    pub hosts: Vec<String>,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SecretList {
    pub secrets: Vec<SecretInfo>,
}

/// `POST /v1/volumes` (Warren extension): a persistent volume of the tenant.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewVolume {
    /// 1 to 64 letters, digits, `_` or `-`; unique within the tenant.
    pub name: String,
    /// Its size: writes past it fail with ENOSPC (16 MB to 16 TB; default 10240). Counted
    /// against the organization's volume quota; the host's disk holds only what is written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_mb: Option<u64>,
}

/// `POST /v1/volumes/{id}/clone` (Warren extension): a new volume holding a copy of the files.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CloneVolume {
    /// The new volume's name.
    pub name: String,
    /// Its size [default: the source's].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_mb: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VolumeInfo {
    pub id: String,
    pub name: String,
    pub created_at: String,
    pub size_mb: u64,
    /// MB in use (file data and the file system's own), on `GET /v1/volumes/{id}` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used_mb: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VolumeList {
    pub volumes: Vec<VolumeInfo>,
}
