//! The microVM tier's disks. Every guest gets three virtio-blk disks:
//!
//! * the template's root image, read-only and shared by all of the template's sandboxes: the
//!   union of its layers as one ext4 file system, built on first use and cached by the layers'
//!   paths (layers are immutable, so their paths name their content);
//! * a writable disk of the sandbox's disk size, a fresh sparse ext4 file that the guest puts on
//!   top of the root with overlayfs (copy-on-write without qcow2, so any VMM can serve it);
//! * the agent bundle, read-only, built once per server start.
//!
//! Root images outlive the layers they were built from when a data directory is removed; each
//! carries the list of its layers (`root-<hash>.layers`) so that a sweep can tell the ones
//! nothing can use again and delete them (a few hundred MB each).
//!
//! Layer files are owned by the sandboxes' shifted ids (root inside = `ID_BASE` outside). A guest
//! has its own kernel and needs the real ids, so `mkfs.ext4 -d` runs inside a user namespace that
//! maps the range back to 0: what it reads there is what the guest must see.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::driver::DriverError;
use crate::namespaces::ID_BASE;

const ID_COUNT: u32 = 65_536;
const MIB: u64 = 1 << 20;

fn io(what: &str) -> impl FnOnce(std::io::Error) -> DriverError {
    let what = what.to_owned();
    move |source| DriverError::Io { what, source }
}

/// Root images of templates, `<dir>/root-<hash of the layer paths>.ext4`.
pub struct ImageCache {
    dir: PathBuf,
    /// One build at a time: a build reads gigabytes, two would only slow each other down.
    building: tokio::sync::Mutex<()>,
}

impl ImageCache {
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            building: tokio::sync::Mutex::new(()),
        }
    }

    /// The root image of a template with these layers (topmost first), built if missing; `true`
    /// beside it when it was built now.
    pub async fn root_image(&self, layers: &[PathBuf]) -> Result<(PathBuf, bool), DriverError> {
        let hash = Sha256::digest(layer_list(layers));
        let image = self
            .dir
            .join(format!("root-{}.ext4", &hex::encode(hash)[..32]));
        if image.exists() {
            return Ok((image, false));
        }
        let _guard = self.building.lock().await;
        if image.exists() {
            return Ok((image, false));
        }
        let (dir, layers, out) = (self.dir.clone(), layers.to_vec(), image.clone());
        tokio::task::spawn_blocking(move || build_root_image(&dir, &layers, &out))
            .await
            .map_err(|_| DriverError::Panicked("the root image build"))??;
        Ok((image, true))
    }

    /// Deletes the root images whose layers are gone (and those from before images listed their
    /// layers), except `in_use`, and what a build that died left behind. Another server sharing
    /// the cache keeps its images as long as their layers exist; a running guest keeps reading a
    /// deleted image (its QEMU holds it open).
    pub fn sweep(&self, in_use: &[PathBuf]) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let (mut removed, mut freed) = (0u32, 0u64);
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            // A build in progress (here or in another server) is younger than an hour: its
            // staging files, and its list written just before its image.
            let old = meta
                .modified()
                .ok()
                .and_then(|m| m.elapsed().ok())
                .is_some_and(|age| age > std::time::Duration::from_secs(3600));
            let unusable = if name.starts_with("root-") && name.ends_with(".ext4") {
                !in_use.contains(&path) && !layers_exist(&path.with_extension("layers"))
            } else if name.starts_with("root-") && name.ends_with(".layers") {
                old && !path.with_extension("ext4").exists()
            } else {
                old && name.starts_with(".tmp-")
            };
            if !unusable {
                continue;
            }
            let gone = if meta.is_dir() {
                let _ = nix::mount::umount2(&path, nix::mount::MntFlags::MNT_DETACH);
                std::fs::remove_dir(&path)
            } else {
                std::fs::remove_file(&path)
            };
            if gone.is_ok() && name.ends_with(".ext4") {
                let _ = std::fs::remove_file(path.with_extension("layers"));
                removed += 1;
                freed += meta.blocks() * 512;
            }
        }
        if removed > 0 {
            tracing::info!(
                removed,
                freed_mb = freed / MIB,
                "microVM root images of layers that are gone deleted"
            );
        }
    }
}

