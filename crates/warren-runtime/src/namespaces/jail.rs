//! The privileged set-up step of one sandbox, run in a fresh single-threaded `warren jail` process
//! (forking a multi-threaded server is unsafe; exec-ing a helper is not).
//!
//! Order matters for security. Everything is mounted by real root in the new mount namespace
//! *before* the user namespace is created, so the sandbox's mount and network namespaces are owned
//! by the host user namespace: root inside the sandbox (the first id of its own host range, see
//! `host::ids`) can neither mount, nor unmount the masks, nor reconfigure its network.
//!
//! Protocol with the server: the spec arrives as JSON on stdin; the jail prints `pid <host pid>` of
//! the sandbox init on stdout; the agent (which inherits stdout) prints `ready` when it listens.
//! The jail process then stays as the sandbox's parent and exits with its status, so the server can
//! notice a dead sandbox by waiting on an ordinary child.

use std::ffi::CString;
use std::fs;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{chown, symlink};
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{chdir, execve, fork, pipe, pivot_root, sethostname, ForkResult, Gid, Uid};
use serde::{Deserialize, Serialize};

/// Everything the jail needs to build one sandbox. Internal IPC between the server and its own
/// helper binary (same build), not a public contract.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JailSpec {
    pub hostname: String,
    /// The template root file system: the read-only lower layer of the overlay.
    pub lower_dirs: Vec<PathBuf>,
    /// Host directory for the writable layer instead of a tmpfs (build steps keep it).
    #[serde(default)]
    pub persistent_upper: Option<PathBuf>,
    /// Host directory of this sandbox: `root/` (mount point), `scratch/`, `run/` (agent socket).
    pub sandbox_dir: PathBuf,
    /// Host directory with the agent binary and the loader and libraries it runs with.
    pub agent_bundle: PathBuf,
    /// Size of the writable layer.
    pub disk_mb: u32,
    /// `cgroup.procs` files the sandbox init joins before anything else runs.
    pub cgroup_procs: Vec<PathBuf>,
    /// A network namespace prepared by the server (`/run/netns/...`).
    pub netns: PathBuf,
    /// First host uid/gid of the sandbox's own range: root..65535 inside map to it.
    pub id_base: u32,
    /// First id of the range the template layers are owned by on disk. When it differs from
    /// `id_base` the layers are mounted idmapped onto the sandbox's range.
    #[serde(default = "canonical_base")]
    pub layer_id_base: u32,
    /// Whether the user namespace is made by `id_base` (see `init_child`); false where the host
    /// forbids unprivileged ids to make one (the server checked), leaving root as its owner.
    #[serde(default)]
    pub userns_owned_by_sandbox: bool,
    /// The sandbox's process limit (its pids cgroup's), also set as RLIMIT_NPROC.
    #[serde(default)]
    pub max_processes: u64,
    /// argv of the agent, after the loader.
    pub agent_args: Vec<String>,
    /// The sandbox's `env_vars`. Handed to the agent in its environment, never on its command
    /// line: a command line is readable by every user of the host (`ps`), an environment only by
    /// its owner.
    #[serde(default)]
    pub agent_env: std::collections::BTreeMap<String, String>,
    /// Persistent volumes, owned on disk by the layers' range and shown like the layers.
    #[serde(default)]
    pub volumes: Vec<crate::driver::VolumeMount>,
    /// The mount namespace to start from instead of the host's (`base_mounts.rs`).
    #[serde(default)]
    pub base_mounts: Option<PathBuf>,
}

fn canonical_base() -> u32 {
    crate::host::ids::CANONICAL_BASE
}

/// The variable carrying `agent_env` (JSON) to the agent, which removes it at start.
pub const BOOT_ENV_VAR: &str = "WARREN_BOOT_ENV";

pub const ID_COUNT: u32 = 65536;
/// Where the agent bundle appears inside the sandbox.
pub const AGENT_MOUNT: &str = "/.warren";
/// Where the host-side `run/` directory (the agent socket) appears inside the sandbox.
pub const RUN_MOUNT: &str = "/run/warren";

