//! Programs on a pseudo-terminal: a login shell for `/terminal`, any command for E2B's PTY
//! processes.

use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::process::Stdio;

use tokio::io::unix::AsyncFd;
use tokio::process::{Child, Command};

use crate::tree;

/// The terminal side of a shell; shared between the task reading output and the one writing
/// input. The shell process itself (`Child`) is returned separately, for its owner to wait on.
pub struct Shell {
    pub pid: u32,
    pub execution_id: String,
    pub master: AsyncFd<OwnedFd>,
}

fn winsize(cols: u16, rows: u16) -> nix::pty::Winsize {
    nix::pty::Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}

/// Starts `bash -l` in `workdir` with `env` on a fresh PTY of `cols`×`rows`.
pub fn spawn_shell(
    env: &BTreeMap<String, String>,
    workdir: &Path,
    cols: u16,
    rows: u16,
) -> std::io::Result<(Shell, Child)> {
    let mut cmd = Command::new("bash");
    cmd.arg("-l")
        .env_clear()
        .envs(env)
        .current_dir(if workdir.is_dir() {
            workdir
        } else {
            Path::new("/")
        });
    spawn_on_pty(cmd, cols, rows)
}

/// Starts a prepared command (program, arguments, environment, directory, user) as the leader
/// of a new session whose controlling terminal is a fresh PTY of `cols`×`rows`.
pub fn spawn_on_pty(mut cmd: Command, cols: u16, rows: u16) -> std::io::Result<(Shell, Child)> {
    let pty = nix::pty::openpty(Some(&winsize(cols, rows)), None)?;
    let flags = nix::fcntl::fcntl(pty.master.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFL)?;
    let flags = nix::fcntl::OFlag::from_bits_truncate(flags) | nix::fcntl::OFlag::O_NONBLOCK;
    nix::fcntl::fcntl(pty.master.as_raw_fd(), nix::fcntl::FcntlArg::F_SETFL(flags))?;

    let execution_id = tree::new_execution_id();
    cmd.env(tree::MARKER, &execution_id)
        .stdin(Stdio::from(pty.slave.try_clone()?))
        .stdout(Stdio::from(pty.slave.try_clone()?))
        .stderr(Stdio::from(pty.slave));
    // SAFETY: only async-signal-safe calls (setsid, ioctl) between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid()?;
            crate::exec::prefer_for_oom_kill();
            // Make the PTY (stdin) the controlling terminal of the new session, so job control
            // and ^C work.
            if libc::ioctl(0, libc::TIOCSCTTY, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    // SAFETY: the OwnedFd is open and owned by the AsyncFd from here on; nothing else closes or
    // replaces it.
    let master = unsafe { AsyncFd::register(pty.master) }
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let shell = Shell {
        pid: child.id().unwrap_or(0),
        execution_id,
        master,
    };
    Ok((shell, child))
}

impl Shell {
    pub fn resize(&self, cols: u16, rows: u16) {
        let ws = winsize(cols.max(1), rows.max(1));
        // SAFETY: TIOCSWINSZ reads one `winsize` from the pointer, which outlives the call.
        unsafe {
            libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ, &ws as *const _);
        }
    }

    /// Reads what the PTY has; Ok(0) once every writer (the shell and its children) is gone.
    pub async fn read(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let mut guard = self.master.readable().await?;
            match guard
                .try_io(|fd| nix::unistd::read(fd.as_raw_fd(), buf).map_err(std::io::Error::from))
            {
                Ok(Ok(n)) => return Ok(n),
                // EIO: the slave side is closed, i.e. end of output.
                Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => return Ok(0),
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }

    pub async fn write_all(&self, mut data: &[u8]) -> std::io::Result<()> {
        while !data.is_empty() {
            let mut guard = self.master.writable().await?;
            match guard
                .try_io(|fd| nix::unistd::write(fd.get_ref(), data).map_err(std::io::Error::from))
            {
                Ok(Ok(n)) => data = &data[n..],
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
        Ok(())
    }

    pub fn kill_tree(&self) {
        tree::kill_tree(self.pid, &self.execution_id);
    }
}
