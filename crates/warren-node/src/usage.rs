//! A sandbox's usage as its node measures it, from outside the sandbox: memory, processes and
//! disk are read as they are; CPU is a rate, so it takes two readings of the CPU time used.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use std::time::Instant;

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
        let (usage, reading) = match self.rate_at(id, now, first.cpu_ns) {
            Some(reading) => (first, reading),
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

    /// The CPU rate at `now` from the last reading: that reading's own when asked again within
    /// a moment, else measured since it. None without a recent reading (a second one is needed).
    fn rate_at(&self, id: &SandboxId, now: Instant, cpu_ns: u64) -> Option<Reading> {
        let last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let previous = last.get(id).copied().filter(|r| now - r.at < STALE)?;
        Some(if now - previous.at < MIN_WINDOW {
            previous
        } else {
            Reading::after(previous, now, cpu_ns)
        })
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

    /// A first question needs two readings; one soon after reuses the rate; one later is
    /// measured over the time since the last reading; an old reading is not used.
    #[test]
    fn cpu_is_a_rate_over_the_time_between_readings() {
        let meter = UsageMeter::default();
        let id = SandboxId::generate();
        let t0 = Instant::now();
        assert!(meter.rate_at(&id, t0, 0).is_none(), "no reading yet");
        let start = Reading {
            at: t0,
            cpu_ns: 0,
            pct: 0.0,
        };
        // One CPU busy: the counter advanced as fast as the clock.
        let first = Reading::after(start, t0 + PROBE, PROBE.as_nanos() as u64);
        assert!((first.pct - 100.0).abs() < 0.01, "{}", first.pct);
        meter.remember(&id, first);
        let soon = meter
            .rate_at(&id, t0 + PROBE + Duration::from_millis(10), u64::MAX)
            .unwrap_or_else(|| panic!("a recent reading"));
        assert_eq!(soon.pct, first.pct, "asked within a moment");
        let later = meter
            .rate_at(&id, t0 + PROBE + Duration::from_secs(2), first.cpu_ns)
            .unwrap_or_else(|| panic!("a recent reading"));
        assert_eq!(later.pct, 0.0, "nothing ran in two seconds");
        assert!(
            meter.rate_at(&id, t0 + STALE + PROBE, 0).is_none(),
            "a reading a minute old is not used"
        );
    }

    #[tokio::test]
    async fn a_first_question_takes_two_readings_and_a_missing_sandbox_none() {
        let meter = UsageMeter::default();
        let reads = std::sync::atomic::AtomicU32::new(0);
        let measured = meter
            .measure(&SandboxId::generate(), || {
                reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                Some(usage(0))
            })
            .await
            .unwrap_or_else(|| panic!("measured"));
        assert_eq!(reads.load(std::sync::atomic::Ordering::SeqCst), 2);
        assert_eq!(measured.cpu_pct_of_one, 0.0);
        assert_eq!(measured.disk_bytes, Some(4096));
        assert!(meter
            .measure(&SandboxId::generate(), || None)
            .await
            .is_none());
    }
}
