//! The inodes the kernel knows, each held open (`O_PATH`) so that it can be reached again
//! without a path, and open files and directories by handle.
//!
//! A node's FUSE number is the source's inode number, so `stat` shows the same numbers as the
//! source, with the one exception FUSE forces: its root is number 1. The source root's number
//! and 1 trade places (ext4's inode 1 is never a file; JuiceFS's root is 1 already).

use std::collections::HashMap;
use std::ffi::OsString;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Mutex, MutexGuard};

pub const ROOT: u64 = 1;

struct Node {
    fd: Arc<OwnedFd>,
    lookups: u64,
}

/// One entry of a directory as it was when the directory was opened.
pub struct Entry {
    pub name: OsString,
    pub ino: u64,
    pub kind: fuser::FileType,
}

pub struct Nodes {
    root_ino: u64,
    nodes: Mutex<HashMap<u64, Node>>,
    files: Mutex<Handles<Arc<OwnedFd>>>,
    dirs: Mutex<Handles<Arc<Vec<Entry>>>>,
}

struct Handles<T> {
    next: u64,
    open: HashMap<u64, T>,
}

impl<T: Clone> Handles<T> {
    fn new() -> Self {
        Self {
            next: 1,
            open: HashMap::new(),
        }
    }

    fn add(&mut self, item: T) -> u64 {
        let fh = self.next;
        self.next += 1;
        self.open.insert(fh, item);
        fh
    }
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic in one request must not stop every other: the tables stay usable.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Nodes {
    pub fn new(root: OwnedFd, root_ino: u64) -> Self {
        let mut nodes = HashMap::new();
        nodes.insert(
            ROOT,
            Node {
                fd: Arc::new(root),
                lookups: 1,
            },
        );
        Self {
            root_ino,
            nodes: Mutex::new(nodes),
            files: Mutex::new(Handles::new()),
            dirs: Mutex::new(Handles::new()),
        }
    }

    /// The FUSE number of the source's inode `ino`.
    pub fn number(&self, ino: u64) -> u64 {
        if ino == self.root_ino {
            ROOT
        } else if ino == ROOT {
            self.root_ino
        } else {
            ino
        }
    }

    /// The descriptor of a node the kernel looked up.
    pub fn fd(&self, number: u64) -> Option<Arc<OwnedFd>> {
        locked(&self.nodes).get(&number).map(|n| n.fd.clone())
    }

    /// Counts one more lookup of `number`, keeping `fd` if the node is new.
    pub fn remember(&self, number: u64, fd: OwnedFd) {
        let mut nodes = locked(&self.nodes);
        match nodes.get_mut(&number) {
            Some(node) => node.lookups += 1,
            None => {
                nodes.insert(
                    number,
                    Node {
                        fd: Arc::new(fd),
                        lookups: 1,
                    },
                );
            }
        }
    }

    /// The kernel dropped `count` lookups; the node goes with the last.
    pub fn forget(&self, number: u64, count: u64) {
        if number == ROOT {
            return;
        }
        let mut nodes = locked(&self.nodes);
        if let Some(node) = nodes.get_mut(&number) {
            node.lookups = node.lookups.saturating_sub(count);
            if node.lookups == 0 {
                nodes.remove(&number);
            }
        }
    }

    pub fn open_file(&self, fd: OwnedFd) -> u64 {
        locked(&self.files).add(Arc::new(fd))
    }

    pub fn file(&self, fh: u64) -> Option<Arc<OwnedFd>> {
        locked(&self.files).open.get(&fh).cloned()
    }

    pub fn close_file(&self, fh: u64) {
        locked(&self.files).open.remove(&fh);
    }

    pub fn open_dir(&self, entries: Vec<Entry>) -> u64 {
        locked(&self.dirs).add(Arc::new(entries))
    }

    pub fn dir(&self, fh: u64) -> Option<Arc<Vec<Entry>>> {
        locked(&self.dirs).open.get(&fh).cloned()
    }

    pub fn close_dir(&self, fh: u64) {
        locked(&self.dirs).open.remove(&fh);
    }
}

/// `/proc/self/fd/N` of a descriptor: how an `O_PATH` descriptor is opened for reading or
/// writing, or has its mode and times changed.
pub fn proc_path(fd: BorrowedFd<'_>) -> String {
    use std::os::fd::AsRawFd;
    format!("/proc/self/fd/{}", fd.as_fd().as_raw_fd())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_source_root_and_fuse_root_trade_numbers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fd = rustix::fs::open(
            dir.path(),
            rustix::fs::OFlags::PATH,
            rustix::fs::Mode::empty(),
        )
        .expect("open");
        let nodes = super::Nodes::new(fd, 2);
        assert_eq!(nodes.number(2), super::ROOT);
        assert_eq!(nodes.number(super::ROOT), 2);
        assert_eq!(nodes.number(77), 77);
        assert!(nodes.fd(super::ROOT).is_some());
        nodes.forget(super::ROOT, 1);
        assert!(
            nodes.fd(super::ROOT).is_some(),
            "the root is never forgotten"
        );
    }
}
