//! Hardening applied by the jail just before it execs the agent (the sandbox's init): masked
//! kernel interfaces in /proc and /sys, a reduced capability bounding set, no_new_privs and a
//! seccomp filter. Everything the agent starts inherits all of it. The lists and the reasons are
//! in docs/security.md; keep both in step.

use std::collections::BTreeMap;
use std::path::Path;

use caps::{CapSet, Capability};
use nix::mount::{mount, MsFlags};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// A hardening step failed; the message names the step.
#[derive(Debug, thiserror::Error)]
pub enum HardenError {
    #[error("{step}: {source}")]
    Sys { step: String, source: nix::Error },
    #[error("{step}: {source}")]
    Io {
        step: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Setup(String),
}

/// What root inside a sandbox keeps: enough to install packages, manage files and users, bind low
/// ports and signal its own processes (Docker's default set, minus NET_RAW). Everything else —
/// SYS_ADMIN, NET_ADMIN, SYS_PTRACE, SYS_MODULE, SYS_TIME, BPF, … — is gone from the bounding
/// set, so no exec (setuid or file capabilities included) can bring it back.
pub const KEPT_CAPABILITIES: &[Capability] = &[
    Capability::CAP_CHOWN,
    Capability::CAP_DAC_OVERRIDE,
    Capability::CAP_FOWNER,
    Capability::CAP_FSETID,
    Capability::CAP_KILL,
    Capability::CAP_SETGID,
    Capability::CAP_SETUID,
    Capability::CAP_SETPCAP,
    Capability::CAP_SETFCAP,
    Capability::CAP_NET_BIND_SERVICE,
    Capability::CAP_SYS_CHROOT,
    Capability::CAP_MKNOD,
    Capability::CAP_AUDIT_WRITE,
];

/// Files in /proc that expose or poke the host kernel: replaced by an empty read-only file.
const MASKED_FILES: &[&str] = &[
    "proc/kcore",
    "proc/keys",
    "proc/key-users",
    "proc/timer_list",
    "proc/sched_debug",
    "proc/sysrq-trigger",
    "proc/latency_stats",
    "proc/kallsyms",
    "proc/kmsg",
    "proc/config.gz",
];
/// Directories hidden behind an empty read-only tmpfs.
const MASKED_DIRS: &[&str] = &[
    "proc/acpi",
    "proc/scsi",
    "proc/driver",
    "sys/firmware",
    "sys/kernel/debug",
];
/// Kernel tunables: visible, never writable.
const READ_ONLY: &[&str] = &["proc/sys", "proc/irq", "proc/bus", "proc/fs"];

fn sys<T>(step: &str, r: nix::Result<T>) -> Result<T, HardenError> {
    r.map_err(|source| HardenError::Sys {
        step: step.to_owned(),
        source,
    })
}

/// Masks kernel interfaces under `root` (still in the host's user namespace, so the sandbox can
/// never unmount these: they are locked into its mount namespace).
pub fn mask_kernel_interfaces(root: &Path, empty_file: &Path) -> Result<(), HardenError> {
    for rel in MASKED_FILES {
        let target = root.join(rel);
        if target.exists() {
            sys(
                &format!("mask /{rel}"),
                mount(
                    Some(empty_file),
                    &target,
                    None::<&str>,
                    MsFlags::MS_BIND,
                    None::<&str>,
                ),
            )?;
        }
    }
    for rel in MASKED_DIRS {
        let target = root.join(rel);
        if target.is_dir() {
            sys(
                &format!("mask /{rel}"),
                mount(
                    Some("tmpfs"),
                    &target,
                    Some("tmpfs"),
                    MsFlags::MS_RDONLY
                        | MsFlags::MS_NOSUID
                        | MsFlags::MS_NODEV
                        | MsFlags::MS_NOEXEC,
                    Some("size=0"),
                ),
            )?;
        }
    }
    for rel in READ_ONLY {
        let target = root.join(rel);
        if target.is_dir() {
            let step = format!("read-only /{rel}");
            sys(
                &step,
                mount(
                    Some(&target),
                    &target,
                    None::<&str>,
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None::<&str>,
                ),
            )?;
            let flags = MsFlags::MS_REMOUNT
                | MsFlags::MS_BIND
                | MsFlags::MS_RDONLY
                | MsFlags::MS_NOSUID
                | MsFlags::MS_NODEV
                | MsFlags::MS_NOEXEC;
            sys(
                &step,
                mount(None::<&str>, &target, None::<&str>, flags, None::<&str>),
            )?;
        }
    }
    Ok(())
}

/// Shrinks the capability sets to `KEPT_CAPABILITIES` (bounding, inheritable, ambient; the
/// effective and permitted sets of root are recomputed from the bounding set at exec).
pub fn drop_capabilities() -> Result<(), HardenError> {
    let err = |what: &str, e: caps::errors::CapsError| HardenError::Setup(format!("{what}: {e}"));
    for cap in caps::all() {
        if !KEPT_CAPABILITIES.contains(&cap) {
            caps::drop(None, CapSet::Bounding, cap)
                .map_err(|e| err("drop bounding capability", e))?;
        }
    }
    caps::clear(None, CapSet::Ambient).map_err(|e| err("clear ambient capabilities", e))?;
    caps::clear(None, CapSet::Inheritable).map_err(|e| err("clear inheritable capabilities", e))?;
    Ok(())
}

/// Syscalls no sandbox needs, each a known door to the host kernel: answered with EPERM.
const DENIED: &[i64] = &[
    // kernel modules and replacing the kernel
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_kexec_load,
    libc::SYS_kexec_file_load,
    // large in-kernel attack surfaces that sandboxes do not use
    libc::SYS_bpf,
    libc::SYS_perf_event_open,
    libc::SYS_userfaultfd,
    libc::SYS_keyctl,
    libc::SYS_add_key,
    libc::SYS_request_key,
    // file systems: the sandbox's mounts are made for it before it starts
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_pivot_root,
    libc::SYS_fsopen,
    libc::SYS_fsconfig,
    libc::SYS_fsmount,
    libc::SYS_fspick,
    libc::SYS_move_mount,
    libc::SYS_open_tree,
    libc::SYS_mount_setattr,
    libc::SYS_swapon,
    libc::SYS_swapoff,
    libc::SYS_quotactl,
    libc::SYS_quotactl_fd,
    // file handles bypass path checks (the classic container escape)
    libc::SYS_open_by_handle_at,
    libc::SYS_name_to_handle_at,
    // other namespaces, the clock, the console, raw I/O ports
    libc::SYS_setns,
    libc::SYS_reboot,
    libc::SYS_syslog,
    libc::SYS_acct,
    libc::SYS_settimeofday,
    libc::SYS_clock_settime,
    libc::SYS_clock_adjtime,
    libc::SYS_adjtimex,
    libc::SYS_iopl,
    libc::SYS_ioperm,
    libc::SYS_lookup_dcookie,
    libc::SYS_uselib,
    libc::SYS_fanotify_init,
];

/// Syscalls answered with ENOSYS, so that libraries fall back to an older call: `clone3` (its flags
/// sit in memory a filter cannot read; glibc falls back to `clone`, which is filtered) and
/// io_uring (a large attack surface; libuv and others fall back to threads).
const NOT_IMPLEMENTED: &[i64] = &[
    libc::SYS_clone3,
    libc::SYS_io_uring_setup,
    libc::SYS_io_uring_enter,
    libc::SYS_io_uring_register,
];

fn filter_err(e: impl std::fmt::Display) -> HardenError {
    HardenError::Setup(format!("seccomp filter: {e}"))
}

/// The two filters, compiled for x86_64.
pub fn seccomp_programs() -> Result<Vec<BpfProgram>, HardenError> {
    let arch = TargetArch::x86_64;
    let new_user_ns = || {
        SeccompCondition::new(
            0,
            SeccompCmpArgLen::Qword,
            SeccompCmpOp::MaskedEq(libc::CLONE_NEWUSER as u64),
            libc::CLONE_NEWUSER as u64,
        )
        .and_then(|c| SeccompRule::new(vec![c]))
        .map_err(filter_err)
    };
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = DENIED.iter().map(|&n| (n, vec![])).collect();
    // A new user namespace would give its creator a fresh full capability set to probe the
    // kernel with; other namespace flags stay allowed (tools use new mount/pid namespaces).
    rules.insert(libc::SYS_unshare, vec![new_user_ns()?]);
    rules.insert(libc::SYS_clone, vec![new_user_ns()?]);
    let deny = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )
    .map_err(filter_err)?;
    let nosys = SeccompFilter::new(
        NOT_IMPLEMENTED.iter().map(|&n| (n, vec![])).collect(),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch,
    )
    .map_err(filter_err)?;
    Ok(vec![
        deny.try_into().map_err(filter_err)?,
        nosys.try_into().map_err(filter_err)?,
    ])
}

/// no_new_privs, then the filters. Must be the last step before exec.
pub fn lock_down(programs: &[BpfProgram]) -> Result<(), HardenError> {
    // SAFETY: prctl with PR_SET_NO_NEW_PRIVS takes plain integers and touches no memory.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(HardenError::Io {
            step: "no_new_privs".into(),
            source: std::io::Error::last_os_error(),
        });
    }
    for p in programs {
        seccompiler::apply_filter(p).map_err(filter_err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn filters_compile() {
        assert_eq!(super::seccomp_programs().expect("compile").len(), 2);
    }
}
