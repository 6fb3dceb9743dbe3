//! A template's start command and ready check, run through the agent before a create answers.

use std::time::{Duration, Instant};

use warren_wire::cluster::ReadyProbe;

use crate::agent_link::{bash, AgentError, AgentLink};

/// A start command runs for as long as the sandbox does.
const START_COMMAND_TIMEOUT_SECS: u64 = 365 * 86_400;
/// One ready probe may take this long.
const PROBE_TIMEOUT_SECS: u64 = 10;

/// How a template tells that its sandbox is ready: a start command run in the background, then a
/// check run until it passes. Both optional.
#[derive(Debug, Clone, Default)]
pub struct Readiness {
    pub start_cmd: Option<String>,
    pub probe: Option<ReadyProbe>,
}

/// Why a sandbox did not become ready.
#[derive(Debug, thiserror::Error)]
pub enum NotReady {
    #[error("start command: {0}")]
    StartCommand(AgentError),
    #[error("ready check ({kind}) did not pass within {timeout_ms} ms")]
    CheckTimedOut { kind: String, timeout_ms: u64 },
    #[error("the sandbox ended while starting")]
    Ended,
}

impl Readiness {
    /// Runs the start command in the background and waits for the ready check, if there are
    /// any.
    pub async fn wait(&self, agent: &AgentLink) -> Result<(), NotReady> {
        if let Some(cmd) = &self.start_cmd {
            agent
                .start_command(&bash(cmd, START_COMMAND_TIMEOUT_SECS))
                .await
                .map_err(NotReady::StartCommand)?;
        }
        let Some(ready) = &self.probe else {
            return Ok(());
        };
        let probe = bash(&ready.command, PROBE_TIMEOUT_SECS);
        let deadline = Instant::now() + Duration::from_millis(ready.timeout_ms);
        loop {
            if matches!(agent.run_command(&probe).await, Ok(r) if r.exit_code == 0) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(NotReady::CheckTimedOut {
                    kind: ready.kind.clone(),
                    timeout_ms: ready.timeout_ms,
                });
            }
            tokio::time::sleep(Duration::from_millis(ready.interval_ms.min(1000))).await;
        }
    }
}
