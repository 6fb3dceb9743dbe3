//! The gVisor tier: the sandbox runs under `runsc`, whose user-space kernel (the Sentry) stands
//! between user code and the host kernel. Same agent, same API; the host-side parts are shared
//! with the namespace tier (network namespace + veth + nftables, cgroup limits), so internet
//! on/off, resource limits, pause/resume (cgroup freezer) and cleanup behave the same.
//!
//! The OCI bundle is generated per sandbox (validated through the oci-spec types): the template's
//! layers are the read-only root (several layers are first joined by a read-only overlay on the
//! host), writes go to runsc's memory-backed overlay (`--overlay2=root:memory`, counted against
//! the sandbox's memory like the namespace tier's tmpfs), the agent bundle is bind-mounted
//! read-only, and the agent's unix socket is created on the host through `--host-uds`.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use serde_json::json;
use tokio::process::Command;
use warren_core::{SandboxId, Tier};

use crate::driver::{
    is_kept, AdoptedSandbox, DriverError, IsolationDriver, NotAdopted, SandboxHandle, SandboxSpec,
    SandboxUsage, StartedSandbox,
};
use crate::host::cgroups::SandboxCgroup;
use crate::host::network::SandboxNet;
use crate::host::{Host, IdChoice, ProcessRef, SandboxHost};

pub struct GvisorConfig {
    pub runsc: PathBuf,
    /// Bundles and per-sandbox host directories.
    pub state_dir: PathBuf,
    /// runsc's own state (`--root`).
    pub runsc_root: PathBuf,
}

struct Live {
    host: SandboxHost,
    dir: PathBuf,
    lower_mount: Option<PathBuf>,
}

/// What a gVisor sandbox's handle carries beyond the host parts.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct GvisorState {
    /// The read-only union of several layers, mounted on the host.
    lower_mount: Option<PathBuf>,
}

pub struct GvisorDriver {
    cfg: GvisorConfig,
    host: Arc<Host>,
    platform: &'static str,
    live: Mutex<HashMap<SandboxId, Live>>,
}

fn io(what: &str) -> impl FnOnce(std::io::Error) -> DriverError {
    let what = what.to_owned();
    move |source| DriverError::Io { what, source }
}

/// Host tasks one sandbox process may cost under runsc (see `start_inner`).
const HOST_TASKS_PER_PROCESS: u64 = 8;

impl GvisorDriver {
    /// None when runsc is not installed or cannot run here.
    pub async fn detect(cfg: GvisorConfig, host: Arc<Host>) -> Option<Self> {
        let help = Command::new(&cfg.runsc).arg("flags").output().await.ok()?;
        let text = String::from_utf8_lossy(&help.stdout).into_owned()
            + &String::from_utf8_lossy(&help.stderr);
        // systrap (newer runsc) is much faster than ptrace; kvm hangs on PVM hosts and needs
        // hardware virtualisation, so it is never chosen automatically.
        let platform = if text.contains("systrap") {
            "systrap"
        } else {
            "ptrace"
        };
        std::fs::create_dir_all(&cfg.state_dir).ok()?;
        std::fs::create_dir_all(&cfg.runsc_root).ok()?;
        tracing::info!(platform, "gVisor tier available");
        Some(Self {
            cfg,
            host,
            platform,
            live: Mutex::new(HashMap::new()),
        })
    }

