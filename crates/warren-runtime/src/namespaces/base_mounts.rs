//! The mount namespace jails copy. A jail makes two mount namespaces, each a copy of the one it
//! starts in, and the kernel copies, makes private and finally unmounts every mount of that
//! namespace: with the host's, that is one mount per sandbox (each network namespace's name in
//! `/run/netns` is a bind mount), and a start at 2000 sandboxes paid ~20 ms for it (a bare
//! `unshare -m` goes from 1.8 to 10.2 ms with 2000 names here). So the driver keeps one copy of
//! the host's mounts as they were when it started, without `/run/netns`, all private (later host
//! mounts do not reach it), and jails start from that copy.
//!
//! Held by a descriptor of the server process (no mount, nothing left when it ends); a jail
//! enters it through `/proc/<server>/fd/<n>`. A sandbox with volumes starts from the host's
//! namespace as before: volumes are mounted on the host after this copy was taken.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;

/// A mount namespace copied from the host's, without the network namespaces' names.
pub struct BaseMounts {
    ns: OwnedFd,
}

impl BaseMounts {
    /// Made by a short-lived `sleep` child that unshares its mount namespace before it execs.
    pub fn new() -> std::io::Result<Self> {
        let before_exec = || {
            // SAFETY: system calls on static strings.
            unsafe {
                if libc::unshare(libc::CLONE_NEWNS) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let root = c"/";
                if libc::mount(
                    std::ptr::null(),
                    root.as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                ) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                // `/run/netns` may be mounted on itself several times (ip netns, earlier
                // servers): every layer goes, with the names mounted on it.
                let names = c"/run/netns";
                while libc::umount2(names.as_ptr(), libc::MNT_DETACH) == 0 {}
            }
            Ok(())
        };
        let open_ns =
            |pid: u32| std::fs::File::open(format!("/proc/{pid}/ns/mnt")).map(OwnedFd::from);
        // SAFETY: `before_exec` makes system calls only, with arguments made before the fork.
        let ns = unsafe { crate::host::with_helper_process(before_exec, open_ns) }??;
        Ok(Self { ns })
    }

    /// Where a jail (a child of this process) opens it.
    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!(
            "/proc/{}/fd/{}",
            std::process::id(),
            self.ns.as_raw_fd()
        ))
    }
}
