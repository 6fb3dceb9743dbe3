//! How QEMU itself is confined on the host. A guest that breaks out of its device models lands
//! in a process that is not root: a uid of its own per sandbox, no capabilities, no supplementary
//! groups (but /dev/kvm's), inside the sandbox's cgroup and network namespace, under QEMU's
//! seccomp filter. It is handed the only privileged thing it needs, an open tap device, instead
//! of opening /dev/net/tun (root-only) itself.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Opens the existing tap device `name` of the network namespace `netns` (close-on-exec).
pub fn open_tap(netns: &Path, name: &str) -> std::io::Result<OwnedFd> {
    let name = name.to_owned();
    // TUNSETIFF finds the device in the calling thread's namespace.
    crate::host::network::in_netns(netns, move || {
        // SAFETY: plain open(2); the descriptor is owned right after.
        let fd = unsafe {
            libc::open(
                c"/dev/net/tun".as_ptr(),
                libc::O_RDWR | libc::O_CLOEXEC | libc::O_NONBLOCK,
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` was just opened and is owned by nobody else.
        let tun = unsafe { OwnedFd::from_raw_fd(fd) };
        // struct ifreq: 16 bytes of name, then the flags (a short) in the union.
        let mut ifr = [0u8; 40];
        let bytes = name.as_bytes();
        if bytes.len() >= 16 {
            return Err(std::io::Error::other("tap name too long"));
        }
        ifr[..bytes.len()].copy_from_slice(bytes);
        let flags = (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as i16;
        ifr[16..18].copy_from_slice(&flags.to_ne_bytes());
        // SAFETY: TUNSETIFF reads and writes a struct ifreq, which `ifr` is large enough for.
        if unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETIFF, ifr.as_mut_ptr()) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(tun)
    })
}

/// Makes `cmd` (already set up by `start_inside`) keep the descriptors `inherited` open across
/// exec and run as `uid` with no capabilities, plus /dev/kvm's group when `kvm` is set.
pub fn confine(
    cmd: &mut tokio::process::Command,
    inherited: Vec<std::os::fd::RawFd>,
    uid: u32,
    kvm: bool,
) {
    let groups: Vec<libc::gid_t> = if kvm {
        std::fs::metadata("/dev/kvm")
            .map(|m| vec![m.gid()])
            .unwrap_or_default()
    } else {
        vec![]
    };
    // SAFETY: only async-signal-safe system calls on values prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            for fd in &inherited {
                if libc::fcntl(*fd, libc::F_SETFD, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if libc::setgroups(groups.len(), groups.as_ptr()) != 0
                || libc::setresgid(uid, uid, uid) != 0
                || libc::setresuid(uid, uid, uid) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