/// The layers' paths, one per line: what names a root image (its hash) and what its list holds.
fn layer_list(layers: &[PathBuf]) -> Vec<u8> {
    let mut list = Vec::new();
    for l in layers {
        list.extend_from_slice(l.as_os_str().as_bytes());
        list.push(b'\n');
    }
    list
}

/// Whether every layer a root image lists still exists (false without a list).
fn layers_exist(list: &Path) -> bool {
    let Ok(text) = std::fs::read(list) else {
        return false;
    };
    let mut any = false;
    for line in text.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let path = Path::new(std::ffi::OsStr::from_bytes(line));
        if !path.exists() {
            return false;
        }
        any = true;
    }
    any
}

fn build_root_image(dir: &Path, layers: &[PathBuf], out: &Path) -> Result<(), DriverError> {
    std::fs::create_dir_all(dir).map_err(io("image cache dir"))?;
    let started = std::time::Instant::now();
    let staging = dir.join(format!(".tmp-{}", rand::random::<u32>()));
    let union = staging.with_extension("mnt");
    let result = (|| {
        let source = match layers {
            [] => return Err(DriverError::NoLayers),
            [one] => one.clone(),
            many => {
                crate::layers::mount_read_only_union(many, &union)
                    .map_err(io("mount template layers"))?;
                union.clone()
            }
        };
        let (bytes, inodes) = tree_size(&source);
        // Room for ext4's own metadata; the image is sparse, unused space costs nothing.
        let size = (bytes + bytes / 8 + inodes * 512 + 64 * MIB).div_ceil(MIB) * MIB;
        let file = std::fs::File::create(&staging).map_err(io("create root image"))?;
        file.set_len(size).map_err(io("size root image"))?;
        std::os::unix::fs::fchown(&file, Some(ID_BASE), Some(ID_BASE))
            .map_err(io("chown root image"))?;
        drop(file);
        let mut mkfs = mkfs_command(&staging);
        mkfs.arg("-N")
            .arg((inodes + inodes / 4 + 1024).to_string())
            .arg("-d")
            .arg(&source);
        run_with_ids_unshifted(mkfs)?;
        std::os::unix::fs::chown(&staging, Some(0), Some(0)).map_err(io("chown root image"))?;
        // The list first: an image without one is swept as unusable.
        std::fs::write(out.with_extension("layers"), layer_list(layers))
            .map_err(io("write layer list"))?;
        std::fs::rename(&staging, out).map_err(io("install root image"))?;
        tracing::info!(image = %out.display(), size_mb = size / MIB,
            elapsed_ms = started.elapsed().as_millis() as u64, "microVM root image built");
        Ok(())
    })();
    if union.exists() {
        let _ = nix::mount::umount2(&union, nix::mount::MntFlags::MNT_DETACH);
        let _ = std::fs::remove_dir(&union);
    }
    let _ = std::fs::remove_file(&staging);
    result
}

/// The agent bundle as a small read-only ext4 image.
pub fn build_agent_image(bundle: &Path, out: &Path) -> Result<(), DriverError> {
    let (bytes, inodes) = tree_size(bundle);
    let file = std::fs::File::create(out).map_err(io("create agent image"))?;
    file.set_len((bytes * 2 + inodes * 512 + 16 * MIB).div_ceil(MIB) * MIB)
        .map_err(io("size agent image"))?;
    drop(file);
    let mut mkfs = mkfs_command(out);
    mkfs.arg("-d").arg(bundle);
    run(mkfs)
}

/// A fresh, empty, sparse ext4 disk of `size_mb` for a sandbox's writes.
pub fn create_writable_disk(path: &Path, size_mb: u32) -> Result<(), DriverError> {
    let file = std::fs::File::create(path).map_err(io("create writable disk"))?;
    file.set_len(u64::from(size_mb.max(64)) * MIB)
        .map_err(io("size writable disk"))?;
    drop(file);
    run(mkfs_command(path))
}

