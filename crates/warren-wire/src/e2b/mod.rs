//! The E2B control-plane API's JSON (the shapes its official SDKs send and validate): camelCase
//! keys, `templateID`/`sandboxID` spellings, RFC 3339 times.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `POST /sandboxes` and `POST /v2/sandboxes`. Every field E2B's API defines is named here, so
/// that one Warren does not serve is refused by name rather than dropped (see `unserved`), and
/// any other field is refused by serde.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = E2bNewSandbox)]
pub struct NewSandbox {
    #[serde(rename = "templateID", default)]
    pub template_id: Option<String>,
    /// Seconds until the sandbox ends (E2B's default: 300).
    #[serde(default)]
    pub timeout: Option<i64>,
    #[serde(default)]
    pub auto_pause: Option<bool>,
    /// `false`: pause at the timeout keeping the file system only. Warren's pauses keep memory.
    #[serde(default)]
    pub auto_pause_memory: Option<bool>,
    /// `{"enabled": true}`: a sandbox paused at its timeout resumes on its next request.
    #[serde(default)]
    pub auto_resume: Option<AutoResume>,
    #[serde(default, alias = "allow_internet_access")]
    pub allow_internet_access: Option<bool>,
    /// Older SDKs: a secure sandbox needs its access token for every envd call (always so here).
    #[serde(default)]
    pub secure: Option<bool>,
    #[serde(default)]
    pub metadata: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub env_vars: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub network: Option<NetworkConfig>,
    /// E2B's MCP gateway configuration: not served.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub mcp: Option<serde_json::Value>,
    /// Workload identity tokens: not served.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub iam: Option<serde_json::Value>,
    /// Persistent volumes to mount, by name.
    #[serde(default)]
    pub volume_mounts: Option<Vec<VolumeMount>>,
}

/// `volumeMounts[]`: a volume by name, and where the sandbox sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = E2bVolumeMount)]
pub struct VolumeMount {
    pub name: String,
    pub path: String,
}

#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = E2bAutoResume)]
pub struct AutoResume {
    pub enabled: bool,
}

/// Whether a JSON value asks for anything: not null, not an empty object or list.
fn is_set(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::Null => false,
        serde_json::Value::Object(o) => !o.is_empty(),
        serde_json::Value::Array(a) => !a.is_empty(),
        _ => true,
    }
}

impl NewSandbox {
    /// The first field named here that Warren does not serve, with why.
    pub fn unserved(&self) -> Option<String> {
        if self.mcp.as_ref().is_some_and(is_set) {
            return Some("mcp: E2B's MCP gateway is not served by Warren".into());
        }
        if self.iam.as_ref().is_some_and(is_set) {
            return Some("iam: workload identity tokens are not served by Warren".into());
        }
        if self.auto_pause_memory == Some(false) {
            return Some(
                "autoPauseMemory: false (a file-system-only pause) is not served by Warren: \
                 its pauses keep memory and processes"
                    .into(),
            );
        }
        let resume = self.auto_resume.as_ref().is_some_and(|r| r.enabled);
        if resume && self.auto_pause != Some(true) {
            return Some("autoResume needs autoPause: true".into());
        }
        if let Some(feature) = self.network.as_ref().and_then(NetworkConfig::unserved) {
            return Some(format!("network.{feature}"));
        }
        None
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = E2bNetworkConfig)]
pub struct NetworkConfig {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_out: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny_out: Vec<String>,
    /// Whether the sandbox's own ports (other than envd and the interpreter) are reachable
    /// without a token: always so on Warren, like Hopx preview URLs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_public_traffic: Option<bool>,
    /// Features of E2B's network config Warren does not serve; a create naming one is refused
    /// rather than run without it.
    #[serde(default, skip_serializing)]
    pub egress_proxy: Option<serde_json::Value>,
    #[serde(default, skip_serializing)]
    pub mask_request_host: Option<String>,
    /// Per-host header transforms (`${e2b.secrets.NAME}` placeholders filled in by the host's
    /// proxy on HTTPS requests to that host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<BTreeMap<String, Vec<crate::control::NetworkRule>>>,
    /// DNS servers all traffic to which is allowed. Sandboxes resolve through the host either
    /// way (with domain rules, through a filter that answers only allowed names).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_servers: Option<Vec<String>>,
    #[serde(default, skip_serializing)]
    pub https_ports: Option<Vec<u16>>,
}

