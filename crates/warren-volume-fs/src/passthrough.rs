//! The FUSE requests, each passed to the source directory by `*at` calls on held descriptors.
//!
//! What differs from a plain passthrough, and why:
//! - New files get the owner the kernel put in the request (on an idmapped mount, the creator's
//!   id mapped back through the mount: the canonical id the volume stores), or the directory's
//!   group where the directory is set-group-id.
//! - `EDQUOT` from a shared store's directory quota is answered as `ENOSPC`, the error a full
//!   single-machine volume gives, so programs in sandboxes see one error for "the volume is
//!   full" whichever backend holds it.
//! - Attributes and names are cached for a second only: other nodes change the same files.

use std::ffi::OsStr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, FopenFlags, Generation, INodeNo, KernelConfig,
    OpenFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry,
    ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow,
};
use rustix::fs::{AtFlags, Mode, OFlags, Stat, CWD};

use crate::nodes::{proc_path, Entry, Nodes};

const TTL: Duration = Duration::from_secs(1);
/// What the kernel puts in a request's ids when it names no creator.
const NO_ID: u32 = u32::MAX;

pub struct IdKeepingFs {
    nodes: Nodes,
}

type Answer<T> = Result<T, Errno>;

fn errno(e: rustix::io::Errno) -> Errno {
    let raw = e.raw_os_error();
    Errno::from_i32(if raw == libc::EDQUOT {
        libc::ENOSPC
    } else {
        raw
    })
}

fn kind_of(mode: u32) -> FileType {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => FileType::Directory,
        libc::S_IFLNK => FileType::Symlink,
        libc::S_IFIFO => FileType::NamedPipe,
        libc::S_IFSOCK => FileType::Socket,
        libc::S_IFCHR => FileType::CharDevice,
        libc::S_IFBLK => FileType::BlockDevice,
        _ => FileType::RegularFile,
    }
}

fn time(sec: i64, nsec: i64) -> SystemTime {
    let nanos = Duration::from_nanos(nsec.clamp(0, 999_999_999) as u64);
    if sec >= 0 {
        UNIX_EPOCH + Duration::from_secs(sec as u64) + nanos
    } else {
        UNIX_EPOCH - Duration::from_secs(sec.unsigned_abs()) + nanos
    }
}

fn timespec(t: Option<TimeOrNow>) -> rustix::fs::Timespec {
    let (tv_sec, tv_nsec) = match t {
        None => (0, rustix::fs::UTIME_OMIT),
        Some(TimeOrNow::Now) => (0, rustix::fs::UTIME_NOW),
        Some(TimeOrNow::SpecificTime(at)) => match at.duration_since(UNIX_EPOCH) {
            Ok(d) => (d.as_secs() as i64, i64::from(d.subsec_nanos())),
            Err(before) => {
                let d = before.duration();
                (-(d.as_secs() as i64), i64::from(d.subsec_nanos()))
            }
        },
    };
    rustix::fs::Timespec {
        tv_sec,
        tv_nsec: tv_nsec as _,
    }
}

