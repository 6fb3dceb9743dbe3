//! Warm pools: sandboxes of a template started ahead of time on this control plane's own node,
//! agent and interpreter up, so that a create which matches takes one and answers in a few
//! milliseconds. A warm sandbox is an ordinary sandbox recorded under `POOL_TENANT`: it is taken
//! over after a restart like any other, counts in no tenant's quota, and has never run anyone's
//! code. Taking one is a single conditional update of its row (`Store::claim_pooled_sandbox`),
//! so it is never given to two creates; what a create sets that is not in the row (its
//! `env_vars`, internet access off) is applied to the running sandbox then.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use warren_core::{SandboxId, SandboxStatus, Tier};
use warren_store::{ClaimPooled, NewSandbox, OnTimeout, SandboxRecord, TemplateRecord};
use warren_wire::cluster::TemplateSource;
use warren_wire::control::CreateSandboxRequest;

use super::checks::{check_env, on_timeout};
use super::{Lifecycle, LifecycleError, LifecycleResult, Requester};
use crate::clock::now;
use crate::nodes::{HandOver, NodeHandle, StartOrder};

/// The tenant warm sandboxes are recorded under until a create takes them. Not a name an API key
/// can have (`warren keys create` refuses tenants named `warren:…`).
pub const POOL_TENANT: &str = "warren:pool";

/// How long the filler waits after a failed start before it tries again (doubling up to a
/// minute), so that a template that cannot start does not keep the machine busy.
const RETRY_FIRST: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(60);
/// How long after the last create the filler waits before it starts a warm sandbox.
const QUIET: Duration = Duration::from_millis(50);

/// Keep `size` warm sandboxes of `template` on `tier` (None: the default tier).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolTarget {
    pub template: String,
    pub tier: Option<Tier>,
    pub size: usize,
}

/// A `--pool` value that names no pool.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadPoolTarget {
    #[error("--pool {0:?}: expected TEMPLATE=N or TEMPLATE@TIER=N")]
    Shape(String),
    #[error("--pool {arg:?}: {tier}")]
    Tier {
        arg: String,
        tier: warren_core::UnknownTier,
    },
}

impl std::str::FromStr for PoolTarget {
    type Err = BadPoolTarget;

    /// `TEMPLATE=N` or `TEMPLATE@TIER=N`.
    fn from_str(s: &str) -> Result<Self, BadPoolTarget> {
        let bad = || BadPoolTarget::Shape(s.to_owned());
        let (name, size) = s.rsplit_once('=').ok_or_else(bad)?;
        let size: usize = size.trim().parse().map_err(|_| bad())?;
        let (template, tier) = match name.split_once('@') {
            Some((t, tier)) => (
                t.trim(),
                Some(
                    tier.trim()
                        .parse::<Tier>()
                        .map_err(|tier| BadPoolTarget::Tier {
                            arg: s.to_owned(),
                            tier,
                        })?,
                ),
            ),
            None => (name.trim(), None),
        };
        if template.is_empty() {
            return Err(bad());
        }
        Ok(Self {
            template: template.to_owned(),
            tier,
            size,
        })
    }
}

/// The template a server without `--pool` keeps one warm sandbox of from the start.
const FIRST_WARM_TEMPLATE: &str = "code-interpreter";

/// The pool of ready sandboxes, keyed by (template id, tier), oldest first.
#[derive(Default)]
pub(crate) struct Pools {
    /// Pools asked for with `--pool`; when there are none, `demand` sizes them (unless off).
    targets: Mutex<Vec<PoolTarget>>,
    demand: super::pool_demand::Demand,
    /// Pools sized by demand, each at most this many (0: no pools by demand).
    demand_ceiling: AtomicUsize,
    ready: Mutex<HashMap<(String, Tier), VecDeque<SandboxId>>>,
    /// Wakes the filler: a sandbox was taken, or one left.
    wake: Notify,
    /// Creates under way; the filler starts nothing while there are any.
    creates: AtomicUsize,
    /// When the last create ended: the filler waits for a quiet moment after it too, so that a
    /// client's first calls into the sandbox it just got do not share the CPU with a start.
    last_create: Mutex<Option<std::time::Instant>>,
}

/// Counts one create under way while it lives.
pub(crate) struct CreateUnderWay<'a>(&'a Pools);

