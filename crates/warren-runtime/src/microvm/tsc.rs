//! The host's TSC rate, which an emulated guest must be told rather than left to measure.
//!
//! Under TCG a guest's TSC is the host's own counter (QEMU reads it with `rdtsc`), but the guest
//! kernel does not know its rate. It calibrates it against the emulated PIT in busy-wait windows
//! of a few milliseconds; when the host is busy (other guests booting) the vCPU thread is
//! descheduled inside a window, every attempt fails, and the kernel falls back to counting
//! jiffies in `calibrate_delay`. On a `microvm` machine (hardware-reduced ACPI, no PIT tick)
//! jiffies only start once the local APIC timer is set up, later in boot, so that guest spins
//! forever. `tsc_early_khz=` on the guest's command line skips the calibration.
//!
//! Measured here because Linux exposes the host's TSC rate nowhere stable (`cpu MHz` in
//! /proc/cpuinfo is the current clock where frequency scaling is on).

use std::time::Duration;

use nix::time::{clock_gettime, ClockId};

/// How long the counter is watched: long enough that a few hundred cycles of jitter at either
/// end stay under a part per million.
const WINDOW: Duration = Duration::from_millis(30);

/// The CPU's feature flags, from the first `flags` line of /proc/cpuinfo.
pub struct CpuFlags(String);

impl CpuFlags {
    pub fn read() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let flags = cpuinfo.lines().find(|l| l.starts_with("flags"));
        Self(flags.unwrap_or_default().to_owned())
    }

    pub fn has(&self, flag: &str) -> bool {
        self.0.split_whitespace().any(|f| f == flag)
    }

    /// `constant_tsc` (fixed rate) and `nonstop_tsc` (keeps counting in deep idle states).
    fn invariant_tsc(&self) -> bool {
        self.has("constant_tsc") && self.has("nonstop_tsc")
    }
}

/// The host's TSC rate in kHz, or `None` where the TSC is not invariant (its rate then changes
/// with the CPU's clock, and a guest had better calibrate it itself) or cannot be read.
///
/// Measured on a thread pinned to one CPU: on a virtual host each vCPU's counter may carry its
/// own offset, and a thread moved between the two readings turned that offset into a rate
/// several per cent off (a guest clock running 9 % fast in CI). The median of three windows
/// discards one disturbed reading.
pub fn host_khz(flags: &CpuFlags) -> Option<u32> {
    if !flags.invariant_tsc() {
        return None;
    }
    std::thread::spawn(|| {
        pin_to_current_cpu();
        let mut rates: Vec<u32> = (0..3).filter_map(|_| one_window_khz()).collect();
        rates.sort_unstable();
        (rates.len() == 3).then(|| rates[1])
    })
    .join()
    .ok()
    .flatten()
}

/// Keeps the calling thread on the CPU it runs on now (best effort: unpinned, the median still
/// guards against one migration).
fn pin_to_current_cpu() {
    // SAFETY: sched_getcpu only reads which CPU runs the calling thread.
    let Ok(cpu) = usize::try_from(unsafe { libc::sched_getcpu() }) else {
        return;
    };
    let mut set = nix::sched::CpuSet::new();
    if set.set(cpu).is_ok() {
        let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set);
    }
}

fn one_window_khz() -> Option<u32> {
    let (tsc0, ns0) = paired_reading()?;
    std::thread::sleep(WINDOW);
    let (tsc1, ns1) = paired_reading()?;
    let khz = u128::from(tsc1.checked_sub(tsc0)?) * 1_000_000 / u128::from(ns1.checked_sub(ns0)?);
    // A rate outside 100 MHz..20 GHz is a broken reading, not a CPU.
    u32::try_from(khz)
        .ok()
        .filter(|k| (100_000..20_000_000).contains(k))
}

/// A TSC value and the raw monotonic clock (never slewed by NTP) read at the same moment: of a
/// few tries, the one whose clock read was bracketed most tightly by two counter reads, so a
/// preemption between the two reads cannot skew it.
fn paired_reading() -> Option<(u64, u64)> {
    (0..5)
        .filter_map(|_| {
            let before = rdtsc();
            let now = clock_gettime(ClockId::CLOCK_MONOTONIC_RAW).ok()?;
            let after = rdtsc();
            let ns = u64::try_from(now.tv_sec()).ok()? * 1_000_000_000
                + u64::try_from(now.tv_nsec()).ok()?;
            Some((after.wrapping_sub(before), before / 2 + after / 2, ns))
        })
        .min_by_key(|&(spread, _, _)| spread)
        .map(|(_, tsc, ns)| (tsc, ns))
}

#[cfg(target_arch = "x86_64")]
fn rdtsc() -> u64 {
    // SAFETY: `rdtsc` reads a counter; it touches no memory and every x86_64 CPU has it.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// No TSC: `host_khz` then finds no plausible rate and returns `None`.
#[cfg(not(target_arch = "x86_64"))]
fn rdtsc() -> u64 {
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_invariant_tsc_is_measured_consistently() {
        let flags = CpuFlags::read();
        let Some(first) = host_khz(&flags) else {
            assert!(
                !flags.invariant_tsc(),
                "the TSC is invariant but was not measured"
            );
            return;
        };
        let second = host_khz(&flags).unwrap_or(0);
        let drift = (i64::from(first) - i64::from(second)).abs();
        // 0.05 %: a guest clock off by that much drifts 43 s a day; good readings agree to ppm.
        assert!(
            drift * 2000 < i64::from(first),
            "{first} kHz then {second} kHz"
        );
    }
}
