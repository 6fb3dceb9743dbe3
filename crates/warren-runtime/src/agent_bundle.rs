//! The agent bundle: the agent binary plus the dynamic loader and libraries it links against,
//! copied from the host. Sandboxes run the agent through this loader (`ld.so --library-path`), so
//! the agent works in any root file system, whatever libc the image has (or lacks), while user
//! code keeps using the image's own libraries.

use std::path::{Path, PathBuf};

use sha2::Digest;

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("cannot find the libraries of {0}: {1}")]
    Ldd(String, String),
}

/// The bundle of `agent_exe` under `root`: `root/<hash of the agent>/` with `warren-agent` and
/// `lib/` (including `lib/ld-linux-x86-64.so.2`), made if it is not there yet. Bundles are never
/// rewritten in place: running sandboxes have theirs mounted, and a server restarted with a new
/// agent gives new sandboxes a new bundle while the old ones keep theirs (`remove_unused`).
pub fn prepare(agent_exe: &Path, root: &Path) -> Result<PathBuf, BundleError> {
    let io = |what: &str| {
        let what = what.to_owned();
        move |source| BundleError::Io { what, source }
    };
    let agent = std::fs::read(agent_exe).map_err(io("read agent"))?;
    let digest = hex::encode(sha2::Sha256::digest(&agent));
    let dest = root.join(&digest[..16]);
    if dest.join("lib/ld-linux-x86-64.so.2").exists() && dest.join("warren-agent").exists() {
        return Ok(dest);
    }
    std::fs::create_dir_all(root).map_err(io("bundle root"))?;
    let out = std::process::Command::new("ldd")
        .arg(agent_exe)
        .output()
        .map_err(io("run ldd"))?;
    if !out.status.success() {
        return Err(BundleError::Ldd(
            agent_exe.display().to_string(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ));
    }
    let staging = dest.with_extension("new");
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(staging.join("lib")).map_err(io("bundle dir"))?;
    std::fs::copy(agent_exe, staging.join("warren-agent")).map_err(io("copy agent"))?;
    let mut found_loader = false;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
        let path = line
            .split("=>")
            .last()
            .unwrap_or("")
            .split_whitespace()
            .next()
            .unwrap_or("");
        if !path.starts_with('/') {
            continue;
        }
        let src = Path::new(path);
        let is_loader = src
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("ld-linux"));
        let name = if is_loader {
            "ld-linux-x86-64.so.2".into()
        } else {
            src.file_name()
                .map(|n| n.to_os_string())
                .unwrap_or_default()
        };
        std::fs::copy(src, staging.join("lib").join(name)).map_err(io("copy library"))?;
        found_loader |= is_loader;
    }
    if !found_loader {
        return Err(BundleError::Ldd(
            agent_exe.display().to_string(),
            "no dynamic loader listed".into(),
        ));
    }
    let _ = std::fs::remove_dir_all(&dest);
    std::fs::rename(&staging, &dest).map_err(io("install bundle"))?;
    Ok(dest)
}

/// Removes the bundles under `root` that no sandbox runs any more (`in_use`).
pub fn remove_unused(root: &Path, in_use: &[PathBuf]) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        if path.is_dir() && !in_use.iter().any(|u| u == &path) {
            if let Err(err) = std::fs::remove_dir_all(&path) {
                tracing::warn!(bundle = %path.display(), error = %err, "cannot remove an unused agent bundle");
            }
        }
    }
}