fn mkfs_command(image: &Path) -> Command {
    let mut c = Command::new("mkfs.ext4");
    // No journal: every disk here is thrown away with its sandbox or rebuilt from the layers.
    c.args(["-F", "-O", "^has_journal"])
        .args(["-E", "lazy_itable_init=1,lazy_journal_init=1"])
        .arg(image)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    c
}

fn run(mut cmd: Command) -> Result<(), DriverError> {
    let out = cmd.output().map_err(io("run mkfs.ext4"))?;
    mkfs_result(&out)
}

fn mkfs_result(out: &std::process::Output) -> Result<(), DriverError> {
    if out.status.success() {
        return Ok(());
    }
    Err(DriverError::Tool {
        tool: "mkfs.ext4",
        status: out.status.to_string(),
        output: format!(
            "{} {}",
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        ),
    })
}

/// Bytes in use (allocated blocks) and number of entries below `dir`, not following symlinks.
fn tree_size(dir: &Path) -> (u64, u64) {
    let (mut bytes, mut inodes) = (0u64, 0u64);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(meta) = e.metadata() else { continue };
            bytes += meta.blocks() * 512;
            inodes += 1;
            if meta.is_dir() {
                stack.push(e.path());
            }
        }
    }
    (bytes, inodes)
}

/// Runs `cmd` as root of a new user namespace whose ids 0..65536 are the host's
/// `ID_BASE..ID_BASE+65536` (and 65536 is host root), so it sees sandbox-owned files with their
/// in-sandbox owners.
///
/// The id maps of a namespace must be written from outside it, after the child has unshared and
/// before it execs. `Command::spawn` returns only after the exec, so a helper thread does the
/// writing while the child waits in `pre_exec` (which may only make raw system calls).
fn run_with_ids_unshifted(mut cmd: Command) -> Result<(), DriverError> {
    // Close-on-exec: no other child the server spawns meanwhile may hold these open.
    let cloexec = || nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC);
    let (ready_r, ready_w) = cloexec().map_err(|e| io("pipe")(e.into()))?;
    let (go_r, go_w) = cloexec().map_err(|e| io("pipe")(e.into()))?;
    let (ready_w_fd, go_r_fd) = (ready_w.as_raw_fd(), go_r.as_raw_fd());
    // SAFETY: only async-signal-safe system calls on descriptors opened before the fork.
    unsafe {
        cmd.pre_exec(move || {
            if libc::unshare(libc::CLONE_NEWUSER) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let pid = libc::getpid().to_ne_bytes();
            if libc::write(ready_w_fd, pid.as_ptr().cast(), pid.len()) != pid.len() as isize {
                return Err(std::io::Error::last_os_error());
            }
            let mut go = [0u8; 1];
            if libc::read(go_r_fd, go.as_mut_ptr().cast(), 1) != 1 {
                return Err(std::io::Error::other("id maps were not written"));
            }
            if libc::setresgid(0, 0, 0) != 0 || libc::setresuid(0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mapper = std::thread::spawn(move || write_maps_when_ready(ready_r, go_w));
    let spawned = cmd.spawn();
    // The child has exec'd or died: either way the mapper must see end-of-file, not wait on us.
    drop((ready_w, go_r));
    let mapped = mapper
        .join()
        .map_err(|_| DriverError::Panicked("the id map thread"))?;
    let child = spawned.map_err(io("start mkfs.ext4 in a user namespace"))?;
    mapped?;
    let out = child.wait_with_output().map_err(io("wait for mkfs.ext4"))?;
    mkfs_result(&out)
}

fn write_maps_when_ready(ready_r: OwnedFd, go_w: OwnedFd) -> Result<(), DriverError> {
    let mut pid = [0u8; 4];
    if std::fs::File::from(ready_r).read_exact(&mut pid).is_err() {
        return Ok(()); // the child failed before unsharing; spawn reports why
    }
    let pid = i32::from_ne_bytes(pid);
    // Host root's files (a stray mount point, say) must stay readable in there: they get the
    // first id past the range instead of the overflow id, which no capability can read through.
    let map = format!("0 {ID_BASE} {ID_COUNT}\n{ID_COUNT} 0 1\n");
    std::fs::write(format!("/proc/{pid}/uid_map"), &map).map_err(io("write uid_map"))?;
    std::fs::write(format!("/proc/{pid}/gid_map"), &map).map_err(io("write gid_map"))?;
    std::fs::File::from(go_w)
        .write_all(b"g")
        .map_err(io("release mkfs"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner_in_image(image: &Path, path: &str) -> Result<String, Box<dyn std::error::Error>> {
        let out = Command::new("debugfs")
            .args(["-R", &format!("stat {path}")])
            .arg(image)
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let user = text
            .split("User:")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .ok_or_else(|| format!("no owner for {path} in: {text}"))?;
        Ok(user.to_owned())
    }

    /// The guest must see the owners the files have inside a sandbox, not their shifted host ids,
    /// and a root-owned private directory must not break the build.
    #[test]
    fn root_image_unshifts_owners() -> Result<(), Box<dyn std::error::Error>> {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test builds a user namespace with a foreign id map and must run as root"
        );
        let tmp = tempfile::tempdir()?;
        let layer = tmp.path().join("layer");
        std::fs::create_dir_all(layer.join("private"))?;
        std::fs::write(layer.join("root-file"), "r")?;
        std::fs::write(layer.join("user-file"), "u")?;
        std::fs::write(layer.join("private/inside"), "p")?;
        std::os::unix::fs::chown(&layer, Some(ID_BASE), Some(ID_BASE))?;
        std::os::unix::fs::chown(layer.join("root-file"), Some(ID_BASE), Some(ID_BASE))?;
        std::os::unix::fs::chown(layer.join("user-file"), Some(ID_BASE + 1000), Some(ID_BASE))?;
        std::fs::set_permissions(
            layer.join("private"),
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )?;
        let image = tmp.path().join("root.ext4");
        build_root_image(
            &tmp.path().join("cache"),
            std::slice::from_ref(&layer),
            &image,
        )?;
        assert_eq!(owner_in_image(&image, "/root-file")?, "0");
        assert_eq!(owner_in_image(&image, "/user-file")?, "1000");
        assert_eq!(
            owner_in_image(&image, "/private/inside")?,
            ID_COUNT.to_string()
        );
        Ok(())
    }

    /// Images whose layers are gone are deleted with their lists; an image a live sandbox uses,
    /// or whose layers all exist, stays.
    #[test]
    fn sweep_deletes_images_of_layers_that_are_gone() -> Result<(), Box<dyn std::error::Error>> {
        let tmp = tempfile::tempdir()?;
        let (layer, cache) = (tmp.path().join("layer"), tmp.path().join("cache"));
        std::fs::create_dir_all(&layer)?;
        std::fs::create_dir_all(&cache)?;
        let image = |name: &str, layers: Option<&Path>| -> std::io::Result<PathBuf> {
            let path = cache.join(format!("root-{name}.ext4"));
            std::fs::write(&path, b"ext4")?;
            if let Some(l) = layers {
                std::fs::write(
                    path.with_extension("layers"),
                    [l.as_os_str().as_bytes(), b"\n"].concat(),
                )?;
            }
            Ok(path)
        };
        let kept = image("kept", Some(&layer))?;
        let orphan = image("orphan", Some(&tmp.path().join("deleted-layer")))?;
        let unlisted = image("unlisted", None)?;
        let in_use = image("in-use", Some(&tmp.path().join("deleted-too")))?;
        ImageCache::new(cache.clone()).sweep(std::slice::from_ref(&in_use));
        assert!(kept.exists() && kept.with_extension("layers").exists());
        assert!(!orphan.exists() && !orphan.with_extension("layers").exists());
        assert!(!unlisted.exists());
        assert!(in_use.exists(), "an image a sandbox uses is never deleted");
        Ok(())
    }
}
