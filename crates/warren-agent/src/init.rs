//! pid 1 duties: reap every orphan, and exit (taking the sandbox down) when the agent server dies.

use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};

/// Forks. The child returns and becomes the agent server; the parent never returns.
pub fn become_init_and_fork_server() -> anyhow::Result<()> {
    // SAFETY: called from `main` before any thread or runtime exists, so the child may run
    // arbitrary code after fork.
    match unsafe { fork() }? {
        ForkResult::Child => Ok(()),
        ForkResult::Parent { child } => {
            if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
                let _ = nix::unistd::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), 1);
            }
            reap_forever(child)
        }
    }
}

fn reap_forever(server: Pid) -> ! {
    loop {
        match waitpid(Pid::from_raw(-1), None) {
            Ok(WaitStatus::Exited(pid, code)) if pid == server => std::process::exit(code),
            Ok(WaitStatus::Signaled(pid, sig, _)) if pid == server => {
                std::process::exit(128 + sig as i32)
            }
            Ok(_) | Err(nix::Error::EINTR) => {}
            Err(_) => std::process::exit(1),
        }
    }
}
