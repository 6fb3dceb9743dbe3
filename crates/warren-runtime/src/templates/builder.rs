//! Builds a template root file system with debootstrap and apt, then shifts its ownership into
//! the sandboxes' uid range. External tools are run with argv only.

use std::os::unix::fs::{lchown, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use super::Recipe;
use crate::namespaces::{jail::ID_COUNT, ID_BASE};

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    /// a build step exited non-zero; the last lines of its output are attached
    #[error("step `{step}` failed: {tail}")]
    Step { step: String, tail: String },
}

impl BuildError {
    pub(crate) fn io(what: &str, source: std::io::Error) -> Self {
        Self::Io {
            what: what.to_owned(),
            source,
        }
    }
}

/// An exclusive lock held for the lifetime of the returned file.
pub(crate) async fn lock(path: &Path) -> Result<nix::fcntl::Flock<std::fs::File>, BuildError> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| BuildError::io("open lock", e))?;
        nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| BuildError::io("lock", e.into()))
    })
    .await
    .map_err(|e| BuildError::io("lock task", std::io::Error::other(e)))?
}

pub(crate) async fn build(
    recipe: &Recipe,
    root: &Path,
    mirror: &str,
    progress: &(dyn Fn(String) + Send + Sync),
) -> Result<(), BuildError> {
    let name = recipe.name;
    let work = root.join(format!(".build-{name}"));
    let _ = tokio::fs::remove_dir_all(&work).await;
    let rootfs = work.join("rootfs");
    tokio::fs::create_dir_all(&work)
        .await
        .map_err(|e| BuildError::io("build dir", e))?;
    let dir = rootfs.to_string_lossy().into_owned();
    let steps = 4;

    progress(format!(
        "[{name}] step 1/{steps}: debootstrap {} (minimal Debian) from {mirror}",
        recipe.suite
    ));
    run_step(
        name,
        "debootstrap",
        &["--variant=minbase", recipe.suite, &dir, mirror],
        progress,
    )
    .await?;

    progress(format!(
        "[{name}] step 2/{steps}: apt-get install {}",
        recipe.packages.join(" ")
    ));
    // A private mount namespace with its own /proc, so nothing stays mounted on the host.
    let proc_arg = format!("--mount-proc={dir}/proc");
    let mut full: Vec<&str> = vec![
        "--mount",
        "--propagation",
        "private",
        &proc_arg,
        "chroot",
        &dir,
    ];
    full.extend([
        "env",
        "DEBIAN_FRONTEND=noninteractive",
        "apt-get",
        "install",
        "-y",
        "-q",
        "--no-install-recommends",
    ]);
    full.extend(recipe.packages.iter().copied());
    run_step(name, "unshare", &full, progress).await?;
    run_step(name, "chroot", &[&dir, "apt-get", "clean"], progress).await?;

    progress(format!(
        "[{name}] step 3/{steps}: preparing /workspace and shifting ownership to uids {ID_BASE}+"
    ));
    let fs_root = rootfs.clone();
    let files = recipe.files;
    tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        std::fs::create_dir_all(fs_root.join("workspace"))?;
        write_files(&fs_root, files)?;
        name_localhost(&fs_root)?;
        allow_pip_install(&fs_root)?;
        add_user_account(&fs_root)?;
        shift_ownership(&fs_root)
    })
    .await
    .map_err(|e| BuildError::io("shift task", std::io::Error::other(e)))?
    .map_err(|e| BuildError::io("shift ownership", e))?;

    progress(format!(
        "[{name}] step 4/{steps}: installing into the cache"
    ));
    let final_dir = root.join(name);
    let old = root.join(format!(".old-{name}"));
    let _ = tokio::fs::remove_dir_all(&old).await;
    if final_dir.exists() {
        tokio::fs::rename(&final_dir, &old)
            .await
            .map_err(|e| BuildError::io("move old", e))?;
    }
    tokio::fs::rename(&work, &final_dir)
        .await
        .map_err(|e| BuildError::io("install", e))?;
    let _ = tokio::fs::remove_dir_all(&old).await;
    progress(format!("[{name}] ready"));
    Ok(())
}

