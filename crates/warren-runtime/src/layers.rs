//! Read-only file-system layers shared by templates, in `<cache>/layers/<key>`: unpacked image
//! layers (key: the blob digest) and the results of build steps (key: a hash of everything the
//! step's result depends on). A layer is an overlayfs lower directory: whiteouts are 0/0 character
//! devices, opaque directories carry `trusted.overlay.opaque=y`, and ownership is shifted into the
//! sandboxes' id range so root inside a sandbox owns what root owned in the image.

use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> LayerError {
    let what = what.into();
    move |source| LayerError::Io { what, source }
}

pub struct LayerStore {
    root: PathBuf,
}

impl LayerStore {
    pub fn new(cache_dir: &Path) -> Self {
        Self {
            root: cache_dir.join("layers"),
        }
    }

    pub fn path(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }

    pub fn is_ready(&self, key: &str) -> bool {
        self.root.join(format!("{key}.ready")).exists()
    }

    /// A fresh directory to build layer `key` in; `commit` moves it into place.
    pub fn staging(&self, key: &str) -> Result<PathBuf, LayerError> {
        let dir = self
            .root
            .join(format!(".tmp-{key}-{}", rand::random::<u32>()));
        std::fs::create_dir_all(&dir).map_err(io("create staging layer"))?;
        Ok(dir)
    }

    /// Moves a staged layer into place. A concurrent build of the same key may have won: then its
    /// layer is kept and this one dropped (they are equal by construction).
    pub fn commit(&self, staged: &Path, key: &str) -> Result<PathBuf, LayerError> {
        let target = self.path(key);
        if self.is_ready(key) {
            let _ = std::fs::remove_dir_all(staged);
            return Ok(target);
        }
        let _ = std::fs::remove_dir_all(&target);
        std::fs::rename(staged, &target).map_err(io("commit layer"))?;
        std::fs::write(self.root.join(format!("{key}.ready")), b"").map_err(io("mark layer"))?;
        Ok(target)
    }
}

/// Joins only normal components: no absolute paths, no `..`, whatever the archive says.
fn safe_relative(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            _ => return None,
        }
    }
    Some(out)
}

fn shift_owner(path: &Path, uid: u64, gid: u64, base: u32) -> Result<(), LayerError> {
    let clamp = |id: u64| base + (id.min(65_535) as u32);
    std::os::unix::fs::lchown(path, Some(clamp(uid)), Some(clamp(gid)))
        .map_err(io(format!("chown {}", path.display())))
}

fn whiteout(dir: &Path, name: &Path) -> Result<(), LayerError> {
    let path = dir.join(name);
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_dir_all(&path);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io("whiteout parent"))?;
    }
    nix::sys::stat::mknod(
        &path,
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::empty(),
        0,
    )
    .map_err(|e| LayerError::Io {
        what: format!("whiteout {}", path.display()),
        source: e.into(),
    })
}

fn set_opaque(dir: &Path) -> Result<(), LayerError> {
    std::fs::create_dir_all(dir).map_err(io("opaque dir"))?;
    xattr_set(dir, "trusted.overlay.opaque", b"y")
}