    pub fn platform(&self) -> &'static str {
        self.platform
    }

    fn live(&self) -> std::sync::MutexGuard<'_, HashMap<SandboxId, Live>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn cgroup_of(&self, id: &SandboxId) -> Result<SandboxCgroup, DriverError> {
        self.live()
            .get(id)
            .map(|l| l.host.cgroup.clone())
            .ok_or_else(|| DriverError::NotFound(id.clone()))
    }

    fn runsc(&self) -> Command {
        let mut c = Command::new(&self.cfg.runsc);
        c.arg("--root")
            .arg(&self.cfg.runsc_root)
            .arg(format!("--platform={}", self.platform))
            // Limits come from the cgroup Warren puts runsc in (v1 and v2 alike).
            .arg("--ignore-cgroups")
            .arg("--host-uds=all")
            // The sandbox's own network namespace (only `lo`, or a veth with NAT) is its network;
            // runsc's in-Sentry netstack refuses to start here (it misjudges the namespace as the
            // host's), so sockets use the host kernel's stack *inside that namespace*.
            .arg("--network=host")
            .arg("--overlay2=root:memory");
        c
    }

    /// The OCI runtime spec of one sandbox.
    fn bundle(
        &self,
        spec: &SandboxSpec,
        root: &Path,
        dir: &Path,
        net: &SandboxNet,
        volumes: &[PathBuf],
    ) -> Result<oci_spec::runtime::Spec, DriverError> {
        let workdir = spec.workdir.clone().unwrap_or_else(|| "/workspace".into());
        let boot_env =
            serde_json::to_string(&spec.env_vars).map_err(|source| DriverError::Encode {
                what: "the environment",
                source,
            })?;
        let mut mounts = vec![
            json!({"destination": "/proc", "type": "proc", "source": "proc"}),
            json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "mode=755"]}),
            json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]}),
            json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "nodev", "mode=1777"]}),
            json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]}),
            json!({"destination": "/.warren", "type": "bind", "source": self.host.agent_bundle(), "options": ["rbind", "ro"]}),
            json!({"destination": "/run/warren", "type": "bind", "source": dir.join("run"), "options": ["rbind", "rw"]}),
        ];
        // Volumes reach the Sentry through the gofer, from their idmapped mounts on the host
        // (`host::idmapped::show_volumes`); `--overlay2=root:memory` overlays the root only, so
        // writes land in the volume.
        for (v, shown) in spec.volumes.iter().zip(volumes) {
            let access = if v.read_only { "ro" } else { "rw" };
            mounts.push(json!({"destination": v.target, "type": "bind", "source": shown, "options": ["rbind", access, "nosuid", "nodev"]}));
        }
        if spec.reaches_out() {
            if let Some(resolv) = &self.host.network().resolv_conf {
                let path = dir.join("resolv.conf");
                std::fs::write(&path, resolv).map_err(io("resolv.conf"))?;
                mounts.push(json!({"destination": "/etc/resolv.conf", "type": "bind", "source": path, "options": ["rbind", "ro"]}));
            }
        }
        let config = json!({
            "ociVersion": "1.0.2",
            "hostname": format!("sandbox-{}", &spec.id.as_str()[..8]),
            "root": {"path": root, "readonly": false},
            "process": {
                "terminal": false,
                "user": {"uid": 0, "gid": 0},
                "cwd": "/",
                "args": [
                    "/.warren/lib/ld-linux-x86-64.so.2", "--library-path", "/.warren/lib", "/.warren/warren-agent",
                    "--socket", "/run/warren/agent.sock", "--sandbox-id", spec.id.as_str(),
                    "--template", spec.template_name, "--vcpu", spec.resources.vcpu.to_string(),
                    "--memory-mb", spec.resources.memory_mb.to_string(), "--disk-mb", spec.resources.disk_mb.to_string(),
                    "--workdir", workdir,
                ],
                "env": [
                    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    "HOME=/root", "LANG=C.UTF-8", "TERM=xterm-256color",
                    format!("WARREN_BOOT_ENV={boot_env}"),
                ],
                "capabilities": {
                    "bounding": ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_MKNOD", "CAP_AUDIT_WRITE", "CAP_SETFCAP"],
                    "effective": ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_MKNOD", "CAP_AUDIT_WRITE", "CAP_SETFCAP"],
                    "permitted": ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_MKNOD", "CAP_AUDIT_WRITE", "CAP_SETFCAP"]
                },
                "noNewPrivileges": true
            },
            "mounts": mounts,
            "linux": {
                "namespaces": [
                    {"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"},
                    {"type": "network", "path": net.netns_path},
                ],
            },
        });
        serde_json::from_value(config).map_err(|source| DriverError::Encode {
            what: "the OCI spec",
            source,
        })
    }

    async fn start_inner(
        &self,
        spec: &SandboxSpec,
        dir: &Path,
        host: &SandboxHost,
    ) -> Result<(StartedSandbox, Option<PathBuf>), DriverError> {
        for sub in ["bundle", "run"] {
            tokio::fs::create_dir_all(dir.join(sub))
                .await
                .map_err(io("sandbox dir"))?;
        }
        // One read-only root: the single layer itself, or a read-only overlay of several.
        let (root, lower_mount) = match spec.layers.as_slice() {
            [] => return Err(DriverError::NoLayers),
            [one] => (one.clone(), None),
            many => {
                let mnt = dir.join("lower");
                crate::layers::mount_read_only_union(many, &mnt).map_err(io("mount layers"))?;
                (mnt.clone(), Some(mnt))
            }
        };
        // Under the ptrace platform each sandbox process costs the host several tasks (a stub
        // process and tracer threads: about 7 measured), all counted in the pids group: without
        // this a test runner forking 150 processes would end the sandbox.
        host.cgroup
            .set_max_tasks(u64::from(spec.resources.max_pids()) * HOST_TASKS_PER_PROCESS)?;
        let volumes = crate::host::idmapped::show_volumes(&spec.volumes, dir)
            .map_err(|e| DriverError::Unsupported(format!("volumes: {e}")))?;
        let oci = self.bundle(spec, &root, dir, &host.net, &volumes)?;
        oci.save(dir.join("bundle/config.json"))?;
        let log = std::fs::File::create(dir.join("runsc.log")).map_err(io("runsc log"))?;
        let mut cmd = self.runsc();
        cmd.arg("run")
            .arg("--bundle")
            .arg(dir.join("bundle"))
            .arg(spec.id.as_str())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            // Its own process group: a Ctrl-C meant for the server must not reach the sandbox.
            .process_group(0)
            .kill_on_drop(false);
        // runsc and everything it starts (sandbox, gofer) live in the sandbox's cgroup, and runsc
        // takes its network from the namespace it runs in.
        let netns = crate::host::start_inside(&mut cmd, host)?;
        let child = cmd.spawn().map_err(io("spawn runsc"))?;
        drop(netns);
        // `runsc run` lives as long as the sandbox: its end is the sandbox's end.
        let init = child
            .id()
            .and_then(|p| i32::try_from(p).ok())
            .and_then(ProcessRef::of);
        let up = crate::host::wait_for_agent(
            child,
            &dir.join("runsc.log"),
            dir.join("run/agent.sock"),
            crate::host::START_TIMEOUT,
            std::net::Ipv4Addr::LOCALHOST,
        )
        .await?;
        let state = GvisorState {
            lower_mount: lower_mount.clone(),
        };
        let mut started = StartedSandbox::new(self.tier(), up, host, dir, self.host.agent_bundle());
        started.handle.init = init;
        started.handle.tier_state = serde_json::to_value(&state).unwrap_or_default();
        Ok((started, lower_mount))
    }

    async fn teardown(&self, id: &str, live: Live) -> Result<(), DriverError> {
        // runsc reaches a sandbox through its control socket, an abstract unix socket, which
        // exists only in the sandbox's network namespace: both commands run there. `delete
        // --force` waits up to 5 s for the sandbox to stop before it kills it by pid (after
        // `kill` it now and then did, and a frozen sandbox cannot stop at all); a sandbox being
        // deleted needs no clean stop, and every process runsc made (runsc, the sandbox, the
        // gofer) is in the sandbox's cgroup, so when `delete` takes longer than it usually does
        // (50-150 ms), they are killed here and it ends about a second later. (Killing them
        // before `delete` is slower: `delete` of a dead sandbox takes 1-1.5 s every time.)
        let runsc_in_netns = |args: &[&str]| {
            let mut cmd = self.runsc();
            cmd.args(args)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .kill_on_drop(true);
            let netns = crate::host::enter_netns(&mut cmd, &live.host.net);
            let child = cmd.spawn();
            drop(netns);
            child
        };
        // A paused sandbox is thawed first: frozen, it cannot take the kill.
        let _ = live.host.cgroup.thaw();
        if let Ok(mut kill) = runsc_in_netns(&["kill", id, "KILL"]) {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), kill.wait()).await;
        }
        if let Ok(mut delete) = runsc_in_netns(&["delete", "--force", id]) {
            let waited =
                tokio::time::timeout(std::time::Duration::from_millis(250), delete.wait()).await;
            if waited.is_err() {
                let cgroup = live.host.cgroup.clone();
                let _ = tokio::task::spawn_blocking(move || cgroup.empty()).await;
                let _ = delete.wait().await;
            }
        }
        if let Some(m) = &live.lower_mount {
            let _ = nix::mount::umount2(m, nix::mount::MntFlags::MNT_DETACH);
        }
        if !crate::host::idmapped::hide_volumes(&live.dir) {
            // Removing the directory would remove the volume's files through the mount.
            return Err(DriverError::Unsupported(format!(
                "a volume is still mounted under {}",
                live.dir.display()
            )));
        }
        // The rest (cgroup, network namespace, directory) is the host layer's teardown.
        Ok(self.host.teardown(live.host, &live.dir).await?)
    }
}