/// A jail step failed; the message names the step, because these errors reach an operator.
#[derive(Debug, thiserror::Error)]
pub enum JailError {
    #[error("{step}: {source}")]
    Sys { step: String, source: nix::Error },
    #[error("{step}: {source}")]
    Io {
        step: String,
        source: std::io::Error,
    },
    #[error("bad jail spec: {0}")]
    Spec(String),
    #[error(transparent)]
    Harden(#[from] super::harden::HardenError),
    #[error(transparent)]
    Idmap(#[from] super::idmap::IdmapError),
    #[error(transparent)]
    Volume(#[from] super::volume_mounts::VolumeMountError),
}

fn sys<T>(step: impl Into<String>, r: nix::Result<T>) -> Result<T, JailError> {
    r.map_err(|source| JailError::Sys {
        step: step.into(),
        source,
    })
}

fn io<T>(step: impl Into<String>, r: std::io::Result<T>) -> Result<T, JailError> {
    r.map_err(|source| JailError::Io {
        step: step.into(),
        source,
    })
}

/// Entry point of `warren jail`. Returns the exit code of the sandbox init.
pub fn run_from_stdin() -> Result<i32, JailError> {
    let mut raw = String::new();
    io("read spec", std::io::stdin().read_to_string(&mut raw))?;
    let spec: JailSpec = serde_json::from_str(&raw).map_err(|e| JailError::Spec(e.to_string()))?;
    run(&spec)
}

fn run(spec: &JailSpec) -> Result<i32, JailError> {
    let netns = io("open netns", fs::File::open(&spec.netns))?;
    sys("join netns", setns(netns.as_fd(), CloneFlags::CLONE_NEWNET))?;
    if let Some(base) = &spec.base_mounts {
        // Only slower without it (the server may have ended, taking it along): go on.
        let entered = fs::File::open(base).and_then(|ns| {
            setns(ns.as_fd(), CloneFlags::CLONE_NEWNS).map_err(std::io::Error::from)
        });
        if let Err(e) = entered {
            eprintln!("warren jail: starting from the host's mounts ({e})");
        }
    }
    // Made before the pid namespace: its helper must not become that namespace's init.
    let idmap = if spec.id_base != spec.layer_id_base {
        Some(super::idmap::user_namespace(
            spec.layer_id_base,
            spec.id_base,
        )?)
    } else {
        None
    };
    // The pid namespace unshared here applies to the child we fork next. The child makes a mount
    // namespace of its own as well: pivot_root moves every process of a mount namespace, and this
    // parent has to keep seeing the host's /proc to write the child's id maps.
    sys("unshare pid", unshare(CloneFlags::CLONE_NEWPID))?;
    if spec.persistent_upper.is_none() {
        // The writable layer's tmpfs is mounted in a mount namespace of this outer process's own
        // (a copy of the host's, which never sees it): the child's namespace, copied from this
        // one, has it too, and the host reaches it through this process's /proc/<pid>/root to
        // snapshot it (namespaces/snapshot.rs), while the sandbox, whose namespace leaves it
        // behind at pivot_root, cannot.
        sys("unshare mount", unshare(CloneFlags::CLONE_NEWNS))?;
        make_mounts_private()?;
        mount_scratch(spec)?;
    }
    let (to_parent_r, to_parent_w) = sys("pipe", pipe())?;
    let (to_child_r, to_child_w) = sys("pipe", pipe())?;

    // SAFETY: this process is single-threaded (the `jail` subcommand runs before any runtime or
    // thread is started), so the child may run arbitrary code after fork.
    match unsafe { fork() } {
        Err(e) => Err(JailError::Sys {
            step: "fork".into(),
            source: e,
        }),
        Ok(ForkResult::Child) => {
            drop(to_parent_r);
            drop(to_child_w);
            let err = match init_child(spec, idmap.as_ref(), to_parent_w, to_child_r) {
                Ok(never) => match never {},
                Err(e) => e,
            };
            eprintln!("warren jail: {err}");
            std::process::exit(121);
        }
        Ok(ForkResult::Parent { child }) => {
            drop(to_parent_w);
            drop(to_child_r);
            println!("pid {child}");
            io("flush", std::io::stdout().flush())?;
            let mut buf = [0u8; 1];
            let mut r = fs::File::from(to_parent_r);
            if io("wait for child", r.read(&mut buf))? == 1 {
                write_id_maps(child.as_raw(), spec.id_base)?;
                io("release child", fs::File::from(to_child_w).write_all(b"g"))?;
            }
            loop {
                match waitpid(child, None) {
                    Ok(WaitStatus::Exited(_, code)) => return Ok(code),
                    Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(128 + sig as i32),
                    Ok(_) | Err(nix::Error::EINTR) => continue,
                    Err(e) => {
                        return Err(JailError::Sys {
                            step: "wait".into(),
                            source: e,
                        })
                    }
                }
            }
        }
    }
}

fn write_id_maps(pid: i32, base: u32) -> Result<(), JailError> {
    let map = format!("0 {base} {ID_COUNT}\n");
    io("uid_map", fs::write(format!("/proc/{pid}/uid_map"), &map))?;
    io("gid_map", fs::write(format!("/proc/{pid}/gid_map"), &map))?;
    Ok(())
}

/// Runs as pid 1 of the new pid namespace, still as host root, and ends by exec-ing the agent.
fn init_child(
    spec: &JailSpec,
    idmap: Option<&OwnedFd>,
    to_parent: OwnedFd,
    from_parent: OwnedFd,
) -> Result<std::convert::Infallible, JailError> {
    for procs in &spec.cgroup_procs {
        io(
            format!("join cgroup {}", procs.display()),
            fs::write(procs, "0"),
        )?;
    }
    sys(
        "unshare",
        unshare(CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWIPC),
    )?;
    make_mounts_private()?;

    let root = spec.sandbox_dir.join("root");
    build_root(spec, idmap, &root)?;
    sys("sethostname", sethostname(&spec.hostname))?;

    sys("chdir root", chdir(&root))?;
    sys("pivot_root", pivot_root(".", "."))?;
    sys("detach old root", umount2(".", MntFlags::MNT_DETACH))?;
    sys("chdir /", chdir("/"))?;

    // The kernel charges what a user namespace's processes hold (inotify instances and watches,
    // processes, pending signals, queued message bytes) to their id inside it *and* to the
    // namespace's owner in the parent namespace, against the host's per-user limits. Created by
    // root, every sandbox's namespace would charge host root: one sandbox holding all 128
    // inotify instances would leave none to other sandboxes, or to root's own daemons. So the
    // namespace is created as the sandbox's own first host id, after the last privileged step.
    set_limits(spec.max_processes)?;
    if spec.userns_owned_by_sandbox {
        sys("setgroups", nix::unistd::setgroups(&[]))?;
        let owner = (Uid::from_raw(spec.id_base), Gid::from_raw(spec.id_base));
        sys(
            "setresgid to the sandbox's ids",
            nix::unistd::setresgid(owner.1, owner.1, owner.1),
        )?;
        sys(
            "setresuid to the sandbox's ids",
            nix::unistd::setresuid(owner.0, owner.0, owner.0),
        )?;
    }
    sys("unshare user", unshare(CloneFlags::CLONE_NEWUSER))?;
    io("signal parent", fs::File::from(to_parent).write_all(b"u"))?;
    let mut buf = [0u8; 1];
    if io(
        "wait for id maps",
        fs::File::from(from_parent).read(&mut buf),
    )? != 1
    {
        return Err(JailError::Spec(
            "jail parent died before writing id maps".into(),
        ));
    }
    sys("setgroups", nix::unistd::setgroups(&[]))?;
    sys(
        "setresgid",
        nix::unistd::setresgid(Gid::from_raw(0), Gid::from_raw(0), Gid::from_raw(0)),
    )?;
    sys(
        "setresuid",
        nix::unistd::setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0)),
    )?;
    sys("chdir /workspace", chdir("/workspace"))?;
    super::harden::drop_capabilities()?;
    let filters = super::harden::seccomp_programs()?;

    let loader = cstr(&format!("{AGENT_MOUNT}/lib/ld-linux-x86-64.so.2"))?;
    let mut argv = vec![
        loader.clone(),
        cstr("--library-path")?,
        cstr(&format!("{AGENT_MOUNT}/lib"))?,
        cstr(&format!("{AGENT_MOUNT}/warren-agent"))?,
    ];
    for a in &spec.agent_args {
        argv.push(cstr(a)?);
    }
    let boot_env = serde_json::to_string(&spec.agent_env)
        .map_err(|e| JailError::Spec(format!("env_vars: {e}")))?;
    let env = [
        cstr("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")?,
        cstr("HOME=/root")?,
        cstr("LANG=C.UTF-8")?,
        cstr("TERM=xterm-256color")?,
        cstr(&format!("{BOOT_ENV_VAR}={boot_env}"))?,
    ];
    super::harden::lock_down(&filters)?;
    sys("exec agent", execve(&loader, &argv, &env))
}

/// The per-user limits, set for the sandbox's processes. The kernel counts these per host user;
/// with a range of its own each sandbox has its own counters, and these bound what it may use of
/// them: processes as its pids cgroup does, pending signals and POSIX message queue bytes to
/// amounts one sandbox has use for.
fn set_limits(max_processes: u64) -> Result<(), JailError> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let processes = if max_processes == 0 {
        4096
    } else {
        max_processes
    };
    for (what, resource, wanted) in [
        ("RLIMIT_NPROC", Resource::RLIMIT_NPROC, processes),
        (
            "RLIMIT_SIGPENDING",
            Resource::RLIMIT_SIGPENDING,
            processes * 4,
        ),
        ("RLIMIT_MSGQUEUE", Resource::RLIMIT_MSGQUEUE, 800 * 1024),
    ] {
        // Never above the hard limit this process was given: raising it needs CAP_SYS_RESOURCE,
        // which hosts (and container runtimes) may withhold from Warren.
        let (_, hard) = sys(what, getrlimit(resource))?;
        let limit = wanted.min(hard);
        sys(what, setrlimit(resource, limit, limit))?;
    }
    Ok(())
}