impl NetworkConfig {
    /// The egress part, as Warren's own API takes it.
    pub fn egress(&self) -> crate::control::EgressPolicy {
        crate::control::EgressPolicy {
            allow_out: self.allow_out.clone(),
            deny_out: self.deny_out.clone(),
            dns_servers: self.dns_servers.clone().unwrap_or_default(),
            rules: self.rules.clone().unwrap_or_default(),
        }
    }

    /// The first feature named here that Warren does not serve.
    pub fn unserved(&self) -> Option<&'static str> {
        let set = |v: &Option<serde_json::Value>| {
            v.as_ref()
                .is_some_and(|v| !v.is_null() && v.as_object().is_none_or(|o| !o.is_empty()))
        };
        if self.allow_public_traffic == Some(false) {
            Some("allowPublicTraffic: false (a sandbox's ports are reachable by their URL)")
        } else if set(&self.egress_proxy) {
            Some("egressProxy")
        } else if self
            .mask_request_host
            .as_deref()
            .is_some_and(|h| !h.is_empty())
        {
            Some("maskRequestHost")
        } else if self.https_ports.as_ref().is_some_and(|p| !p.is_empty()) {
            Some("httpsPorts")
        } else {
            None
        }
    }
}

/// `PUT /sandboxes/{id}/network`: the whole egress config, replaced (omitted fields cleared).
/// Its own struct rather than `NetworkConfig` flattened: serde refuses unknown fields only
/// without `flatten`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkUpdate {
    #[serde(default)]
    pub allow_out: Vec<String>,
    #[serde(default)]
    pub deny_out: Vec<String>,
    #[serde(default)]
    pub dns_servers: Option<Vec<String>>,
    #[serde(default)]
    pub egress_proxy: Option<serde_json::Value>,
    #[serde(default)]
    pub rules: Option<BTreeMap<String, Vec<crate::control::NetworkRule>>>,
    /// `false` denies everything not allowed (as `denyOut: ["0.0.0.0/0"]`).
    #[serde(default, rename = "allow_internet_access")]
    pub allow_internet_access: Option<bool>,
}

impl NetworkUpdate {
    /// The config it sets, as a create would name it.
    pub fn network(&self) -> NetworkConfig {
        NetworkConfig {
            allow_out: self.allow_out.clone(),
            deny_out: self.deny_out.clone(),
            dns_servers: self.dns_servers.clone(),
            egress_proxy: self.egress_proxy.clone(),
            rules: self.rules.clone(),
            ..Default::default()
        }
    }
}

/// A created or connected sandbox.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = E2bSandbox)]
pub struct Sandbox {
    #[serde(rename = "templateID")]
    pub template_id: String,
    #[serde(rename = "sandboxID")]
    pub sandbox_id: String,
    #[serde(rename = "clientID")]
    pub client_id: String,
    pub alias: String,
    pub envd_version: String,
    pub envd_access_token: String,
    pub traffic_access_token: String,
    pub domain: Option<String>,
}

/// One sandbox of a list.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = E2bListedSandbox)]
pub struct ListedSandbox {
    #[serde(rename = "templateID")]
    pub template_id: String,
    #[serde(rename = "sandboxID")]
    pub sandbox_id: String,
    #[serde(rename = "clientID")]
    pub client_id: String,
    pub alias: String,
    pub started_at: String,
    pub end_at: String,
    pub cpu_count: u32,
    #[serde(rename = "memoryMB")]
    pub memory_mb: u32,
    #[serde(rename = "diskSizeMB")]
    pub disk_size_mb: u32,
    /// `running` or `paused`.
    pub state: String,
    pub envd_version: String,
    pub metadata: BTreeMap<String, String>,
}

/// `GET /sandboxes/{id}`: the listed fields and a few more.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = E2bSandboxDetail)]
pub struct SandboxDetail {
    #[serde(flatten)]
    pub listed: ListedSandbox,
    pub envd_access_token: String,
    pub allow_internet_access: bool,
    pub domain: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkConfig>,
    pub lifecycle: Lifecycle,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub volume_mounts: Vec<VolumeMount>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = E2bLifecycle)]
