//! What this crate's tests stand on: a whole control plane (lifecycle, router, real SQLite store
//! in a temporary directory) over a fake node, so its logic is tested without root, namespaces
//! or minutes.

use std::path::PathBuf;
use std::sync::Arc;

use warren_core::{Resources, Tier};
use warren_runtime::templates::{builtin_recipes, recipe_hash, TemplateCache};
use warren_store::{KeyEnvironment, KeySpec, Role, Store, TemplateRecord, TemplateStatus};

use crate::cluster::Cluster;
use crate::lifecycle::{Lifecycle, LifecycleConfig, Requester, TemplateRoots};
use crate::limits::{Limits, RateLimiter};
use crate::nodes::fake::FakeNode;
use crate::nodes::NodeHandle;
use crate::state::{AppState, PublicMode};
use crate::tokens::TokenSigner;

pub const TENANT: &str = "acme";

pub struct Harness {
    pub dir: tempfile::TempDir,
    pub store: Store,
    pub node: Arc<FakeNode>,
    pub lifecycle: Arc<Lifecycle>,
    pub state: AppState,
    /// An admin key of `TENANT`.
    pub key: String,
    pub key_id: String,
}

/// How a test's control plane is set up.
pub struct Setup {
    pub limits: Limits,
    pub tiers: Vec<Tier>,
    pub allow_isolation_override: bool,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            limits: Limits {
                key_requests_per_second: 10_000,
                tenant_requests_per_second: 10_000,
                max_sandboxes_per_tenant: 100,
                max_vcpu_per_tenant: u64::MAX,
                max_memory_mb_per_tenant: u64::MAX,
                max_volume_mb_per_tenant: u64::MAX,
                default_timeout_seconds: None,
                max_timeout_seconds: crate::limits::MAX_TIMEOUT_SECONDS,
                max_timeout_by_tenant: Default::default(),
                idle_pause_seconds: None,
            },
            tiers: vec![Tier::Namespaces, Tier::Gvisor],
            allow_isolation_override: true,
        }
    }
}

impl Harness {
    pub async fn new() -> Self {
        Self::with(Setup::default()).await
    }

    pub async fn with(setup: Setup) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let data = dir.path().join("data");
        let cache = dir.path().join("cache");
        std::fs::create_dir_all(&data).expect("data dir");
        let store = Store::open(&data).await.expect("SQLite store");
        let templates = TemplateCache::new(&cache, None);
        crate::serve::register_builtin_templates(&store, &templates, false, crate::clock::now())
            .await
            .expect("built-in templates");
        let tokens = Arc::new(TokenSigner::load(&store, &data).await.expect("token key"));
        let node = Arc::new(FakeNode::new(&setup.tiers));
        let cluster = Cluster::new(
            Some(node.clone() as Arc<dyn NodeHandle>),
            "local".into(),
            store.clone(),
            tokens.clone(),
            None,
        );
        let roots = Arc::new(TemplateRoots::new(templates, store.clone()));
        let lifecycle = Arc::new(Lifecycle::new(
            store.clone(),
            cluster.clone(),
            roots,
            LifecycleConfig {
                limits: setup.limits.clone(),
                allow_isolation_override: setup.allow_isolation_override,
                snapshots_dir: data.join("snapshots"),
                vault: Arc::new(
                    crate::secrets::SecretVault::open(store.clone(), &data).expect("secret store"),
                ),
                volumes: Arc::new(crate::volumes::Volumes::new(&data)),
            },
        ));
        let key = store
            .create_api_key(
                &KeySpec {
                    name: "test",
                    tenant: TENANT,
                    role: Role::Admin,
                    environment: KeyEnvironment::Test,
                    expires_at: None,
                },
                crate::clock::now(),
            )
            .await
            .expect("API key");
        let state = AppState {
            lifecycle: lifecycle.clone(),
            node: None,
            cluster,
            store: store.clone(),
            tokens,
            public: PublicMode::Local {
                bind: std::net::Ipv4Addr::LOCALHOST.into(),
                host: "127.0.0.1".into(),
            },
            audit: crate::audit::Auditor::start(store.clone()),
            rate: Arc::new(RateLimiter::new(&setup.limits)),
            https: false,
            builds: Arc::new(crate::builds::Builds::default()),
            layers: Arc::new(warren_runtime::layers::LayerStore::new(&cache)),
            uploads: Arc::new(crate::builds::uploads::Uploads::new(&data)),
            volumes: lifecycle.volumes().clone(),
            registry: Arc::new(crate::builds::registry::Registry::new(
                &cache,
                Vec::new(),
                None,
            )),
            node_id: "test-node".into(),
            region: "local".into(),
        };
        Self {
            dir,
            store,
            node,
            lifecycle,
            state,
            key: key.secret,
            key_id: key.record.id,
        }
    }

    pub fn who(&self) -> Requester<'_> {
        Requester {
            tenant: TENANT,
            key_id: &self.key_id,
        }
    }

    /// A built template of `TENANT`, ready, whose one layer is an empty directory.
    pub async fn built_template(&self, name: &str, tier: Option<Tier>) -> TemplateRecord {
        self.built_template_with(name, |spec| spec.isolation = tier)
            .await
    }

    /// A built template of `TENANT` whose spec `shape` changed.
    pub async fn built_template_with(
        &self,
        name: &str,
        shape: impl FnOnce(&mut crate::template_spec::TemplateSpec),
    ) -> TemplateRecord {
        let layer = self.dir.path().join("layers").join(name);
        std::fs::create_dir_all(&layer).expect("layer dir");
        let mut spec = crate::template_spec::TemplateSpec {
            layers: vec![layer],
            env: [("FROM_TEMPLATE".to_owned(), "1".to_owned())].into(),
            ..Default::default()
        };
        shape(&mut spec);
        let now = crate::clock::now();
        let record = TemplateRecord {
            id: format!("tpl-{name}"),
            name: name.to_owned(),
            display_name: name.to_owned(),
            description: None,
            category: None,
            language: None,
            resources: Resources {
                vcpu: 1,
                memory_mb: 512,
                disk_mb: 1024,
            },
            status: TemplateStatus::Active,
            is_public: false,
            error_message: None,
            created_at: now,
            updated_at: now,
            tenant: Some(TENANT.to_owned()),
            spec: Some(serde_json::to_string(&spec).expect("spec JSON")),
            build_started_at: Some(now),
            build_finished_at: Some(now),
        };
        let spec_json = record.spec.clone().unwrap_or_default();
        self.store
            .begin_template_build(&record, now)
            .await
            .expect("template record");
        self.store
            .finish_template_build(&record.id, Ok(&spec_json), now)
            .await
            .expect("template built");
        record
    }

    /// Marks the built-in template `name` as built in the cache (an empty root file system),
    /// so that sandboxes and warm pools of it start without debootstrap.
    pub fn builtin_ready(&self, name: &str) -> PathBuf {
        let recipe = builtin_recipes()
            .into_iter()
            .find(|r| r.name == name)
            .expect("a built-in recipe");
        let root = self.dir.path().join("cache/templates").join(name);
        std::fs::create_dir_all(root.join("rootfs")).expect("rootfs dir");
        std::fs::write(root.join("READY"), recipe_hash(&recipe)).expect("READY marker");
        root.join("rootfs")
    }
}
