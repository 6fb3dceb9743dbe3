//! The default isolation tier: Linux namespaces (user, pid, mount, net, uts, ipc), cgroups, and an
//! overlay root file system. Starts in milliseconds; shares the host kernel (see docs/security.md
//! for what that means for hostile code).

mod base_mounts;
pub mod harden;
mod idmap;
pub mod jail;
pub mod snapshot;
mod volume_mounts;

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::os::unix::fs::chown;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use tokio::io::AsyncWriteExt;
use tokio::process::Command;
use warren_core::{SandboxId, Tier};

use crate::driver::{
    is_kept, AdoptedSandbox, DriverError, IsolationDriver, NotAdopted, SandboxHandle, SandboxSpec,
    SandboxUsage, Snapshot, SnapshotTaken, StartedSandbox,
};
use crate::host::cgroups::SandboxCgroup;
use crate::host::{Host, IdChoice, ProcessRef, SandboxHost, START_TIMEOUT};
use base_mounts::BaseMounts;
use jail::{JailSpec, RUN_MOUNT};

/// Host uid/gid that root inside a build sandbox maps to, and that template layers are owned by
/// (every other sandbox gets a range of its own: `host::ids`).
pub const ID_BASE: u32 = crate::host::ids::CANONICAL_BASE;

pub struct NamespaceConfig {
    /// Per-sandbox host directories are created below this.
    pub state_dir: PathBuf,
    /// The `warren` executable, whose hidden `jail` subcommand sets a sandbox up.
    pub jail_exe: PathBuf,
}

struct LiveSandbox {
    host: SandboxHost,
    dir: PathBuf,
    /// The sandbox's init (the jail's outer process is its parent).
    init: Option<ProcessRef>,
}

pub struct NamespaceDriver {
    cfg: NamespaceConfig,
    host: Arc<Host>,
    /// What jails start from (`base_mounts.rs`); None: the host's mounts.
    base_mounts: Option<BaseMounts>,
    live: Mutex<HashMap<SandboxId, LiveSandbox>>,
}

impl NamespaceDriver {
    pub async fn new(cfg: NamespaceConfig, host: Arc<Host>) -> Result<Self, DriverError> {
        tokio::fs::create_dir_all(&cfg.state_dir)
            .await
            .map_err(|source| DriverError::Io {
                what: "state dir".into(),
                source,
            })?;
        let base_mounts = match BaseMounts::new() {
            Ok(b) => Some(b),
            Err(e) => {
                tracing::warn!(error = %e, "jails start from the host's mounts (slower with many sandboxes)");
                None
            }
        };
        Ok(Self {
            cfg,
            host,
            base_mounts,
            live: Mutex::new(HashMap::new()),
        })
    }

