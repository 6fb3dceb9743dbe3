//! Per-sandbox cgroups. Hosts differ: this machine has v1 hierarchies, most user machines v2.
//! Both are handled here behind one type; groups are created under the cgroup the server already
//! runs in (never by re-mounting or touching the host's own hierarchies).
//!
//! Groups are reused, not removed: a sandbox's group is emptied (its processes killed) and kept for
//! the next sandbox. A removed memory cgroup that still has
//! pages charged to it stays in the kernel as a hidden "dying" group until they are reclaimed, and
//! a sandbox's group always has some: template files it read first and that other sandboxes still
//! map. Over thousands of sandboxes those dying groups held hundreds of MB. With reuse the number
//! of groups is the peak number of sandboxes, and nothing is left dying.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use warren_core::Resources;

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("no usable cgroup hierarchy: {0}")]
    Unavailable(String),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

fn io<T>(path: &Path, r: std::io::Result<T>) -> Result<T, CgroupError> {
    r.map_err(|source| CgroupError::Io {
        path: path.display().to_string(),
        source,
    })
}

/// Resource usage, read from outside the sandbox (the sandbox cannot lie about it).
#[derive(Debug, Clone, Copy, Default)]
pub struct SandboxUsage {
    pub memory_bytes: u64,
    pub processes: u32,
    /// CPU time used since the sandbox started, in nanoseconds (all its processes).
    pub cpu_ns: u64,
    /// Bytes its writable file system holds, where the tier can tell from outside.
    pub disk_bytes: Option<u64>,
}

#[derive(Debug, Clone)]
enum Layout {
    /// One directory per controller: memory, pids, cpu, cpuacct, freezer.
    V1 {
        memory: PathBuf,
        pids: PathBuf,
        cpu: PathBuf,
        cpuacct: PathBuf,
        freezer: PathBuf,
    },
    /// The unified hierarchy.
    V2 { base: PathBuf },
}

/// Emptied groups kept for reuse beyond this many are removed (after a burst of sandboxes).
const MAX_IDLE_GROUPS: usize = 256;

/// Where Warren's cgroups live; one per server process.
#[derive(Debug, Clone)]
pub struct CgroupRoot {
    layout: Layout,
    pool: Arc<Mutex<Pool>>,
}

/// Which groups under `warren/` hold a sandbox and which wait, emptied, for the next one.
#[derive(Debug, Default)]
struct Pool {
    in_use: HashSet<String>,
    idle: Vec<String>,
}

/// The cgroup(s) of one sandbox.
#[derive(Debug, Clone)]
pub struct SandboxCgroup {
    dirs: Vec<PathBuf>,
    layout: Layout,
}

const CPU_PERIOD_US: u64 = 100_000;

impl CgroupRoot {
    /// Finds the server's own cgroups and prepares a `<group>/` group below each (`warren/` on a
    /// machine's first host slot).
    pub fn discover(group: &str) -> Result<Self, CgroupError> {
        let own = fs::read_to_string("/proc/self/cgroup")
            .map_err(|e| CgroupError::Unavailable(format!("/proc/self/cgroup: {e}")))?;
        let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
        let layout = if v2 {
            let rel = own
                .lines()
                .find_map(|l| l.strip_prefix("0::"))
                .unwrap_or("/");
            let base = Path::new("/sys/fs/cgroup")
                .join(rel.trim_start_matches('/'))
                .join(group);
            Layout::V2 { base }
        } else {
            let find = |controller: &str| -> Result<PathBuf, CgroupError> {
                for line in own.lines() {
                    let mut parts = line.splitn(3, ':');
                    let (_, names, rel) = (
                        parts.next(),
                        parts.next().unwrap_or(""),
                        parts.next().unwrap_or("/"),
                    );
                    if names.split(',').any(|n| n == controller) {
                        let mount = Path::new("/sys/fs/cgroup").join(names);
                        let mount = if mount.exists() {
                            mount
                        } else {
                            Path::new("/sys/fs/cgroup").join(controller)
                        };
                        return Ok(mount.join(rel.trim_start_matches('/')).join(group));
                    }
                }
                Err(CgroupError::Unavailable(format!(
                    "cgroup v1 controller {controller} not mounted"
                )))
            };
            Layout::V1 {
                memory: find("memory")?,
                pids: find("pids")?,
                cpu: find("cpu")?,
                cpuacct: find("cpuacct")?,
                freezer: find("freezer")?,
            }
        };
        let root = Self {
            layout,
            pool: Arc::default(),
        };
        for dir in root.bases() {
            io(&dir, fs::create_dir_all(&dir))?;
        }
        if let Layout::V2 { base } = &root.layout {
            // Children of `warren/` need these controllers delegated.
            let _ = fs::write(base.join("cgroup.subtree_control"), "+memory +pids +cpu");
        }
        root.leave_pids_to_the_host();
        Ok(root)
    }