async fn run_step(
    template: &str,
    cmd: &str,
    args: &[&str],
    progress: &(dyn Fn(String) + Send + Sync),
) -> Result<(), BuildError> {
    let mut child = Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| BuildError::io(&format!("run {cmd}"), e))?;
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let mut tail: Vec<String> = Vec::new();
    let mut seen = 0usize;
    let (mut out, mut err) = (
        stdout.map(|s| BufReader::new(s).lines()),
        stderr.map(|s| BufReader::new(s).lines()),
    );
    loop {
        let line = tokio::select! {
            l = async { match out.as_mut() { Some(o) => o.next_line().await, None => std::future::pending().await } } => match l {
                Ok(Some(l)) => l,
                _ => { out = None; if err.is_none() { break } continue }
            },
            l = async { match err.as_mut() { Some(e) => e.next_line().await, None => std::future::pending().await } } => match l {
                Ok(Some(l)) => l,
                _ => { err = None; if out.is_none() { break } continue }
            },
        };
        seen += 1;
        // Long steps print thousands of lines; show every 25th so progress stays visible but short.
        if seen % 25 == 1 {
            progress(format!("[{template}]   {}", line.trim()));
        }
        tail.push(line);
        if tail.len() > 20 {
            tail.remove(0);
        }
    }
    let status = child
        .wait()
        .await
        .map_err(|e| BuildError::io(&format!("wait {cmd}"), e))?;
    if status.success() {
        Ok(())
    } else {
        Err(BuildError::Step {
            step: format!("{cmd} {}", args.join(" ")),
            tail: tail.join("\n"),
        })
    }
}

/// Moves every file from host ids 0..65535 to the sandbox range, so that root inside a sandbox
/// (host uid 100000) owns what root owned in the image. chown clears set-id bits: they are put back.
/// A sandbox is its user's throwaway machine: `pip install` goes into its system Python, as users
/// expect, instead of being refused by Debian's PEP 668 marker (which guards a shared system).
/// The unprivileged account E2B's clients expect (`user`, uid 1000, home /home/user): their
/// commands, files and default working directory belong to it unless they ask for root.
const USER_UID: u32 = 1000;

fn add_user_account(root: &Path) -> std::io::Result<()> {
    use std::io::Write;
    let append = |file: &str, line: String| -> std::io::Result<()> {
        let path = root.join(file);
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        if text.lines().any(|l| l.starts_with("user:")) {
            return Ok(());
        }
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&path)?;
        if !text.is_empty() && !text.ends_with('\n') {
            f.write_all(b"\n")?;
        }
        f.write_all(line.as_bytes())
    };
    append(
        "etc/passwd",
        format!("user:x:{USER_UID}:{USER_UID}:user:/home/user:/bin/bash\n"),
    )?;
    append("etc/group", format!("user:x:{USER_UID}:\n"))?;
    append("etc/shadow", "user:*:19000:0:99999:7:::\n".into())?;
    // Its home, and the workspace agents are pointed at: E2B's commands run as `user`, Hopx's
    // as root, and both must be able to create files there.
    for dir in ["home/user", "workspace"] {
        let dir = root.join(dir);
        std::fs::create_dir_all(&dir)?;
        std::os::unix::fs::chown(&dir, Some(USER_UID), Some(USER_UID))?;
    }
    Ok(())
}

fn write_files(root: &Path, files: &[(&str, &str, u32)]) -> std::io::Result<()> {
    for (path, content, mode) in files {
        let dest = root.join(path.trim_start_matches('/'));
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&dest, content)?;
        std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(*mode))?;
    }
    Ok(())
}

/// debootstrap writes no /etc/hosts (Docker and the vendors' VMs provide one at run time), so
/// `localhost` would not resolve in a sandbox: noVNC's proxy, database clients and test servers
/// all dial it by name.
fn name_localhost(root: &Path) -> std::io::Result<()> {
    let hosts = root.join("etc/hosts");
    let text = std::fs::read_to_string(&hosts).unwrap_or_default();
    if text.split_whitespace().any(|w| w == "localhost") {
        return Ok(());
    }
    std::fs::write(
        &hosts,
        format!("{text}127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"),
    )
}

fn allow_pip_install(root: &Path) -> std::io::Result<()> {
    let Ok(entries) = std::fs::read_dir(root.join("usr/lib")) else {
        return Ok(());
    };
    for e in entries.flatten() {
        let marker = e.path().join("EXTERNALLY-MANAGED");
        if e.file_name().to_string_lossy().starts_with("python3") && marker.exists() {
            std::fs::remove_file(marker)?;
        }
    }
    Ok(())
}

fn shift_ownership(root: &Path) -> std::io::Result<()> {
    let shift = |id: u32| if id < ID_COUNT { id + ID_BASE } else { id };
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            let meta = std::fs::symlink_metadata(&path)?;
            lchown(&path, Some(shift(meta.uid())), Some(shift(meta.gid())))?;
            if meta.file_type().is_dir() {
                stack.push(path);
            } else if meta.file_type().is_file() && meta.mode() & 0o6000 != 0 {
                std::fs::set_permissions(
                    &path,
                    std::fs::Permissions::from_mode(meta.mode() & 0o7777),
                )?;
            }
        }
    }
    let meta = std::fs::symlink_metadata(root)?;
    lchown(root, Some(shift(meta.uid())), Some(shift(meta.gid())))
}
