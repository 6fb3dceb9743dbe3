//! Agent shapes (spec §5): what the SDKs send to `public_host` and read back.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The protocol between a node and the agents in its sandboxes, in the agent's `/health`
/// (`protocol`; agents of 0.1.0 name none: they speak 1). Sandboxes outlive servers, so a node
/// takes over agents speaking `MIN_AGENT_PROTOCOL..=AGENT_PROTOCOL` and refuses others by name.
pub const AGENT_PROTOCOL: u32 = 1;
pub const MIN_AGENT_PROTOCOL: u32 = 1;

/// Why a node cannot speak to an agent that says it speaks `protocol`, if it cannot.
pub fn unsupported_agent_protocol(protocol: u32) -> Option<String> {
    let speaks = MIN_AGENT_PROTOCOL..=AGENT_PROTOCOL;
    (!speaks.contains(&protocol)).then(|| {
        format!(
            "its agent speaks agent protocol {protocol}; this node speaks {} to {}: run a Warren release that speaks it",
            speaks.start(),
            speaks.end()
        )
    })
}

/// `POST /execute` (and `/execute/background`). The docs say `working_dir`; the SDKs send
/// `workdir`. Both are accepted.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExecuteRequest {
    pub code: String,
    #[serde(default = "default_language")]
    pub language: String,
    /// Seconds. Not capped at the docs' 300: `run_code_async` defaults to 1800.
    #[serde(default)]
    pub timeout: Option<u64>,
    #[serde(default, alias = "working_dir")]
    pub workdir: Option<String>,
    #[serde(default)]
    pub env: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub name: Option<String>,
}

fn default_language() -> String {
    "python".to_owned()
}

/// The result of `/execute`. User-code failure is `success: false` with HTTP 200, never a 5xx:
/// every client retries 5xx and would run the user's code again.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ExecuteResponse {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
    pub exit_code: i32,
    /// Seconds as a float. Always present: JS formats it with `toFixed`.
    pub execution_time: f64,
    pub language: String,
    pub timestamp: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub png: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub svg: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub markdown: Option<String>,
    /// The stateful interpreter's cell number, when the run went through it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_count: Option<u64>,
}

/// `POST /commands/run`. The SDKs always send `command: "bash", args: ["-c", cmd]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CommandRequest {
    pub command: String,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub timeout: Option<u64>,
    #[serde(default, alias = "working_dir")]
    pub workdir: Option<String>,
    #[serde(default)]
    pub env: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CommandResponse {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
    pub exit_code: i32,
    pub execution_time: f64,
    pub command: String,
    pub pid: u32,
    pub timestamp: String,
}

/// `POST /files/write`. `encoding: "base64"` means `content` is base64 of the real bytes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileWriteRequest {
    pub path: String,
    #[serde(default)]
    pub content: String,
    /// Octal string such as `"0644"`.
    #[serde(default)]
    pub mode: Option<String>,
    #[serde(default)]
    pub encoding: Option<String>,
    #[serde(default)]
    pub overwrite: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PathRequest {
    pub path: String,
}

/// One directory entry. Both spellings of each field are sent: Py reads `is_directory` and
/// `modified_time`, JS reads `is_dir` and `modified`. Times carry an offset (pydantic
/// `AwareDatetime`) and `permissions` is a string.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileInfo {
    pub name: String,
    pub path: String,
    pub size: u64,
    pub is_directory: bool,
    pub is_dir: bool,
    pub is_symlink: bool,
    pub permissions: String,
    pub modified_time: String,
    pub modified: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileList {
    pub files: Vec<FileInfo>,
    pub path: String,
    pub count: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileContent {
    pub content: String,
    pub path: String,
    pub size: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnvRequest {
    #[serde(default)]
    pub env_vars: BTreeMap<String, String>,
    #[serde(default)]
    pub merge: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnvResponse {
    pub env_vars: BTreeMap<String, String>,
    pub count: usize,
    pub timestamp: String,
}

/// The agent's error body (spec §2.4): `error` must stay a string for Py sync; `message` is for
/// JS and Py-async; `details` is always an object.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentErrorBody {
    pub error: String,
    pub message: String,
    pub code: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    pub details: serde_json::Map<String, serde_json::Value>,
    pub timestamp: String,
}

/// Agent configuration handed over by the control plane when the sandbox starts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentBootConfig {
    pub sandbox_id: String,
    pub template_name: String,
    pub vcpu: u32,
    pub memory_mb: u32,
    pub disk_mb: u32,
    #[serde(default)]
    pub env_vars: BTreeMap<String, String>,
}

/// The answer to `POST /commands/background` and `/execute/background`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackgroundStarted {
    pub process_id: String,
    #[serde(default)]
    pub pid: u32,
    pub status: String,
}

/// `GET /execute/processes/{process_id}?stdout_offset=N&stderr_offset=M`: a background process
/// and its output from those byte offsets.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProcessOutput {
    pub process_id: String,
    /// `running`, `completed`, `failed`, `killed` or `timeout`.
    pub status: String,
    #[serde(default)]
    pub exit_code: Option<i32>,
    #[serde(default)]
    pub stdout: String,
    #[serde(default)]
    pub stderr: String,
    #[serde(default)]
    pub stdout_next_offset: u64,
    #[serde(default)]
    pub stderr_next_offset: u64,
}

/// `POST /warren/clock`: Warren's own agent route, the host's time for a sandbox with a kernel of
/// its own (a microVM guest).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SetClockRequest {
    /// Nanoseconds since the Unix epoch.
    pub unix_nanos: i128,
}

/// `POST /warren/identity`: Warren's own agent route, the id of a sandbox resumed from another's
/// saved memory (a microVM snapshot's copy), whose agent still holds its source's.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SetIdentityRequest {
    pub sandbox_id: String,
}

/// A message the agent sends on `/execute/stream` and `/commands/stream` (spec §6): output as it
/// comes, then at most one error, the result, and `complete` last.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum StreamMessage {
    Stdout {
        data: String,
        #[serde(default)]
        timestamp: String,
    },
    Stderr {
        data: String,
        #[serde(default)]
        timestamp: String,
    },
    Error {
        error: String,
        code: String,
        #[serde(default)]
        timestamp: String,
    },
    Result {
        exit_code: i32,
        execution_time: f64,
        #[serde(default)]
        timestamp: String,
    },
    /// The last message before the socket closes (the JS SDK waits for it).
    Complete { success: bool },
}

/// A message the agent sends on `/terminal`: output, an error, and `exit` last.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum TerminalMessage {
    Output { data: String },
    Error { error: String, code: String },
    Exit { code: i32 },
}

/// The answer to `POST /files/upload`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UploadResponse {
    pub success: bool,
    pub path: String,
    pub size: u64,
    pub message: String,
    pub timestamp: String,
}

#[cfg(test)]
mod protocol_tests {
    use super::*;

    #[test]
    fn agents_of_this_and_earlier_releases_are_spoken_to_and_others_refused_by_name() {
        assert_eq!(unsupported_agent_protocol(AGENT_PROTOCOL), None);
        assert_eq!(unsupported_agent_protocol(MIN_AGENT_PROTOCOL), None);
        let why = unsupported_agent_protocol(AGENT_PROTOCOL + 1).expect("refused");
        assert!(
            why.contains(&format!("protocol {}", AGENT_PROTOCOL + 1)),
            "{why}"
        );
        assert!(unsupported_agent_protocol(0).is_some());
    }
}
