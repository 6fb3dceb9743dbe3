//! The default isolation tier: Linux namespaces (user, pid, mount, net, uts, ipc), cgroups, and an
//! overlay root file system. Starts in milliseconds; shares the host kernel (see docs/security.md
//! for what that means for hostile code).

pub mod cgroups;
pub mod harden;
pub mod jail;
pub mod network;

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::os::unix::fs::chown;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;
use tokio::sync::oneshot;
use warren_core::SandboxId;

use crate::driver::{DriverError, IsolationDriver, SandboxSpec, SandboxUsage, StartedSandbox};
use cgroups::{CgroupRoot, SandboxCgroup};
use jail::{JailSpec, RUN_MOUNT};
use network::{Network, SandboxNet};

/// Host uid/gid that root inside every sandbox maps to. Sandboxes share the range: they cannot
/// see each other's processes (pid namespaces) or files (separate roots), and none of these ids
/// owns anything on the host outside the template caches.
pub const ID_BASE: u32 = 100_000;
pub(crate) const START_TIMEOUT: Duration = Duration::from_secs(30);

pub struct NamespaceConfig {
    /// Per-sandbox host directories are created below this.
    pub state_dir: PathBuf,
    /// Directory with the agent binary, its libraries and loader (see `agent_bundle`).
    pub agent_bundle: PathBuf,
    /// The `warren` executable, whose hidden `jail` subcommand sets a sandbox up.
    pub jail_exe: PathBuf,
    /// The /16 that sandbox veth links are numbered from.
    pub network_base: Ipv4Addr,
}

struct LiveSandbox {
    cgroup: SandboxCgroup,
    net: SandboxNet,
    dir: PathBuf,
}

/// Held for the driver's lifetime: one namespace-tier server per host.
const HOST_LOCK: &str = "/run/warren-namespaces.lock";

pub struct NamespaceDriver {
    _host_lock: nix::fcntl::Flock<std::fs::File>,
    cfg: NamespaceConfig,
    cgroups: CgroupRoot,
    network: Network,
    live: Mutex<HashMap<SandboxId, LiveSandbox>>,
}

impl NamespaceDriver {
    pub async fn new(cfg: NamespaceConfig) -> Result<Self, DriverError> {
        let host_lock = lock_host()?;
        let cgroups = CgroupRoot::discover()?;
        let network = Network::init(cfg.network_base).await?;
        tokio::fs::create_dir_all(&cfg.state_dir)
            .await
            .map_err(|source| DriverError::Io {
                what: "state dir".into(),
                source,
            })?;
        tracing::info!(cgroups = cgroups.version(), "namespace driver ready");
        Ok(Self {
            _host_lock: host_lock,
            cfg,
            cgroups,
            network,
            live: Mutex::new(HashMap::new()),
        })
    }

    /// Host-wide resources other tiers share with this one (one nftables table, one id space).
    pub fn network(&self) -> &Network {
        &self.network
    }

    pub fn agent_bundle(&self) -> &Path {
        &self.cfg.agent_bundle
    }

