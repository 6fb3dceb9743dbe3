//! E2B's template build API (v2 builder: `POST /v3/templates`, file uploads by hash,
//! `POST /v2/templates/{id}/builds/{build}`, the build status with log entries), as the `e2b`
//! SDKs' generated clients read and write it.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `POST /v3/templates`: a name (with an optional `:tag`) and the sandboxes' resources.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BuildRequest {
    #[serde(default)]
    pub name: Option<String>,
    /// Deprecated spelling of `name`.
    #[serde(default)]
    pub alias: Option<String>,
    #[serde(default)]
    pub tags: Option<Vec<String>>,
    #[serde(default, rename = "teamID")]
    pub team_id: Option<String>,
    #[serde(default)]
    pub cpu_count: Option<u32>,
    #[serde(default, rename = "memoryMB")]
    pub memory_mb: Option<u32>,
    #[serde(default, rename = "minFreeDiskMb")]
    pub min_free_disk_mb: Option<u32>,
}

/// The answer to `POST /v3/templates` (202): every key is required by the SDKs.
#[derive(Debug, Clone, Serialize)]
pub struct BuildRequested {
    #[serde(rename = "templateID")]
    pub template_id: String,
    #[serde(rename = "buildID")]
    pub build_id: String,
    pub public: bool,
    pub names: Vec<String>,
    pub tags: Vec<String>,
    pub aliases: Vec<String>,
}

/// `GET /templates/{id}/files/{hash}` (201): where to PUT the COPY context, if at all.
#[derive(Debug, Clone, Serialize)]
pub struct FileUpload {
    pub present: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// `POST /v2/templates/{id}/builds/{build}`: the steps.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BuildStart {
    #[serde(default)]
    pub from_image: Option<String>,
    #[serde(default)]
    pub from_template: Option<String>,
    #[serde(default)]
    pub from_image_registry: Option<ImageRegistry>,
    #[serde(default)]
    pub force: bool,
    /// `{type, args, filesHash?, force?, forceUpload?}` each (parsed by the build).
    #[serde(default)]
    pub steps: Vec<Value>,
    #[serde(default)]
    pub start_cmd: Option<String>,
    /// A shell command that succeeds once a sandbox is ready.
    #[serde(default)]
    pub ready_cmd: Option<String>,
}

/// `fromImageRegistry`: `{type: "registry", username, password}` for a private registry, or
/// the cloud providers' kinds (`aws`, `gcp`). `Debug` never shows the password.
#[derive(Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageRegistry {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
}

impl std::fmt::Debug for ImageRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageRegistry")
            .field("kind", &self.kind)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// `GET /templates/{id}/builds/{build}/status` query.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StatusQuery {
    #[serde(default)]
    pub logs_offset: Option<usize>,
    #[serde(default)]
    pub limit: Option<usize>,
    /// The lowest level to return.
    #[serde(default)]
    pub level: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LogEntry {
    /// RFC 3339.
    pub timestamp: String,
    pub message: String,
    /// `debug`, `info`, `warn` or `error`.
    pub level: &'static str,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusReason {
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
}

/// The build status (200). `logs` stays empty: the SDKs read `logEntries`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildStatus {
    #[serde(rename = "templateID")]
    pub template_id: String,
    #[serde(rename = "buildID")]
    pub build_id: String,
    /// `waiting`, `building`, `ready` or `error`.
    pub status: &'static str,
    pub logs: Vec<String>,
    pub log_entries: Vec<LogEntry>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<StatusReason>,
}

/// `GET /templates/aliases/{alias}` (200).
#[derive(Debug, Clone, Serialize)]
pub struct AliasFound {
    #[serde(rename = "templateID")]
    pub template_id: String,
    pub public: bool,
}
