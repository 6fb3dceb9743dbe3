//! The files of one volume, as the content API reaches them: every path is resolved beneath the
//! volume's root with `openat2(RESOLVE_BENEATH)`, and the last component is acted on through
//! its parent's descriptor without following it. A sandbox that mounts the volume may plant
//! symlinks (its code is hostile): none of them can lead a content call outside the volume.
//! Owners are kept on disk in the canonical id range (`ID_BASE + id`), as the layers are, so the
//! idmapped mounts of sandboxes show them as the ids given here.

use std::ffi::OsStr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, Dir, FileType, Gid, Mode, OFlags, ResolveFlags, Stat, Uid};
use rustix::io::Errno;

/// What a content call found wrong; each maps to one HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    #[error("path {0} not found")]
    NotFound(String),
    #[error("path {0} already exists")]
    Exists(String),
    #[error("{0}")]
    Bad(String),
    /// The volume's file system has no room left (its size is its quota).
    #[error("the volume is full: no room for {0}")]
    Full(String),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: String,
        source: std::io::Error,
    },
}

/// An upload under way (`VolumeFiles::create_file`): its bytes are in `temp` until `commit`.
pub struct Upload {
    dir: OwnedFd,
    temp: String,
    name: std::ffi::OsString,
    rel: PathBuf,
    replace: bool,
}

impl Upload {
    /// Gives the complete file its name: atomically replacing the old one when asked to, else
    /// only if the name is still free.
    pub fn commit(self) -> Result<(), ContentError> {
        let flags = if self.replace {
            rustix::fs::RenameFlags::empty()
        } else {
            rustix::fs::RenameFlags::NOREPLACE
        };
        let renamed =
            rustix::fs::renameat_with(&self.dir, &self.temp, &self.dir, &self.name, flags)
                .map_err(io_err("name", &self.rel));
        if renamed.is_err() {
            self.abandon();
        }
        renamed
    }

    /// Removes the incomplete file.
    pub fn abandon(self) {
        let _ = rustix::fs::unlinkat(&self.dir, &self.temp, AtFlags::empty());
    }
}

/// One entry as E2B's `VolumeEntryStat` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub kind: &'static str,
    /// Absolute within the volume (`/` is its root).
    pub path: String,
    pub size: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub atime: i64,
    pub mtime: i64,
    pub ctime: i64,
    pub target: Option<String>,
}

/// The ids a volume's files are stored with are shifted by this (see the module comment).
pub const ID_BASE: u32 = warren_runtime::namespaces::ID_BASE;
/// The largest id a caller may give (one id range).
const MAX_ID: u32 = 65_535;

fn beneath() -> ResolveFlags {
    ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS
}

/// A caller's path as components under the root: `/a/b`, `a/b` and `/` are fine; `..` is not.
pub fn clean(path: &str) -> Result<PathBuf, ContentError> {
    let mut out = PathBuf::new();
    for c in Path::new(path).components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => out.push(n),
            Component::ParentDir | Component::Prefix(_) => {
                return Err(ContentError::Bad(format!(
                    "path {path:?} must not contain '..'"
                )))
            }
        }
    }
    Ok(out)
}

fn shown(rel: &Path) -> String {
    format!("/{}", rel.display())
}

fn io_err<'a>(what: &'static str, rel: &'a Path) -> impl FnOnce(Errno) -> ContentError + 'a {
    move |e| match e {
        Errno::NOENT | Errno::NOTDIR => ContentError::NotFound(shown(rel)),
        Errno::EXIST => ContentError::Exists(shown(rel)),
        Errno::NOSPC | Errno::DQUOT => ContentError::Full(shown(rel)),
        Errno::ISDIR => ContentError::Bad(format!("{} is a directory", shown(rel))),
        Errno::XDEV | Errno::LOOP => ContentError::Bad(format!(
            "path {} leads outside the volume or through a symlink",
            shown(rel)
        )),
        e => ContentError::Io {
            what,
            path: shown(rel),
            source: e.into(),
        },
    }
}