fn xattr_set(path: &Path, name: &str, value: &[u8]) -> Result<(), LayerError> {
    use std::os::unix::ffi::OsStrExt;
    let p = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| LayerError::Invalid("NUL in path".into()))?;
    let n = std::ffi::CString::new(name).map_err(|_| LayerError::Invalid("NUL in name".into()))?;
    // SAFETY: both strings are NUL-terminated and outlive the call; value is a valid buffer.
    let r = unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if r != 0 {
        return Err(LayerError::Io {
            what: format!("set {name} on {}", path.display()),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// Opens a possibly gzip-compressed tar stream.
pub fn maybe_gunzip<'a, R: Read + 'a>(mut r: R) -> Result<Box<dyn Read + 'a>, LayerError> {
    let mut magic = [0u8; 2];
    let n = r.read(&mut magic).map_err(io("read layer"))?;
    let head = std::io::Cursor::new(magic[..n].to_vec()).chain(r);
    Ok(if n == 2 && magic == [0x1f, 0x8b] {
        Box::new(flate2::read::GzDecoder::new(head))
    } else {
        Box::new(head)
    })
}

/// Unpacks one OCI image layer into `dir`, converting OCI whiteouts (`.wh.name`,
/// `.wh..wh..opq`) into overlayfs ones. Files are owned by the canonical id range every layer
/// is kept in (root inside = `namespaces::ID_BASE` on the host).
pub fn unpack_image_layer(reader: impl Read, dir: &Path) -> Result<(), LayerError> {
    unpack_image_layer_shifted(reader, dir, crate::namespaces::ID_BASE)
}

fn unpack_image_layer_shifted(
    reader: impl Read,
    dir: &Path,
    id_base: u32,
) -> Result<(), LayerError> {
    let mut archive = tar::Archive::new(maybe_gunzip(reader)?);
    archive.set_preserve_permissions(true);
    archive.set_unpack_xattrs(false);
    for entry in archive.entries().map_err(io("read layer"))? {
        let mut entry = entry.map_err(io("read layer entry"))?;
        let raw = entry.path().map_err(io("entry path"))?.into_owned();
        let Some(rel) = safe_relative(&raw) else {
            return Err(LayerError::Invalid(format!(
                "unsafe path in layer: {}",
                raw.display()
            )));
        };
        let name = rel
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let parent = rel.parent().map(Path::to_path_buf).unwrap_or_default();
        if name == ".wh..wh..opq" {
            set_opaque(&dir.join(&parent))?;
            continue;
        }
        if let Some(hidden) = name.strip_prefix(".wh.") {
            whiteout(dir, &parent.join(hidden))?;
            continue;
        }
        let (uid, gid) = (
            entry.header().uid().unwrap_or(0),
            entry.header().gid().unwrap_or(0),
        );
        if !entry
            .unpack_in(dir)
            .map_err(io(format!("unpack {}", rel.display())))?
        {
            return Err(LayerError::Invalid(format!(
                "layer entry escapes: {}",
                rel.display()
            )));
        }
        if rel.as_os_str().is_empty() {
            continue;
        }
        shift_owner(&dir.join(&rel), uid, gid, id_base)?;
    }
    Ok(())
}

/// Unpacks a COPY step's context (a tarball of paths relative to the build context) into `dir`
/// the way `COPY src... dest` places them: a directory source's contents go under `dest`; a file
/// goes to `dest/<name>` when `dest` ends in `/` or there are several sources, else to `dest`.
/// Owned by `owner` (uid, gid inside the sandbox; root by default), in the canonical id range of
/// layers.
pub fn unpack_copy(reader: impl Read, dir: &Path, plan: &CopyPlan) -> Result<usize, LayerError> {
    unpack_copy_shifted(reader, dir, plan, crate::namespaces::ID_BASE)
}

/// What a COPY step places where.
pub struct CopyPlan<'a> {
    pub sources: &'a [String],
    pub dest: &'a str,
    /// uid, gid inside the sandbox.
    pub owner: (u32, u32),
    pub mode: Option<u32>,
    /// The layers the new one goes on (topmost first): a destination parent the layer must hold
    /// takes its owner and mode from there, or it would hide them (an overlay's upper directory
    /// wins), e.g. leave `/home/user` owned by root after a COPY into it.
    pub lower: &'a [PathBuf],
}

fn unpack_copy_shifted(
    reader: impl Read,
    dir: &Path,
    plan: &CopyPlan,
    id_base: u32,
) -> Result<usize, LayerError> {
    let CopyPlan {
        sources,
        dest,
        owner,
        mode,
        lower,
    } = *plan;
    let dest_rel = safe_relative(Path::new(dest.trim_start_matches('/')))
        .ok_or_else(|| LayerError::Invalid(format!("invalid COPY destination {dest}")))?;
    let into_dir = dest.ends_with('/') || sources.len() > 1;
    let sources: Vec<PathBuf> = sources
        .iter()
        .map(|s| {
            safe_relative(Path::new(s.trim_end_matches('/')))
                .ok_or_else(|| LayerError::Invalid(format!("invalid COPY source {s}")))
        })
        .collect::<Result<_, _>>()?;
    let chown = |p: &Path| {
        std::os::unix::fs::lchown(p, Some(id_base + owner.0), Some(id_base + owner.1))
            .map_err(io(format!("chown {}", p.display())))
    };
    // The destination's parents exist in the layer, owned as in the layers below (stored there
    // already shifted), else like the rest of the image (root).
    // The destination itself only when things go into it: `COPY file /opt/tool.sh` makes a file.
    let count = dest_rel.components().count();
    let parents = if into_dir {
        count
    } else {
        count.saturating_sub(1)
    };
    let mut rel = PathBuf::new();
    for c in dest_rel.components().take(parents) {
        rel.push(c);
        let built = dir.join(&rel);
        if built.exists() {
            continue;
        }
        std::fs::create_dir(&built).map_err(io("create COPY destination"))?;
        let below = lower
            .iter()
            .find_map(|l| std::fs::symlink_metadata(l.join(&rel)).ok())
            .filter(|m| m.is_dir());
        let (uid, gid) = below
            .as_ref()
            .map_or((id_base, id_base), |m| (m.uid(), m.gid()));
        std::os::unix::fs::lchown(&built, Some(uid), Some(gid))
            .map_err(io("chown COPY destination"))?;
        if let Some(m) = below {
            std::fs::set_permissions(&built, std::fs::Permissions::from_mode(m.mode() & 0o7777))
                .map_err(io("chmod COPY destination"))?;
        }
    }
    let mut archive = tar::Archive::new(maybe_gunzip(reader)?);
    archive.set_preserve_permissions(true);
    let mut copied = 0;
    for entry in archive.entries().map_err(io("read COPY context"))? {
        let mut entry = entry.map_err(io("read COPY entry"))?;
        let raw = entry.path().map_err(io("entry path"))?.into_owned();
        let Some(rel) = safe_relative(&raw) else {
            continue;
        };
        // Which source this entry belongs to, and where it lands.
        let placed = sources.iter().find_map(|src| {
            if src.as_os_str().is_empty() || src == Path::new(".") {
                return Some(dest_rel.join(&rel));
            }
            let under = rel.strip_prefix(src).ok()?;
            Some(if under.as_os_str().is_empty() {
                // the source itself: a directory merges into dest, a file becomes dest (or a
                // file inside it)
                if entry.header().entry_type().is_dir() {
                    dest_rel.clone()
                } else if into_dir {
                    dest_rel.join(src.file_name()?)
                } else {
                    dest_rel.clone()
                }
            } else {
                dest_rel.join(under)
            })
        });
        let Some(target_rel) = placed else { continue };
        let target = dir.join(&target_rel);
        if entry.header().entry_type().is_dir() {
            std::fs::create_dir_all(&target).map_err(io("create COPY directory"))?;
        } else {
            if let Some(p) = target.parent() {
                std::fs::create_dir_all(p).map_err(io("create COPY directory"))?;
            }
            entry
                .unpack(&target)
                .map_err(io(format!("unpack {}", target_rel.display())))?;
            copied += 1;
        }
        if let Some(m) = mode {
            if !entry.header().entry_type().is_symlink() {
                std::fs::set_permissions(&target, std::fs::Permissions::from_mode(m))
                    .map_err(io("chmod COPY target"))?;
            }
        }
        chown(&target)?;
    }
    Ok(copied)
}

/// Joins `layers` (topmost first) into one read-only tree at `at` with an overlay mount on the
/// host, for tiers that need a single root directory (gVisor's bundle, the microVM root image).
pub fn mount_read_only_union(layers: &[PathBuf], at: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(at)?;
    let lower = layers
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(":");
    nix::mount::mount(
        Some("overlay"),
        at,
        Some("overlay"),
        nix::mount::MsFlags::MS_RDONLY,
        Some(format!("lowerdir={lower}").as_str()),
    )
    .map_err(std::io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tarball(entries: &[(&str, Option<&[u8]>)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, data) in entries {
            let mut h = tar::Header::new_gnu();
            match data {
                Some(d) => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_size(d.len() as u64);
                    h.set_mode(0o644);
                    h.set_cksum();
                    b.append_data(&mut h, path, *d).expect("append");
                }
                None => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_size(0);
                    h.set_mode(0o755);
                    h.set_cksum();
                    b.append_data(&mut h, path, std::io::empty())
                        .expect("append");
                }
            }
        }
        b.into_inner().expect("tar")
    }

    fn plan<'a>(sources: &'a [String], dest: &'a str, mode: Option<u32>) -> CopyPlan<'a> {
        CopyPlan {
            sources,
            dest,
            owner: (0, 0),
            mode,
            lower: &[],
        }
    }

    #[test]
    fn copy_places_directory_contents_and_files_like_a_dockerfile() {
        let dir = tempfile::tempdir().expect("tmp");
        let ctx = tarball(&[
            ("app", None),
            ("app/main.py", Some(b"print(1)")),
            ("app/lib/x.py", Some(b"x")),
            ("req.txt", Some(b"r")),
        ]);
        let id = nix::unistd::getuid().as_raw();
        let n = unpack_copy_shifted(
            &ctx[..],
            dir.path(),
            &plan(&["app/".into()], "/srv/app", None),
            id,
        )
        .expect("copy dir");
        assert_eq!(n, 2);
        assert_eq!(
            std::fs::read(dir.path().join("srv/app/main.py")).expect("read"),
            b"print(1)"
        );
        assert!(dir.path().join("srv/app/lib/x.py").exists());
        assert!(!dir.path().join("srv/app/req.txt").exists());
        unpack_copy_shifted(
            &ctx[..],
            dir.path(),
            &plan(&["req.txt".into()], "/etc/", Some(0o600)),
            id,
        )
        .expect("copy file");
        assert!(dir.path().join("etc/req.txt").exists());
        // A file to a path not ending in `/` becomes that file.
        unpack_copy_shifted(
            &ctx[..],
            dir.path(),
            &plan(&["req.txt".into()], "/opt/tool.sh", None),
            id,
        )
        .expect("copy file to a file path");
        assert!(dir.path().join("opt/tool.sh").is_file());
        // The tar crate refuses to write `..`; a hostile client's archive can hold it anyway.
        let mut h = tar::Header::new_old();
        h.as_old_mut().name[..12].copy_from_slice(b"../../escape");
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(1);
        h.set_mode(0o644);
        h.set_cksum();
        let mut b = tar::Builder::new(Vec::new());
        b.append(&h, &b"x"[..]).expect("append");
        let evil = b.into_inner().expect("tar");
        unpack_copy_shifted(&evil[..], dir.path(), &plan(&[".".into()], "/x", None), id)
            .expect("skip");
        assert!(!dir.path().join("../escape").exists());
    }

    #[test]
    fn copy_keeps_the_owner_and_mode_of_parents_from_the_layers_below() {
        let lower = tempfile::tempdir().expect("tmp");
        let home = lower.path().join("home/user");
        std::fs::create_dir_all(&home).expect("home");
        std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o750)).expect("chmod");
        let upper = tempfile::tempdir().expect("tmp");
        let ctx = tarball(&[("a.txt", Some(b"a"))]);
        let id = nix::unistd::getuid().as_raw();
        let sources = ["a.txt".to_string()];
        let layers = [lower.path().to_path_buf()];
        let plan = CopyPlan {
            sources: &sources,
            dest: "/home/user/",
            owner: (0, 0),
            mode: None,
            lower: &layers,
        };
        unpack_copy_shifted(&ctx[..], upper.path(), &plan, id).expect("copy");
        let made = std::fs::metadata(upper.path().join("home/user")).expect("made");
        assert_eq!(made.mode() & 0o7777, 0o750);
        assert_eq!(made.uid(), std::fs::metadata(&home).expect("lower").uid());
        assert!(upper.path().join("home/user/a.txt").exists());
    }
}