    fn live(&self) -> std::sync::MutexGuard<'_, HashMap<SandboxId, LiveSandbox>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn cgroup_of(&self, id: &SandboxId) -> Result<SandboxCgroup, DriverError> {
        self.live()
            .get(id)
            .map(|l| l.cgroup.clone())
            .ok_or_else(|| DriverError::NotFound(id.clone()))
    }

    async fn start_inner(
        &self,
        spec: &SandboxSpec,
        dir: &Path,
        cgroup: &SandboxCgroup,
        net: &SandboxNet,
    ) -> Result<StartedSandbox, DriverError> {
        let io = |what: &str| {
            let what = what.to_owned();
            move |source| DriverError::Io { what, source }
        };
        for sub in ["root", "scratch", "run"] {
            tokio::fs::create_dir_all(dir.join(sub))
                .await
                .map_err(io("sandbox dir"))?;
        }
        chown(dir.join("run"), Some(ID_BASE), Some(ID_BASE)).map_err(io("chown run dir"))?;
        if let (true, Some(resolv)) = (spec.internet_access, &self.network.resolv_conf) {
            tokio::fs::write(dir.join("resolv.conf"), resolv)
                .await
                .map_err(io("resolv.conf"))?;
        }
        let agent_args = vec![
            "--socket".to_owned(),
            format!("{RUN_MOUNT}/agent.sock"),
            "--sandbox-id".to_owned(),
            spec.id.to_string(),
            "--template".to_owned(),
            spec.template_name.clone(),
            "--vcpu".to_owned(),
            spec.resources.vcpu.to_string(),
            "--memory-mb".to_owned(),
            spec.resources.memory_mb.to_string(),
            "--disk-mb".to_owned(),
            spec.resources.disk_mb.to_string(),
            "--workdir".to_owned(),
            spec.workdir
                .clone()
                .unwrap_or_else(|| "/workspace".to_owned()),
        ];
        let jail_spec = JailSpec {
            hostname: format!("sandbox-{}", &spec.id.as_str()[..8]),
            lower_dirs: spec.layers.clone(),
            persistent_upper: spec.persistent_upper.clone(),
            sandbox_dir: dir.to_path_buf(),
            agent_bundle: self.cfg.agent_bundle.clone(),
            disk_mb: spec.resources.disk_mb,
            cgroup_procs: cgroup.procs_files(),
            netns: net.netns_path.clone(),
            id_base: ID_BASE,
            agent_args,
            agent_env: spec.env_vars.clone(),
        };
        let log_path = dir.join("agent.log");
        let log = std::fs::File::create(&log_path).map_err(io("agent log"))?;
        let mut child = Command::new(&self.cfg.jail_exe)
            .arg("jail")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .map_err(io("spawn jail"))?;
        let payload =
            serde_json::to_vec(&jail_spec).map_err(|e| DriverError::Start(e.to_string()))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(&payload)
                .await
                .map_err(io("send jail spec"))?;
        }
        wait_for_agent(
            child,
            &log_path,
            dir.join("run/agent.sock"),
            START_TIMEOUT,
            Ipv4Addr::LOCALHOST,
        )
        .await
    }

    /// Creates a sandbox's host parts: its cgroup with the template's limits and its network
    /// namespace (with a veth when it has internet access). Shared with the gVisor tier.
    pub(crate) async fn provision(
        &self,
        spec: &SandboxSpec,
    ) -> Result<(SandboxCgroup, SandboxNet), DriverError> {
        let cgroup = self.cgroups.sandbox(spec.id.as_str());
        cgroup.create(&spec.resources)?;
        match self
            .network
            .create(spec.id.as_str(), spec.internet_access)
            .await
        {
            Ok(net) => Ok((cgroup, net)),
            Err(e) => {
                let _ = cgroup.destroy();
                Err(e.into())
            }
        }
    }

    /// Removes a sandbox's host parts: its cgroup (killing what is left in it), network
    /// namespace and veth, and its host directory. Shared with the gVisor tier.
    pub(crate) async fn teardown(
        &self,
        cgroup: SandboxCgroup,
        net: &SandboxNet,
        dir: &Path,
    ) -> Result<(), DriverError> {
        let cg = cgroup.clone();
        let killed = tokio::task::spawn_blocking(move || cg.destroy())
            .await
            .map_err(|e| DriverError::Start(format!("cgroup teardown panicked: {e}")))?;
        self.network.destroy(net).await;
        if let Err(e) = tokio::fs::remove_dir_all(dir).await {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot remove sandbox dir");
            }
        }
        killed?;
        Ok(())
    }
}

impl IsolationDriver for NamespaceDriver {
    fn name(&self) -> &'static str {
        "namespaces"
    }

    async fn start(&self, spec: &SandboxSpec) -> Result<StartedSandbox, DriverError> {
        let dir = self.cfg.state_dir.join(spec.id.as_str());
        let (cgroup, net) = self.provision(spec).await?;
        match self.start_inner(spec, &dir, &cgroup, &net).await {
            Ok(started) => {
                self.live()
                    .insert(spec.id.clone(), LiveSandbox { cgroup, net, dir });
                Ok(started)
            }
            Err(e) => {
                if let Err(te) = self.teardown(cgroup, &net, &dir).await {
                    tracing::warn!(error = %te, "teardown after failed start");
                }
                Err(e)
            }
        }
    }

    async fn pause(&self, id: &SandboxId) -> Result<(), DriverError> {
        Ok(self.cgroup_of(id)?.freeze()?)
    }

    async fn resume(&self, id: &SandboxId) -> Result<(), DriverError> {
        Ok(self.cgroup_of(id)?.thaw()?)
    }

    async fn destroy(&self, id: &SandboxId) -> Result<(), DriverError> {
        let Some(live) = self.live().remove(id) else {
            return Ok(());
        };
        self.teardown(live.cgroup, &live.net, &live.dir).await
    }

    fn usage(&self, id: &SandboxId) -> Option<SandboxUsage> {
        Some(self.cgroup_of(id).ok()?.usage())
    }

    async fn remove_leftovers(&self) {
        for name in self.cgroups.leftovers() {
            let cg = self.cgroups.sandbox(&name);
            tracing::info!(sandbox = %name, "removing cgroup left by an earlier run");
            if let Err(e) = tokio::task::spawn_blocking(move || cg.destroy())
                .await
                .unwrap_or(Ok(()))
            {
                tracing::warn!(sandbox = %name, error = %e, "cannot remove leftover cgroup");
            }
        }
        self.network.remove_leftovers().await;
        if let Ok(mut dir) = tokio::fs::read_dir(&self.cfg.state_dir).await {
            while let Ok(Some(e)) = dir.next_entry().await {
                let _ = tokio::fs::remove_dir_all(e.path()).await;
            }
        }
    }

    async fn release_host(&self) {
        self.network.release_host().await;
    }
}

