//! Ending a whole process tree. A process group is not enough: a child may start its own session
//! or group (`setsid`, `nohup`, daemons), and orphans are re-parented to the agent (pid 1), so
//! their ancestry is lost. Every user process therefore starts as the leader of a new session and
//! carries a marker variable naming its execution; whatever still shares the session or the
//! process group, or carries the marker, is killed. (Code that clears its environment *and*
//! leaves the session escapes this; it is still confined to its sandbox.)

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

/// Set in the environment of every user process; inherited by its descendants.
pub const MARKER: &str = "WARREN_EXECUTION_ID";

/// SIGKILLs the tree started as session/group leader `leader` for execution `execution`.
/// Repeats a few rounds because a dying tree can still fork while it is being killed.
pub fn kill_tree(leader: u32, execution: &str) {
    if leader <= 1 {
        return;
    }
    let needle = format!("{MARKER}={execution}\0").into_bytes();
    for _ in 0..5 {
        let _ = killpg(Pid::from_raw(leader as i32), Signal::SIGKILL);
        let members = members(leader as i32, &needle);
        if members.is_empty() {
            return;
        }
        for pid in members {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

/// Live processes (zombies excluded) that belong to the tree.
fn members(leader: i32, needle: &[u8]) -> Vec<i32> {
    let me = std::process::id() as i32;
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid > 1 && pid != me)
        .filter(|&pid| {
            let Some((state, pgrp, session)) = stat(pid) else {
                return false;
            };
            if state == 'Z' {
                return false;
            }
            pgrp == leader
                || session == leader
                || std::fs::read(format!("/proc/{pid}/environ"))
                    .is_ok_and(|env| env.windows(needle.len()).any(|w| w == needle))
        })
        .collect()
}

/// (state, process group, session) from /proc/<pid>/stat. The command name may contain spaces and
/// parentheses, so fields are counted from the last ')'.
fn stat(pid: i32) -> Option<(char, i32, i32)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 1..];
    let mut f = rest.split_whitespace();
    let state = f.next()?.chars().next()?;
    let _ppid = f.next()?;
    let pgrp = f.next()?.parse().ok()?;
    let session = f.next()?.parse().ok()?;
    Some((state, pgrp, session))
}

/// A fresh execution id, unique within this agent's lifetime.
pub fn new_execution_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!("exec_{}", NEXT.fetch_add(1, Ordering::Relaxed))
}
