//! Warm pools sized by demand, the default when `warren serve` is given no `--pool`: a built-in
//! template gets warm sandboxes while it is being created, as many as were created in the last
//! minute (so a burst is met by a pool its size, up to a ceiling set by the machine's memory),
//! at least one for five minutes after its last create, none after that. The default template
//! starts with one, so a new server's first create is already warm.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use warren_core::Tier;

/// Creates counted for a pool's size.
const WINDOW: Duration = Duration::from_secs(60);
/// How long a template keeps a warm sandbox after its last create.
const IDLE_AFTER: Duration = Duration::from_secs(300);
/// Memory per warm sandbox the ceiling allows for (an idle one holds ~10 MB; the margin is for
/// what the sandboxes that take them will use).
const MB_PER_WARM: u64 = 2048;
const MOST: usize = 16;

#[derive(Default)]
pub(crate) struct Demand {
    /// Recent creates of each built-in template on each tier, oldest first.
    recent: Mutex<HashMap<(String, Tier), VecDeque<Instant>>>,
}

impl Demand {
    fn recent(&self) -> std::sync::MutexGuard<'_, HashMap<(String, Tier), VecDeque<Instant>>> {
        self.recent.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a create of `template` (a built-in template's name) on `tier`.
    pub(crate) fn note(&self, template: &str, tier: Tier) {
        self.note_at(template, tier, Instant::now());
    }

    fn note_at(&self, template: &str, tier: Tier, at: Instant) {
        let mut recent = self.recent();
        let times = recent.entry((template.to_owned(), tier)).or_default();
        times.push_back(at);
        // Only the last minute's count matters, and the newest time for idleness.
        while times.len() > MOST * 64 {
            times.pop_front();
        }
    }

    /// The pools demand asks for now, as (template name, tier, size), each at most `ceiling`;
    /// templates idle for long are forgotten.
    pub(crate) fn targets(&self, ceiling: usize) -> Vec<(String, Tier, usize)> {
        self.targets_at(ceiling, Instant::now())
    }

    fn targets_at(&self, ceiling: usize, now: Instant) -> Vec<(String, Tier, usize)> {
        let mut recent = self.recent();
        recent.retain(|_, times| {
            times
                .back()
                .is_some_and(|last| now.duration_since(*last) < IDLE_AFTER)
        });
        let mut targets: Vec<(String, Tier, usize)> = recent
            .iter()
            .map(|((template, tier), times)| {
                let last_minute = times
                    .iter()
                    .filter(|t| now.duration_since(**t) < WINDOW)
                    .count();
                (
                    template.clone(),
                    *tier,
                    last_minute.clamp(1, ceiling.max(1)),
                )
            })
            .collect();
        targets.sort_by(|a, b| a.0.cmp(&b.0));
        targets
    }
}

/// How many warm sandboxes one template may have by demand on this machine.
pub(crate) fn ceiling() -> usize {
    let total_mb = warren_runtime::host::memory().map_or(4096, |(total, _)| total >> 20);
    usize::try_from(total_mb / MB_PER_WARM)
        .unwrap_or(MOST)
        .clamp(1, MOST)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pool_grows_with_the_last_minutes_creates_and_ends_when_idle() {
        let d = Demand::default();
        let t0 = Instant::now();
        assert!(d.targets_at(8, t0).is_empty(), "no creates, no pool");
        d.note_at("code-interpreter", Tier::Namespaces, t0);
        let size = |at| d.targets_at(8, at).first().map_or(0, |t| t.2);
        assert_eq!(size(t0), 1);
        for _ in 0..20 {
            d.note_at("code-interpreter", Tier::Namespaces, t0);
        }
        assert_eq!(size(t0), 8, "a burst fills the pool to its ceiling");
        assert_eq!(
            size(t0 + WINDOW + Duration::from_secs(1)),
            1,
            "one while recently used"
        );
        assert_eq!(
            size(t0 + IDLE_AFTER + Duration::from_secs(1)),
            0,
            "none once idle"
        );
        assert!(d.targets_at(8, t0 + IDLE_AFTER).is_empty(), "forgotten");
    }

    #[test]
    fn templates_and_tiers_have_pools_of_their_own() {
        let d = Demand::default();
        let t0 = Instant::now();
        d.note_at("base", Tier::Namespaces, t0);
        d.note_at("base", Tier::Gvisor, t0);
        d.note_at("base", Tier::Gvisor, t0);
        let targets = d.targets_at(8, t0);
        let of = |tier| targets.iter().find(|t| t.1 == tier).map(|t| t.2);
        assert_eq!((of(Tier::Namespaces), of(Tier::Gvisor)), (Some(1), Some(2)));
    }
}
