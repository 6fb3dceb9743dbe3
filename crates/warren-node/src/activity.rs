//! When each sandbox was last in use, so the control plane can pause the idle ones
//! (`warren serve --idle-pause`). In use means: a request through the proxy is open (a WebSocket
//! counts until it closes), one ended within the idle time, or the sandbox's processes used more
//! than `BUSY_CPU_SHARE` of a core since the last look. The node reports facts; the control plane
//! decides what to pause.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// CPU use above this share of one core between two looks counts as activity: a background job
/// computing is not idle, an interpreter waiting for its next cell (well under 0.1 %) is.
pub const BUSY_CPU_SHARE: f64 = 0.01;

#[derive(Debug, Default)]
pub struct Activity {
    /// Milliseconds since `epoch()` at the last sign of use.
    last_ms: AtomicU64,
    /// Requests (and WebSockets) open now.
    open: AtomicU32,
    /// The CPU time and the moment of the last look (`saw_cpu`).
    cpu_ns: AtomicU64,
    cpu_seen_ms: AtomicU64,
}

/// Keeps a sandbox in use while it lives (a request or a WebSocket open through the proxy).
#[derive(Debug)]
pub struct InUse(Arc<Activity>);

impl Drop for InUse {
    fn drop(&mut self) {
        self.0.touch();
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_ms() -> u64 {
    epoch().elapsed().as_millis() as u64
}

impl Activity {
    /// A new sandbox counts as just used.
    pub fn new() -> Arc<Self> {
        let a = Self::default();
        a.touch();
        Arc::new(a)
    }

    pub fn touch(&self) {
        self.last_ms.fetch_max(now_ms(), Ordering::AcqRel);
    }

    pub fn in_use(self: &Arc<Self>) -> InUse {
        self.open.fetch_add(1, Ordering::AcqRel);
        self.touch();
        InUse(self.clone())
    }

    /// Takes a reading of the sandbox's CPU time: use above `BUSY_CPU_SHARE` since the last
    /// reading counts as activity.
    pub fn saw_cpu(&self, cpu_ns: u64) {
        self.saw_cpu_at(cpu_ns, now_ms());
    }

    fn saw_cpu_at(&self, cpu_ns: u64, now: u64) {
        let before_ns = self.cpu_ns.swap(cpu_ns, Ordering::AcqRel);
        let before_ms = self.cpu_seen_ms.swap(now.max(1), Ordering::AcqRel);
        if before_ms == 0 {
            return; // the first reading: nothing to compare with
        }
        let wall_ns = now.saturating_sub(before_ms).max(1) as f64 * 1e6;
        if cpu_ns.saturating_sub(before_ns) as f64 > wall_ns * BUSY_CPU_SHARE {
            self.last_ms.fetch_max(now, Ordering::AcqRel);
        }
    }

    /// How long it has been unused (zero while a request is open).
    pub fn idle_for(&self) -> Duration {
        self.idle_at(now_ms())
    }

    fn idle_at(&self, now: u64) -> Duration {
        if self.open.load(Ordering::Acquire) > 0 {
            return Duration::ZERO;
        }
        Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Acquire)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LATER: u64 = 1 << 40; // a moment far after any real reading

    #[test]
    fn an_open_request_keeps_a_sandbox_in_use_until_it_closes() {
        let a = Activity::new();
        let open = a.in_use();
        assert_eq!(a.idle_at(LATER), Duration::ZERO);
        drop(open);
        assert!(a.idle_at(LATER) > Duration::from_secs(3600));
        assert!(a.idle_for() < Duration::from_secs(1), "closing is a use");
    }

    #[test]
    fn cpu_use_above_the_share_counts_as_activity_and_below_it_does_not() {
        let a = Activity::default();
        let t0 = 1_000_000;
        a.saw_cpu_at(0, t0);
        // 1 ms of CPU in 10 s (0.01 %): idle since the start.
        a.saw_cpu_at(1_000_000, t0 + 10_000);
        assert_eq!(a.idle_at(t0 + 10_000), Duration::from_millis(t0 + 10_000));
        // Half a second in the next 10 s (5 %): in use at that reading.
        a.saw_cpu_at(501_000_000, t0 + 20_000);
        assert_eq!(a.idle_at(t0 + 25_000), Duration::from_secs(5));
    }
}