fn check_id(id: Option<u32>, what: &str) -> Result<Option<u32>, ContentError> {
    match id {
        Some(n) if n > MAX_ID => Err(ContentError::Bad(format!(
            "{what} must be at most {MAX_ID}, got {n}"
        ))),
        other => Ok(other.map(|n| n + ID_BASE)),
    }
}

/// The volume's files under `root`.
pub struct VolumeFiles {
    root: OwnedFd,
}

impl VolumeFiles {
    pub fn open(root: &Path) -> Result<Self, ContentError> {
        let root = rustix::fs::open(
            root,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| ContentError::Io {
            what: "open the volume",
            path: "/".into(),
            source: e.into(),
        })?;
        Ok(Self { root })
    }

    /// The directory holding `rel`'s last component, and that component (None for the root).
    fn parent_of<'a>(&self, rel: &'a Path) -> Result<(OwnedFd, Option<&'a OsStr>), ContentError> {
        let parent = rel.parent().filter(|p| !p.as_os_str().is_empty());
        let dir = rustix::fs::openat2(
            &self.root,
            parent.unwrap_or(Path::new(".")),
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
            beneath(),
        )
        .map_err(io_err("open the parent of", rel))?;
        Ok((dir, rel.file_name()))
    }

    fn entry(&self, dir: impl AsFd, name: &OsStr, rel: &Path) -> Result<Entry, ContentError> {
        let st = rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(io_err("stat", rel))?;
        let target = (FileType::from_raw_mode(st.st_mode) == FileType::Symlink)
            .then(|| rustix::fs::readlinkat(&dir, name, Vec::new()).ok())
            .flatten()
            .map(|t| t.to_string_lossy().into_owned());
        Ok(entry_of(&st, rel, target))
    }

    /// `GET …/path`: the entry itself (a symlink is described, not followed).
    pub fn stat(&self, rel: &Path) -> Result<Entry, ContentError> {
        let (dir, name) = self.parent_of(rel)?;
        self.entry(dir, name.unwrap_or(OsStr::new(".")), rel)
    }

    /// Opens `rel` itself without following a symlink there, for fchmod/fchown/reading.
    fn open_nofollow(&self, rel: &Path, flags: OFlags) -> Result<OwnedFd, ContentError> {
        rustix::fs::openat2(
            &self.root,
            if rel.as_os_str().is_empty() {
                Path::new(".")
            } else {
                rel
            },
            flags | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK,
            Mode::empty(),
            beneath(),
        )
        .map_err(io_err("open", rel))
    }

    /// `PATCH …/path`: owner and mode (not of a symlink).
    pub fn set_metadata(
        &self,
        rel: &Path,
        uid: Option<u32>,
        gid: Option<u32>,
        mode: Option<u32>,
    ) -> Result<Entry, ContentError> {
        let (uid, gid) = (check_id(uid, "uid")?, check_id(gid, "gid")?);
        if self.stat(rel)?.kind == "symlink" {
            return Err(ContentError::Bad(format!(
                "{} is a symlink: its owner and mode are not set",
                shown(rel)
            )));
        }
        let fd = self.open_nofollow(rel, OFlags::RDONLY)?;
        if uid.is_some() || gid.is_some() {
            rustix::fs::fchown(&fd, uid.map(Uid::from_raw), gid.map(Gid::from_raw))
                .map_err(io_err("chown", rel))?;
        }
        if let Some(m) = mode {
            rustix::fs::fchmod(&fd, Mode::from_raw_mode(m & 0o7777))
                .map_err(io_err("chmod", rel))?;
        }
        self.stat(rel)
    }

    /// `POST …/dir`: one directory, or with `parents` every missing one on the way.
    pub fn make_dir(
        &self,
        rel: &Path,
        parents: bool,
        uid: Option<u32>,
        gid: Option<u32>,
        mode: Option<u32>,
    ) -> Result<Entry, ContentError> {
        let (uid, gid) = (check_id(uid, "uid")?, check_id(gid, "gid")?);
        if rel.as_os_str().is_empty() {
            return Err(ContentError::Exists("/".into()));
        }
        let mode = Mode::from_raw_mode(mode.unwrap_or(0o755) & 0o7777);
        let mut made = PathBuf::new();
        let parts: Vec<_> = rel.components().collect();
        for (i, c) in parts.iter().enumerate() {
            made.push(c);
            let last = i + 1 == parts.len();
            if !last && !parents {
                continue;
            }
            let (dir, name) = self.parent_of(&made)?;
            let name = name.unwrap_or(OsStr::new("."));
            match rustix::fs::mkdirat(&dir, name, mode) {
                Ok(()) => {
                    let fd = self.open_nofollow(&made, OFlags::RDONLY | OFlags::DIRECTORY)?;
                    rustix::fs::fchown(
                        &fd,
                        Some(Uid::from_raw(uid.unwrap_or(ID_BASE))),
                        Some(Gid::from_raw(gid.unwrap_or(ID_BASE))),
                    )
                    .map_err(io_err("chown", &made))?;
                    // mkdir's mode is cut by the umask.
                    rustix::fs::fchmod(&fd, mode).map_err(io_err("chmod", &made))?;
                }
                Err(Errno::EXIST) if !last => {}
                Err(e) => return Err(io_err("create directory", &made)(e)),
            }
        }
        self.stat(rel)
    }

    /// `GET …/dir`: the entries under `rel`, `depth` levels down (1: its own entries).
    pub fn list(&self, rel: &Path, depth: u32) -> Result<Vec<Entry>, ContentError> {
        let fd = self.open_nofollow(rel, OFlags::RDONLY | OFlags::DIRECTORY)?;
        let mut out = Vec::new();
        self.list_into(fd, rel, depth.clamp(1, 10), &mut out)?;
        Ok(out)
    }

    fn list_into(
        &self,
        fd: OwnedFd,
        rel: &Path,
        depth: u32,
        out: &mut Vec<Entry>,
    ) -> Result<(), ContentError> {
        let mut names: Vec<Vec<u8>> = Vec::new();
        for e in Dir::read_from(&fd).map_err(io_err("list", rel))? {
            let e = e.map_err(io_err("list", rel))?;
            let n = e.file_name().to_bytes();
            if n != b"." && n != b".." {
                names.push(n.to_vec());
            }
        }
        names.sort();
        for n in names {
            let name = OsStr::from_bytes(&n);
            let child = rel.join(name);
            let entry = match self.entry(&fd, name, &child) {
                Ok(e) => e,
                // Removed while listed (a sandbox may be writing).
                Err(ContentError::NotFound(_)) => continue,
                Err(e) => return Err(e),
            };
            let is_dir = entry.kind == "directory";
            out.push(entry);
            if is_dir && depth > 1 {
                if let Ok(sub) = rustix::fs::openat2(
                    &fd,
                    name,
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                    beneath(),
                ) {
                    self.list_into(sub, &child, depth - 1, out)?;
                }
            }
        }
        Ok(())
    }

    /// `GET …/file`: a regular file, opened for reading.
    pub fn open_read(&self, rel: &Path) -> Result<std::fs::File, ContentError> {
        let fd = self.open_nofollow(rel, OFlags::RDONLY)?;
        let st = rustix::fs::fstat(&fd).map_err(io_err("stat", rel))?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return Err(ContentError::Bad(format!("{} is not a file", shown(rel))));
        }
        Ok(std::fs::File::from(fd))
    }

    /// `PUT …/file`: a new file (an existing one only with `replace`), owned and moded as asked.
    /// The caller writes the body into the returned file, then commits the upload: the bytes go
    /// to a hidden file beside the target that takes its name only once complete, so an upload
    /// that fails half-way (a full volume, a dropped connection) leaves the old file as it was.
    pub fn create_file(
        &self,
        rel: &Path,
        replace: bool,
        uid: Option<u32>,
        gid: Option<u32>,
        mode: Option<u32>,
    ) -> Result<(std::fs::File, Upload), ContentError> {
        let (uid, gid) = (check_id(uid, "uid")?, check_id(gid, "gid")?);
        let (dir, name) = self.parent_of(rel)?;
        let Some(name) = name else {
            return Err(ContentError::Bad("the volume's root is not a file".into()));
        };
        if !replace && rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW).is_ok() {
            return Err(ContentError::Exists(shown(rel)));
        }
        let temp = format!(".warren-upload-{}", hex::encode(rand::random::<[u8; 8]>()));
        let mode = Mode::from_raw_mode(mode.unwrap_or(0o644) & 0o7777);
        let fd = rustix::fs::openat2(
            &dir,
            &temp,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            mode,
            beneath(),
        )
        .map_err(io_err("create", rel))?;
        let upload = Upload {
            dir,
            temp,
            name: name.to_owned(),
            rel: rel.to_owned(),
            replace,
        };
        let owned = rustix::fs::fchown(
            &fd,
            Some(Uid::from_raw(uid.unwrap_or(ID_BASE))),
            Some(Gid::from_raw(gid.unwrap_or(ID_BASE))),
        )
        .map_err(io_err("chown", rel))
        .and_then(|()| rustix::fs::fchmod(&fd, mode).map_err(io_err("chmod", rel)));
        if let Err(e) = owned {
            upload.abandon();
            return Err(e);
        }
        Ok((std::fs::File::from(fd), upload))
    }

    /// `DELETE …/path`: a file, a symlink (not what it points to), or a directory with all in it.
    pub fn remove(&self, rel: &Path) -> Result<(), ContentError> {
        let (dir, name) = self.parent_of(rel)?;
        let Some(name) = name else {
            return Err(ContentError::Bad(
                "the volume's root cannot be removed".into(),
            ));
        };
        let st = rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(io_err("stat", rel))?;
        if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
            let sub = self.open_nofollow(rel, OFlags::RDONLY | OFlags::DIRECTORY)?;
            empty_dir(&sub, rel)?;
            rustix::fs::unlinkat(&dir, name, AtFlags::REMOVEDIR).map_err(io_err("remove", rel))
        } else {
            rustix::fs::unlinkat(&dir, name, AtFlags::empty()).map_err(io_err("remove", rel))
        }
    }
}