    fn live(&self) -> std::sync::MutexGuard<'_, HashMap<SandboxId, LiveSandbox>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn cgroup_of(&self, id: &SandboxId) -> Result<SandboxCgroup, DriverError> {
        self.live()
            .get(id)
            .map(|l| l.host.cgroup.clone())
            .ok_or_else(|| DriverError::NotFound(id.clone()))
    }

    async fn start_inner(
        &self,
        spec: &SandboxSpec,
        dir: &Path,
        host: &SandboxHost,
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
        chown(dir.join("run"), Some(host.id_base), Some(host.id_base))
            .map_err(io("chown run dir"))?;
        if let (true, Some(resolv)) = (spec.reaches_out(), &self.host.network().resolv_conf) {
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
            agent_bundle: self.host.agent_bundle().to_path_buf(),
            disk_mb: spec.resources.disk_mb,
            cgroup_procs: host.cgroup.procs_files(),
            netns: host.net.netns_path.clone(),
            id_base: host.id_base,
            layer_id_base: ID_BASE,
            userns_owned_by_sandbox: self.host.own_ids(),
            max_processes: spec.resources.max_pids().into(),
            agent_args,
            agent_env: spec.env_vars.clone(),
            volumes: spec.volumes.clone(),
            // Volumes are mounted on the host after the base was taken.
            base_mounts: match (&self.base_mounts, spec.volumes.is_empty()) {
                (Some(base), true) => Some(base.path()),
                _ => None,
            },
        };
        let log_path = dir.join("agent.log");
        let log = std::fs::File::create(&log_path).map_err(io("agent log"))?;
        let mut child = Command::new(&self.cfg.jail_exe)
            .arg("jail")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            // Its own process group: a Ctrl-C meant for the server must not reach the sandbox,
            // which outlives the server (live restore).
            .process_group(0)
            .spawn()
            .map_err(io("spawn jail"))?;
        let payload = serde_json::to_vec(&jail_spec).map_err(|source| DriverError::Encode {
            what: "the jail's spec",
            source,
        })?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(&payload)
                .await
                .map_err(io("send jail spec"))?;
        }
        let up = crate::host::wait_for_agent(
            child,
            &log_path,
            dir.join("run/agent.sock"),
            START_TIMEOUT,
            Ipv4Addr::LOCALHOST,
        )
        .await?;
        // The jail announces the sandbox's init: its end is the sandbox's end, also for a server
        // that takes the sandbox over later.
        let init = up.announced_pid.and_then(ProcessRef::of);
        if init.is_none() {
            tracing::warn!(sandbox = %spec.id, "the jail named no init process: this sandbox cannot outlive the server");
        }
        let mut started = StartedSandbox::new(self.tier(), up, host, dir, self.host.agent_bundle());
        started.handle.init = init;
        Ok(started)
    }
}

impl IsolationDriver for NamespaceDriver {
    fn tier(&self) -> Tier {
        Tier::Namespaces
    }

