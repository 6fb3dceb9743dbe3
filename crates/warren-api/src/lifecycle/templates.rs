//! From a template record to what a sandbox starts from: a built template's stored spec, or a
//! built-in template's root file system, built on first use (one build per template however many
//! creates wait for it).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use warren_runtime::templates::{builtin_recipes, Recipe, TemplateCache};
use warren_store::{Store, TemplateRecord, TemplateStatus};

use super::error::{LifecycleError, LifecycleResult};
use crate::clock::now;
use crate::template_spec::{ReadyCheck, TemplateSpec};

/// How long a create waits for a template that is still being built before answering 503.
const TEMPLATE_WAIT: Duration = Duration::from_secs(40);

/// A built-in template's ready check (the desktop's: its window manager is up) is polled this
/// often, for at most this long.
const BUILTIN_READY_INTERVAL_MS: u64 = 25;
const BUILTIN_READY_TIMEOUT_MS: u64 = 30_000;

/// How a built-in template runs, on `layers` (its root file system where this machine has it;
/// none for a joined node, which prepares its own).
pub(super) fn builtin_spec(recipe: &Recipe, layers: Vec<PathBuf>) -> TemplateSpec {
    TemplateSpec {
        layers,
        start_cmd: recipe.start_cmd.map(str::to_owned),
        ready_cmd: recipe.ready_cmd.map(|command| ReadyCheck {
            kind: "command".into(),
            command: Some(command.to_owned()),
            timeout: Some(BUILTIN_READY_TIMEOUT_MS),
            interval: Some(BUILTIN_READY_INTERVAL_MS),
            port: None,
            url: None,
            path: None,
            process_name: None,
        }),
        ..Default::default()
    }
}

/// Why a built-in template's root file system is not there.
#[derive(Debug, thiserror::Error)]
pub enum RootfsUnavailable {
    #[error(transparent)]
    Build(#[from] warren_runtime::templates::BuildError),
    /// another caller led the build, and it failed
    #[error("template build failed; see the server log")]
    FailedElsewhere,
}

/// Built-in templates' root file systems, built once per template (single flight).
pub struct TemplateRoots {
    pub cache: TemplateCache,
    store: Store,
    building: Mutex<HashMap<String, Arc<Notify>>>,
}

impl TemplateRoots {
    pub fn new(cache: TemplateCache, store: Store) -> Self {
        Self {
            cache,
            store,
            building: Mutex::new(HashMap::new()),
        }
    }

    pub fn recipe(name: &str) -> Option<Recipe> {
        builtin_recipes().into_iter().find(|r| r.name == name)
    }

    /// Builds a template's root file system if the cache lacks it; concurrent callers share one
    /// build. Progress goes to the log.
    pub async fn ensure(&self, recipe: &Recipe) -> Result<PathBuf, RootfsUnavailable> {
        if self.cache.is_ready(recipe) {
            return Ok(self.cache.rootfs(recipe.name));
        }
        let (notify, leader) = {
            let mut building = self.building.lock().unwrap_or_else(|p| p.into_inner());
            match building.get(recipe.name) {
                Some(n) => (n.clone(), false),
                None => {
                    let n = Arc::new(Notify::new());
                    building.insert(recipe.name.to_owned(), n.clone());
                    (n, true)
                }
            }
        };
        if !leader {
            let notified = notify.notified();
            if self.cache.is_ready(recipe) {
                return Ok(self.cache.rootfs(recipe.name));
            }
            notified.await;
            return if self.cache.is_ready(recipe) {
                Ok(self.cache.rootfs(recipe.name))
            } else {
                Err(RootfsUnavailable::FailedElsewhere)
            };
        }
        let _ = self
            .store
            .set_template_status(recipe.id, TemplateStatus::Building, None, now())
            .await;
        let progress = |line: String| tracing::info!(target: "warren::template", "{line}");
        let result = self.cache.ensure(recipe, &progress).await;
        let (status, err) = match &result {
            Ok(_) => (TemplateStatus::Active, None),
            Err(e) => (TemplateStatus::Failed, Some(e.to_string())),
        };
        if let Some(e) = &err {
            tracing::error!(template = recipe.name, error = %e, "template build failed");
        }
        let _ = self
            .store
            .set_template_status(recipe.id, status, err.as_deref(), now())
            .await;
        self.building
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(recipe.name);
        notify.notify_waiters();
        Ok(result?)
    }

    /// How to run a template: a built-in one is built on first use; a built one must be active.
    pub async fn runnable(
        self: &Arc<Self>,
        template: &TemplateRecord,
    ) -> LifecycleResult<TemplateSpec> {
        if template.tenant.is_some() {
            return match (&template.status, &template.spec) {
                (TemplateStatus::Active, Some(json)) => {
                    let spec: TemplateSpec = serde_json::from_str(json).map_err(|e| {
                        LifecycleError::Unavailable(format!(
                            "template {} has an unreadable spec ({e}); rebuild it",
                            template.name
                        ))
                    })?;
                    if let Some(missing) = spec.layers.iter().find(|l| !l.exists()) {
                        return Err(LifecycleError::Unavailable(format!(
                            "template {} lost a layer ({}); rebuild it",
                            template.name,
                            missing.display()
                        )));
                    }
                    Ok(spec)
                }
                (status, _) => Err(LifecycleError::TemplateNotReady {
                    name: template.name.clone(),
                    status: status.as_str(),
                }),
            };
        }
        let recipe = Self::recipe(&template.name).ok_or_else(|| {
            LifecycleError::Unavailable(format!(
                "template {} has no root file system on this server",
                template.name
            ))
        })?;
        match tokio::time::timeout(TEMPLATE_WAIT, self.ensure(&recipe)).await {
            Ok(Ok(rootfs)) => Ok(builtin_spec(&recipe, vec![rootfs])),
            Ok(Err(e)) => Err(LifecycleError::Unavailable(format!(
                "template {} could not be built: {e}",
                template.name
            ))),
            Err(_) => {
                // The build goes on in the background (the future above is dropped, not the build
                // when another caller leads it); say so instead of hanging past client timeouts.
                let me = self.clone();
                tokio::spawn(async move {
                    let _ = me.ensure(&recipe).await;
                });
                Err(LifecycleError::Unavailable(format!(
                    "template {} is still being built on first use (this takes a few minutes once); retry shortly",
                    template.name
                )))
            }
        }
    }
}
