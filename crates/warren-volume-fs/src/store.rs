//! A node's attachment to the cluster's shared volume store: the JuiceFS file system (metadata
//! in the cluster's database, data in an S3 bucket), mounted once per node, and this crate's
//! id-keeping view over it, which sandboxes' idmapped mounts are cut from.
//!
//! Both run as daemons of their own (in their own sessions), so that sandboxes keep their
//! volumes while the server restarts. At shutdown the server detaches its own mounts of both;
//! sandboxes still running hold the view (and through it JuiceFS) until they end, when both
//! daemons exit by themselves. The next server mounts afresh: two JuiceFS clients of one file
//! system on one machine see each other's writes as two nodes do (close-to-open).
//!
//! `juicefs` runs with an argv: it is a Go program with no library API; the file system is made
//! beforehand by the operator (`juicefs format`, docs/volumes.md).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How often every mount of the store reloads quotas (JuiceFS's `--heartbeat`).
pub const HEARTBEAT: &str = "1s";
/// How long a new quota takes to reach every mount: two heartbeats and some. A mount counts the
/// bytes written under a directory only once it knows the directory's quota, so a volume is
/// handed out only after this (measured here: with a 2 s heartbeat and no wait, a 64 MB volume
/// took 105 MB before its first ENOSPC).
const QUOTA_KNOWN_AFTER: Duration = Duration::from_millis(2500);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("{tool} failed: {output}")]
    Tool { tool: String, output: String },
    #[error("{0}")]
    NotReady(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> StoreError {
    let what = what.into();
    move |source| StoreError::Io { what, source }
}

pub struct SharedStore {
    meta_url: String,
    juicefs: PathBuf,
    base: PathBuf,
}

impl SharedStore {
    /// Mounts the store and its view under `base` (`<data-dir>/shared-volumes`) unless they
    /// are mounted and answering already; `warren` is the binary whose hidden `volume-view`
    /// command serves the view.
    pub fn attach(
        meta_url: &str,
        juicefs: &Path,
        base: &Path,
        warren: &Path,
    ) -> Result<Self, StoreError> {
        let store = Self {
            meta_url: meta_url.to_owned(),
            juicefs: juicefs.to_owned(),
            base: base.to_owned(),
        };
        for dir in [store.files(), store.view(), store.base.join("cache")] {
            std::fs::create_dir_all(&dir).map_err(io(format!("make {}", dir.display())))?;
        }
        if !answering(&store.files()) {
            store.mount_files()?;
        }
        if !answering(&store.view()) {
            store.serve_view(warren)?;
        }
        Ok(store)
    }

    /// The JuiceFS mount: where the server itself reads and writes volumes' files.
    pub fn files(&self) -> PathBuf {
        self.base.join("store")
    }

    /// The id-keeping view of the same files: what sandboxes' mounts are cut from.
    pub fn view(&self) -> PathBuf {
        self.base.join("view")
    }

    fn mount_files(&self) -> Result<(), StoreError> {
        let files = self.files();
        detach(&files);
        let out = Command::new(&self.juicefs)
            .args(["mount", "-d", "--no-usage-report", "--heartbeat", HEARTBEAT])
            .arg("--cache-dir")
            .arg(self.base.join("cache"))
            .arg("--log")
            .arg(self.base.join("juicefs.log"))
            .arg(&self.meta_url)
            .arg(&files)
            .stdin(Stdio::null())
            .output()
            .map_err(io(format!("run {}", self.juicefs.display())))?;
        if !out.status.success() {
            return Err(StoreError::Tool {
                tool: "juicefs mount".into(),
                output: last_lines(&out.stderr),
            });
        }
        wait_until_answering(&files, "the JuiceFS mount")
    }

    fn serve_view(&self, warren: &Path) -> Result<(), StoreError> {
        use std::os::unix::process::CommandExt;
        let view = self.view();
        detach(&view);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.base.join("view.log"))
            .map_err(io("open the view's log"))?;
        let err = log.try_clone().map_err(io("open the view's log"))?;
        let mut cmd = Command::new(warren);
        cmd.arg("volume-view")
            .arg(self.files())
            .arg(&view)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err);
        // SAFETY: setsid is async-signal-safe; the view leaves the server's session so that it
        // outlives the server (sandboxes keep using it).
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
        cmd.spawn()
            .map_err(io(format!("start {} volume-view", warren.display())))?;
        wait_until_answering(&view, "the volume view")
    }

    fn run(&self, args: &[&str]) -> Result<String, StoreError> {
        let out = Command::new(&self.juicefs)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(io(format!("run {}", self.juicefs.display())))?;
        if !out.status.success() {
            return Err(StoreError::Tool {
                tool: format!("juicefs {}", args.first().copied().unwrap_or_default()),
                output: last_lines(&out.stderr),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Limits the directory `rel` (relative to the store's root) to `bytes`: writes past it
    /// fail with EDQUOT in JuiceFS, which the view answers as ENOSPC. Returns once every mount
    /// of the store knows the limit.
    pub fn set_size(&self, rel: &str, bytes: u64) -> Result<(), StoreError> {
        // JuiceFS takes the capacity in GiB, fractions allowed.
        let gib = format!("{:.6}", bytes as f64 / (1u64 << 30) as f64);
        let path = format!("/{rel}");
        self.run(&[
            "quota",
            "set",
            &self.meta_url,
            "--path",
            &path,
            "--capacity",
            &gib,
        ])?;
        std::thread::sleep(QUOTA_KNOWN_AFTER);
        Ok(())
    }

    /// Drops the size limit of `rel` (before its directory goes).
    pub fn drop_size(&self, rel: &str) -> Result<(), StoreError> {
        let path = format!("/{rel}");
        self.run(&["quota", "delete", &self.meta_url, "--path", &path])
            .map(drop)
    }

    /// Bytes the directory `rel` holds, from JuiceFS's directory statistics (no walk).
    pub fn used(&self, rel: &str) -> Result<u64, StoreError> {
        let dir = self.files().join(rel);
        let dir = dir.to_string_lossy();
        let out = self.run(&["info", &dir])?;
        out.lines()
            .find(|l| l.trim_start().starts_with("size:"))
            .and_then(|l| {
                let bytes = l.rsplit_once('(')?.1.split_whitespace().next()?;
                bytes.parse().ok()
            })
            .ok_or_else(|| StoreError::Tool {
                tool: "juicefs info".into(),
                output: format!("no size in its answer: {}", out.trim()),
            })
    }

    /// Takes this server's mounts of the view and the store away (at shutdown). Sandboxes that
    /// run on hold their own mounts of the view, so its server serves on, and so does JuiceFS
    /// under it: then the store is only detached, and its daemon ends with them. With no such
    /// sandbox, the view's server ends with its mount and JuiceFS is unmounted cleanly.
    pub fn detach(&self) {
        detach(&self.view());
        let files = self.files();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            let unmounted = Command::new(&self.juicefs)
                .arg("umount")
                .arg(&files)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if unmounted || !answering(&files) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        detach(&files);
    }
}

/// Whether `dir` is a mount point whose file system answers (a dead FUSE mount answers
/// ENOTCONN to the stat, and is no mount point to this).
fn answering(dir: &Path) -> bool {
    warren_runtime::host::idmapped::is_mount_point(dir)
}

fn wait_until_answering(dir: &Path, what: &str) -> Result<(), StoreError> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if answering(dir) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(StoreError::NotReady(format!(
        "{what} at {} did not come up within 20 s (see the logs beside it)",
        dir.display()
    )))
}

/// Detaches whatever is mounted at `dir` (a dead mount answers ENOTCONN until detached).
fn detach(dir: &Path) {
    let _ = rustix::mount::unmount(dir, rustix::mount::UnmountFlags::DETACH);
}

fn last_lines(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(3)..].join("\n")
}
