//! How to run a template: its layers and settings, stored as JSON with a built template (and made
//! on the fly for a built-in one). Read by the lifecycle when it starts a sandbox and written by
//! builds.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// How to run a built template.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TemplateSpec {
    /// Read-only layers, topmost first.
    pub layers: Vec<PathBuf>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub workdir: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub start_cmd: Option<String>,
    #[serde(default)]
    pub ready_cmd: Option<ReadyCheck>,
    /// The cache key of the last layer, so builds on top of this template chain their keys.
    #[serde(default)]
    pub key: String,
    /// The isolation tier sandboxes of this template run on (None: the server's default).
    #[serde(default)]
    pub isolation: Option<warren_core::Tier>,
    /// A memory-carrying snapshot's saved machine (copies of it resume instead of booting).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub saved_state: Option<PathBuf>,
    /// The egress policy of sandboxes whose create names none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<warren_wire::control::EgressPolicy>,
}

/// `readyCmd` of either SDK: Py sends `processName` and ms `timeout`/`interval`, JS `name`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReadyCheck {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default, alias = "processName", alias = "name")]
    pub process_name: Option<String>,
    #[serde(default)]
    pub command: Option<String>,
    #[serde(default)]
    pub timeout: Option<u64>,
    #[serde(default)]
    pub interval: Option<u64>,
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// A `readyCmd` that cannot be turned into a check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadReadyCheck {
    #[error("readyCmd of type {kind} needs {what}")]
    Missing { kind: String, what: &'static str },
    #[error("unknown readyCmd type {0:?}")]
    UnknownType(String),
}

impl ReadyCheck {
    /// The shell command that succeeds once the sandbox is ready.
    pub fn probe(&self) -> Result<String, BadReadyCheck> {
        let missing = |what: &'static str| BadReadyCheck::Missing {
            kind: self.kind.clone(),
            what,
        };
        let need = |v: &Option<String>, what: &'static str| v.clone().ok_or_else(|| missing(what));
        Ok(match self.kind.as_str() {
            "port" => {
                let port = self.port.ok_or_else(|| missing("port"))?;
                format!("(exec 3<>/dev/tcp/127.0.0.1/{port}) 2>/dev/null")
            }
            "url" => {
                let url = need(&self.url, "url")?;
                format!(
                    "python3 -c 'import sys,urllib.request; sys.exit(0 if urllib.request.urlopen(sys.argv[1], timeout=2).status < 400 else 1)' {} 2>/dev/null || curl -fsS -o /dev/null {} 2>/dev/null",
                    shell_quote(&url),
                    shell_quote(&url)
                )
            }
            "file" => format!("test -e {}", shell_quote(&need(&self.path, "path")?)),
            "process" => format!(
                "pgrep -f {} >/dev/null",
                shell_quote(&need(&self.process_name, "a process name")?)
            ),
            "command" => need(&self.command, "command")?,
            other => return Err(BadReadyCheck::UnknownType(other.to_owned())),
        })
    }

    pub fn timeout_ms(&self) -> u64 {
        self.timeout.unwrap_or(30_000).clamp(1_000, 600_000)
    }

    pub fn interval_ms(&self) -> u64 {
        self.interval.unwrap_or(2_000).clamp(20, 60_000)
    }
}

impl TemplateSpec {
    /// The ready check as the node runs it.
    pub fn ready_probe(&self) -> Result<Option<warren_wire::cluster::ReadyProbe>, BadReadyCheck> {
        self.ready_cmd
            .as_ref()
            .map(|r| {
                Ok(warren_wire::cluster::ReadyProbe {
                    kind: r.kind.clone(),
                    command: r.probe()?,
                    timeout_ms: r.timeout_ms(),
                    interval_ms: r.interval_ms(),
                })
            })
            .transpose()
    }
}