    /// Caps the tasks of all sandboxes together below the kernel's pid limit, so that sandboxes
    /// forking at their limits (each within its own) never leave the host unable to fork.
    fn leave_pids_to_the_host(&self) {
        let Some(pid_max) = fs::read_to_string("/proc/sys/kernel/pid_max")
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
        else {
            return;
        };
        let reserve = (pid_max / 8).max(2048);
        let cap = pid_max.saturating_sub(reserve).max(1024);
        let dir = match &self.layout {
            Layout::V1 { pids, .. } => pids,
            Layout::V2 { base } => base,
        };
        if let Err(e) = fs::write(dir.join("pids.max"), cap.to_string()) {
            tracing::warn!(error = %e, "cannot cap the tasks of all sandboxes together");
        }
    }

    pub fn version(&self) -> &'static str {
        match self.layout {
            Layout::V1 { .. } => "v1",
            Layout::V2 { .. } => "v2",
        }
    }

    fn bases(&self) -> Vec<PathBuf> {
        match &self.layout {
            Layout::V1 {
                memory,
                pids,
                cpu,
                cpuacct,
                freezer,
            } => {
                let mut v = vec![
                    memory.clone(),
                    pids.clone(),
                    cpu.clone(),
                    cpuacct.clone(),
                    freezer.clone(),
                ];
                v.dedup();
                v
            }
            Layout::V2 { base } => vec![base.clone()],
        }
    }

    fn pool(&self) -> std::sync::MutexGuard<'_, Pool> {
        self.pool.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The group `name` under `warren/`, whether or not it exists.
    fn named(&self, name: &str) -> SandboxCgroup {
        let mut dirs: Vec<PathBuf> = self.bases().into_iter().map(|b| b.join(name)).collect();
        dirs.dedup();
        SandboxCgroup {
            dirs,
            layout: self.layout.clone(),
        }
    }

    /// A group for a new sandbox: an emptied one if there is one, else a new one (`create` sets
    /// its limits either way).
    pub fn acquire(&self) -> SandboxCgroup {
        let mut pool = self.pool();
        let name = pool.idle.pop().unwrap_or_else(|| {
            std::iter::repeat_with(|| format!("slot-{}", hex::encode(rand::random::<[u8; 4]>())))
                .find(|n| {
                    !pool.in_use.contains(n) && !self.named(n).dirs.iter().any(|d| d.exists())
                })
                .unwrap_or_default()
        });
        pool.in_use.insert(name.clone());
        drop(pool);
        self.named(&name)
    }

    /// The group of a sandbox at `dirs` (as `SandboxCgroup::dirs` reported it), which may lie
    /// under another root than this server's if an earlier server ran in another cgroup. It
    /// counts as in use from now on.
    pub fn sandbox_at(&self, dirs: Vec<PathBuf>) -> SandboxCgroup {
        let cg = SandboxCgroup {
            dirs,
            layout: self.layout.clone(),
        };
        self.pool().in_use.insert(cg.name());
        cg
    }

    /// Empties a sandbox's group (kills what runs in it, reclaims its memory) and keeps it for the
    /// next sandbox; beyond `MAX_IDLE_GROUPS` idle ones it is removed instead. Blocking.
    pub fn recycle(&self, cg: SandboxCgroup) -> Result<(), CgroupError> {
        let name = cg.name();
        let emptied = cg.empty();
        let mut pool = self.pool();
        pool.in_use.remove(&name);
        let ours = cg.dirs.iter().all(|d| {
            d.parent()
                .is_some_and(|p| self.bases().contains(&p.to_path_buf()))
        });
        if emptied.is_ok() && ours && cg.exists() && pool.idle.len() < MAX_IDLE_GROUPS {
            pool.idle.push(name);
            return Ok(());
        }
        drop(pool);
        emptied?;
        cg.remove()
    }

    /// Empties the groups under `warren/` that no sandbox of this server holds (left by an earlier
    /// server) and keeps them for reuse. Blocking.
    pub fn recycle_leftovers(&self) {
        for name in self.leftovers() {
            if self.pool().in_use.contains(&name) || self.pool().idle.contains(&name) {
                continue;
            }
            tracing::info!(group = %name, "emptying a cgroup left by an earlier run");
            let cg = self.named(&name);
            self.pool().in_use.insert(name);
            if let Err(e) = self.recycle(cg) {
                tracing::warn!(error = %e, "cannot empty a leftover cgroup");
            }
        }
    }

    /// Removes the groups no sandbox holds (idle ones, and any whose processes were slow to die
    /// at a teardown) and the `warren/` groups themselves once no sandbox is left in them (at
    /// shutdown).
    pub fn remove_bases(&self) {
        self.pool().idle.clear();
        for name in self.leftovers() {
            if self.pool().in_use.contains(&name) {
                continue;
            }
            let cg = self.named(&name);
            if let Err(e) = cg.empty().and_then(|()| cg.remove()) {
                tracing::warn!(group = %name, error = %e, "cannot remove a cgroup");
            }
        }
        for dir in self.bases() {
            if fs::read_dir(&dir).is_ok_and(|mut d| !d.any(|e| e.is_ok_and(|e| e.path().is_dir())))
            {
                let _ = fs::remove_dir(&dir);
            }
        }
    }

    /// Names of sandbox cgroups left from an earlier run of the server.
    pub fn leftovers(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .bases()
            .iter()
            .filter_map(|b| fs::read_dir(b).ok())
            .flatten()
            .flatten()
            .filter(|e| e.path().is_dir())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        names.sort();
        names.dedup();
        names
    }
}

