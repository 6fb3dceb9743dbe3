//! Whether the machine has a CPU to spare, for work done ahead of time.
//!
//! Every sandbox starts its interpreter once the agent is up, so a first `run_code` does not wait
//! for it; but in a burst of a hundred creates most sandboxes run a command, not code, and a
//! hundred interpreters starting beside a hundred sandbox starts took a fifth of the machine's
//! CPU and delayed every create. Niceness cannot help (each sandbox is its own CPU cgroup, and
//! groups share the CPU equally whatever their tasks' nice values), so the warm-up waits until the
//! machine has a CPU to spare: `/proc/loadavg`'s runnable count (host-wide, also in a sandbox's
//! pid namespace) at most the number of CPUs.

use std::time::Duration;

/// How often, and how many times, the runnable count is read per check: one busy reading of a
/// momentary queue is not a busy machine.
const SAMPLES: u32 = 3;
const SAMPLE_GAP: Duration = Duration::from_millis(5);

/// Waits, checking with growing pauses, until the machine looks idle enough to start work that
/// nobody waits for yet.
pub(super) async fn until_a_cpu_is_free() {
    let mut pause = Duration::from_millis(20);
    while busy().await {
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(500));
    }
}

async fn busy() -> bool {
    let cpus = online_cpus();
    for i in 0..SAMPLES {
        match runnable() {
            Some(n) if n > cpus => {}
            // Unreadable: behave as before this check existed.
            _ => return false,
        }
        if i + 1 < SAMPLES {
            tokio::time::sleep(SAMPLE_GAP).await;
        }
    }
    true
}

fn online_cpus() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    u64::try_from(n).unwrap_or(1).max(1)
}

/// Runnable tasks now (this one included): the numerator of `/proc/loadavg`'s fourth field.
fn runnable() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    parse_runnable(&text)
}

fn parse_runnable(loadavg: &str) -> Option<u64> {
    loadavg
        .split_whitespace()
        .nth(3)?
        .split('/')
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_runnable_count() {
        assert_eq!(parse_runnable("0.50 0.40 0.30 3/250 12345\n"), Some(3));
        assert_eq!(parse_runnable("garbage"), None);
    }
}