fn cstr(s: &str) -> Result<CString, JailError> {
    CString::new(s).map_err(|_| JailError::Spec(format!("NUL byte in {s:?}")))
}

/// Mounts made in this (new) mount namespace stay in it, and the host's never reach it.
fn make_mounts_private() -> Result<(), JailError> {
    sys(
        "make mounts private",
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&str>,
        ),
    )
}

/// The size-limited tmpfs the sandbox's writable layer lives on.
fn mount_scratch(spec: &JailSpec) -> Result<(), JailError> {
    let scratch = spec.sandbox_dir.join("scratch");
    let size = format!("size={}m,mode=0755", spec.disk_mb);
    sys(
        "mount scratch tmpfs",
        mount(
            Some("tmpfs"),
            &scratch,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(size.as_str()),
        ),
    )
}

/// Assembles the sandbox's root: overlay of the template under a size-limited tmpfs writable
/// layer, fresh /proc, a minimal /dev, read-only /sys, the agent bundle and the socket directory.
fn build_root(spec: &JailSpec, idmap: Option<&OwnedFd>, root: &Path) -> Result<(), JailError> {
    let base = spec.id_base;
    let (upper, work) = match &spec.persistent_upper {
        Some(dir) => {
            io("mkdir persistent upper", fs::create_dir_all(dir))?;
            (dir.join("upper"), dir.join("work"))
        }
        None => {
            // Mounted by the outer process (`mount_scratch`).
            let scratch = spec.sandbox_dir.join("scratch");
            (scratch.join("upper"), scratch.join("work"))
        }
    };
    io("mkdir upper", fs::create_dir(&upper))?;
    io("mkdir work", fs::create_dir(&work))?;
    // The overlay's root directory takes its owner from the upper layer: root of the sandbox.
    io("chown upper", chown(&upper, Some(base), Some(base)))?;
    if spec.lower_dirs.is_empty() {
        return Err(JailError::Spec("no template layers".into()));
    }
    let lower_dirs = match idmap {
        None => spec.lower_dirs.clone(),
        Some(userns) => {
            let mut shown = Vec::with_capacity(spec.lower_dirs.len());
            for (i, layer) in spec.lower_dirs.iter().enumerate() {
                let target = spec.sandbox_dir.join("lowers").join(i.to_string());
                io("mkdir idmapped layer", fs::create_dir_all(&target))?;
                super::idmap::mount_idmapped(layer, &target, userns)?;
                shown.push(target);
            }
            shown
        }
    };
    let lower = lower_dirs
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(":");
    let opts = format!(
        "lowerdir={lower},upperdir={},workdir={}",
        upper.display(),
        work.display()
    );
    sys(
        "mount overlay",
        mount(
            Some("overlay"),
            root,
            Some("overlay"),
            MsFlags::MS_NODEV,
            Some(opts.as_str()),
        ),
    )?;

    let nosuid_nodev_noexec = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let proc_dir = ensure_dir(root, "proc", base)?;
    sys(
        "mount proc",
        mount(
            Some("proc"),
            &proc_dir,
            Some("proc"),
            nosuid_nodev_noexec,
            None::<&str>,
        ),
    )?;
    let sys_dir = ensure_dir(root, "sys", base)?;
    sys(
        "mount sysfs",
        mount(
            Some("sysfs"),
            &sys_dir,
            Some("sysfs"),
            nosuid_nodev_noexec | MsFlags::MS_RDONLY,
            None::<&str>,
        ),
    )?;
    build_dev(root, base)?;
    super::harden::mask_kernel_interfaces(root, &root.join("dev/null"))?;

    for dir in ["workspace", "tmp"] {
        ensure_dir(root, dir, base)?;
    }
    io(
        "chmod tmp",
        fs::set_permissions(
            root.join("tmp"),
            std::os::unix::fs::PermissionsExt::from_mode(0o1777),
        ),
    )?;

    let run = ensure_dir(root, RUN_MOUNT.trim_start_matches('/'), base)?;
    bind(&spec.sandbox_dir.join("run"), &run, false)?;
    let agent = ensure_dir(root, AGENT_MOUNT.trim_start_matches('/'), base)?;
    bind(&spec.agent_bundle, &agent, true)?;
    let resolv = spec.sandbox_dir.join("resolv.conf");
    if resolv.exists() {
        let target = root.join("etc/resolv.conf");
        // resolv.conf may be a dangling symlink in an image; replace it by a plain file to bind over.
        if fs::symlink_metadata(&target)
            .map(|m| !m.is_file())
            .unwrap_or(true)
        {
            let _ = fs::remove_file(&target);
            io("create resolv.conf", fs::write(&target, b""))?;
        }
        bind(&resolv, &target, true)?;
    }
    super::volume_mounts::mount_volumes(root, &spec.volumes, idmap, base)?;
    Ok(())
}

