//! A volume's bytes: an ext4 file system in a sparse image file as large as the volume's quota,
//! mounted through a loop device at the volume's directory. The quota is the file system's size,
//! so a sandbox that fills the volume gets `ENOSPC` from its own kernel, in every sandbox that
//! mounts it, and the content API gets the same. A plain directory cannot be limited so: the
//! host's file system would need project quotas (`prjquota`), which hosts rarely mount with.
//! The image costs only the blocks written (sparse), and ext4 takes idmapped mounts.
//!
//! `mkfs.ext4` (e2fsprogs) and `mount`/`umount` (util-linux) run with an argv here, because no
//! crate makes an ext4 file system, and util-linux's loop set-up does two things a hand-written
//! one would have to copy: it reuses the loop device an image already has (one image mounted
//! through two loop devices would be two ext4 drivers writing one disk: corruption), and marks
//! the device to be freed with the last unmount (autoclear), so sandboxes that outlive the server
//! keep their mounts while the server's own is gone.

use std::path::{Path, PathBuf};
use std::process::Command;

use warren_runtime::host::idmapped::is_mount_point;

/// The image file of a volume whose directory is `dir`.
pub fn image_of(dir: &Path) -> PathBuf {
    dir.with_extension("ext4")
}

/// Why an image could not be made or mounted.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("{tool} failed: {output}")]
    Tool { tool: &'static str, output: String },
    /// The file system has no room for what was asked.
    #[error("the volume is full: {0}")]
    Full(String),
}

fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> ImageError {
    move |source| ImageError::Io { what, source }
}

fn run(tool: &'static str, cmd: &mut Command) -> Result<(), ImageError> {
    let out = cmd.output().map_err(io(tool))?;
    if out.status.success() {
        return Ok(());
    }
    Err(ImageError::Tool {
        tool,
        output: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
    })
}

/// Makes a file system of `bytes` whose root belongs to `owner` (the canonical range's root).
pub fn make(image: &Path, bytes: u64, owner: u32) -> Result<(), ImageError> {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(image)
        .map_err(io("create the volume's image"))?;
    file.set_len(bytes).map_err(io("size the volume's image"))?;
    drop(file);
    run(
        "mkfs.ext4",
        Command::new("mkfs.ext4")
            .args(["-q", "-F", "-m", "0", "-E"])
            // No reserved blocks: the quota is the user's to fill. Lazy init: a sparse image
            // stays sparse and the mkfs takes milliseconds.
            .arg(format!(
                "root_owner={owner}:{owner},lazy_itable_init=1,lazy_journal_init=1"
            ))
            .arg(image),
    )
}

/// Mounts the image at `dir` unless it is mounted there already.
pub fn mount(image: &Path, dir: &Path) -> Result<(), ImageError> {
    if is_mount_point(dir) {
        return Ok(());
    }
    std::fs::create_dir_all(dir).map_err(io("make the volume's mount point"))?;
    run(
        "mount",
        Command::new("mount")
            .args(["-t", "ext4", "-o", "loop,nosuid,nodev"])
            .arg(image)
            .arg(dir),
    )
}

/// Detaches the mount at `dir` (sandboxes keep their own clones of it).
pub fn unmount(dir: &Path) -> Result<(), ImageError> {
    if !is_mount_point(dir) {
        return Ok(());
    }
    nix::mount::umount2(dir, nix::mount::MntFlags::MNT_DETACH).map_err(|e| ImageError::Io {
        what: "unmount the volume",
        source: e.into(),
    })
}

/// Bytes in use and the file system's size, as `df` counts them.
pub fn usage(dir: &Path) -> Result<(u64, u64), ImageError> {
    let st = nix::sys::statvfs::statvfs(dir).map_err(|e| ImageError::Io {
        what: "measure the volume",
        source: e.into(),
    })?;
    let block = st.fragment_size();
    let total = st.blocks() * block;
    Ok((total - st.blocks_free() * block, total))
}
