//! A process a sandbox's life hangs on (its init, runsc, QEMU), named so that it can be found
//! again after the server restarts: pid plus start time, since pids are reused. Watched through a
//! pidfd, which works for processes that are not the server's children (after a restart they
//! are not).

use serde::{Deserialize, Serialize};
use tokio::io::unix::AsyncFd;
use tokio::sync::oneshot;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessRef {
    pub pid: i32,
    /// Start time in clock ticks since boot (`/proc/<pid>/stat` field 22).
    pub start_ticks: u64,
}

/// Field 22 of `/proc/<pid>/stat` and whether the process is a zombie (it has ended).
fn stat(pid: i32) -> Option<(u64, bool)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces or ')'.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state); start time is field 22.
    let state = fields.first()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((start, *state == "Z" || *state == "X"))
}

impl ProcessRef {
    /// The running process `pid`, or None if there is none.
    pub fn of(pid: i32) -> Option<Self> {
        let (start_ticks, ended) = stat(pid)?;
        (!ended).then_some(Self { pid, start_ticks })
    }

    /// Whether this very process (not another one that got its pid) still runs.
    pub fn is_alive(&self) -> bool {
        matches!(stat(self.pid), Some((start, false)) if start == self.start_ticks)
    }

    /// Resolves when the process ends (at once if it already has). The exit code of a process
    /// that is not the caller's child cannot be read: it is reported as -1.
    pub fn watch(self) -> oneshot::Receiver<i32> {
        let (tx, rx) = oneshot::channel();
        let pidfd = rustix::process::Pid::from_raw(self.pid).and_then(|pid| {
            rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).ok()
        });
        // Checked after opening: if the pid was reused in between, the pidfd names the new process.
        let pidfd = pidfd.filter(|_| self.is_alive());
        let Some(pidfd) = pidfd else {
            let _ = tx.send(-1);
            return rx;
        };
        tokio::spawn(async move {
            // A pidfd becomes readable when its process exits.
            let interest = tokio::io::Interest::READABLE;
            // SAFETY: the OwnedFd is a valid pidfd, owned by the AsyncFd until it is dropped, and
            // nothing else closes or replaces it meanwhile.
            let registered = unsafe { AsyncFd::register_with_interest(pidfd, interest) };
            if let Ok(fd) = registered {
                let _ = fd.readable().await;
            }
            let _ = tx.send(-1);
        });
        rx
    }
}

/// Runs `inside` with the pid of a short-lived `sleep` child that ran `before_exec` first, then
/// kills the child: how the multi-threaded server gets a namespace made for it (the child
/// unshares, `inside` opens `/proc/<pid>/ns/...`, and the descriptor keeps the namespace).
///
/// # Safety
/// `before_exec` runs between fork and exec of a multi-threaded process: it may only make
/// system calls, on data made before the fork (no allocation, no locks).
pub(crate) unsafe fn with_helper_process<T>(
    before_exec: impl FnMut() -> std::io::Result<()> + Send + Sync + 'static,
    inside: impl FnOnce(u32) -> T,
) -> std::io::Result<T> {
    use std::os::unix::process::CommandExt;
    let mut cmd = std::process::Command::new("sleep");
    cmd.arg("30")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    // SAFETY: the caller's promise about `before_exec`.
    unsafe {
        cmd.pre_exec(before_exec);
    }
    let mut helper = cmd.spawn()?;
    let made = inside(helper.id());
    let _ = helper.kill();
    let _ = helper.wait();
    Ok(made)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_process_is_known_by_pid_and_start_time_and_its_end_is_seen() {
        let mut child = std::process::Command::new("sleep")
            .arg("0.3")
            .spawn()
            .expect("spawn sleep");
        let pid = i32::try_from(child.id()).expect("pid");
        let p = ProcessRef::of(pid).expect("running");
        assert!(p.is_alive());
        let other = ProcessRef {
            start_ticks: p.start_ticks + 1,
            ..p
        };
        assert!(
            !other.is_alive(),
            "a reused pid must not pass for the process"
        );
        let ended = p.watch();
        let waiter = std::thread::spawn(move || child.wait());
        let code = tokio::time::timeout(std::time::Duration::from_secs(5), ended)
            .await
            .expect("exit seen")
            .expect("sent");
        assert_eq!(code, -1);
        waiter.join().expect("join").expect("wait");
        assert!(!p.is_alive());
        assert!(ProcessRef::of(pid).is_none() || ProcessRef::of(pid) != Some(p));
    }
}
