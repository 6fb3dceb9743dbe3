//! A template's start command and ready check, run through the agent before a create answers.

use std::time::{Duration, Instant};

use warren_wire::cluster::ReadyProbe;

use crate::agent_link::{bash, AgentLink};

/// A start command runs for as long as the sandbox does.
const START_COMMAND_TIMEOUT_SECS: u64 = 365 * 86_400;
/// One ready probe may take this long.
const PROBE_TIMEOUT_SECS: u64 = 10;

/// Runs the template's start command in the background and waits for its ready check, if it has
/// them.
pub async fn start_and_wait_ready(
    agent: &AgentLink,
    start_cmd: Option<&str>,
    ready: Option<&ReadyProbe>,
) -> Result<(), String> {
    if let Some(cmd) = start_cmd {
        agent
            .start_command(&bash(cmd, START_COMMAND_TIMEOUT_SECS))
            .await
            .map_err(|e| format!("start command: {e}"))?;
    }
    let Some(ready) = ready else {
        return Ok(());
    };
    let probe = bash(&ready.command, PROBE_TIMEOUT_SECS);
    let deadline = Instant::now() + Duration::from_millis(ready.timeout_ms);
    loop {
        if matches!(agent.run_command(&probe).await, Ok(r) if r.exit_code == 0) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "ready check ({}) did not pass within {} ms",
                ready.kind, ready.timeout_ms
            ));
        }
        tokio::time::sleep(Duration::from_millis(ready.interval_ms.min(1000))).await;
    }
}
