//! Template layers shown with a sandbox's own ids. Layers are owned on disk by the canonical
//! range and shared by every sandbox; each sandbox sees them through idmapped mounts (a clone of
//! the layer's mount with an id mapping attached), so no layer is copied or chowned per sandbox.
//! Part of the jail: `user_namespace` forks, so it runs while the jail is single-threaded.

use std::fs;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::Path;

use nix::sched::{unshare, CloneFlags};
use nix::sys::wait::waitpid;
use nix::unistd::{fork, pipe, ForkResult};

use crate::host::ids::RANGE_SIZE;

/// A step of showing layers with a sandbox's ids that failed.
#[derive(Debug, thiserror::Error)]
#[error("{step}: {source}")]
pub struct IdmapError {
    step: String,
    source: std::io::Error,
}

fn sys<T>(step: &str, r: nix::Result<T>) -> Result<T, IdmapError> {
    r.map_err(|e| IdmapError {
        step: step.into(),
        source: e.into(),
    })
}

fn io<T>(step: &str, r: std::io::Result<T>) -> Result<T, IdmapError> {
    r.map_err(|source| IdmapError {
        step: step.into(),
        source,
    })
}

/// A user namespace mapping ids `from..from+65536` onto `to..to+65536`, to attach to mounts: a
/// file owned by `from + i` on disk shows as owned by `to + i` through them. A child enters a new
/// user namespace and waits while this (privileged) process writes its maps and keeps a handle to
/// the namespace; then the child exits. Call only while single-threaded.
pub fn user_namespace(from: u32, to: u32) -> Result<OwnedFd, IdmapError> {
    let (ready_r, ready_w) = sys("pipe", pipe())?;
    let (done_r, done_w) = sys("pipe", pipe())?;
    // SAFETY: the jail is single-threaded here, so the child may run arbitrary code after fork;
    // it only unshares, writes and reads a pipe, and exits.
    match unsafe { fork() } {
        Err(e) => sys("fork id-map helper", Err(e)),
        Ok(ForkResult::Child) => {
            drop((ready_r, done_w));
            let code = match unshare(CloneFlags::CLONE_NEWUSER) {
                Ok(()) => {
                    let _ = fs::File::from(ready_w).write_all(b"u");
                    let _ = fs::File::from(done_r).read(&mut [0u8; 1]);
                    0
                }
                Err(_) => 1,
            };
            std::process::exit(code);
        }
        Ok(ForkResult::Parent { child }) => {
            drop((ready_w, done_r));
            let made = (|| {
                if io(
                    "wait for id-map helper",
                    fs::File::from(ready_r).read(&mut [0u8; 1]),
                )? != 1
                {
                    return Err(IdmapError {
                        step: "id-map helper".into(),
                        source: std::io::Error::other("it could not enter a user namespace"),
                    });
                }
                let map = format!("{from} {to} {RANGE_SIZE}\n");
                let pid = child.as_raw();
                io(
                    "write uid_map",
                    fs::write(format!("/proc/{pid}/uid_map"), &map),
                )?;
                io(
                    "write gid_map",
                    fs::write(format!("/proc/{pid}/gid_map"), &map),
                )?;
                io(
                    "open the id-map namespace",
                    fs::File::open(format!("/proc/{pid}/ns/user")),
                )
                .map(OwnedFd::from)
            })();
            drop(done_w);
            let _ = waitpid(child, None);
            made
        }
    }
}

/// Mounts a clone of `layer` at `target`, read-only and with `userns`'s id mapping attached.
pub fn mount_idmapped(layer: &Path, target: &Path, userns: &OwnedFd) -> Result<(), IdmapError> {
    let tree = crate::host::idmapped::clone_mount(layer, libc::MOUNT_ATTR_RDONLY, Some(userns))
        .map_err(|e| IdmapError {
            step: e.step,
            source: e.source,
        })?;
    use rustix::mount::{move_mount, MoveMountFlags};
    move_mount(
        &tree,
        "",
        rustix::fs::CWD,
        target,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
    .map_err(|e| IdmapError {
        step: format!("mount the idmapped {}", layer.display()),
        source: e.into(),
    })
}
