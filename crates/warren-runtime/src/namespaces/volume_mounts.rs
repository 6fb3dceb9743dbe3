//! Persistent volumes shown inside a sandbox: a clone of the volume directory's mount, with the
//! sandbox's id mapping attached as on the template layers, moved onto its path in the sandbox's
//! root. Part of the jail, run before `pivot_root`, while host paths are still visible: the
//! mount point is therefore reached component by component from the root's descriptor, never
//! following a symlink, so a template whose `/data` is a symlink to `/etc` cannot make the jail
//! create or cover anything outside the sandbox's root.

use std::os::fd::OwnedFd;
use std::path::Path;

use rustix::fs::{Mode, OFlags};

use crate::driver::VolumeMount;

/// A volume that could not be shown in the sandbox.
#[derive(Debug, thiserror::Error)]
pub enum VolumeMountError {
    #[error("volume at {target}: {step}: {source}")]
    Io {
        target: String,
        step: &'static str,
        source: std::io::Error,
    },
    #[error("volume at {target}: {source}")]
    Idmap {
        target: String,
        source: crate::host::idmapped::IdmappedError,
    },
    #[error(
        "volume at {target}: {component} is not a directory of the template (a symlink or a file)"
    )]
    NotADirectory { target: String, component: String },
}

/// Mounts each volume at its target under `root`; mount points that do not exist are made as
/// directories owned by the sandbox's root (`owner`).
pub fn mount_volumes(
    root: &Path,
    volumes: &[VolumeMount],
    userns: Option<&OwnedFd>,
    owner: u32,
) -> Result<(), VolumeMountError> {
    for volume in volumes {
        mount_one(root, volume, userns, owner)?;
    }
    Ok(())
}

fn mount_one(
    root: &Path,
    volume: &VolumeMount,
    userns: Option<&OwnedFd>,
    owner: u32,
) -> Result<(), VolumeMountError> {
    let target = volume.target.clone();
    let io = |step: &'static str| {
        let target = target.clone();
        move |e: rustix::io::Errno| VolumeMountError::Io {
            target,
            step,
            source: e.into(),
        }
    };
    let mut attrs = libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV;
    if volume.read_only {
        attrs |= libc::MOUNT_ATTR_RDONLY;
    }
    let tree =
        crate::host::idmapped::clone_mount(&volume.source, attrs, userns).map_err(|source| {
            VolumeMountError::Idmap {
                target: target.clone(),
                source,
            }
        })?;
    let at = mount_point(root, &volume.target, owner)?;
    rustix::mount::move_mount(
        &tree,
        "",
        &at,
        "",
        rustix::mount::MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH
            | rustix::mount::MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
    )
    .map_err(io("mount"))
}

/// The directory `target` under `root`, made where missing, as a descriptor; refuses any
/// component that is not a directory, symlinks included.
fn mount_point(root: &Path, target: &str, owner: u32) -> Result<OwnedFd, VolumeMountError> {
    let err = |step: &'static str| {
        move |e: rustix::io::Errno| VolumeMountError::Io {
            target: target.to_owned(),
            step,
            source: e.into(),
        }
    };
    let dir_flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let mut at = rustix::fs::open(root, dir_flags, Mode::empty()).map_err(err("open the root"))?;
    for component in target.split('/').filter(|c| !c.is_empty()) {
        if component == "." || component == ".." {
            return Err(VolumeMountError::NotADirectory {
                target: target.to_owned(),
                component: component.to_owned(),
            });
        }
        match rustix::fs::mkdirat(&at, component, Mode::from_raw_mode(0o755)) {
            Ok(()) => rustix::fs::chownat(
                &at,
                component,
                Some(rustix::fs::Uid::from_raw(owner)),
                Some(rustix::fs::Gid::from_raw(owner)),
                rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(err("own the mount point"))?,
            Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(err("make the mount point")(e)),
        }
        at = match rustix::fs::openat(&at, component, dir_flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOTDIR | rustix::io::Errno::LOOP) => {
                return Err(VolumeMountError::NotADirectory {
                    target: target.to_owned(),
                    component: component.to_owned(),
                })
            }
            Err(e) => return Err(err("open the mount point")(e)),
        };
    }
    Ok(at)
}

#[cfg(test)]
mod tests {
    use super::{mount_point, VolumeMountError};

    #[test]
    fn mount_points_are_made_inside_the_root_and_never_through_a_symlink() {
        let root = tempfile::tempdir().expect("tempdir");
        let outside = tempfile::tempdir().expect("tempdir");
        let owner = nix::unistd::geteuid().as_raw();
        std::os::unix::fs::symlink(outside.path(), root.path().join("data")).expect("symlink");
        std::fs::write(root.path().join("file"), b"x").expect("file");
        mount_point(root.path(), "/mnt/deep/er", owner).expect("made");
        assert!(root.path().join("mnt/deep/er").is_dir());
        for (target, component) in [("/data/x", "data"), ("/file/x", "file"), ("/a/../b", "..")] {
            match mount_point(root.path(), target, owner) {
                Err(VolumeMountError::NotADirectory { component: c, .. }) => {
                    assert_eq!(c, component, "{target}")
                }
                other => panic!("{target}: {other:?}"),
            }
        }
        assert_eq!(
            std::fs::read_dir(outside.path()).expect("outside").count(),
            0,
            "nothing made through the symlink"
        );
    }
}
