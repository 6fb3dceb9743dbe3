//! A namespace-tier snapshot: the sandbox's writable layer copied into a read-only layer that
//! new sandboxes stack on top of its template's layers.
//!
//! The writable layer lives on a tmpfs that the jail mounts in a mount namespace of its outer
//! process (see `jail::run`), which lives as long as the sandbox: the host reaches it through
//! that process's `/proc/<pid>/root`, while the sandbox, whose own mount namespace left it behind
//! at pivot_root, cannot. The copy keeps what overlayfs needs of an upper layer to work as a
//! lower one (whiteouts, opaque directories) and moves ownership from the sandbox's own id range
//! to the canonical one template layers are kept in, so that every copy shows it with its ids.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::{FileType, Mode, Timespec, Timestamps, XattrFlags, CWD};

use crate::host::ids::RANGE_SIZE;

/// Where the host sees the writable layer of the sandbox whose jail's outer process is
/// `jail_pid` and whose host directory is `dir`.
pub(crate) fn upper_dir(jail_pid: i32, dir: &Path) -> PathBuf {
    let inside = dir.join("scratch/upper");
    let rel = inside.strip_prefix("/").unwrap_or(&inside);
    PathBuf::from(format!("/proc/{jail_pid}/root")).join(rel)
}

/// The parent of `pid` (the jail's outer process, for a sandbox's init).
pub(crate) fn parent_of(pid: i32) -> Option<i32> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))?
        .trim()
        .parse()
        .ok()
}

/// Copies the upper layer `src` to the new directory `dst`, ids shifted from the range at
/// `from_base` to the one at `to_base`. Returns the bytes of file data copied.
pub(crate) fn copy_layer(
    src: &Path,
    dst: &Path,
    from_base: u32,
    to_base: u32,
) -> std::io::Result<u64> {
    let shift = Shift { from_base, to_base };
    let mut bytes = 0;
    copy_entry(src, dst, &shift, &mut bytes)?;
    Ok(bytes)
}

struct Shift {
    from_base: u32,
    to_base: u32,
}

impl Shift {
    fn id(&self, id: u32) -> u32 {
        if (self.from_base..self.from_base + RANGE_SIZE).contains(&id) {
            id - self.from_base + self.to_base
        } else {
            id
        }
    }
}

fn copy_entry(src: &Path, dst: &Path, shift: &Shift, bytes: &mut u64) -> std::io::Result<()> {
    let meta = fs::symlink_metadata(src)?;
    let kind = meta.file_type();
    if kind.is_dir() {
        fs::create_dir(dst)?;
        for entry in fs::read_dir(src)? {
            let entry = entry?;
            copy_entry(&entry.path(), &dst.join(entry.file_name()), shift, bytes)?;
        }
    } else if kind.is_file() {
        *bytes += fs::copy(src, dst)?;
    } else if kind.is_symlink() {
        std::os::unix::fs::symlink(fs::read_link(src)?, dst)?;
    } else if kind.is_char_device() && meta.rdev() == 0 {
        // An overlayfs whiteout: the file is deleted in this layer.
        rustix::fs::mknodat(CWD, dst, FileType::CharacterDevice, Mode::empty(), 0)?;
    } else if kind.is_fifo() {
        rustix::fs::mknodat(
            CWD,
            dst,
            FileType::Fifo,
            Mode::from_raw_mode(meta.mode() & 0o777),
            0,
        )?;
    } else {
        // Sockets and devices: nothing a sandbox can make that a copy could use.
        return Ok(());
    }
    rustix::fs::chownat(
        CWD,
        dst,
        Some(rustix::fs::Uid::from_raw(shift.id(meta.uid()))),
        Some(rustix::fs::Gid::from_raw(shift.id(meta.gid()))),
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )?;
    if !kind.is_symlink() {
        // After chown, which clears set-id bits.
        fs::set_permissions(dst, fs::Permissions::from_mode(meta.mode() & 0o7777))?;
        copy_overlay_xattrs(src, dst)?;
    }
    let times = Timestamps {
        last_access: Timespec {
            tv_sec: meta.atime(),
            tv_nsec: meta.atime_nsec() as _,
        },
        last_modification: Timespec {
            tv_sec: meta.mtime(),
            tv_nsec: meta.mtime_nsec() as _,
        },
    };
    rustix::fs::utimensat(CWD, dst, &times, rustix::fs::AtFlags::SYMLINK_NOFOLLOW)?;
    Ok(())
}

/// Only overlayfs' opaque marker (a directory that hides the layers below) matters in a lower
/// layer; its other markers name the upper layer's own inodes, and file capabilities are bound
/// to the source sandbox's user namespace.
fn copy_overlay_xattrs(src: &Path, dst: &Path) -> std::io::Result<()> {
    const OPAQUE: &str = "trusted.overlay.opaque";
    let mut value = [0u8; 16];
    match rustix::fs::lgetxattr(src, OPAQUE, &mut value) {
        Ok(n) => {
            rustix::fs::lsetxattr(dst, OPAQUE, &value[..n], XattrFlags::empty())?;
            Ok(())
        }
        Err(rustix::io::Errno::NODATA) | Err(rustix::io::Errno::NOTSUP) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Bytes of file data under `dir` (for a snapshot's size).
pub fn size_of(dir: &Path) -> u64 {
    fn walk(p: &Path) -> u64 {
        let Ok(meta) = fs::symlink_metadata(p) else {
            return 0;
        };
        if meta.is_dir() {
            fs::read_dir(p)
                .map(|d| d.flatten().map(|e| walk(&e.path())).sum())
                .unwrap_or(0)
        } else {
            meta.len()
        }
    }
    walk(dir)
}
