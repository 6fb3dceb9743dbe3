//! One RUN step of a template build, as the agent of a build sandbox runs it: started in the
//! background, its output followed line by line (into the build log, wherever the sandbox runs).

use std::collections::BTreeMap;
use std::time::Duration;

use warren_wire::agent::CommandRequest;

use crate::agent_link::{AgentError, AgentLink};

/// Longest a RUN step may take.
pub const RUN_TIMEOUT_SECS: u64 = 3600;

/// Starts `req` and hands each line it prints to `line` until it ends; returns its exit code.
pub async fn follow(
    agent: &AgentLink,
    req: &CommandRequest,
    mut line: impl FnMut(String),
) -> Result<i64, AgentError> {
    let started = agent.start_command(req).await?;
    let (mut out_at, mut err_at) = (0u64, 0u64);
    let mut partial: BTreeMap<&str, String> = BTreeMap::new();
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let p = agent
            .process_output(&started.process_id, out_at, err_at)
            .await?;
        for (stream, text) in [("stdout", &p.stdout), ("stderr", &p.stderr)] {
            let buf = partial.entry(stream).or_default();
            buf.push_str(text);
            while let Some(nl) = buf.find('\n') {
                let l: String = buf.drain(..=nl).collect();
                line(l.trim_end().to_owned());
            }
        }
        (out_at, err_at) = (p.stdout_next_offset, p.stderr_next_offset);
        if p.status != "running" {
            for rest in partial.values().filter(|r| !r.is_empty()) {
                line(rest.clone());
            }
            return Ok(p.exit_code.map_or(-1, i64::from));
        }
    }
}