/// Removes everything in the directory `fd`, never following a symlink.
fn empty_dir(fd: &OwnedFd, rel: &Path) -> Result<(), ContentError> {
    let mut names = Vec::new();
    for e in Dir::read_from(fd).map_err(io_err("list", rel))? {
        let e = e.map_err(io_err("list", rel))?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push((n.to_vec(), e.file_type()));
        }
    }
    for (n, kind) in names {
        let name = OsStr::from_bytes(&n);
        let child = rel.join(name);
        if kind == FileType::Directory {
            let sub = rustix::fs::openat2(
                fd,
                name,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
                beneath(),
            )
            .map_err(io_err("open", &child))?;
            empty_dir(&sub, &child)?;
            rustix::fs::unlinkat(fd, name, AtFlags::REMOVEDIR).map_err(io_err("remove", &child))?;
        } else {
            rustix::fs::unlinkat(fd, name, AtFlags::empty()).map_err(io_err("remove", &child))?;
        }
    }
    Ok(())
}

fn entry_of(st: &Stat, rel: &Path, target: Option<String>) -> Entry {
    let kind = match FileType::from_raw_mode(st.st_mode) {
        FileType::RegularFile => "file",
        FileType::Directory => "directory",
        FileType::Symlink => "symlink",
        _ => "unknown",
    };
    let name = rel
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "/".into());
    Entry {
        name,
        kind,
        path: shown(rel),
        size: st.st_size as u64,
        mode: st.st_mode & 0o7777,
        uid: st.st_uid.saturating_sub(ID_BASE),
        gid: st.st_gid.saturating_sub(ID_BASE),
        atime: st.st_atime,
        mtime: st.st_mtime,
        ctime: st.st_ctime,
        target,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files() -> (tempfile::TempDir, VolumeFiles) {
        let dir = tempfile::tempdir().expect("tmp");
        let files = VolumeFiles::open(dir.path()).expect("open");
        (dir, files)
    }

    #[test]
    fn paths_stay_inside_the_volume() {
        assert!(clean("/a/../b").is_err());
        assert_eq!(clean("/a/b/").expect("clean"), PathBuf::from("a/b"));
        assert_eq!(clean("/").expect("root"), PathBuf::new());
        let (dir, files) = files();
        let outside = tempfile::tempdir().expect("outside");
        std::fs::write(outside.path().join("secret"), "x").expect("secret");
        std::os::unix::fs::symlink(outside.path(), dir.path().join("escape")).expect("link");
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("abs")).expect("link");
        // Through a symlink that leads out: refused, never read.
        assert!(files
            .open_read(&clean("/escape/secret").expect("p"))
            .is_err());
        assert!(files.open_read(&clean("/abs").expect("p")).is_err());
        assert!(files
            .create_file(&clean("/escape/new").expect("p"), true, None, None, None)
            .is_err());
        assert!(!outside.path().join("new").exists());
        // Removing the link removes the link only.
        files
            .remove(&clean("/escape").expect("p"))
            .expect("remove link");
        assert!(outside.path().join("secret").exists());
        let link = files.stat(&clean("/abs").expect("p")).expect("stat link");
        assert_eq!(
            (link.kind, link.target.as_deref()),
            ("symlink", Some("/etc/passwd"))
        );
    }

    #[test]
    fn files_and_directories_round_trip() {
        use std::io::{Read, Write};
        let (_dir, files) = files();
        let deep = clean("/a/b/c").expect("p");
        assert!(matches!(
            files.make_dir(&deep, false, None, None, None),
            Err(ContentError::NotFound(_))
        ));
        files
            .make_dir(&deep, true, None, None, Some(0o750))
            .expect("mkdir -p");
        let f = clean("/a/b/c/x.txt").expect("p");
        let write = |replace, bytes: &[u8]| {
            let (mut file, upload) = files
                .create_file(&f, replace, None, None, None)
                .expect("create");
            file.write_all(bytes).expect("write");
            upload
        };
        write(false, b"hello").commit().expect("commit");
        assert!(matches!(
            files.create_file(&f, false, None, None, None),
            Err(ContentError::Exists(_))
        ));
        // An upload abandoned half-way leaves the file as it was, and nothing beside it.
        write(true, b"half").abandon();
        let mut s = String::new();
        files
            .open_read(&f)
            .expect("read")
            .read_to_string(&mut s)
            .expect("read");
        assert_eq!(s, "hello");
        // Two uploads of a new name at once: the first to finish has it, the other is refused.
        let g = clean("/a/b/c/y.txt").expect("p");
        let (_, first) = files
            .create_file(&g, false, None, None, None)
            .expect("first");
        let (_, second) = files
            .create_file(&g, false, None, None, None)
            .expect("second");
        first.commit().expect("first wins");
        assert!(matches!(second.commit(), Err(ContentError::Exists(_))));
        files.remove(&g).expect("rm");
        write(true, b"hi").commit().expect("replace");
        let mut s = String::new();
        files
            .open_read(&f)
            .expect("read")
            .read_to_string(&mut s)
            .expect("read");
        assert_eq!(s, "hi");
        let listed: Vec<String> = files
            .list(&clean("/").expect("p"), 10)
            .expect("list")
            .into_iter()
            .map(|e| e.path)
            .collect();
        assert_eq!(listed, ["/a", "/a/b", "/a/b/c", "/a/b/c/x.txt"]);
        assert_eq!(
            files.list(&clean("/").expect("p"), 1).expect("list").len(),
            1
        );
        let e = files
            .set_metadata(&f, None, None, Some(0o600))
            .expect("chmod");
        assert_eq!((e.kind, e.mode, e.size), ("file", 0o600, 2));
        assert!(files.remove(&clean("/").expect("p")).is_err());
        files.remove(&clean("/a").expect("p")).expect("rm -r");
        assert!(matches!(
            files.stat(&clean("/a").expect("p")),
            Err(ContentError::NotFound(_))
        ));
    }
}