impl IsolationDriver for GvisorDriver {
    fn tier(&self) -> Tier {
        Tier::Gvisor
    }

    async fn start(&self, spec: &SandboxSpec) -> Result<StartedSandbox, DriverError> {
        let dir = self.cfg.state_dir.join(spec.id.as_str());
        let host = self
            .host
            .provision(
                &spec.id,
                &spec.resources,
                spec.internet_access,
                spec.egress.as_ref(),
                IdChoice::Own,
            )
            .await?;
        match self.start_inner(spec, &dir, &host).await {
            Ok((started, lower_mount)) => {
                self.live().insert(
                    spec.id.clone(),
                    Live {
                        host,
                        dir,
                        lower_mount,
                    },
                );
                Ok(started)
            }
            Err(e) => {
                let live = Live {
                    host,
                    dir: dir.clone(),
                    lower_mount: dir.join("lower").exists().then(|| dir.join("lower")),
                };
                let _ = self.teardown(spec.id.as_str(), live).await;
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
        let live = self
            .live()
            .remove(id)
            .ok_or_else(|| DriverError::NotFound(id.clone()))?;
        self.teardown(id.as_str(), live).await
    }

    fn usage(&self, id: &SandboxId) -> Option<SandboxUsage> {
        Some(self.cgroup_of(id).ok()?.usage())
    }

    fn cpu_ns(&self, id: &SandboxId) -> Option<u64> {
        self.cgroup_of(id).ok()?.cpu_ns()
    }

    async fn adopt(
        &self,
        id: &SandboxId,
        handle: &SandboxHandle,
        _paused: bool,
    ) -> Result<AdoptedSandbox, NotAdopted> {
        let state: GvisorState =
            serde_json::from_value(handle.tier_state.clone()).unwrap_or_default();
        let adopted = match handle.init.filter(ProcessRef::is_alive) {
            None => Err("its runsc had ended"),
            Some(init) => match self.host.adopt(&handle.host) {
                None => Err("its cgroup or network namespace was gone"),
                Some(_) if !handle.agent_socket.exists() => Err("its agent socket was gone"),
                Some(host) => Ok((init, host)),
            },
        };
        let live = |host| Live {
            host,
            dir: handle.dir.clone(),
            lower_mount: state.lower_mount.clone(),
        };
        match adopted {
            Ok((init, host)) => {
                let paused = host.cgroup.is_frozen();
                self.live().insert(id.clone(), live(host));
                Ok(AdoptedSandbox::new(handle, init.watch(), paused))
            }
            Err(why) => {
                let remains = self.host.remains(&handle.host);
                if let Err(e) = self.teardown(id.as_str(), live(remains)).await {
                    tracing::warn!(sandbox = %id, error = %e, "cannot remove what is left of a dead sandbox");
                }
                Err(NotAdopted(why.into()))
            }
        }
    }

    async fn remove_leftovers(&self, keep: &HashSet<SandboxId>) {
        // The host layer has already killed what ran in the leftover cgroups: `runsc delete` on
        // a live sandbox it cannot reach (its control socket is in the sandbox's network
        // namespace) would wait 5 s per sandbox before killing it by pid.
        if let Ok(out) = self.runsc().args(["list", "--quiet"]).output().await {
            for id in String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| !l.is_empty() && !is_kept(l.as_ref(), keep))
            {
                let _ = self.runsc().args(["delete", "--force", id]).output().await;
            }
        }
        if let Ok(mut d) = tokio::fs::read_dir(&self.cfg.state_dir).await {
            while let Ok(Some(e)) = d.next_entry().await {
                if is_kept(&e.file_name(), keep) {
                    continue;
                }
                let _ =
                    nix::mount::umount2(&e.path().join("lower"), nix::mount::MntFlags::MNT_DETACH);
                if crate::host::idmapped::hide_volumes(&e.path()) {
                    let _ = tokio::fs::remove_dir_all(e.path()).await;
                }
            }
        }
    }
}