pub struct Lifecycle {
    pub auto_resume: bool,
    /// `kill` or `pause`: what happens at the timeout.
    pub on_timeout: String,
}

/// `POST /sandboxes/{id}/timeout`.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = E2bTimeoutBody)]
pub struct TimeoutBody {
    #[serde(default)]
    pub timeout: Option<i64>,
}

/// `POST /sandboxes/{id}/connect` and the older `/resume` (which also took `autoPause`).
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = E2bConnectBody)]
pub struct ConnectBody {
    #[serde(default)]
    pub timeout: Option<i64>,
    /// `false`: resume from the file system only. Warren's paused sandboxes resume whole.
    #[serde(default)]
    pub memory: Option<bool>,
    #[serde(default)]
    pub auto_pause: Option<bool>,
}

/// `POST /sandboxes/{id}/pause`.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = E2bPauseBody)]
pub struct PauseBody {
    /// `false`: keep the file system only. Warren's pauses keep memory.
    #[serde(default)]
    pub memory: Option<bool>,
    /// Refuse the pause (503) while the sandbox's agent does not answer.
    #[serde(default)]
    pub require_healthy_guest: Option<bool>,
}

/// `POST /sandboxes/{id}/refreshes`.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = E2bRefreshBody)]
pub struct RefreshBody {
    #[serde(default)]
    pub duration: Option<i64>,
}

/// `POST /sandboxes/{id}/snapshots`.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = E2bSnapshotRequest)]
pub struct SnapshotRequest {
    #[serde(default)]
    pub name: Option<String>,
    /// `false`: the file system only (E2B's `mode="filesystem"`); absent or `true`: with memory
    /// where the sandbox's tier can carry it.
    #[serde(default)]
    pub memory: Option<bool>,
}

/// A snapshot as E2B's SDKs read it: its id is what `Sandbox.create` takes as the template.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = E2bSnapshotInfo)]
pub struct SnapshotInfo {
    #[serde(rename = "snapshotID")]
    pub snapshot_id: String,
    pub names: Vec<String>,
}

/// `POST /sandboxes/{id}/fork`.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = E2bForkRequest)]
pub struct ForkRequest {
    /// Seconds the copies live (E2B's default here: 300, as for a create).
    #[serde(default)]
    pub timeout: Option<i64>,
    /// 1 to 20 (default 1).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 20)]
    pub count: Option<u32>,
}

/// One copy of a fork: exactly one of `sandbox` and `error`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = E2bForkResult)]
pub struct ForkResult {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<Sandbox>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ForkError>,
}

/// Why one copy of a fork did not start (E2B's error object).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = E2bForkError)]
pub struct ForkError {
    /// The HTTP status the error would have had alone.
    pub code: u16,
    pub message: String,
}

/// `POST /secrets`: a new secret. The value is write-only.
#[derive(Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = E2bNewSecret)]
pub struct NewSecret {
    pub name: String,
    pub value: String,
    #[serde(default)]
    pub metadata: Option<BTreeMap<String, String>>,
}

/// `POST /secrets/{id}`: the secret's next value (and metadata, when given).
#[derive(Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = E2bSecretUpdate)]
pub struct SecretUpdate {
    pub value: String,
    #[serde(default)]
    pub metadata: Option<BTreeMap<String, String>>,
}

macro_rules! redacted_debug {
    ($t:ty, $($field:ident),*) => {
        impl std::fmt::Debug for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($t))
                    $(.field(stringify!($field), &self.$field))*
                    .field("value", &"<redacted>")
                    .finish()
            }
        }
    };
}
redacted_debug!(NewSecret, name, metadata);
redacted_debug!(SecretUpdate, metadata);

/// A secret as E2B shows it: never its value.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = E2bSecret)]
pub struct Secret {
    #[serde(rename = "secretID")]
    pub secret_id: String,
    pub name: String,
    pub current_version: i64,
    pub metadata: BTreeMap<String, String>,
    pub created_at: String,
    pub updated_at: String,
}

pub mod templates;
pub mod volumes;
