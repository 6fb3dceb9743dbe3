//! Per-sandbox cgroups. Hosts differ: this machine has v1 hierarchies, most user machines v2.
//! Both are handled here behind one type; groups are created under the cgroup the server already
//! runs in (never by re-mounting or touching the host's own hierarchies).

use std::fs;
use std::path::{Path, PathBuf};
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

/// Where Warren's cgroups live; one per server process.
#[derive(Debug, Clone)]
pub struct CgroupRoot {
    layout: Layout,
}

/// The cgroup(s) of one sandbox.
#[derive(Debug, Clone)]
pub struct SandboxCgroup {
    dirs: Vec<PathBuf>,
    layout: Layout,
}

const CPU_PERIOD_US: u64 = 100_000;

impl CgroupRoot {
    /// Finds the server's own cgroups and prepares a `warren/` group below each.
    pub fn discover() -> Result<Self, CgroupError> {
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
                .join("warren");
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
                        return Ok(mount.join(rel.trim_start_matches('/')).join("warren"));
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
        let root = Self { layout };
        for dir in root.bases() {
            io(&dir, fs::create_dir_all(&dir))?;
        }
        if let Layout::V2 { base } = &root.layout {
            // Children of `warren/` need these controllers delegated.
            let _ = fs::write(base.join("cgroup.subtree_control"), "+memory +pids +cpu");
        }
        Ok(root)
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

    /// The cgroup of sandbox `name`, whether or not it exists.
    pub fn sandbox(&self, name: &str) -> SandboxCgroup {
        let mut dirs: Vec<PathBuf> = self.bases().into_iter().map(|b| b.join(name)).collect();
        dirs.dedup();
        SandboxCgroup {
            dirs,
            layout: self.layout.clone(),
        }
    }

    /// The cgroup of a sandbox at `dirs` (as `SandboxCgroup::dirs` reported it), which may lie
    /// under another root than this server's if an earlier server ran in another cgroup.
    pub fn sandbox_at(&self, dirs: Vec<PathBuf>) -> SandboxCgroup {
        SandboxCgroup {
            dirs,
            layout: self.layout.clone(),
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

    /// Kills every process and removes the group. Processes are frozen first so that nothing can
    /// fork between reading the pid list and killing it; SIGKILL is delivered on thaw.
    pub fn destroy(&self) -> Result<(), CgroupError> {
        if !self.dirs.iter().any(|d| d.exists()) {
            return Ok(());
        }
        let _ = self.freeze();
        for _ in 0..200 {
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
            std::thread::sleep(Duration::from_millis(5));
        }
        for d in &self.dirs {
            if d.exists() {
                remove_dir_retrying(d)?;
            }
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