impl Drop for CreateUnderWay<'_> {
    fn drop(&mut self) {
        *self.0.last_create.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(std::time::Instant::now());
        self.0.creates.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Pools {
    fn ready(&self) -> std::sync::MutexGuard<'_, HashMap<(String, Tier), VecDeque<SandboxId>>> {
        self.ready.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn targets(&self) -> Vec<PoolTarget> {
        let fixed = self
            .targets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        match self.demand_ceiling.load(Ordering::Relaxed) {
            0 => fixed,
            ceiling => self
                .demand
                .targets(ceiling)
                .into_iter()
                .map(|(template, tier, size)| PoolTarget {
                    template,
                    tier: Some(tier),
                    size,
                })
                .collect(),
        }
    }

    fn by_demand(&self) -> bool {
        self.demand_ceiling.load(Ordering::Relaxed) > 0
    }

    /// Counts a create that a warm sandbox of `template` (a built-in's name) on `tier` could
    /// have answered, for pools sized by demand.
    pub(crate) fn note_demand(&self, template: &str, tier: Tier) {
        if self.by_demand() {
            self.demand.note(template, tier);
        }
    }

    pub(crate) fn create_under_way(&self) -> CreateUnderWay<'_> {
        self.creates.fetch_add(1, Ordering::Relaxed);
        CreateUnderWay(self)
    }

    fn take(&self, template_id: &str, tier: Tier) -> Option<SandboxId> {
        self.ready()
            .get_mut(&(template_id.to_owned(), tier))?
            .pop_front()
    }

    fn put_back(&self, template_id: &str, tier: Tier, id: SandboxId) {
        self.ready()
            .entry((template_id.to_owned(), tier))
            .or_default()
            .push_front(id);
    }

    fn add(&self, template_id: &str, tier: Tier, id: SandboxId) {
        self.ready()
            .entry((template_id.to_owned(), tier))
            .or_default()
            .push_back(id);
    }

    fn count(&self, template_id: &str, tier: Tier) -> usize {
        self.ready()
            .get(&(template_id.to_owned(), tier))
            .map_or(0, VecDeque::len)
    }

    /// Forgets a sandbox that left the pool some other way (it died, shutdown stopped it).
    pub(crate) fn remove(&self, id: &SandboxId) {
        for queue in self.ready().values_mut() {
            queue.retain(|i| i != id);
        }
    }

    /// The newest sandbox of the fullest pool, to give memory back.
    fn take_any(&self) -> Option<SandboxId> {
        let mut ready = self.ready();
        let queue = ready.values_mut().max_by_key(|q| q.len())?;
        queue.pop_back()
    }

    /// Sizes of the pools: (template id, tier, warm sandboxes).
    pub(crate) fn sizes(&self) -> Vec<(String, Tier, usize)> {
        self.ready()
            .iter()
            .map(|((t, tier), q)| (t.clone(), *tier, q.len()))
            .collect()
    }
}

impl Lifecycle {
    /// Warm sandboxes ready now: (template id, tier, count).
    pub fn pool_sizes(&self) -> Vec<(String, Tier, usize)> {
        self.pools.sizes()
    }

    /// Checks and sets the pools to keep; the filler (`keep_pools`) starts them. Without
    /// targets and with `by_demand`, pools follow the creates of built-in templates
    /// (`pool_demand`), starting with one warm sandbox of the first template.
    pub async fn configure_pools(
        &self,
        targets: Vec<PoolTarget>,
        by_demand: bool,
    ) -> LifecycleResult<()> {
        if !targets.is_empty() && !self.has_local_node() {
            return Err(LifecycleError::Invalid(
                "--pool needs a node on this control plane (not --no-local-node)".into(),
            ));
        }
        for t in &targets {
            self.pool_template(t).await?;
        }
        let by_demand = by_demand && targets.is_empty() && self.has_local_node();
        *self.pools.targets.lock().unwrap_or_else(|p| p.into_inner()) = targets;
        if by_demand {
            self.pools
                .demand_ceiling
                .store(super::pool_demand::ceiling(), Ordering::Relaxed);
            let first = PoolTarget {
                template: FIRST_WARM_TEMPLATE.to_owned(),
                tier: None,
                size: 1,
            };
            if let Ok((template, tier)) = self.pool_template(&first).await {
                self.pools.note_demand(&template.name, tier);
            }
        }
        Ok(())
    }

    /// The template and tier a pool target names.
    async fn pool_template(&self, t: &PoolTarget) -> LifecycleResult<(TemplateRecord, Tier)> {
        let template = self
            .store
            .find_template(&t.template, POOL_TENANT)
            .await?
            .ok_or_else(|| {
                LifecycleError::Invalid(format!(
                    "--pool: no built-in template {:?} (see `warren template list`)",
                    t.template
                ))
            })?;
        let tier = match t.tier {
            Some(tier) if !self.cluster.has_tier(tier) => {
                return Err(LifecycleError::Invalid(format!(
                    "--pool {}: isolation tier \"{tier}\" is not available here (available: {})",
                    t.template,
                    warren_node::tier_list(&self.cluster.tiers())
                )))
            }
            Some(tier) => tier,
            None => self.cluster.default_tier(),
        };
        Ok((template, tier))
    }

