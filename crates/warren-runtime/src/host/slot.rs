//! Which share of the host one Warren process runs sandboxes in. A machine normally runs one
//! node (slot 0, whose names are the plain ones: `warren-<id>` namespaces, `wv<n>` links, the
//! `warren` nftables table and cgroups). Several nodes on one machine (a test cluster on
//! 127.0.0.2–4, or a second data dir) each take another slot: their own lock, name prefixes,
//! network /16 and share of the id ranges, so none mistakes another's sandboxes for leftovers.
//!
//! A slot stays with the data dir that took it while that data dir may still have sandboxes
//! running (a killed server's, waiting for live restore): its lock file names the owner, and
//! another data dir takes it only once that owner let it go or no longer exists.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use super::HostError;

/// Slots per machine.
pub const SLOTS: u8 = 8;
const LOCK_DIR: &str = "/run";
/// Where a data dir remembers its slot, so that a restart finds its sandboxes' names again.
const SLOT_FILE: &str = "host-slot";

/// A slot held for this process's lifetime.
pub struct HostSlot {
    index: u8,
    lock: Flock<File>,
}

fn lock_path(index: u8) -> PathBuf {
    // Slot 0 keeps the lock path of servers from before slots existed.
    if index == 0 {
        Path::new(LOCK_DIR).join("warren-namespaces.lock")
    } else {
        Path::new(LOCK_DIR).join(format!("warren-slot-{index}.lock"))
    }
}

impl HostSlot {
    /// Takes the slot `data_dir` had before, or else the first one free of any owner.
    pub fn acquire(data_dir: &Path) -> Result<Self, HostError> {
        let recorded = std::fs::read_to_string(data_dir.join(SLOT_FILE))
            .ok()
            .and_then(|s| s.trim().parse::<u8>().ok())
            .filter(|i| *i < SLOTS);
        let owner = data_dir
            .canonicalize()
            .unwrap_or_else(|_| data_dir.to_path_buf());
        let order: Vec<u8> = recorded.into_iter().chain(0..SLOTS).collect();
        let mut busy = Vec::new();
        for index in order {
            match Self::try_take(index, &owner, Some(index) == recorded)? {
                Some(slot) => {
                    let _ = std::fs::write(data_dir.join(SLOT_FILE), format!("{index}\n"));
                    return Ok(slot);
                }
                None => busy.push(lock_path(index).display().to_string()),
            }
        }
        Err(HostError::Busy(busy.join(", ")))
    }

    /// The slot if its lock is free and it has no other living owner (`ours`: it is the one the
    /// data dir recorded, so its owner is us whatever the file says).
    fn try_take(index: u8, owner: &Path, ours: bool) -> Result<Option<Self>, HostError> {
        let path = lock_path(index);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|source| HostError::Io {
                what: format!("open {}", path.display()),
                source,
            })?;
        let Ok(mut lock) = Flock::lock(file, FlockArg::LockExclusiveNonblock) else {
            return Ok(None);
        };
        let mut named = String::new();
        let _ = lock.read_to_string(&mut named);
        let named = named.trim();
        let free =
            ours || named.is_empty() || Path::new(named) == owner || !Path::new(named).exists();
        if !free {
            return Ok(None);
        }
        let _ = lock.set_len(0);
        let _ = lock.rewind();
        let _ = lock.write_all(owner.display().to_string().as_bytes());
        Ok(Some(Self { index, lock }))
    }

    /// Lets another data dir take the slot once this process ends (no sandbox of ours is left).
    pub fn disown(&mut self) {
        let _ = self.lock.set_len(0);
    }

    pub fn index(&self) -> u8 {
        self.index
    }

    /// Prefix of sandbox network namespaces (`/run/netns/<prefix><id>`).
    pub fn netns_prefix(&self) -> String {
        self.prefixed("warren", "-")
    }

    /// Prefix of the host ends of sandbox veth pairs (`<prefix><n>`, at most 15 bytes in all).
    pub fn veth_prefix(&self) -> String {
        match self.index {
            0 => "wv".into(),
            i => format!("w{i}v"),
        }
    }

    /// The nftables table and the cgroup directory all sandboxes of the slot live under.
    pub fn group_name(&self) -> String {
        self.prefixed("warren", "")
    }

    fn prefixed(&self, name: &str, sep: &str) -> String {
        match self.index {
            0 => format!("{name}{sep}"),
            i => format!("{name}{i}{sep}"),
        }
    }

    /// The /16 sandbox links are numbered from: `base` moved up by the slot's index in its
    /// second octet (10.213.0.0 for slot 0, 10.214.0.0 for slot 1, ...).
    pub fn network_base(&self, base: std::net::Ipv4Addr) -> std::net::Ipv4Addr {
        let [a, b, c, d] = base.octets();
        std::net::Ipv4Addr::new(a, b.wrapping_add(self.index), c, d)
    }
}
