//! Idmapped mounts: a clone of a mount with an id mapping attached, so that files owned on disk
//! by one id range show as owned by another, with no copy and no chown. The namespace tier's jail
//! shows template layers and volumes so (`namespaces/idmap.rs`, `namespaces/volume_mounts.rs`);
//! gVisor's volumes are shown so on the host (`show_volumes`), since runsc's gofer reaches files
//! with the host's own ids.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::host::ids::{CANONICAL_BASE, FIRST_RANGE, RANGE_SIZE};

/// A host directory shown inside a sandbox at `target`. Owners on disk are in the canonical id
/// range, as the template layers' are, and each sandbox sees them with its own ids.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeMount {
    pub source: PathBuf,
    /// Absolute, clean path inside the sandbox (checked where the request entered).
    pub target: String,
    pub read_only: bool,
}

/// A step of making an idmapped mount that failed.
#[derive(Debug, thiserror::Error)]
#[error("{step}: {source}")]
pub struct IdmappedError {
    pub step: String,
    pub source: std::io::Error,
}

fn failed(step: impl Into<String>) -> impl FnOnce(std::io::Error) -> IdmappedError {
    let step = step.into();
    move |source| IdmappedError { step, source }
}

/// A detached clone of the mount at `source` with the mount attributes `attrs` set and, when
/// given, `userns`'s id mapping attached: ready to be moved where it is shown.
pub fn clone_mount(
    source: &Path,
    attrs: u64,
    userns: Option<&OwnedFd>,
) -> Result<OwnedFd, IdmappedError> {
    use rustix::mount::{open_tree, OpenTreeFlags};
    let shown = source.display();
    let tree = open_tree(
        rustix::fs::CWD,
        source,
        OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC,
    )
    .map_err(|e| failed(format!("clone the mount of {shown}"))(e.into()))?;
    let attr = libc::mount_attr {
        attr_set: attrs
            | if userns.is_some() {
                libc::MOUNT_ATTR_IDMAP
            } else {
                0
            },
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.map_or(0, |u| u.as_raw_fd() as u64),
    };
    // SAFETY: mount_setattr reads `attr` (valid for the given size) and an empty C string; the
    // tree and namespace descriptors are open for the duration of the call.
    let set = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    if set != 0 {
        return Err(
            failed(format!("set ids and flags on the mount of {shown}"))(
                std::io::Error::last_os_error(),
            ),
        );
    }
    Ok(tree)
}

/// A user namespace whose only use is its mapping of ids `inside..inside+65536` onto
/// `outside..`, to attach to mounts. Made from the multi-threaded server by a helper process that
/// enters a new user namespace before it execs (`sleep`), whose maps this process writes; the
/// helper is then killed, and the namespace lives on through the returned descriptor. With
/// `maker`, the helper first becomes that host id, as the jail does before it makes a sandbox's
/// own namespace (some hosts forbid unprivileged ids to make one).
pub fn mapping_namespace(
    inside: u32,
    outside: u32,
    maker: Option<u32>,
) -> Result<OwnedFd, IdmappedError> {
    let map = format!("{inside} {outside} {RANGE_SIZE}\n");
    let before_exec = move || {
        if let Some(id) = maker {
            // SAFETY: plain system calls, safe between fork and exec.
            let became = unsafe {
                libc::setgroups(0, std::ptr::null()) == 0
                    && libc::setresgid(id, id, id) == 0
                    && libc::setresuid(id, id, id) == 0
            };
            if !became {
                return Err(std::io::Error::last_os_error());
            }
        }
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUSER).map_err(std::io::Error::from)
    };
    let inside_helper = |pid: u32| {
        std::fs::write(format!("/proc/{pid}/uid_map"), &map)
            .map_err(failed("write the helper's uid_map"))
            .and_then(|()| {
                std::fs::write(format!("/proc/{pid}/gid_map"), &map)
                    .map_err(failed("write the helper's gid_map"))
            })
            .and_then(|()| {
                std::fs::File::open(format!("/proc/{pid}/ns/user"))
                    .map(OwnedFd::from)
                    .map_err(failed("open the helper's user namespace"))
            })
    };
    // SAFETY: `before_exec` makes system calls only (setgroups, setresgid, setresuid, unshare).
    unsafe { super::with_helper_process(before_exec, inside_helper) }
        .map_err(failed("start the id-map helper"))?
}

/// Where a gVisor sandbox's volumes are shown on the host, under its directory.
fn shown_dir(sandbox_dir: &Path) -> PathBuf {
    sandbox_dir.join("volumes")
}

/// Mounts each volume under `sandbox_dir` with the canonical range shown as the host's own ids
/// (canonical root as root): runsc's gofer then creates a file for the sandbox's root as host
/// root, which lands on disk as canonical root, as a namespace sandbox's would. Returns the
/// mounts' host paths, in the order of `volumes`.
pub fn show_volumes(
    volumes: &[VolumeMount],
    sandbox_dir: &Path,
) -> Result<Vec<PathBuf>, IdmappedError> {
    if volumes.is_empty() {
        return Ok(Vec::new());
    }
    let userns = mapping_namespace(CANONICAL_BASE, 0, None)?;
    let mut shown = Vec::with_capacity(volumes.len());
    for (i, v) in volumes.iter().enumerate() {
        let target = shown_dir(sandbox_dir).join(i.to_string());
        std::fs::create_dir_all(&target).map_err(failed("make a volume's mount point"))?;
        let mut attrs = libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV;
        if v.read_only {
            attrs |= libc::MOUNT_ATTR_RDONLY;
        }
        let tree = clone_mount(&v.source, attrs, Some(&userns))?;
        rustix::mount::move_mount(
            &tree,
            "",
            rustix::fs::CWD,
            &target,
            rustix::mount::MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
        )
        .map_err(|e| failed(format!("mount volume at {}", v.target))(e.into()))?;
        shown.push(target);
    }
    Ok(shown)
}

/// Unmounts what `show_volumes` mounted under `sandbox_dir`. False while any is still mounted:
/// the caller must then not remove the directory, which would remove the volume's files.
pub fn hide_volumes(sandbox_dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(shown_dir(sandbox_dir)) else {
        return true;
    };
    let mut clear = true;
    for e in entries.flatten() {
        let path = e.path();
        let _ = nix::mount::umount2(&path, nix::mount::MntFlags::MNT_DETACH);
        if is_mount_point(&path) {
            tracing::error!(path = %path.display(), "a volume is still mounted in a sandbox's directory; keeping the directory");
            clear = false;
        }
    }
    clear
}

/// Whether sandboxes can have ids of their own here: a user namespace made as an unprivileged
/// range id (which some hosts forbid), and a detached clone of `dir`'s mount with its mapping
/// attached (dropped again).
pub fn idmap_works(dir: &Path) -> Result<(), IdmappedError> {
    std::fs::create_dir_all(dir).map_err(failed("create the layers directory"))?;
    let userns = mapping_namespace(CANONICAL_BASE, FIRST_RANGE, Some(FIRST_RANGE))?;
    clone_mount(dir, 0, Some(&userns)).map(drop)
}

/// Whether `path` is on another device than its parent directory (a symlink never is).
pub fn is_mount_point(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let parent = path.parent().unwrap_or(Path::new("/"));
    match (std::fs::symlink_metadata(path), std::fs::metadata(parent)) {
        (Ok(p), Ok(d)) => p.dev() != d.dev(),
        _ => false,
    }
}