    /// Keeps the pools filled until shutdown: one start at a time, only while no create is
    /// under way, and none while the machine is short of memory (then warm sandboxes are
    /// stopped instead, newest first). Warm sandboxes an earlier server left are taken back
    /// first (restore has adopted them).
    pub async fn keep_pools(self: Arc<Self>) {
        self.reload_pools().await;
        if self.pools.targets().is_empty() && !self.pools.by_demand() {
            return;
        }
        let mut retry = RETRY_FIRST;
        loop {
            if *self.closing.read().await {
                return;
            }
            let mut started_one = false;
            let mut kept = Vec::new();
            for target in self.pools.targets() {
                let Ok((template, tier)) = self.pool_template(&target).await else {
                    continue;
                };
                kept.push((template.id.clone(), tier));
                let mut have = self.pools.count(&template.id, tier);
                while have > target.size {
                    if let Some(id) = self.pools.take(&template.id, tier) {
                        self.stop(&id, SandboxStatus::Stopped, None).await;
                    }
                    have -= 1;
                }
                if have == target.size {
                    continue;
                }
                if let Some(node) = &self.cluster.local {
                    if let Err(why) = node.has_room() {
                        if let Some(id) = self.pools.take_any() {
                            tracing::warn!(sandbox = %id, %why, "stopping a warm sandbox: memory is short");
                            self.stop(&id, SandboxStatus::Stopped, None).await;
                        }
                        break;
                    }
                }
                self.wait_for_no_creates().await;
                match self.fill_one(&template, tier).await {
                    Ok(id) => {
                        self.pools.add(&template.id, tier, id);
                        started_one = true;
                        retry = RETRY_FIRST;
                    }
                    Err(e) => {
                        tracing::warn!(template = %template.name, %tier, error = %e, "cannot start a warm sandbox; retrying in {:?}", retry);
                        tokio::time::sleep(retry).await;
                        retry = (retry * 2).min(RETRY_MAX);
                    }
                }
            }
            // A pool demand no longer asks for gives its sandboxes back, one per round.
            for (template_id, tier, n) in self.pools.sizes() {
                if n > 0 && !kept.contains(&(template_id.clone(), tier)) {
                    if let Some(id) = self.pools.take(&template_id, tier) {
                        self.stop(&id, SandboxStatus::Stopped, None).await;
                    }
                }
            }
            if !started_one {
                tokio::select! {
                    () = self.pools.wake.notified() => {}
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }

    /// Live starts come first: waits until no create is under way and none ended in the last
    /// `QUIET`.
    async fn wait_for_no_creates(&self) {
        loop {
            let last = *self
                .pools
                .last_create
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let quiet_for = last.map_or(QUIET, |t| t.elapsed());
            if self.pools.creates.load(Ordering::Relaxed) == 0 && quiet_for >= QUIET {
                return;
            }
            tokio::time::sleep(
                QUIET
                    .saturating_sub(quiet_for)
                    .max(Duration::from_millis(5)),
            )
            .await;
        }
    }

    /// Puts the warm sandboxes found running at start back in their pools.
    async fn reload_pools(&self) {
        let Some(node) = &self.cluster.local else {
            return;
        };
        let Ok(live) = self.store.live_sandboxes_on(None).await else {
            return;
        };
        let mut wanted = Vec::new();
        for t in self.pools.targets() {
            if let Ok((template, tier)) = self.pool_template(&t).await {
                wanted.push((template.id, tier));
            }
        }
        for rec in live.into_iter().filter(|r| r.tenant == POOL_TENANT) {
            let key = (rec.template_id.clone(), rec.isolation);
            if rec.status == SandboxStatus::Running && node.runs(&rec.id) && wanted.contains(&key) {
                self.pools.add(&rec.template_id, rec.isolation, rec.id);
            } else {
                self.stop(&rec.id, SandboxStatus::Stopped, None).await;
            }
        }
    }

    /// Starts one warm sandbox of `template` on `tier`.
    async fn fill_one(&self, template: &TemplateRecord, tier: Tier) -> LifecycleResult<SandboxId> {
        let _open = self.starts_allowed().await?; // held until the sandbox is recorded
        let node = self.local()?.clone();
        let run = self.templates.runnable(template).await?;
        check_env(&run.env)?;
        let id = SandboxId::generate();
        let record = self
            .store
            .insert_sandbox(
                NewSandbox {
                    id: &id,
                    template_id: &template.id,
                    template_name: &template.name,
                    resources: template.resources,
                    internet_access: true,
                    timeout_seconds: None,
                    key_id: None,
                    tenant: POOL_TENANT,
                    isolation: tier,
                    node_id: None,
                    region: Some(&self.cluster.local_region),
                    metadata: None,
                    egress: None,
                    on_timeout: OnTimeout::Kill,
                    snapshot_id: None,
                    secret_bindings: None,
                },
                now(),
            )
            .await?;
        let order = StartOrder {
            id: id.clone(),
            template_name: template.name.clone(),
            env_vars: run.env.clone(),
            run,
            source: TemplateSource::Builtin {
                name: template.name.clone(),
            },
            resources: record.resources,
            internet_access: true,
            egress: None,
            secrets: Vec::new(),
            tier,
            owner: POOL_TENANT.to_owned(),
            volumes: Vec::new(),
        };
        let started = match node.start(order).await {
            Ok(s) => s,
            Err(e) => {
                let _ = self.store.forget_sandbox(&id).await;
                return Err(LifecycleError::Unavailable(e.to_string()));
            }
        };
        if let Err(e) = self
            .store
            .set_sandbox_running(&id, &started.handle, started.port, now())
            .await
        {
            self.stop_on(node.as_ref(), &id).await;
            let _ = self.store.forget_sandbox(&id).await;
            return Err(e.into());
        }
        Ok(id)
    }

    /// Takes a warm sandbox for a create, if its pool has one: admitted against the tenant's
    /// quotas, recorded as the tenant's, its `env_vars` and internet access applied. None: no
    /// warm sandbox (the create starts one).
    pub(super) async fn claim_pooled(
        &self,
        node: &dyn NodeHandle,
        template: &TemplateRecord,
        tier: Tier,
        req: &CreateSandboxRequest,
        who: Requester<'_>,
        metadata: Option<&str>,
    ) -> LifecycleResult<Option<SandboxRecord>> {
        let internet = req.internet_access.unwrap_or(true);
        if !internet && tier.has_guest_kernel() {
            // Taking the link away shows as `lo` only on the namespace tier; a gVisor or VM
            // guest keeps the device it booted with. Those start cold, exactly as asked.
            return Ok(None);
        }
        let Some(id) = self.pools.take(&template.id, tier) else {
            return Ok(None);
        };
        self.pools.wake.notify_one();
        let closing = self.starts_allowed().await?;
        let claimed = {
            let _admission = self.admission.read().await;
            self.store
                .claim_pooled_sandbox(
                    &id,
                    POOL_TENANT,
                    ClaimPooled {
                        tenant: who.tenant,
                        key_id: Some(who.key_id),
                        timeout_seconds: req.timeout_seconds,
                        internet_access: internet,
                        metadata,
                        on_timeout: on_timeout(req)?,
                    },
                    self.quota_left(who.tenant),
                    now(),
                )
                .await?
        };
        let Some(record) = claimed else {
            // Over a quota, or the warm sandbox ended meanwhile: one still warm goes back.
            let still_warm = self
                .store
                .get_sandbox(&id)
                .await?
                .is_some_and(|r| r.tenant == POOL_TENANT && r.status == SandboxStatus::Running);
            if still_warm {
                self.pools.put_back(&template.id, tier, id);
            }
            self.admit(who.tenant, template.resources).await?;
            return Ok(None);
        };
        self.hand_over(node, &record, req).await?;
        drop(closing);
        if record.expires_at.is_some() {
            self.expiry_changed.notify_one();
        }
        Ok(Some(record))
    }

    /// Gives the claimed warm sandbox what the create asks and it does not have yet: its owner
    /// on the node, no network link when it wants no internet, the caller's environment. One
    /// that cannot be handed over is stopped and recorded as `error`.
    async fn hand_over(
        &self,
        node: &dyn NodeHandle,
        record: &SandboxRecord,
        req: &CreateSandboxRequest,
    ) -> LifecycleResult<()> {
        let to = HandOver {
            owner: record.tenant.clone(),
            cut_internet_of: if record.internet_access {
                None
            } else {
                record.runtime_handle.clone()
            },
            env_vars: req.env_vars.clone().unwrap_or_default(),
        };
        match node.hand_over(&record.id, to).await {
            Ok(()) => Ok(()),
            Err(e) => Err(self.give_up_warm(&record.id, "be handed over", e).await),
        }
    }

    /// Stops a claimed warm sandbox that could not `do_what` the create needs, records it as
    /// `error` with the reason, and gives the create's error.
    pub(super) async fn give_up_warm(
        &self,
        id: &SandboxId,
        do_what: &str,
        e: impl std::fmt::Display,
    ) -> LifecycleError {
        tracing::error!(sandbox = %id, error = %e, "a warm sandbox could not {do_what}");
        let reason = format!("it could not {do_what}: {e}");
        self.stop(id, SandboxStatus::Error, Some(&reason)).await;
        LifecycleError::Unavailable(format!("sandbox failed to start: {e}"))
    }
}
