//! Rate limits (token buckets per key and per tenant, via governor) and tenant quotas (concurrent
//! sandboxes, total vcpu and memory). Errors use the shapes the SDKs map: 429 with
//! `details.retry_after_seconds` (retried, then `RateLimitError`) and 403 with "limit" in the
//! message and `details.{limit,current,available}` (`ResourceLimitError`).

use governor::clock::{Clock, DefaultClock};
use governor::DefaultKeyedRateLimiter;
use warren_core::Resources;
use warren_node::daemon::request_quota;
use warren_store::TenantUsage;

/// Too many requests of one key or organization.
#[derive(Debug, Clone, thiserror::Error)]
#[error("Rate limit exceeded for this {scope}; retry in {retry_after_seconds} s")]
pub struct RateLimited {
    pub scope: &'static str,
    pub retry_after_seconds: u64,
}

/// A new sandbox would take an organization past one of its quotas.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{resource} limit reached: organization {tenant} uses {current} of {limit} {unit} and this {what} needs {need} (the operator raises it with `warren serve {flag}`)")]
pub struct QuotaExceeded {
    pub resource: &'static str,
    /// What was asked for: a sandbox, a volume.
    pub what: &'static str,
    pub unit: &'static str,
    /// The `warren serve` flag that sets this quota.
    pub flag: &'static str,
    pub tenant: String,
    pub limit: u64,
    pub current: u64,
    pub need: u64,
}

/// Configurable limits. The defaults suit one machine shared by a few teams.
#[derive(Debug, Clone)]
pub struct Limits {
    pub key_requests_per_second: u32,
    pub tenant_requests_per_second: u32,
    pub max_sandboxes_per_tenant: u64,
    pub max_vcpu_per_tenant: u64,
    pub max_memory_mb_per_tenant: u64,
    /// Total size (MB) of an organization's volumes.
    pub max_volume_mb_per_tenant: u64,
    /// The lifetime of a sandbox whose create names none (the Hopx SDKs send none by default);
    /// None: such sandboxes run until deleted.
    pub default_timeout_seconds: Option<i64>,
    /// The longest lifetime a create or a timeout change may ask for.
    pub max_timeout_seconds: i64,
    /// Organizations whose longest lifetime differs from `max_timeout_seconds`
    /// (`--tenant-max-timeout ORG=SECONDS`).
    pub max_timeout_by_tenant: std::collections::HashMap<String, i64>,
    /// Running sandboxes unused this long are paused, and resumed by their next request; None:
    /// never.
    pub idle_pause_seconds: Option<u64>,
}

/// The longest lifetime `tenant`'s sandboxes may have, and the flag that set it.
pub fn max_timeout_of(limits: &Limits, tenant: &str) -> (i64, &'static str) {
    match limits.max_timeout_by_tenant.get(tenant) {
        Some(s) => (*s, "--tenant-max-timeout"),
        None => (limits.max_timeout_seconds, "--max-timeout"),
    }
}

/// Longest timeout a sandbox may have: a year. Larger values are refused rather than clamped, so
/// that a typo (milliseconds for seconds) is noticed; `--max-timeout` may lower it.
pub const MAX_TIMEOUT_SECONDS: i64 = 365 * 86_400;

/// A sandbox's lifetime when its create names none: abandoned sandboxes (an agent that crashed,
/// a notebook closed) end within the hour instead of piling up.
pub const DEFAULT_TIMEOUT_SECONDS: i64 = 3600;

/// Each volume's size when its create names none (E2B's never does): images are sparse, so a
/// volume costs the host only what is written to it.
pub const DEFAULT_VOLUME_MB: u64 = 10 * 1024;

/// Whether one more volume of `need` MB keeps the tenant within its volume quota.
pub fn check_volume_quota(
    limits: &Limits,
    tenant: &str,
    current_mb: u64,
    need_mb: u64,
) -> Result<(), QuotaExceeded> {
    if current_mb.saturating_add(need_mb) <= limits.max_volume_mb_per_tenant {
        return Ok(());
    }
    Err(QuotaExceeded {
        resource: "volume",
        what: "volume",
        unit: "MB of volumes",
        flag: "--max-volume-mb",
        tenant: tenant.to_owned(),
        limit: limits.max_volume_mb_per_tenant,
        current: current_mb,
        need: need_mb,
    })
}

/// How far the memory limits of an organization's sandboxes may add up beyond the host's memory.
/// A limit is a ceiling, not a reservation: an idle `code-interpreter` sandbox (2 GB limit) uses
/// about 10 MB, so a machine holds hundreds. The machine itself refuses new sandboxes when its
/// memory actually runs short (`warren_node::Node::has_room`), as hosted platforms do.
pub const MEMORY_OVERCOMMIT: u64 = 64;