impl SandboxCgroup {
    /// Creates the group with the sandbox's limits. A CPU quota of `vcpu` cores, a hard memory
    /// limit (the OOM killer acts inside the sandbox only), and a pids ceiling against fork bombs.
    pub fn create(&self, res: &Resources) -> Result<(), CgroupError> {
        for d in &self.dirs {
            io(d, fs::create_dir_all(d))?;
        }
        let mem = u64::from(res.memory_mb) * 1024 * 1024;
        let quota = u64::from(res.vcpu.max(1)) * CPU_PERIOD_US;
        match &self.layout {
            Layout::V1 { .. } => {
                self.write_v1("memory", "memory.limit_in_bytes", &mem.to_string())?;
                self.write_v1("pids", "pids.max", &res.max_pids().to_string())?;
                self.write_v1("cpu", "cpu.cfs_period_us", &CPU_PERIOD_US.to_string())?;
                self.write_v1("cpu", "cpu.cfs_quota_us", &quota.to_string())?;
            }
            Layout::V2 { .. } => {
                let d = &self.dirs[0];
                write(&d.join("memory.max"), &mem.to_string())?;
                let _ = fs::write(d.join("memory.swap.max"), "0");
                write(&d.join("pids.max"), &res.max_pids().to_string())?;
                write(&d.join("cpu.max"), &format!("{quota} {CPU_PERIOD_US}"))?;
            }
        }
        Ok(())
    }

    /// Sets how many host tasks (processes and threads) the group may hold, for tiers whose
    /// sandbox processes cost more than one host task each.
    pub fn set_max_tasks(&self, tasks: u64) -> Result<(), CgroupError> {
        match &self.layout {
            Layout::V1 { .. } => self.write_v1("pids", "pids.max", &tasks.to_string()),
            Layout::V2 { .. } => write(&self.dirs[0].join("pids.max"), &tasks.to_string()),
        }
    }

    fn dir_of(&self, controller: &str) -> Option<&PathBuf> {
        match &self.layout {
            Layout::V2 { .. } => self.dirs.first(),
            Layout::V1 {
                memory,
                pids,
                cpu,
                cpuacct,
                freezer,
            } => {
                let base = match controller {
                    "memory" => memory,
                    "pids" => pids,
                    "cpu" => cpu,
                    "cpuacct" => cpuacct,
                    _ => freezer,
                };
                self.dirs
                    .iter()
                    .find(|d| d.parent() == Some(base.as_path()))
            }
        }
    }

    fn write_v1(&self, controller: &str, file: &str, value: &str) -> Result<(), CgroupError> {
        match self.dir_of(controller) {
            Some(d) => write(&d.join(file), value),
            None => Err(CgroupError::Unavailable(format!("no {controller} group"))),
        }
    }

    /// Its directories, one per hierarchy.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// Whether the group still exists.
    pub fn exists(&self) -> bool {
        self.dirs.iter().all(|d| d.exists())
    }