fn lock_host() -> Result<nix::fcntl::Flock<std::fs::File>, DriverError> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(HOST_LOCK)
        .map_err(|source| DriverError::Io {
            what: format!("open {HOST_LOCK}"),
            source,
        })?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
        .map_err(|_| DriverError::HostBusy(HOST_LOCK.into()))
}

/// Makes `cmd` start inside a sandbox's network namespace and cgroup (for the processes of the
/// other tiers: runsc, QEMU). Keep the returned namespace handle open until `cmd` is spawned.
pub(crate) fn start_inside(
    cmd: &mut Command,
    cgroup: &SandboxCgroup,
    net: &SandboxNet,
) -> Result<std::fs::File, DriverError> {
    use std::os::unix::ffi::OsStrExt;
    let netns = enter_netns(cmd, net)?;
    let procs: Vec<std::ffi::CString> = cgroup
        .procs_files()
        .iter()
        .filter_map(|p| std::ffi::CString::new(p.as_os_str().as_bytes()).ok())
        .collect();
    // SAFETY: only open/write/close on paths prepared before fork.
    unsafe {
        cmd.pre_exec(move || {
            for p in &procs {
                let fd = libc::open(p.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::write(fd, b"0".as_ptr().cast(), 1);
                libc::close(fd);
            }
            Ok(())
        });
    }
    Ok(netns)
}

/// Makes `cmd` start inside a sandbox's network namespace. Keep the returned namespace handle
/// open until `cmd` is spawned.
pub(crate) fn enter_netns(
    cmd: &mut Command,
    net: &SandboxNet,
) -> Result<std::fs::File, DriverError> {
    let netns = std::fs::File::open(&net.netns_path).map_err(|source| DriverError::Io {
        what: "open network namespace".into(),
        source,
    })?;
    let netns_fd = std::os::fd::AsRawFd::as_raw_fd(&netns);
    // SAFETY: only setns on a descriptor opened before fork.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(netns_fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok(netns)
}

/// Waits for the sandbox's agent to print `ready` on `child`'s stdout (the jail, runsc, or a
/// VM's console), then watches `child` for the sandbox's end. On failure the child is killed and
/// the error carries the last lines of `log_path` (the sandbox's start-up log) and of stdout.
pub(crate) async fn wait_for_agent(
    mut child: tokio::process::Child,
    log_path: &Path,
    agent_socket: PathBuf,
    timeout: Duration,
    port_host: Ipv4Addr,
) -> Result<StartedSandbox, DriverError> {
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| DriverError::Start("sandbox helper has no stdout".into()))?;
    let mut lines = BufReader::new(stdout).lines();
    // A VM's console arrives here too: keep its last words for the error message.
    let mut console = std::collections::VecDeque::new();
    let ready = until_ready(&mut lines, timeout, &mut console).await;
    if !ready {
        let _ = child.start_kill();
        let _ = child.wait().await;
        let log = tokio::fs::read_to_string(log_path)
            .await
            .unwrap_or_default();
        let mut last: Vec<&str> = log.lines().rev().take(5).collect();
        last.reverse();
        last.extend(console.iter().map(String::as_str).filter(|l| !l.is_empty()));
        return Err(DriverError::Start(if last.is_empty() {
            "agent did not report ready".into()
        } else {
            last.join("; ")
        }));
    }
    Ok(StartedSandbox {
        agent_socket,
        port_host,
        exited: watch_exit(child, lines),
    })
}

/// Reads `stdout` until the agent's `ready` line (true) or its end or `timeout` (false), keeping
/// the last five other lines in `tail`.
pub(crate) async fn until_ready(
    stdout: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    timeout: Duration,
    tail: &mut std::collections::VecDeque<String>,
) -> bool {
    tokio::time::timeout(timeout, async {
        while let Ok(Some(line)) = stdout.next_line().await {
            if line.trim() == "ready" {
                return true;
            }
            if tail.len() == 5 {
                tail.pop_front();
            }
            tail.push_back(line.trim().to_owned());
        }
        false
    })
    .await
    .unwrap_or(false)
}

/// Reports `child`'s exit code once it ends, reading its remaining stdout meanwhile so that later
/// output never blocks it on a full pipe.
pub(crate) fn watch_exit(
    mut child: tokio::process::Child,
    mut stdout: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
) -> oneshot::Receiver<i32> {
    let (tx, exited) = oneshot::channel();
    tokio::spawn(async move {
        while let Ok(Some(_)) = stdout.next_line().await {}
        let code = child.wait().await.ok().and_then(|s| s.code()).unwrap_or(-1);
        let _ = tx.send(code);
    });
    exited
}