    async fn start(&self, spec: &SandboxSpec) -> Result<StartedSandbox, DriverError> {
        let dir = self.cfg.state_dir.join(spec.id.as_str());
        // A build's writable layer becomes a template layer, owned by the canonical range; and
        // without idmapped mounts the layers can only be shown with the ids they have on disk.
        let ids = if spec.persistent_upper.is_some() || !self.host.own_ids() {
            IdChoice::Canonical
        } else {
            IdChoice::Own
        };
        let began = std::time::Instant::now();
        let host = self
            .host
            .provision(
                &spec.id,
                &spec.resources,
                spec.internet_access,
                spec.egress.as_ref(),
                ids,
            )
            .await?;
        let provisioned = began.elapsed();
        match self.start_inner(spec, &dir, &host).await {
            Ok(started) => {
                // Where a start's time goes (cgroup + network namespace, then jail to agent), to
                // see which part grows with the number of sandboxes (RUST_LOG=warren_runtime=debug).
                tracing::debug!(
                    sandbox = %spec.id,
                    provision_ms = provisioned.as_secs_f64() * 1e3,
                    agent_ms = (began.elapsed() - provisioned).as_secs_f64() * 1e3,
                    "namespace sandbox started"
                );
                let init = started.handle.init;
                self.live()
                    .insert(spec.id.clone(), LiveSandbox { host, dir, init });
                Ok(started)
            }
            Err(e) => {
                if let Err(te) = self.host.teardown(host, &dir).await {
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
        Ok(self.host.teardown(live.host, &live.dir).await?)
    }

    fn cpu_ns(&self, id: &SandboxId) -> Option<u64> {
        self.cgroup_of(id).ok()?.cpu_ns()
    }

    fn usage(&self, id: &SandboxId) -> Option<SandboxUsage> {
        let (cgroup, init) = {
            let live = self.live();
            let l = live.get(id)?;
            (l.host.cgroup.clone(), l.init)
        };
        let mut usage = cgroup.usage();
        // The writable layer is a size-limited tmpfs under the overlay root, whose statfs is
        // the tmpfs's: seen through the sandbox's init.
        usage.disk_bytes = init.and_then(|p| {
            let fs = nix::sys::statfs::statfs(format!("/proc/{}/root", p.pid).as_str()).ok()?;
            let used = fs.blocks().saturating_sub(fs.blocks_free());
            Some(used * fs.block_size() as u64)
        });
        Some(usage)
    }

    async fn adopt(
        &self,
        id: &SandboxId,
        handle: &SandboxHandle,
        _paused: bool,
    ) -> Result<AdoptedSandbox, NotAdopted> {
        // A frozen (paused) sandbox's processes are alive like any other's.
        let adopted = match handle.init.filter(ProcessRef::is_alive) {
            None => Err("its processes had ended"),
            Some(init) => match self.host.adopt(&handle.host) {
                None => Err("its cgroup or network namespace was gone"),
                Some(_) if !handle.agent_socket.exists() => Err("its agent socket was gone"),
                Some(host) => Ok((init, host)),
            },
        };
        match adopted {
            Ok((init, host)) => {
                let paused = host.cgroup.is_frozen();
                self.live().insert(
                    id.clone(),
                    LiveSandbox {
                        host,
                        dir: handle.dir.clone(),
                        init: Some(init),
                    },
                );
                Ok(AdoptedSandbox::new(handle, init.watch(), paused))
            }
            Err(why) => {
                self.host
                    .remove_remains(id, &handle.host, &handle.dir)
                    .await;
                Err(NotAdopted(why.into()))
            }
        }
    }

    async fn snapshot(&self, id: &SandboxId, dir: &Path) -> Result<SnapshotTaken, DriverError> {
        let dest = dir.join("layer");
        let dest = dest.as_path();
        let (cgroup, dir, init, id_base) = {
            let live = self.live();
            let l = live
                .get(id)
                .ok_or_else(|| DriverError::NotFound(id.clone()))?;
            (l.host.cgroup.clone(), l.dir.clone(), l.init, l.host.id_base)
        };
        let jail = init
            .filter(ProcessRef::is_alive)
            .and_then(|p| snapshot::parent_of(p.pid))
            .ok_or_else(|| DriverError::Unsupported("the sandbox's processes are gone".into()))?;
        let upper = snapshot::upper_dir(jail, &dir);
        if !upper.is_dir() {
            return Err(DriverError::Unsupported(
                "this sandbox was started by an earlier Warren whose sandboxes cannot be \
                 snapshotted; sandboxes started from now on can"
                    .into(),
            ));
        }
        // Frozen while copied, so the layer is one moment of the sandbox; a paused sandbox stays so.
        let was_frozen = cgroup.is_frozen();
        if !was_frozen {
            cgroup.freeze()?;
        }
        let dest_owned = dest.to_path_buf();
        let copied = tokio::task::spawn_blocking(move || {
            snapshot::copy_layer(&upper, &dest_owned, id_base, ID_BASE)
        })
        .await;
        if !was_frozen {
            cgroup.thaw()?;
        }
        let copied = copied
            .map_err(|_| DriverError::Panicked("the snapshot copy"))
            .and_then(|r| {
                r.map_err(|source| DriverError::Io {
                    what: "copy the sandbox's writable layer".into(),
                    source,
                })
            });
        if copied.is_err() {
            let _ = tokio::fs::remove_dir_all(dest).await;
        }
        copied.map(|bytes| SnapshotTaken {
            snapshot: Snapshot::Layer(dest.to_path_buf()),
            bytes,
        })
    }

    async fn remove_leftovers(&self, keep: &HashSet<SandboxId>) {
        // Cgroups and namespaces are the host layer's (removed first); the directories are ours.
        if let Ok(mut dir) = tokio::fs::read_dir(&self.cfg.state_dir).await {
            while let Ok(Some(e)) = dir.next_entry().await {
                if !is_kept(&e.file_name(), keep) {
                    let _ = tokio::fs::remove_dir_all(e.path()).await;
                }
            }
        }
    }
}
