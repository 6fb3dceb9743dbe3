//! Host user and group ids per sandbox. Each sandbox gets a range of 65,536 ids of its own, so the
//! limits the kernel keeps per user (inotify instances and watches, processes, pending signals,
//! POSIX message queue bytes) are each sandbox's own, and a process that escaped its user
//! namespace would hold no other sandbox's files or processes. Template layers stay owned by one
//! canonical range (`CANONICAL_BASE`) and are shown to each sandbox through idmapped mounts.

use std::collections::BTreeSet;
use std::sync::Mutex;

/// Ids per sandbox: root to 65535 inside.
pub const RANGE_SIZE: u32 = 65_536;
/// The range template layers are owned by on disk (and build sandboxes run in, so that what they
/// write becomes a layer as it is).
pub const CANONICAL_BASE: u32 = 100_000;
/// First id of the per-sandbox ranges: above the canonical range and the VMM uids of earlier
/// versions (300,000 + 65,536).
pub const FIRST_RANGE: u32 = 1 << 21;
/// How many ranges exist: up to 2^21 + 2^14 × 2^16 ≈ 1.07 billion, far below the 32-bit limit;
/// eight times the density target of 2,000 sandboxes per machine, so each of the eight host slots
/// (nodes sharing a machine) has 2,048.
pub const RANGES: u32 = 1 << 14;

/// Hands out ranges without overlap; a range is free again once its sandbox is gone. Several
/// nodes on one machine (host slots) each hand out their own share of the ranges.
#[derive(Debug)]
pub struct IdAllocator {
    used: Mutex<BTreeSet<u32>>,
    /// The share: range indexes `first..first + count`.
    first: u32,
    count: u32,
}

impl IdAllocator {
    /// The share of host slot `slot` (of `slot::SLOTS`): 2,048 ranges each.
    pub fn for_slot(slot: u8) -> Self {
        let count = RANGES / u32::from(super::slot::SLOTS);
        Self {
            used: Mutex::default(),
            first: u32::from(slot) * count,
            count,
        }
    }

    fn used(&self) -> std::sync::MutexGuard<'_, BTreeSet<u32>> {
        self.used.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The first id of a free range, or None when all are taken.
    pub fn take(&self) -> Option<u32> {
        let mut used = self.used();
        let index = (self.first..self.first + self.count).find(|i| !used.contains(i))?;
        used.insert(index);
        Some(FIRST_RANGE + index * RANGE_SIZE)
    }

    /// Takes the range starting at `base` again (a sandbox an earlier server started). False if
    /// `base` is not the start of a range of this allocator, or is taken.
    pub fn claim(&self, base: u32) -> bool {
        match index_of(base) {
            Some(i) => self.used().insert(i),
            None => false,
        }
    }

    pub fn release(&self, base: u32) {
        if let Some(i) = index_of(base) {
            self.used().remove(&i);
        }
    }
}

fn index_of(base: u32) -> Option<u32> {
    let offset = base.checked_sub(FIRST_RANGE)?;
    (offset % RANGE_SIZE == 0 && offset / RANGE_SIZE < RANGES).then_some(offset / RANGE_SIZE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_never_overlap_and_come_back() {
        let ids = IdAllocator::for_slot(0);
        let a = ids.take().expect("a range");
        let b = ids.take().expect("another range");
        assert_eq!(b - a, RANGE_SIZE);
        assert!(a >= FIRST_RANGE);
        assert!(!ids.claim(a), "a taken range cannot be claimed");
        ids.release(a);
        assert_eq!(ids.take(), Some(a), "a released range is given out again");
        assert!(ids.claim(b + RANGE_SIZE), "an adopted sandbox's range");
        assert_ne!(ids.take(), Some(b + RANGE_SIZE));
        assert!(!ids.claim(a + 1), "not the start of a range");
        assert!(!ids.claim(CANONICAL_BASE));
        let last = FIRST_RANGE as u64 + RANGES as u64 * RANGE_SIZE as u64;
        assert!(last < u32::MAX as u64, "every id fits a 32-bit uid");
    }
}