fn ensure_dir(root: &Path, rel: &str, owner: u32) -> Result<PathBuf, JailError> {
    let path = root.join(rel);
    if !path.is_dir() {
        io(format!("mkdir /{rel}"), fs::create_dir_all(&path))?;
        io(
            format!("chown /{rel}"),
            chown(&path, Some(owner), Some(owner)),
        )?;
    }
    Ok(path)
}

fn bind(src: &Path, dst: &Path, read_only: bool) -> Result<(), JailError> {
    let step = format!("bind {}", dst.display());
    sys(
        step.clone(),
        mount(
            Some(src),
            dst,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        ),
    )?;
    if read_only {
        let flags = MsFlags::MS_REMOUNT
            | MsFlags::MS_BIND
            | MsFlags::MS_RDONLY
            | MsFlags::MS_NOSUID
            | MsFlags::MS_NODEV;
        sys(
            step,
            mount(None::<&str>, dst, None::<&str>, flags, None::<&str>),
        )?;
    }
    Ok(())
}

/// A /dev with only the harmless character devices, bound from the host, and a private devpts.
fn build_dev(root: &Path, base: u32) -> Result<(), JailError> {
    let dev = ensure_dir(root, "dev", base)?;
    sys(
        "mount /dev",
        mount(
            Some("tmpfs"),
            &dev,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            Some("mode=0755,size=64k"),
        ),
    )?;
    for name in ["null", "zero", "full", "random", "urandom", "tty"] {
        let target = dev.join(name);
        io(format!("create /dev/{name}"), fs::write(&target, b""))?;
        bind(&Path::new("/dev").join(name), &target, false)?;
    }
    let pts = dev.join("pts");
    io("mkdir /dev/pts", fs::create_dir(&pts))?;
    let tty_gid = base + 5;
    let opts = format!("newinstance,ptmxmode=0666,mode=0620,gid={tty_gid}");
    sys(
        "mount devpts",
        mount(
            Some("devpts"),
            &pts,
            Some("devpts"),
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            Some(opts.as_str()),
        ),
    )?;
    let shm = dev.join("shm");
    io("mkdir /dev/shm", fs::create_dir(&shm))?;
    sys(
        "mount /dev/shm",
        mount(
            Some("tmpfs"),
            &shm,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=1777,size=64m"),
        ),
    )?;
    io("chown /dev/shm", chown(&shm, Some(base), Some(base)))?;
    for (link, target) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        io(format!("link /dev/{link}"), symlink(target, dev.join(link)))?;
    }
    Ok(())
}