impl IdKeepingFs {
    pub fn open(source: &Path) -> std::io::Result<Self> {
        let root = rustix::fs::open(
            source,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let st = rustix::fs::fstat(&root)?;
        // Modes arrive already masked by the caller's umask; the server's own must not mask
        // them again.
        rustix::process::umask(Mode::empty());
        Ok(Self {
            nodes: Nodes::new(root, st.st_ino),
        })
    }

    fn attr(&self, st: &Stat) -> FileAttr {
        FileAttr {
            ino: INodeNo(self.nodes.number(st.st_ino)),
            size: st.st_size as u64,
            blocks: st.st_blocks as u64,
            atime: time(st.st_atime, st.st_atime_nsec as i64),
            mtime: time(st.st_mtime, st.st_mtime_nsec as i64),
            ctime: time(st.st_ctime, st.st_ctime_nsec as i64),
            crtime: UNIX_EPOCH,
            kind: kind_of(st.st_mode),
            perm: (st.st_mode & 0o7777) as u16,
            nlink: st.st_nlink as u32,
            uid: st.st_uid,
            gid: st.st_gid,
            rdev: st.st_rdev as u32,
            blksize: st.st_blksize as u32,
            flags: 0,
        }
    }

    fn node(&self, ino: INodeNo) -> Answer<std::sync::Arc<OwnedFd>> {
        self.nodes.fd(ino.0).ok_or(Errno::ESTALE)
    }

    fn stat_of(&self, ino: INodeNo) -> Answer<Stat> {
        rustix::fs::fstat(&*self.node(ino)?).map_err(errno)
    }

    /// Looks `name` up in `parent` and counts the kernel's reference to it.
    fn lookup_entry(&self, parent: INodeNo, name: &OsStr) -> Answer<FileAttr> {
        let dir = self.node(parent)?;
        let fd = rustix::fs::openat(
            &*dir,
            name,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(errno)?;
        let st = rustix::fs::fstat(&fd).map_err(errno)?;
        let attr = self.attr(&st);
        self.nodes.remember(attr.ino.0, fd);
        Ok(attr)
    }

    /// The owner a new entry of `parent` gets: the creator the kernel named, with the
    /// directory's group where it is set-group-id.
    fn new_owner(&self, req: &Request, parent: INodeNo) -> Answer<(u32, u32)> {
        let dir = rustix::fs::fstat(&*self.node(parent)?).map_err(errno)?;
        let gid = if dir.st_mode & libc::S_ISGID != 0 {
            dir.st_gid
        } else {
            req.gid()
        };
        Ok((req.uid(), gid))
    }

    /// Hands the entry `name` of `parent`, just made by the server as root, to its owner.
    fn hand_over(&self, parent: &OwnedFd, name: &OsStr, (uid, gid): (u32, u32)) -> Answer<()> {
        if uid == NO_ID || gid == NO_ID {
            return Ok(());
        }
        rustix::fs::chownat(
            parent,
            name,
            Some(rustix::fs::Uid::from_raw(uid)),
            Some(rustix::fs::Gid::from_raw(gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(errno)
    }

    /// Makes an entry with `make`, hands it over, and answers with it; an entry that cannot be
    /// handed over is removed again rather than left as root's.
    fn made(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        make: impl FnOnce(&OwnedFd) -> rustix::io::Result<()>,
    ) -> Answer<FileAttr> {
        let owner = self.new_owner(req, parent)?;
        let dir = self.node(parent)?;
        make(&dir).map_err(errno)?;
        if let Err(e) = self.hand_over(&dir, name, owner) {
            let is_dir = rustix::fs::statat(&*dir, name, AtFlags::SYMLINK_NOFOLLOW)
                .map(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR)
                .unwrap_or(false);
            let flags = if is_dir {
                AtFlags::REMOVEDIR
            } else {
                AtFlags::empty()
            };
            let _ = rustix::fs::unlinkat(&*dir, name, flags);
            return Err(e);
        }
        self.lookup_entry(parent, name)
    }

    fn set_attributes(&self, ino: INodeNo, fh: Option<FileHandle>, change: Change) -> Answer<Stat> {
        let node = self.node(ino)?;
        let open = fh.and_then(|fh| self.nodes.file(fh.0));
        let path = proc_path(node.as_fd());
        if let Some(mode) = change.mode {
            let mode = Mode::from_raw_mode(mode & 0o7777);
            match &open {
                Some(f) => rustix::fs::fchmod(&**f, mode),
                None => rustix::fs::chmodat(CWD, path.as_str(), mode, AtFlags::empty()),
            }
            .map_err(errno)?;
        }
        if change.uid.is_some() || change.gid.is_some() {
            rustix::fs::chownat(
                &*node,
                "",
                change.uid.map(rustix::fs::Uid::from_raw),
                change.gid.map(rustix::fs::Gid::from_raw),
                AtFlags::EMPTY_PATH | AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(errno)?;
        }
        if let Some(size) = change.size {
            match &open {
                Some(f) => rustix::fs::ftruncate(&**f, size),
                None => rustix::fs::open(
                    path.as_str(),
                    OFlags::WRONLY | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .and_then(|f| rustix::fs::ftruncate(&f, size)),
            }
            .map_err(errno)?;
        }
        if change.atime.is_some() || change.mtime.is_some() {
            let times = rustix::fs::Timestamps {
                last_access: timespec(change.atime),
                last_modification: timespec(change.mtime),
            };
            rustix::fs::utimensat(CWD, path.as_str(), &times, AtFlags::empty()).map_err(errno)?;
        }
        rustix::fs::fstat(&*node).map_err(errno)
    }

    fn entries(&self, ino: INodeNo) -> Answer<Vec<Entry>> {
        let node = self.node(ino)?;
        let dir = rustix::fs::open(
            proc_path(node.as_fd()).as_str(),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(errno)?;
        let mut out = Vec::new();
        for entry in rustix::fs::Dir::read_from(&dir).map_err(errno)? {
            let entry = entry.map_err(errno)?;
            let kind = match entry.file_type() {
                rustix::fs::FileType::Directory => FileType::Directory,
                rustix::fs::FileType::Symlink => FileType::Symlink,
                rustix::fs::FileType::Fifo => FileType::NamedPipe,
                rustix::fs::FileType::Socket => FileType::Socket,
                rustix::fs::FileType::CharacterDevice => FileType::CharDevice,
                rustix::fs::FileType::BlockDevice => FileType::BlockDevice,
                _ => FileType::RegularFile,
            };
            out.push(Entry {
                name: std::ffi::OsString::from(
                    std::str::from_utf8(entry.file_name().to_bytes())
                        .map(str::to_owned)
                        .unwrap_or_else(|_| {
                            String::from_utf8_lossy(entry.file_name().to_bytes()).into_owned()
                        }),
                ),
                ino: self.nodes.number(entry.ino()),
                kind,
            });
        }
        Ok(out)
    }
}

/// The changes of one `setattr`.
struct Change {
    mode: Option<u32>,
    uid: Option<u32>,
    gid: Option<u32>,
    size: Option<u64>,
    atime: Option<TimeOrNow>,
    mtime: Option<TimeOrNow>,
}

/// Open flags the server passes on: the kernel has done creation and `O_NOFOLLOW` itself.
fn passed_on(flags: i32) -> OFlags {
    let taken = OFlags::CREATE | OFlags::EXCL | OFlags::NOCTTY | OFlags::NOFOLLOW;
    (OFlags::from_bits_retain(flags as u32) - taken) | OFlags::CLOEXEC
}

macro_rules! answer {
    ($reply:ident, $result:expr, |$v:ident| $ok:expr) => {
        match $result {
            Ok($v) => $ok,
            Err(e) => $reply.error(e),
        }
    };
}

impl fuser::Filesystem for IdKeepingFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Without this the kernel refuses idmapped mounts of the view: the one reason it exists.
        config
            .add_capabilities(fuser::InitFlags::FUSE_ALLOW_IDMAP)
            .map_err(|_| {
                std::io::Error::other(
                    "the kernel does not offer idmapped FUSE mounts (FUSE_ALLOW_IDMAP needs Linux 6.12)",
                )
            })
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        answer!(reply, self.lookup_entry(parent, name), |attr| reply.entry(
            &TTL,
            &attr,
            Generation(0)
        ));
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.nodes.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        answer!(reply, self.stat_of(ino), |st| reply
            .attr(&TTL, &self.attr(&st)));
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let change = Change {
            mode,
            uid,
            gid,
            size,
            atime,
            mtime,
        };
        answer!(reply, self.set_attributes(ino, fh, change), |st| reply
            .attr(&TTL, &self.attr(&st)));
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let target = self
            .node(ino)
            .and_then(|fd| rustix::fs::readlinkat(&*fd, "", Vec::new()).map_err(errno));
        answer!(reply, target, |t| reply.data(t.as_bytes()));
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let made = self.made(req, parent, name, |dir| {
            rustix::fs::mknodat(
                dir,
                name,
                rustix::fs::FileType::from_raw_mode(mode),
                Mode::from_raw_mode(mode & 0o7777),
                u64::from(rdev),
            )
        });
        answer!(reply, made, |attr| reply.entry(&TTL, &attr, Generation(0)));
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let made = self.made(req, parent, name, |dir| {
            rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(mode & 0o7777))
        });
        answer!(reply, made, |attr| reply.entry(&TTL, &attr, Generation(0)));
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let done = self
            .node(parent)
            .and_then(|dir| rustix::fs::unlinkat(&*dir, name, AtFlags::empty()).map_err(errno));
        answer!(reply, done, |_v| reply.ok());
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let done = self
            .node(parent)
            .and_then(|dir| rustix::fs::unlinkat(&*dir, name, AtFlags::REMOVEDIR).map_err(errno));
        answer!(reply, done, |_v| reply.ok());
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let made = self.made(req, parent, link_name, |dir| {
            rustix::fs::symlinkat(target, dir, link_name)
        });
        answer!(reply, made, |attr| reply.entry(&TTL, &attr, Generation(0)));
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: fuser::RenameFlags,
        reply: ReplyEmpty,
    ) {
        let done = self.node(parent).and_then(|from| {
            let to = self.node(newparent)?;
            rustix::fs::renameat_with(
                &*from,
                name,
                &*to,
                newname,
                rustix::fs::RenameFlags::from_bits_retain(flags.bits()),
            )
            .map_err(errno)
        });
        answer!(reply, done, |_v| reply.ok());
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let linked = self.node(ino).and_then(|fd| {
            let to = self.node(newparent)?;
            rustix::fs::linkat(&*fd, "", &*to, newname, AtFlags::EMPTY_PATH).map_err(errno)?;
            self.lookup_entry(newparent, newname)
        });
        answer!(reply, linked, |attr| reply.entry(
            &TTL,
            &attr,
            Generation(0)
        ));
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let opened = self.node(ino).and_then(|fd| {
            rustix::fs::open(
                proc_path(fd.as_fd()).as_str(),
                passed_on(flags.0),
                Mode::empty(),
            )
            .map_err(errno)
        });
        answer!(reply, opened, |file| reply.opened(
            FileHandle(self.nodes.open_file(file)),
            FopenFlags::empty()
        ));
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyData,
    ) {
        let Some(file) = self.nodes.file(fh.0) else {
            return reply.error(Errno::EBADF);
        };
        let mut buf = vec![0u8; size as usize];
        let read = rustix::io::pread(&*file, &mut buf, offset).map_err(errno);
        answer!(reply, read, |n| reply.data(&buf[..n]));
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: fuser::WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyWrite,
    ) {
        let Some(file) = self.nodes.file(fh.0) else {
            return reply.error(Errno::EBADF);
        };
        let written = rustix::io::pwrite(&*file, data, offset).map_err(errno);
        answer!(reply, written, |n| reply.written(n as u32));
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _lock_owner: fuser::LockOwner,
        reply: ReplyEmpty,
    ) {
        let Some(file) = self.nodes.file(fh.0) else {
            return reply.error(Errno::EBADF);
        };
        // A close of a duplicate is what makes the source flush (JuiceFS uploads at close, and
        // reports a full quota there): the caller's close gets its error.
        // SAFETY: dup of a descriptor this table owns; the duplicate is closed here once.
        let closed = unsafe {
            let dup = libc::dup(file.as_raw_fd());
            if dup < 0 || libc::close(dup) < 0 {
                Err(errno(rustix::io::Errno::from_raw_os_error(
                    std::io::Error::last_os_error()
                        .raw_os_error()
                        .unwrap_or(libc::EIO),
                )))
            } else {
                Ok(())
            }
        };
        answer!(reply, closed, |_v| reply.ok());
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.nodes.close_file(fh.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        let Some(file) = self.nodes.file(fh.0) else {
            return reply.error(Errno::EBADF);
        };
        let synced = if datasync {
            rustix::fs::fdatasync(&*file)
        } else {
            rustix::fs::fsync(&*file)
        };
        answer!(reply, synced.map_err(errno), |_v| reply.ok());
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        answer!(reply, self.entries(ino), |entries| reply.opened(
            FileHandle(self.nodes.open_dir(entries)),
            FopenFlags::empty()
        ));
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let Some(entries) = self.nodes.dir(fh.0) else {
            return reply.error(Errno::EBADF);
        };
        for (i, e) in entries.iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(e.ino), (i + 1) as u64, e.kind, &e.name) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.nodes.close_dir(fh.0);
        reply.ok();
    }

    fn statfs(&self, _req: &Request, ino: INodeNo, reply: ReplyStatfs) {
        let st = self
            .node(ino)
            .and_then(|fd| rustix::fs::fstatvfs(&*fd).map_err(errno));
        answer!(reply, st, |s| reply.statfs(
            s.f_blocks,
            s.f_bfree,
            s.f_bavail,
            s.f_files,
            s.f_ffree,
            s.f_bsize as u32,
            s.f_namemax as u32,
            s.f_frsize as u32
        ));
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let created = (|| {
            let owner = self.new_owner(req, parent)?;
            let dir = self.node(parent)?;
            let mode = Mode::from_raw_mode(mode & 0o7777);
            let open = passed_on(flags);
            // Made here, or (another node was quicker) already there: only a file this call
            // made is handed over.
            let file =
                match rustix::fs::openat(&*dir, name, open | OFlags::CREATE | OFlags::EXCL, mode) {
                    Ok(file) => {
                        if let Err(e) = self.hand_over(&dir, name, owner) {
                            let _ = rustix::fs::unlinkat(&*dir, name, AtFlags::empty());
                            return Err(e);
                        }
                        file
                    }
                    Err(rustix::io::Errno::EXIST) if flags & libc::O_EXCL == 0 => {
                        rustix::fs::openat(&*dir, name, open, mode).map_err(errno)?
                    }
                    Err(e) => return Err(errno(e)),
                };
            let attr = self.lookup_entry(parent, name)?;
            Ok((attr, self.nodes.open_file(file)))
        })();
        answer!(reply, created, |made| reply.created(
            &TTL,
            &made.0,
            Generation(0),
            FileHandle(made.1),
            FopenFlags::empty()
        ));
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let Some(file) = self.nodes.file(fh.0) else {
            return reply.error(Errno::EBADF);
        };
        let done = rustix::fs::fallocate(
            &*file,
            rustix::fs::FallocateFlags::from_bits_retain(mode as u32),
            offset,
            length,
        );
        answer!(reply, done.map_err(errno), |_v| reply.ok());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_quota_is_the_full_disk_a_sandbox_knows() {
        assert_eq!(errno(rustix::io::Errno::DQUOT).code(), libc::ENOSPC);
        assert_eq!(errno(rustix::io::Errno::NOENT).code(), libc::ENOENT);
    }

    #[test]
    fn opens_pass_on_access_and_append_but_not_creation() {
        let asked =
            libc::O_WRONLY | libc::O_APPEND | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW;
        let passed = passed_on(asked);
        assert!(passed.contains(OFlags::WRONLY | OFlags::APPEND | OFlags::CLOEXEC));
        assert!(!passed.intersects(OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW));
    }
}
