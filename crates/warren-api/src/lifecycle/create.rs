//! A create, step by step: check what is asked and find the template (or snapshot) it names,
//! place it on a node and resolve how it runs there, take a warm sandbox if one fits, or else
//! admit it against the tenant's quotas, record it and start it.

use std::collections::BTreeMap;
use std::sync::Arc;

use warren_core::{SandboxId, SandboxStatus, Tier};
use warren_store::{NewSandbox, SandboxRecord, SnapshotRecord, TemplateRecord};
use warren_wire::cluster::TemplateSource;
use warren_wire::control::{CreateSandboxRequest, EgressPolicy};

use super::checks::{check_env, check_metadata, check_timeout, on_timeout};
use super::snapshots::snapshot_spec;
use super::templates::builtin_spec;
use super::{Lifecycle, LifecycleError, LifecycleResult, Requester, TemplateRoots};
use crate::clock::now;
use crate::cluster::{layer_keys, NodeView, Placement, TemplateNeed, Wanted};
use crate::limits::max_timeout_of;
use crate::nodes::{NodeHandle, StartOrder};
use crate::template_spec::TemplateSpec;

/// A create's fields checked, and what they name found.
pub(super) struct Asked {
    pub template: TemplateRecord,
    /// The snapshot it copies, if any.
    pub snapshot: Option<SnapshotRecord>,
    /// A built template's stored spec; None for a built-in template.
    pub stored: Option<TemplateSpec>,
    /// The tier asked for: by the request, else the snapshot's or the template's; None for the
    /// default of the node it goes to.
    pub tier: Option<Tier>,
    /// User metadata as stored (JSON).
    pub metadata: Option<String>,
    pub egress: Option<EgressPolicy>,
    /// Brokered secrets: the env vars holding their placeholders, what the record keeps, and
    /// what the node's egress proxy needs.
    pub secrets: Option<AskedSecrets>,
    /// Persistent volumes to mount, in path order.
    pub volumes: Vec<warren_store::MountRecord>,
}

pub(super) struct AskedSecrets {
    pub env: BTreeMap<String, String>,
    pub kept: String,
    pub bindings: Vec<warren_wire::cluster::SecretBinding>,
}

/// Where a create goes and how it runs there.
pub(super) struct Placed {
    pub node: Arc<dyn NodeHandle>,
    /// The joined node it goes to; None for this control plane's own.
    pub node_id: Option<String>,
    pub region: String,
    pub tier: Tier,
    /// How it runs there (layers, working directory, start command, ready check, environment).
    pub run: TemplateSpec,
    /// The template as a joined node finds it.
    pub source: TemplateSource,
}

impl Lifecycle {
    pub async fn create(
        self: &Arc<Self>,
        mut req: CreateSandboxRequest,
        who: Requester<'_>,
    ) -> LifecycleResult<SandboxRecord> {
        // A create that names no lifetime gets the server's default (`--default-timeout`), or
        // its organization's longest if that is shorter.
        let (longest, _) = max_timeout_of(&self.limits, who.tenant);
        req.timeout_seconds = req
            .timeout_seconds
            .or(self.limits.default_timeout_seconds.map(|d| d.min(longest)));
        let _under_way = self.pools.create_under_way();
        let began = std::time::Instant::now();
        let asked = self.check_request(&req, who).await?;
        let placed = self.place(&asked, req.region.as_deref()).await?;
        let checked_and_placed = began.elapsed();
        // The template's environment, overridden by the caller's env_vars.
        let mut env_vars = placed.run.env.clone();
        env_vars.extend(req.env_vars.clone().unwrap_or_default());
        check_env(&env_vars)?;
        if let Some(s) = &asked.secrets {
            env_vars.extend(s.env.clone());
        }
        if let Some(taken) = self.take_warm(&asked, &placed, &req, who).await? {
            return Ok(taken);
        }
        let started = self.start_new(&asked, placed, env_vars, &req, who).await;
        tracing::debug!(
            check_place_ms = checked_and_placed.as_secs_f64() * 1e3,
            total_ms = began.elapsed().as_secs_f64() * 1e3,
            "cold create"
        );
        started
    }