impl Limits {
    /// Quotas that let one organization use what this machine can hold: 1000 sandboxes, no vcpu
    /// cap (cgroups share the cores fairly), memory limits up to `MEMORY_OVERCOMMIT` times the
    /// host's memory. Several organizations sharing a machine set lower ones.
    pub fn for_this_host() -> Self {
        let memory_mb = warren_runtime::host::memory().map_or(8192, |(total, _)| total >> 20);
        Self {
            key_requests_per_second: 100,
            tenant_requests_per_second: 300,
            max_sandboxes_per_tenant: 1000,
            max_vcpu_per_tenant: u64::MAX,
            max_memory_mb_per_tenant: memory_mb * MEMORY_OVERCOMMIT,
            max_volume_mb_per_tenant: 100 * 1024,
            default_timeout_seconds: Some(DEFAULT_TIMEOUT_SECONDS),
            max_timeout_seconds: MAX_TIMEOUT_SECONDS,
            max_timeout_by_tenant: Default::default(),
            idle_pause_seconds: None,
        }
    }
}

pub struct RateLimiter {
    per_key: DefaultKeyedRateLimiter<String>,
    per_tenant: DefaultKeyedRateLimiter<String>,
}

impl RateLimiter {
    pub fn new(limits: &Limits) -> Self {
        Self {
            per_key: governor::RateLimiter::keyed(request_quota(limits.key_requests_per_second)),
            per_tenant: governor::RateLimiter::keyed(request_quota(
                limits.tenant_requests_per_second,
            )),
        }
    }

    /// Counts one request of `key_id` (when known) in `tenant`.
    pub fn check(&self, key_id: Option<&str>, tenant: &str) -> Result<(), RateLimited> {
        if let Some(key) = key_id {
            if let Err(wait) = self.per_key.check_key(&key.to_owned()) {
                return Err(too_many(
                    "API key",
                    wait.wait_time_from(DefaultClock::default().now()),
                ));
            }
        }
        if let Err(wait) = self.per_tenant.check_key(&tenant.to_owned()) {
            return Err(too_many(
                "organization",
                wait.wait_time_from(DefaultClock::default().now()),
            ));
        }
        Ok(())
    }

    /// Drops idle buckets so the maps stay small.
    pub fn forget_idle(&self) {
        self.per_key.retain_recent();
        self.per_tenant.retain_recent();
    }
}

fn too_many(scope: &'static str, wait: std::time::Duration) -> RateLimited {
    RateLimited {
        scope,
        retry_after_seconds: wait.as_secs_f64().ceil().max(1.0) as u64,
    }
}

/// Checks that `tenant`, using `usage` now, may start a sandbox of `wanted` resources.
pub fn admit(
    limits: &Limits,
    tenant: &str,
    usage: TenantUsage,
    wanted: Resources,
) -> Result<(), QuotaExceeded> {
    let checks = [
        (
            "sandbox",
            "sandboxes",
            "--max-sandboxes",
            limits.max_sandboxes_per_tenant,
            usage.sandboxes,
            1,
        ),
        (
            "vcpu",
            "vcpus",
            "--max-vcpu",
            limits.max_vcpu_per_tenant,
            usage.vcpu,
            u64::from(wanted.vcpu),
        ),
        (
            "memory",
            "MB of memory",
            "--max-memory-mb",
            limits.max_memory_mb_per_tenant,
            usage.memory_mb,
            u64::from(wanted.memory_mb),
        ),
    ];
    for (resource, unit, flag, limit, current, need) in checks {
        if current.saturating_add(need) > limit {
            return Err(QuotaExceeded {
                resource,
                what: "sandbox",
                unit,
                flag,
                tenant: tenant.to_owned(),
                limit,
                current,
                need,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_let_one_organization_fill_the_machine_and_refusals_name_their_flag() {
        let limits = Limits::for_this_host();
        assert_eq!(limits.max_vcpu_per_tenant, u64::MAX);
        assert!(limits.max_sandboxes_per_tenant >= 1000);
        // Hundreds of 2 GB code-interpreter sandboxes on an 8 GB machine and up.
        assert!(limits.max_memory_mb_per_tenant >= 8 * 1024 * MEMORY_OVERCOMMIT / 2);
        let ci = Resources {
            vcpu: 2,
            memory_mb: 2048,
            disk_mb: 4096,
        };
        let busy = TenantUsage {
            sandboxes: 600,
            vcpu: 1200,
            memory_mb: 600 * 2048,
        };
        let tight = Limits {
            max_memory_mb_per_tenant: 600 * 2048,
            ..limits.clone()
        };
        assert!(
            admit(&limits, "acme", busy, ci).is_ok()
                || limits.max_memory_mb_per_tenant < 601 * 2048
        );
        let refused = admit(&tight, "acme", busy, ci).expect_err("over the memory quota");
        assert!(refused.to_string().contains("--max-memory-mb"), "{refused}");
        let few = Limits {
            max_sandboxes_per_tenant: 600,
            ..limits
        };
        let refused = admit(&few, "acme", busy, ci).expect_err("over the sandbox quota");
        assert!(refused.to_string().contains("--max-sandboxes"), "{refused}");
    }
}
