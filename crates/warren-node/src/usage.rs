//! A sandbox's usage as its node measures it, from outside the sandbox: memory, processes and
//! disk are read as they are; CPU is a rate, so it takes two readings of the CPU time used.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use warren_core::SandboxId;
use warren_runtime::SandboxUsage;
use warren_wire::cluster::MeasuredUsage;

/// A window shorter than this is mostly scheduling noise; a reading older than `STALE` does
/// not say what the sandbox does now.
const MIN_WINDOW: Duration = Duration::from_millis(150);
const STALE: Duration = Duration::from_secs(60);
/// Without a recent reading, the second one is taken this long after the first.
const PROBE: Duration = Duration::from_millis(250);

#[derive(Clone, Copy)]
struct Reading {
    at: Instant,
    cpu_ns: u64,
    /// The rate measured when this reading was taken.
    pct: f64,
}

/// The last reading of each sandbox asked about, so that polling costs one read, not a wait.
#[derive(Default)]
pub struct UsageMeter {
    last: Mutex<HashMap<SandboxId, Reading>>,
}

impl UsageMeter {
    /// Measures the sandbox with `read` (None: it is not here).
    pub async fn measure(
        &self,
        id: &SandboxId,
        read: impl Fn() -> Option<SandboxUsage>,
    ) -> Option<MeasuredUsage> {
        let first = read()?;
        let now = Instant::now();
        let previous = self.previous(id, now);
        let (usage, reading) = match previous {
            // Asked again within a moment: the rate measured a moment ago still stands.
            Some(p) if now - p.at < MIN_WINDOW => (first, p),
            Some(p) => (first, Reading::after(p, now, first.cpu_ns)),
            None => {
                let start = Reading {
                    at: now,
                    cpu_ns: first.cpu_ns,
                    pct: 0.0,
                };
                tokio::time::sleep(PROBE).await;
                let second = read()?;
                (second, Reading::after(start, Instant::now(), second.cpu_ns))
            }
        };
        self.remember(id, reading);
        Some(MeasuredUsage {
            cpu_pct_of_one: (reading.pct * 10.0).round() / 10.0,
            cpu_time_ms: usage.cpu_ns / 1_000_000,
            memory_bytes: usage.memory_bytes,
            disk_bytes: usage.disk_bytes,
            processes: usage.processes,
        })
    }

    fn previous(&self, id: &SandboxId, now: Instant) -> Option<Reading> {
        let last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        last.get(id).copied().filter(|r| now - r.at < STALE)
    }

    fn remember(&self, id: &SandboxId, reading: Reading) {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        last.insert(id.clone(), reading);
        // Sandboxes nobody asks about any more (or that ended) are forgotten.
        last.retain(|_, r| r.at.elapsed() < STALE);
    }
}

impl Reading {
    fn after(earlier: Reading, at: Instant, cpu_ns: u64) -> Reading {
        let wall = (at - earlier.at).as_nanos().max(1) as f64;
        // A counter that went back (a sandbox restored under the same id) reads as idle.
        let used = cpu_ns.saturating_sub(earlier.cpu_ns) as f64;
        Reading {
            at,
            cpu_ns,
            pct: used / wall * 100.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(cpu_ns: u64) -> SandboxUsage {
        SandboxUsage {
            memory_bytes: 1 << 20,
            processes: 2,
            cpu_ns,
            disk_bytes: Some(4096),
        }
    }

    /// A first question waits for two readings; one soon after reuses the rate; one later is
    /// measured over the time since the last reading.
    #[tokio::test(start_paused = true)]
    async fn cpu_is_a_rate_over_the_time_between_readings() {
        let meter = UsageMeter::default();
        let id = SandboxId::generate();
        let busy = std::sync::atomic::AtomicU64::new(0);
        // One CPU busy: the counter advances as fast as the clock.
        let read = || {
            let ns = busy.fetch_add(PROBE.as_nanos() as u64, std::sync::atomic::Ordering::SeqCst);
            Some(usage(ns))
        };
        let first = meter
            .measure(&id, read)
            .await
            .unwrap_or_else(|| panic!("measured"));
        assert!(
            (first.cpu_pct_of_one - 100.0).abs() < 0.5,
            "{}",
            first.cpu_pct_of_one
        );
        assert_eq!(first.disk_bytes, Some(4096));
        let again = meter
            .measure(&id, || Some(usage(u64::MAX)))
            .await
            .unwrap_or_else(|| panic!("measured"));
        assert_eq!(
            again.cpu_pct_of_one, first.cpu_pct_of_one,
            "asked within a moment"
        );
        tokio::time::advance(Duration::from_secs(2)).await;
        let idle = busy.load(std::sync::atomic::Ordering::SeqCst) - PROBE.as_nanos() as u64;
        let later = meter
            .measure(&id, || Some(usage(idle)))
            .await
            .unwrap_or_else(|| panic!("measured"));
        assert_eq!(later.cpu_pct_of_one, 0.0, "nothing ran in two seconds");
        assert!(meter
            .measure(&SandboxId::generate(), || None)
            .await
            .is_none());
    }
}