    /// The `cgroup.procs` files a process writes itself into to join every controller.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| d.join("cgroup.procs")).collect()
    }

    pub fn freeze(&self) -> Result<(), CgroupError> {
        self.set_frozen(true)
    }

    pub fn thaw(&self) -> Result<(), CgroupError> {
        self.set_frozen(false)
    }

    fn set_frozen(&self, frozen: bool) -> Result<(), CgroupError> {
        match &self.layout {
            Layout::V1 { .. } => self.write_v1(
                "freezer",
                "freezer.state",
                if frozen { "FROZEN" } else { "THAWED" },
            ),
            Layout::V2 { .. } => write(
                &self.dirs[0].join("cgroup.freeze"),
                if frozen { "1" } else { "0" },
            ),
        }
    }

    /// Whether the group is frozen (a paused sandbox), as the kernel says.
    pub fn is_frozen(&self) -> bool {
        let state = match &self.layout {
            Layout::V1 { .. } => self
                .dir_of("freezer")
                .and_then(|d| fs::read_to_string(d.join("freezer.state")).ok()),
            Layout::V2 { .. } => self
                .dirs
                .first()
                .and_then(|d| fs::read_to_string(d.join("cgroup.freeze")).ok()),
        };
        matches!(
            state.as_deref().map(str::trim),
            Some("FROZEN" | "FREEZING" | "1")
        )
    }

    /// Pids of every process in the sandbox.
    pub fn pids(&self) -> Vec<i32> {
        let Some(d) = self.dir_of("pids") else {
            return Vec::new();
        };
        fs::read_to_string(d.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// What the sandbox uses right now, as every tier reports it.
    pub fn usage(&self) -> SandboxUsage {
        SandboxUsage {
            memory_bytes: self.memory_bytes().unwrap_or(0),
            processes: self.pids().len() as u32,
            cpu_ns: self.cpu_ns().unwrap_or(0),
            disk_bytes: None,
        }
    }

    /// CPU time used, in nanoseconds.
    pub fn cpu_ns(&self) -> Option<u64> {
        let d = self.dir_of("cpuacct")?;
        match self.layout {
            Layout::V1 { .. } => fs::read_to_string(d.join("cpuacct.usage"))
                .ok()?
                .trim()
                .parse()
                .ok(),
            Layout::V2 { .. } => fs::read_to_string(d.join("cpu.stat"))
                .ok()?
                .lines()
                .find_map(|l| l.strip_prefix("usage_usec "))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(|us| us * 1000),
        }
    }

    /// Memory in use, in bytes.
    pub fn memory_bytes(&self) -> Option<u64> {
        let d = self.dir_of("memory")?;
        let file = match self.layout {
            Layout::V1 { .. } => "memory.usage_in_bytes",
            Layout::V2 { .. } => "memory.current",
        };
        fs::read_to_string(d.join(file)).ok()?.trim().parse().ok()
    }

    /// Its name under `warren/` (the same in every hierarchy).
    pub fn name(&self) -> String {
        self.dirs
            .first()
            .and_then(|d| d.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// Removes the (empty) group.
    fn remove(&self) -> Result<(), CgroupError> {
        for d in &self.dirs {
            if d.exists() {
                remove_dir_retrying(d)?;
            }
        }
        Ok(())
    }

    /// Kills every process, leaving the group ready for another sandbox. Processes are frozen
    /// first so that nothing can fork between reading the pid list and killing it; SIGKILL is
    /// delivered on thaw. Page cache charged to the group stays charged (reclaiming it on every
    /// stop made churn a third slower and dropped pages the next sandboxes read again); it is
    /// reclaimable, and the next sandbox's own limit reclaims it when it needs the room.
    pub(crate) fn empty(&self) -> Result<(), CgroupError> {
        if !self.dirs.iter().any(|d| d.exists()) {
            return Ok(());
        }
        let _ = self.freeze();
        // A killed process is gone once its exit has run, which for one holding gigabytes on a
        // loaded machine takes a while: seconds, not the one second this once allowed (a group
        // given up on stayed behind).
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut pause = Duration::from_millis(5);
        while std::time::Instant::now() < deadline {
            let pids = self.pids();
            if pids.is_empty() {
                break;
            }
            for pid in pids {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            let _ = self.thaw();
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(50));
        }
        // Thawed whatever happened above: the next sandbox's processes join this group.
        let _ = self.thaw();
        if !self.pids().is_empty() {
            return Err(CgroupError::Unavailable(format!(
                "processes of {} would not die",
                self.name()
            )));
        }
        Ok(())
    }
}

fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    io(path, fs::write(path, value))
}

/// rmdir of a cgroup fails with EBUSY until the last exiting task is fully gone.
fn remove_dir_retrying(d: &Path) -> Result<(), CgroupError> {
    let mut last = None;
    for _ in 0..100 {
        match fs::remove_dir(d) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => last = Some(e),
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Err(CgroupError::Io {
        path: d.display().to_string(),
        source: last.unwrap_or_else(|| std::io::Error::other("busy")),
    })
}