    /// Checks the request's own fields and finds the template (or snapshot) it names.
    async fn check_request(
        &self,
        req: &CreateSandboxRequest,
        who: Requester<'_>,
    ) -> LifecycleResult<Asked> {
        // A copy of a snapshot runs its source's template with the snapshot on top.
        let snapshot = match req.snapshot_id.as_deref().filter(|s| !s.is_empty()) {
            Some(sid) => Some(self.owned_snapshot(sid, who.tenant).await?),
            None => None,
        };
        let wanted = snapshot
            .as_ref()
            .map(|s| s.template_id.as_str())
            .or(req.template_id.as_deref())
            .or(req.template_name.as_deref())
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| {
                LifecycleError::Invalid("template_name or template_id is required".into())
            })?;
        if let Some(t) = req.timeout_seconds {
            check_timeout(t, max_timeout_of(&self.limits, who.tenant))?;
        }
        on_timeout(req)?;
        if let Some(env) = &req.env_vars {
            check_env(env)?;
        }
        let metadata = match &req.metadata {
            Some(m) if !m.is_empty() => {
                check_metadata(m)?;
                Some(serde_json::to_string(m).map_err(|e| LifecycleError::Invalid(e.to_string()))?)
            }
            _ => None,
        };
        let egress = match &req.network {
            Some(p) if !p.is_empty() => {
                crate::egress::parse(p).map_err(|e| LifecycleError::Invalid(e.to_string()))?;
                Some(p.clone())
            }
            _ => None,
        };
        let template = self
            .store
            .find_template(wanted, who.tenant)
            .await?
            .ok_or_else(|| LifecycleError::TemplateNotFound(wanted.to_owned()))?;
        let stored = match (&template.tenant, &template.spec) {
            (Some(_), Some(json)) => serde_json::from_str::<TemplateSpec>(json).ok(),
            _ => None,
        };
        // A template's default policy, when the create names none.
        let egress = egress.or_else(|| stored.as_ref().and_then(|s| s.network.clone()));
        let tier = self.asked_tier(req, snapshot.as_ref(), stored.as_ref())?;
        let volumes = self
            .asked_volumes(req.volumes.as_deref(), snapshot.as_ref(), who.tenant)
            .await?;
        let mut secrets = match &req.secrets {
            Some(wanted) if !wanted.is_empty() => {
                let (env, kept, bindings) = self
                    .vault
                    .bind(who.tenant, wanted)
                    .await
                    .map_err(LifecycleError::from_secrets)?;
                Some(AskedSecrets {
                    env,
                    kept,
                    bindings,
                })
            }
            _ => None,
        };
        if let Some(p) = &egress {
            let by_rules = self
                .vault
                .for_rules(who.tenant, p)
                .await
                .map_err(LifecycleError::from_secrets)?;
            if !by_rules.is_empty() {
                secrets
                    .get_or_insert_with(|| AskedSecrets {
                        env: BTreeMap::new(),
                        kept: "[]".into(),
                        bindings: Vec::new(),
                    })
                    .bindings
                    .extend(by_rules);
            }
        }
        Ok(Asked {
            template,
            snapshot,
            stored,
            tier,
            metadata,
            egress,
            secrets,
            volumes,
        })
    }

    /// The tier a create asks for: per sandbox (when the operator allows it), else its snapshot's
    /// or its template's; checked against the tiers the cluster runs. None: the default of the
    /// node it goes to.
    fn asked_tier(
        &self,
        req: &CreateSandboxRequest,
        snapshot: Option<&SnapshotRecord>,
        stored: Option<&TemplateSpec>,
    ) -> LifecycleResult<Option<Tier>> {
        if req.isolation.is_some() && !self.allow_isolation_override {
            return Err(LifecycleError::TierChoiceDisabled);
        }
        let requested = match req.isolation.as_deref().filter(|t| !t.is_empty()) {
            None => None,
            Some(name) => Some(name.parse::<Tier>().map_err(|_| self.no_such_tier(name))?),
        };
        let tier = match snapshot {
            Some(snap) => {
                if requested.is_some_and(|t| t != snap.isolation) {
                    return Err(LifecycleError::Invalid(format!(
                        "snapshot {} runs on the {} tier",
                        snap.id, snap.isolation
                    )));
                }
                Some(snap.isolation)
            }
            None => requested.or(stored.and_then(|s| s.isolation)),
        };
        match tier {
            Some(t) if !self.cluster.has_tier(t) => Err(self.no_such_tier(t.as_str())),
            t => Ok(t),
        }
    }

    fn no_such_tier(&self, name: &str) -> LifecycleError {
        LifecycleError::Invalid(format!(
            "isolation tier {name:?} is not available on this server (available: {}; see `warren doctor`)",
            warren_node::tier_list(&self.cluster.tiers())
        ))
    }

    /// Chooses the node and resolves how the sandbox runs there. A snapshot's copy runs where its
    /// layer is, and single-machine volumes where their images are: on this control plane's own
    /// node. Shared volumes are on every node.
    async fn place(&self, asked: &Asked, region: Option<&str>) -> LifecycleResult<Placed> {
        let template = &asked.template;
        let keys: Vec<String> = asked
            .stored
            .as_ref()
            .map(|s| layer_keys(&s.layers))
            .unwrap_or_default();
        // A shared volume store is on every node; the single-machine one only here.
        let volumes_here_only = !asked.volumes.is_empty() && !self.volumes.is_shared();
        let placement = if asked.snapshot.is_some() || volumes_here_only {
            self.local()?;
            Placement::Local
        } else {
            let wanted = Wanted {
                tier: asked.tier,
                region: region.filter(|r| !r.is_empty()),
                memory_mb: template.resources.memory_mb,
                template: if template.tenant.is_some() {
                    TemplateNeed::Layers(&keys)
                } else {
                    TemplateNeed::Builtin(&template.name)
                },
            };
            self.cluster.place(&wanted).map_err(|why| {
                crate::metrics::count_placement_failure();
                LifecycleError::Unavailable(why.to_string())
            })?
        };
        let source = if template.tenant.is_some() {
            TemplateSource::Layers { keys }
        } else {
            TemplateSource::Builtin {
                name: template.name.clone(),
            }
        };
        let placed = match placement {
            Placement::Local => self.on_local_node(asked, source).await?,
            Placement::Remote(view) => self.on_joined_node(asked, &view, source)?,
        };
        if placed.tier == Tier::Microvm && !asked.volumes.is_empty() {
            return Err(LifecycleError::Invalid(
                warren_runtime::microvm::VOLUMES_UNSERVED.into(),
            ));
        }
        // A template whose ready check cannot be run is refused before anything is recorded.
        placed
            .run
            .ready_probe()
            .map_err(|e| LifecycleError::Invalid(e.to_string()))?;
        Ok(placed)
    }

    /// Placed here: the machine must have room, and a built-in template is built on first use.
    async fn on_local_node(
        &self,
        asked: &Asked,
        source: TemplateSource,
    ) -> LifecycleResult<Placed> {
        let node = self.local()?.clone();
        node.has_room()
            .map_err(|e| LifecycleError::Unavailable(e.to_string()))?;
        let run = match &asked.snapshot {
            Some(snap) => snapshot_spec(snap)?,
            None => self.templates.runnable(&asked.template).await?,
        };
        Ok(Placed {
            tier: asked.tier.unwrap_or_else(|| self.cluster.default_tier()),
            node,
            node_id: None,
            region: self.cluster.local_region.clone(),
            run,
            source,
        })
    }

    /// Placed on a joined node, which prepares the template itself: nothing is built here.
    fn on_joined_node(
        &self,
        asked: &Asked,
        view: &NodeView,
        source: TemplateSource,
    ) -> LifecycleResult<Placed> {
        let template = &asked.template;
        let node = self.cluster.remote(&view.record.id).ok_or_else(|| {
            LifecycleError::Unavailable(format!("node {} left the cluster", view.record.id))
        })?;
        let run = match (&template.tenant, &asked.stored) {
            (Some(_), Some(spec)) => spec.clone(),
            (Some(_), None) => {
                return Err(LifecycleError::TemplateNotReady {
                    name: template.name.clone(),
                    status: template.status.as_str(),
                })
            }
            (None, _) => TemplateRoots::recipe(&template.name)
                .map(|r| builtin_spec(&r, Vec::new()))
                .unwrap_or_default(),
        };
        Ok(Placed {
            tier: asked
                .tier
                .or_else(|| node.tiers().first().copied())
                .unwrap_or(Tier::Namespaces),
            node_id: Some(view.record.id.clone()),
            region: view.region().unwrap_or("default").to_owned(),
            node: Arc::new(node),
            run,
            source,
        })
    }

    /// Takes a warm sandbox when one fits: on this control plane's own node, not a copy of a
    /// snapshot, and without secrets in its environment (all set at start). An egress policy is
    /// put on the warm sandbox's link as a runtime update would (one `nft` call), so a policy
    /// costs a create milliseconds, not a cold start.
    async fn take_warm(
        &self,
        asked: &Asked,
        placed: &Placed,
        req: &CreateSandboxRequest,
        who: Requester<'_>,
    ) -> LifecycleResult<Option<SandboxRecord>> {
        if placed.node_id.is_some()
            // Placeholders in its environment are set at start; a rule's secrets are not.
            || asked.secrets.as_ref().is_some_and(|s| !s.env.is_empty())
            || asked.snapshot.is_some()
            // Warm sandboxes mount nothing; a volume is mounted as the sandbox's root is made.
            || !asked.volumes.is_empty()
            // A policy's allowed destinations keep a link that no internet access would take
            // away: such a sandbox is made with exactly that link, cold.
            || (asked.egress.is_some() && req.internet_access == Some(false))
        {
            return Ok(None);
        }
        if asked.template.tenant.is_none() {
            self.pools.note_demand(&asked.template.name, placed.tier);
        }
        let claimed = self
            .claim_pooled(
                placed.node.as_ref(),
                &asked.template,
                placed.tier,
                req,
                who,
                asked.metadata.as_deref(),
            )
            .await?;
        match (claimed, &asked.egress) {
            // Put on as a runtime update would (`set_network`), which also records it.
            (Some(record), Some(policy)) => match self.set_network(&record.id, policy).await {
                Ok(record) => Ok(Some(record)),
                Err(e) => Err(self
                    .give_up_warm(&record.id, "take its egress policy", e)
                    .await),
            },
            (claimed, _) => Ok(claimed),
        }
    }

    /// Admits, records and starts a new sandbox; a start that fails is recorded as `error` with
    /// the reason.
    async fn start_new(
        &self,
        asked: &Asked,
        placed: Placed,
        env_vars: BTreeMap<String, String>,
        req: &CreateSandboxRequest,
        who: Requester<'_>,
    ) -> LifecycleResult<SandboxRecord> {
        let began = std::time::Instant::now();
        let closing = self.starts_allowed().await?;
        let volumes = self
            .node_mounts(who.tenant, &asked.volumes, placed.node_id.is_some())
            .await?;
        let record = self.admit_and_record(asked, &placed, req, who).await?;
        let admitted = began.elapsed();
        let id = record.id.clone();
        let order = StartOrder {
            id: id.clone(),
            template_name: asked.template.name.clone(),
            run: placed.run,
            source: placed.source,
            resources: record.resources,
            internet_access: record.internet_access,
            egress: asked.egress.clone(),
            secrets: asked
                .secrets
                .as_ref()
                .map(|s| s.bindings.clone())
                .unwrap_or_default(),
            env_vars,
            tier: placed.tier,
            owner: who.tenant.to_owned(),
            volumes,
        };
        let started = match placed.node.start(order).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(sandbox = %id, error = %e, "sandbox failed to start");
                let reason = format!("it failed to start: {e}");
                self.record_end(&id, SandboxStatus::Error, Some(&reason))
                    .await;
                return Err(LifecycleError::Unavailable(format!(
                    "sandbox failed to start: {e}"
                )));
            }
        };
        let node_started = began.elapsed();
        // Running, with what a server that restarts from here on needs to take it over.
        let recorded = self
            .store
            .set_sandbox_running(&id, &started.handle, started.port, now())
            .await;
        if let Err(e) = recorded {
            self.stop_on(placed.node.as_ref(), &id).await;
            return Err(e.into());
        }
        drop(closing);
        if record.expires_at.is_some() {
            self.expiry_changed.notify_one();
        }
        // Where a create's time goes, to find what queues under a burst (RUST_LOG=warren_api=debug).
        tracing::debug!(
            sandbox = %id,
            admit_ms = admitted.as_secs_f64() * 1e3,
            start_ms = (node_started - admitted).as_secs_f64() * 1e3,
            record_ms = (began.elapsed() - node_started).as_secs_f64() * 1e3,
            "sandbox admitted and started"
        );
        Ok(SandboxRecord {
            status: SandboxStatus::Running,
            listen_port: started.port,
            runtime_handle: Some(started.handle),
            ..record
        })
    }

    /// Checks the tenant's quotas and records the sandbox as `creating`, under the admission lock
    /// so that concurrent creates cannot overshoot a quota together.
    async fn admit_and_record(
        &self,
        asked: &Asked,
        placed: &Placed,
        req: &CreateSandboxRequest,
        who: Requester<'_>,
    ) -> LifecycleResult<SandboxRecord> {
        let egress = match &asked.egress {
            Some(p) => {
                Some(serde_json::to_string(p).map_err(|e| LifecycleError::Invalid(e.to_string()))?)
            }
            None => None,
        };
        let _admission = self.admission.read().await;
        self.volumes_still_there(who.tenant, &asked.volumes).await?;
        let new = NewSandbox {
            id: &SandboxId::generate(),
            template_id: &asked.template.id,
            template_name: &asked.template.name,
            resources: asked.template.resources,
            internet_access: req.internet_access.unwrap_or(true),
            timeout_seconds: req.timeout_seconds,
            key_id: Some(who.key_id),
            tenant: who.tenant,
            isolation: placed.tier,
            node_id: placed.node_id.as_deref(),
            region: Some(&placed.region),
            metadata: asked.metadata.as_deref(),
            egress: egress.as_deref(),
            on_timeout: on_timeout(req)?,
            snapshot_id: asked.snapshot.as_ref().map(|s| s.id.as_str()),
            secret_bindings: asked.secrets.as_ref().map(|s| s.kept.as_str()),
        };
        // Refused by the store: over a quota, which `admit` names; unless a sandbox that ended
        // meanwhile made room, then once more.
        let mut record = None;
        for _ in 0..2 {
            let quota = self.quota_left(who.tenant);
            record = self.store.insert_sandbox_within(new, quota, now()).await?;
            if record.is_some() {
                break;
            }
            self.admit(who.tenant, asked.template.resources).await?;
        }
        let record = record.ok_or_else(|| {
            LifecycleError::Unavailable(
                "the tenant's quota is changing under many creates; try again".into(),
            )
        })?;
        if !asked.volumes.is_empty() {
            self.store
                .record_mounts(record.id.as_str(), &asked.volumes)
                .await?;
        }
        Ok(record)
    }
}
