//! The id-keeping view of a shared volume store.
//!
//! Each sandbox sees a volume through an idmapped mount carrying its own id range
//! (`warren-runtime`'s `host/idmapped.rs`), so a file written as a sandbox's `user` is stored as
//! the canonical `user` and read back as `user` in any other sandbox. The kernel takes idmapped
//! mounts of a FUSE file system only when its server asks for it (`FUSE_ALLOW_IDMAP`, Linux
//! 6.12, with `default_permissions`), and JuiceFS — the cluster's shared file system — does not
//! ask. This crate is the smallest server that does: a passthrough of one directory (the node's
//! JuiceFS mount) that keeps every owner as stored, gives each new file the owner the kernel
//! names for it (the creator's id seen through the mount's idmap), and leaves permission checks
//! to the kernel. It is written here because no FUSE server on the registries both passes
//! through and takes idmapped mounts (rclone's `--allow-idmap` shows one owner for every file;
//! mergerfs's support is newer than the distributions ship).

mod nodes;
mod passthrough;
mod store;
#[cfg(test)]
mod view_tests;

use std::path::Path;

pub use passthrough::IdKeepingFs;
pub use store::{SharedStore, StoreError};

/// Why the view could not be served.
#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    #[error("open the source directory {path}: {source}")]
    Source {
        path: String,
        source: std::io::Error,
    },
    #[error("mount the view at {path}: {source}")]
    Mount {
        path: String,
        source: std::io::Error,
    },
}

/// Serves the view of `source` at `mountpoint` until it is unmounted. Runs as root: it
/// creates files for every sandbox's users and hands them to their owners.
///
/// The view is mounted here rather than by `fuser`, whose session unmounts its mount point by
/// path when it ends. A node that restarts detaches its view and mounts a new one at the same
/// path, while the old one serves the sandboxes that still hold it; when the last of those
/// ends, its server must go quietly, not take the new view down with it.
pub fn serve(source: &Path, mountpoint: &Path) -> Result<(), ViewError> {
    use std::os::fd::AsRawFd;
    let fs = IdKeepingFs::open(source).map_err(|e| ViewError::Source {
        path: source.display().to_string(),
        source: e,
    })?;
    let mount_error = |e: std::io::Error| ViewError::Mount {
        path: mountpoint.display().to_string(),
        source: e,
    };
    let dev = rustix::fs::open(
        "/dev/fuse",
        rustix::fs::OFlags::RDWR | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map_err(|e| mount_error(e.into()))?;
    // The kernel checks permissions against the owners and modes shown (required for idmapped
    // mounts); the server acts as root for whoever the kernel let through.
    let options = std::ffi::CString::new(format!(
        "fd={},rootmode=40000,user_id=0,group_id=0,default_permissions,allow_other",
        dev.as_raw_fd()
    ))
    .map_err(|e| mount_error(std::io::Error::other(e)))?;
    rustix::mount::mount(
        source,
        mountpoint,
        "fuse",
        rustix::mount::MountFlags::NOSUID | rustix::mount::MountFlags::NODEV,
        options.as_c_str(),
    )
    .map_err(|e| mount_error(e.into()))?;
    let mut config = fuser::Config::default();
    config.n_threads = Some(4);
    config.clone_fd = true;
    let session =
        fuser::Session::from_fd(fs, dev, fuser::SessionACL::All, config).map_err(mount_error)?;
    session.run().map_err(mount_error)
}
