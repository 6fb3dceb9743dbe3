//! Store behaviour, every test on both backends: a real SQLite file and a real PostgreSQL
//! server (`test_postgres`).

use warren_core::{Resources, SandboxId, SandboxStatus, Tier};

use crate::{AuditEvent, AuditQuery, KeyEnvironment, KeySpec, NewSandbox, NodeRecord, Role, Store};

/// Runs each named test once per backend: `sqlite::name` and `postgres::name`.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test]
            async fn $name() {
                super::$name(super::Db::sqlite()).await
            })*
        }
        mod postgres {
            $(#[tokio::test]
            async fn $name() {
                if let Some(db) = super::Db::postgres().await {
                    super::$name(db).await
                }
            })*
        }
    };
}

on_both_backends!(
    creates_and_claims_stay_within_quota_even_all_at_once,
    keys_are_stored_hashed_and_can_be_revoked,
    rotation_keeps_the_old_key_for_the_grace_period_and_expiry_ends_keys,
    tenants_see_only_their_sandboxes_and_usage,
    audit_is_queryable_and_purged_by_age,
    pages_cover_every_sandbox_exactly_once,
    expiry_finds_only_due_live_sandboxes,
    state_survives_reopen,
    runtime_handles_are_kept_until_the_sandbox_ends,
    nodes_join_report_drain_and_are_listed,
    sandboxes_are_found_by_node_and_region,
    the_first_stored_setting_wins,
    one_control_plane_leads_the_periodic_jobs,
    fork_snapshots_are_unused_once_no_copy_runs,
    an_idempotency_key_is_claimed_once_per_tenant_and_day,
    e2b_shaped_keys_work_and_keep_their_shape_when_rotated,
    volumes_are_named_once_per_tenant_and_seen_only_by_it,
    a_store_a_newer_release_migrated_is_refused_and_left_as_it_was,
);

/// Where a test's store lives.
enum Db {
    Sqlite(tempfile::TempDir),
    Postgres(String),
}

impl Db {
    fn sqlite() -> Self {
        Self::Sqlite(tempfile::tempdir().expect("tempdir"))
    }

    async fn postgres() -> Option<Self> {
        let url = crate::test_postgres::database().await;
        if url.is_none() && std::env::var_os("WARREN_REQUIRE_POSTGRES").is_some() {
            panic!("WARREN_REQUIRE_POSTGRES is set but no PostgreSQL server could be started");
        }
        url.map(Self::Postgres)
    }

    /// Opens the store (again: every call is a new connection pool, like a restarted server).
    async fn open(&self) -> Store {
        self.try_open().await.expect("open")
    }

    async fn try_open(&self) -> Result<Store, crate::StoreError> {
        match self {
            Self::Sqlite(dir) => Store::open(dir.path()).await,
            Self::Postgres(url) => Store::connect(url).await,
        }
    }
}

fn spec<'a>(name: &'a str, tenant: &'a str) -> KeySpec<'a> {
    KeySpec {
        name,
        tenant,
        role: Role::Member,
        environment: KeyEnvironment::Live,
        expires_at: None,
    }
}

const RES: Resources = Resources {
    vcpu: 1,
    memory_mb: 512,
    disk_mb: 1024,
};

async fn add(store: &Store, now: i64, timeout: Option<i64>) -> SandboxId {
    add_for(store, "default", now, timeout).await
}

async fn add_for(store: &Store, tenant: &str, now: i64, timeout: Option<i64>) -> SandboxId {
    add_copy(store, tenant, now, timeout, None).await
}

/// A sandbox of `RES` on this control plane's node, with nothing optional set.
fn sandbox_of<'a>(id: &'a SandboxId, tenant: &'a str) -> NewSandbox<'a> {
    NewSandbox {
        metadata: None,
        egress: None,
        on_timeout: crate::OnTimeout::Kill,
        snapshot_id: None,
        secret_bindings: None,
        id,
        template_id: "2",
        template_name: "code-interpreter",
        resources: RES,
        internet_access: false,
        timeout_seconds: None,
        key_id: None,
        tenant,
        isolation: Tier::Namespaces,
        node_id: None,
        region: None,
    }
}

/// A running sandbox, a copy of `snapshot` if one is named.
async fn add_copy(
    store: &Store,
    tenant: &str,
    now: i64,
    timeout: Option<i64>,
    snapshot: Option<&str>,
) -> SandboxId {
    let id = SandboxId::generate();
    store
        .insert_sandbox(
            NewSandbox {
                snapshot_id: snapshot,
                timeout_seconds: timeout,
                ..sandbox_of(&id, tenant)
            },
            now,
        )
        .await
        .expect("insert");
    store
        .set_sandbox_status(&id, SandboxStatus::Running, now)
        .await
        .expect("status");
    id
}

async fn keys_are_stored_hashed_and_can_be_revoked(db: Db) {
    let store = db.open().await;
    let key = store
        .create_api_key(&spec("ci", "acme"), 1)
        .await
        .expect("create");
    assert!(key.secret.starts_with("wrn_live_") && key.secret.len() == 9 + 64);
    assert!(store
        .find_key(&key.secret, 1)
        .await
        .expect("find")
        .is_some());
    assert!(store
        .find_key("wrn_live_nonsense", 1)
        .await
        .expect("find")
        .is_none());
    match &db {
        Db::Sqlite(dir) => {
            let file = std::fs::read(dir.path().join("warren.db")).expect("db file");
            let wal = std::fs::read(dir.path().join("warren.db-wal")).unwrap_or_default();
            let needle = key.secret.as_bytes();
            for bytes in [&file, &wal] {
                assert!(
                    !bytes.windows(needle.len()).any(|w| w == needle),
                    "plaintext key found on disk"
                );
            }
        }
        Db::Postgres(_) => {
            let stored: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM api_keys WHERE id = $1 OR name = $1 OR prefix = $1 OR hash = $1",
            )
            .bind(&key.secret)
            .fetch_one(&store.pool)
            .await
            .expect("query");
            assert_eq!(stored, 0, "plaintext key stored");
        }
    }
    // another tenant cannot revoke it
    assert!(!store
        .revoke_key(&key.record.id, Some("other"), 2)
        .await
        .expect("revoke"));
    assert!(store
        .revoke_key(&key.record.id, Some("acme"), 2)
        .await
        .expect("revoke"));
    assert!(store
        .find_key(&key.secret, 2)
        .await
        .expect("find")
        .is_none());
}

async fn rotation_keeps_the_old_key_for_the_grace_period_and_expiry_ends_keys(db: Db) {
    let store = db.open().await;
    let old = store
        .create_api_key(&spec("app", "acme"), 100)
        .await
        .expect("create");
    let new = store
        .rotate_key(&old.record.id, Some("acme"), 60, 100)
        .await
        .expect("rotate")
        .expect("rotated");
    assert_eq!(new.record.tenant, "acme");
    assert!(store
        .find_key(&old.secret, 159)
        .await
        .expect("find")
        .is_some());
    assert!(store
        .find_key(&old.secret, 160)
        .await
        .expect("find")
        .is_none());
    assert!(store
        .find_key(&new.secret, 1000)
        .await
        .expect("find")
        .is_some());

    let mut short = spec("short", "acme");
    short.expires_at = Some(200);
    short.environment = KeyEnvironment::Test;
    let k = store.create_api_key(&short, 100).await.expect("create");
    assert!(k.secret.starts_with("wrn_test_"));
    assert!(store
        .find_key(&k.secret, 199)
        .await
        .expect("find")
        .is_some());
    assert!(store
        .find_key(&k.secret, 200)
        .await
        .expect("find")
        .is_none());
}

async fn tenants_see_only_their_sandboxes_and_usage(db: Db) {
    let store = db.open().await;
    let a = add_for(&store, "a", 1, None).await;
    let _b = add_for(&store, "b", 1, None).await;
    let page = store
        .list_sandboxes("a", None, None, None, 100)
        .await
        .expect("list");
    assert_eq!(
        page.items.iter().map(|s| s.id.clone()).collect::<Vec<_>>(),
        vec![a]
    );
    let usage = store.tenant_usage("b").await.expect("usage");
    assert_eq!((usage.sandboxes, usage.vcpu, usage.memory_mb), (1, 1, 512));
}

/// A sandbox of `RES` for `tenant`, recorded only within `quota`.
async fn add_within(store: &Store, tenant: &str, quota: crate::Quota) -> Option<SandboxId> {
    let id = SandboxId::generate();
    let new = sandbox_of(&id, tenant);
    let recorded = store.insert_sandbox_within(new, quota, 1).await;
    recorded.expect("insert").map(|r| r.id)
}

async fn creates_and_claims_stay_within_quota_even_all_at_once(db: Db) {
    let store = db.open().await;
    let three = crate::Quota {
        sandboxes: 3,
        vcpu: 100,
        memory_mb: 1 << 20,
    };
    // Twenty at once (on PostgreSQL over several connections): exactly three get in.
    let mut tries = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let store = store.clone();
        tries.spawn(async move { add_within(&store, "t", three).await });
    }
    let got: Vec<Option<SandboxId>> = tries.join_all().await;
    assert_eq!(got.iter().flatten().count(), 3, "{got:?}");
    assert_eq!(store.tenant_usage("t").await.expect("usage").sandboxes, 3);
    // Other tenants have their own count; memory is checked as well as the number.
    assert!(add_within(&store, "u", three).await.is_some());
    let small = crate::Quota {
        memory_mb: u64::from(RES.memory_mb) * 2 - 1,
        ..three
    };
    assert!(add_within(&store, "v", small).await.is_some());
    assert!(add_within(&store, "v", small).await.is_none());
    // An ended sandbox makes room again.
    let first = got.iter().flatten().next().expect("one got in").clone();
    store
        .end_sandbox(&first, SandboxStatus::Stopped, None, 2)
        .await
        .expect("end");
    assert!(add_within(&store, "t", three).await.is_some());
    // A warm sandbox is claimed only within the claiming tenant's quota.
    let warm = add_for(&store, "warren:pool", 1, None).await;
    let claim = |tenant| crate::ClaimPooled {
        tenant,
        key_id: None,
        timeout_seconds: None,
        internet_access: true,
        metadata: None,
        on_timeout: crate::OnTimeout::Kill,
    };
    let full = store
        .claim_pooled_sandbox(&warm, "warren:pool", claim("t"), three, 3)
        .await
        .expect("claim");
    assert!(full.is_none(), "t is at its quota");
    let taken = store
        .claim_pooled_sandbox(&warm, "warren:pool", claim("w"), three, 3)
        .await
        .expect("claim")
        .expect("w has room");
    assert_eq!(taken.tenant, "w");
}

async fn audit_is_queryable_and_purged_by_age(db: Db) {
    let store = db.open().await;
    let ev = |at: i64, action: &str| AuditEvent {
        at,
        tenant: "acme".into(),
        action: action.into(),
        outcome: "ok".into(),
        ..Default::default()
    };
    store
        .append_audit(&[
            ev(1_000, "execute"),
            ev(2_000, "files.write"),
            ev(3_000, "execute"),
        ])
        .await
        .expect("append");
    let q = AuditQuery {
        tenant: Some("acme".into()),
        action: Some("execute".into()),
        limit: 1,
        ..Default::default()
    };
    let (page, more) = store.query_audit(&q).await.expect("query");
    assert_eq!((page.len(), more, page[0].at), (1, true, 1_000));
    let other = AuditQuery {
        tenant: Some("other".into()),
        limit: 10,
        ..Default::default()
    };
    assert!(store.query_audit(&other).await.expect("query").0.is_empty());
    assert_eq!(store.purge_audit(2_500).await.expect("purge"), 2);
    let all = AuditQuery {
        limit: 10,
        ..Default::default()
    };
    assert_eq!(store.query_audit(&all).await.expect("query").0.len(), 1);
}

async fn pages_cover_every_sandbox_exactly_once(db: Db) {
    let store = db.open().await;
    let mut all = Vec::new();
    for i in 0..7 {
        all.push(add(&store, i, None).await);
    }
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = store
            .list_sandboxes("default", None, None, cursor.as_deref(), 3)
            .await
            .expect("list");
        seen.extend(page.items.into_iter().map(|s| s.id));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(seen, all);
}

async fn expiry_finds_only_due_live_sandboxes(db: Db) {
    let store = db.open().await;
    let due = add(&store, 100, Some(10)).await;
    let later = add(&store, 100, Some(1000)).await;
    let _forever = add(&store, 100, None).await;
    let expired: Vec<_> = store
        .expired_sandboxes(110)
        .await
        .expect("expired")
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(expired, vec![due.clone()]);
    assert_eq!(store.next_expiry().await.expect("next"), Some(110));
    store
        .set_sandbox_status(&due, SandboxStatus::Stopped, 111)
        .await
        .expect("stop");
    assert_eq!(store.next_expiry().await.expect("next"), Some(1100));
    store
        .set_sandbox_timeout(&later, 5, 200)
        .await
        .expect("timeout");
    let s = store
        .get_sandbox(&later)
        .await
        .expect("get")
        .expect("present");
    assert_eq!(s.expires_at, Some(205));
}

async fn state_survives_reopen(db: Db) {
    let id = {
        let store = db.open().await;
        add(&store, 5, None).await
    };
    let store = db.open().await;
    let s = store.get_sandbox(&id).await.expect("get").expect("present");
    assert_eq!(s.status, SandboxStatus::Running);
    assert_eq!(store.live_sandboxes().await.expect("live").len(), 1);
}

/// A downgrade: a newer release migrated the store past what this build knows (here, one
/// migration more and its release recorded). Opening it fails before anything is written, naming
/// both releases; once that migration is gone again (the newer release's backup restored), the
/// store opens with its sandboxes.
async fn a_store_a_newer_release_migrated_is_refused_and_left_as_it_was(db: Db) {
    let store = db.open().await;
    let id = add(&store, 5, None).await;
    let known = crate::known_schema(store.backend());
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES ($1, 'from the future', TRUE, $2, 1)",
    )
    .bind(known + 1)
    .bind(vec![0u8; 48])
    .execute(&store.pool)
    .await
    .expect("add a newer migration");
    sqlx::query("UPDATE store_release SET version = '9.9.9' WHERE id = 1")
        .execute(&store.pool)
        .await
        .expect("record a newer release");
    let message = match db.try_open().await {
        Err(e @ crate::StoreError::NewerRelease { .. }) => e.to_string(),
        Err(e) => panic!("refused for another reason: {e}"),
        Ok(_) => panic!("a store of a newer release was opened"),
    };
    assert!(message.contains("Warren 9.9.9"), "{message}");
    assert!(
        message.contains(&format!("this Warren {}", crate::RELEASE)),
        "{message}"
    );
    assert!(
        message.contains("downgrades are not supported"),
        "{message}"
    );
    assert_eq!(
        crate::release::last_release(&store.pool).await.as_deref(),
        Some("9.9.9"),
        "the refused open wrote to the store"
    );
    sqlx::query("DELETE FROM _sqlx_migrations WHERE version = $1")
        .bind(known + 1)
        .execute(&store.pool)
        .await
        .expect("restore");
    let store = db.open().await;
    assert!(store.get_sandbox(&id).await.expect("get").is_some());
    assert_eq!(
        crate::release::last_release(&store.pool).await.as_deref(),
        Some(crate::RELEASE)
    );
}

async fn runtime_handles_are_kept_until_the_sandbox_ends(db: Db) {
    let store = db.open().await;
    let id = add(&store, 10, Some(60)).await;
    store
        .set_sandbox_running(&id, "{\"tier\":\"namespaces\"}", Some(41234), 11)
        .await
        .expect("record");
    let store = db.open().await;
    let live = store.live_sandboxes().await.expect("live");
    assert_eq!(live.len(), 1);
    assert_eq!(
        live[0].runtime_handle.as_deref(),
        Some("{\"tier\":\"namespaces\"}")
    );
    assert_eq!(live[0].listen_port, Some(41234));
    assert_eq!(live[0].status, SandboxStatus::Running);
    assert_eq!(live[0].expires_at, Some(70));
    // A restarted server that had to give it another port records that one.
    store
        .record_sandbox_runtime(&id, "{\"tier\":\"namespaces\"}", Some(41235), 12)
        .await
        .expect("record");
    let s = store.get_sandbox(&id).await.expect("get").expect("present");
    assert_eq!(s.listen_port, Some(41235));
    store
        .end_sandbox(
            &id,
            SandboxStatus::Stopped,
            Some("its processes had ended"),
            12,
        )
        .await
        .expect("end");
    let s = store.get_sandbox(&id).await.expect("get").expect("present");
    assert_eq!(s.status, SandboxStatus::Stopped);
    assert_eq!(s.status_reason.as_deref(), Some("its processes had ended"));
    assert!(
        s.runtime_handle.is_none(),
        "a stopped sandbox keeps no handle"
    );
    assert!(store.live_sandboxes().await.expect("live").is_empty());
}

fn node(id: &str, now_ms: i64) -> NodeRecord {
    NodeRecord {
        id: id.to_owned(),
        name: format!("name-{id}"),
        api_url: format!("http://{id}:7070"),
        public_host: id.to_owned(),
        labels: "{\"region\":\"eu\"}".to_owned(),
        report: "{}".to_owned(),
        state: "active".to_owned(),
        joined_at: now_ms / 1000,
        last_seen: now_ms,
        ca_pem: Some("-----BEGIN CERTIFICATE-----".to_owned()),
    }
}

async fn nodes_join_report_drain_and_are_listed(db: Db) {
    let store = db.open().await;
    store
        .join_node(&node("n1", 1000), "h1")
        .await
        .expect("join");
    store
        .join_node(&node("n2", 1000), "h2")
        .await
        .expect("join");
    assert!(store
        .node_heartbeat("n1", "{\"x\":1}", 2000)
        .await
        .expect("beat"));
    assert!(
        !store.node_heartbeat("nx", "{}", 2000).await.expect("beat"),
        "unknown node"
    );
    assert!(store.set_node_state("n2", "draining").await.expect("drain"));
    // joining again (a restart) takes a new credential but keeps draining
    store
        .join_node(&node("n2", 3000), "h2b")
        .await
        .expect("rejoin");
    let nodes = store.list_nodes().await.expect("list");
    assert_eq!(nodes.len(), 2);
    assert_eq!(nodes[0].report, "{\"x\":1}");
    assert_eq!(nodes[0].last_seen, 2000);
    assert_eq!(nodes[1].state, "draining");
    assert_eq!(
        store.node_key_hash("n2").await.expect("hash").as_deref(),
        Some("h2b")
    );
    assert!(store.remove_node("n1").await.expect("remove"));
    assert!(store.get_node("n1").await.expect("get").is_none());
}

async fn sandboxes_are_found_by_node_and_region(db: Db) {
    let store = db.open().await;
    let mut ids = Vec::new();
    for (node_id, region) in [
        (None, None),
        (Some("n1"), Some("eu")),
        (Some("n2"), Some("us")),
    ] {
        let id = SandboxId::generate();
        store
            .insert_sandbox(
                NewSandbox {
                    node_id,
                    region,
                    ..sandbox_of(&id, "default")
                },
                1,
            )
            .await
            .expect("insert");
        ids.push(id);
    }
    let on = |v: Vec<crate::SandboxRecord>| v.into_iter().map(|s| s.id).collect::<Vec<_>>();
    assert_eq!(
        on(store.live_sandboxes_on(None).await.expect("own")),
        vec![ids[0].clone()]
    );
    assert_eq!(
        on(store.live_sandboxes_on(Some("n2")).await.expect("n2")),
        vec![ids[2].clone()]
    );
    let eu = store
        .list_sandboxes("default", None, Some("eu"), None, 10)
        .await
        .expect("eu");
    assert_eq!(on(eu.items), vec![ids[1].clone()]);
    let s = store
        .get_sandbox(&ids[2])
        .await
        .expect("get")
        .expect("present");
    assert_eq!(
        (s.node_id.as_deref(), s.region.as_deref()),
        (Some("n2"), Some("us"))
    );
}

async fn the_first_stored_setting_wins(db: Db) {
    let store = db.open().await;
    assert_eq!(
        store.setting_or_insert("k", "first").await.expect("set"),
        "first"
    );
    assert_eq!(
        store.setting_or_insert("k", "second").await.expect("set"),
        "first"
    );
}

async fn one_control_plane_leads_the_periodic_jobs(db: Db) {
    let store = db.open().await;
    let mut lead = store
        .try_lead()
        .await
        .expect("lead")
        .expect("the first one leads");
    assert!(lead.still_held().await);
    if store.backend() == crate::Backend::Postgres {
        let other = db.open().await;
        assert!(
            other.try_lead().await.expect("try").is_none(),
            "a second leader"
        );
        drop(lead);
        // the lock goes with its connection, which closes when the lead is dropped
        let mut taken = None;
        for _ in 0..50 {
            if let Some(l) = other.try_lead().await.expect("try") {
                taken = Some(l);
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert!(taken.is_some(), "the lead did not pass on");
    }
}

fn snapshot(id: &str, name: Option<&str>, ephemeral: bool, at: i64) -> crate::SnapshotRecord {
    crate::SnapshotRecord {
        id: id.into(),
        tenant: "default".into(),
        source_sandbox_id: "src".into(),
        template_id: "2".into(),
        template_name: "code-interpreter".into(),
        isolation: Tier::Namespaces,
        spec: "{}".into(),
        layer_dir: format!("/data/snapshots/{id}/layer"),
        size_bytes: 4096,
        created_at: at,
        name: name.map(str::to_owned),
        ephemeral,
    }
}

async fn fork_snapshots_are_unused_once_no_copy_runs(db: Db) {
    let store = db.open().await;
    store
        .insert_snapshot(&snapshot("snap_named", Some("kept"), false, 100))
        .await
        .expect("insert");
    store
        .insert_snapshot(&snapshot("snap_fork", None, true, 100))
        .await
        .expect("insert");
    let got = store
        .get_snapshot("snap_named", "default")
        .await
        .expect("get")
        .expect("found");
    assert_eq!(got.name.as_deref(), Some("kept"));
    assert!(!got.ephemeral);
    // A copy runs from the fork's snapshot: not unused.
    let copy = add_copy(&store, "default", 101, None, Some("snap_fork")).await;
    assert!(store.ephemeral_unused(200).await.expect("query").is_empty());
    store
        .end_sandbox(&copy, SandboxStatus::Stopped, None, 150)
        .await
        .expect("end");
    // Only fork snapshots, and only those taken before the given time.
    assert!(store.ephemeral_unused(100).await.expect("query").is_empty());
    let unused: Vec<String> = store
        .ephemeral_unused(200)
        .await
        .expect("query")
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(unused, ["snap_fork"]);
}

async fn an_idempotency_key_is_claimed_once_per_tenant_and_day(db: Db) {
    use crate::KeyClaim;
    let store = db.open().await;
    let claim = |tenant: &'static str, digest: &'static str, now: i64| {
        let store = store.clone();
        async move {
            store
                .claim_idempotency_key(tenant, "k-1", digest, now, now - 86_400)
                .await
                .expect("claim")
        }
    };
    assert_eq!(claim("acme", "d1", 1000).await, KeyClaim::Claimed);
    // While the first request runs, a retry sees it without a sandbox; another tenant's key is
    // its own.
    assert_eq!(
        claim("acme", "d1", 1001).await,
        KeyClaim::Taken {
            request_sha256: "d1".into(),
            sandbox_id: None
        }
    );
    assert_eq!(claim("other", "d1", 1001).await, KeyClaim::Claimed);
    store
        .finish_idempotency_key("acme", "k-1", "sb1")
        .await
        .expect("finish");
    assert_eq!(
        claim("acme", "d2", 1002).await,
        KeyClaim::Taken {
            request_sha256: "d1".into(),
            sandbox_id: Some("sb1".into())
        }
    );
    // A day later the key is free again; a released key at once.
    assert_eq!(claim("acme", "d3", 1000 + 86_401).await, KeyClaim::Claimed);
    store
        .release_idempotency_key("acme", "k-1")
        .await
        .expect("release");
    assert_eq!(claim("acme", "d4", 1000 + 86_402).await, KeyClaim::Claimed);
    assert_eq!(
        store
            .remove_idempotency_keys_before(i64::MAX)
            .await
            .expect("sweep"),
        2
    );
}

async fn e2b_shaped_keys_work_and_keep_their_shape_when_rotated(db: Db) {
    let store = db.open().await;
    let key = store
        .create_api_key_shaped(&spec("agents", "acme"), crate::KeyShape::E2b, 1)
        .await
        .expect("create");
    let hex = key.secret.strip_prefix("e2b_").expect("e2b_ label");
    assert!(
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    );
    assert_eq!(key.record.masked().len(), "e2b_".len() + 4 + "…".len());
    assert!(store
        .find_key(&key.secret, 2)
        .await
        .expect("find")
        .is_some());
    let new = store
        .rotate_key(&key.record.id, Some("acme"), 0, 3)
        .await
        .expect("rotate")
        .expect("rotated");
    assert!(new.secret.starts_with("e2b_"), "rotation keeps the shape");
}

async fn volumes_are_named_once_per_tenant_and_seen_only_by_it(db: Db) {
    let store = db.open().await;
    let vol = |id: &str, tenant: &str, name: &str, at| crate::VolumeRecord {
        id: id.into(),
        tenant: tenant.into(),
        name: name.into(),
        quota_bytes: 1 << 30,
        created_at: at,
    };
    assert!(store
        .insert_volume(&vol("v1", "acme", "data", 10))
        .await
        .expect("insert"));
    assert!(!store
        .insert_volume(&vol("v2", "acme", "data", 11))
        .await
        .expect("same name"));
    assert!(store
        .insert_volume(&vol("v3", "other", "data", 12))
        .await
        .expect("other tenant"));
    assert!(store
        .insert_volume(&vol("v4", "acme", "models", 13))
        .await
        .expect("second"));
    let names: Vec<String> = store
        .list_volumes("acme")
        .await
        .expect("list")
        .into_iter()
        .map(|v| v.name)
        .collect();
    assert_eq!(names, ["data", "models"]);
    assert_eq!(
        store
            .find_volume("acme", "data")
            .await
            .expect("by name")
            .map(|v| v.id),
        Some("v1".into())
    );
    assert_eq!(
        store
            .find_volume("acme", "v4")
            .await
            .expect("by id")
            .map(|v| v.name),
        Some("models".into())
    );
    assert_eq!(
        store.find_volume("acme", "v3").await.expect("not theirs"),
        None
    );
    use crate::VolumeDeleted;
    assert_eq!(
        store.delete_volume("acme", "v3").await.expect("not theirs"),
        VolumeDeleted::NotFound
    );
    // Mounted by a live sandbox: refused, naming it; once the sandbox ended, deleted.
    let user = add_for(&store, "acme", 20, None).await;
    let mount = crate::MountRecord {
        volume_id: "v1".into(),
        name: Some("data".into()),
        path: "/mnt/data".into(),
        read_only: true,
    };
    store
        .record_mounts(user.as_str(), std::slice::from_ref(&mount))
        .await
        .expect("mounts");
    assert_eq!(
        store.mounts_of(user.as_str()).await.expect("mounts of"),
        std::slice::from_ref(&mount)
    );
    assert_eq!(
        store.delete_volume("acme", "v1").await.expect("in use"),
        VolumeDeleted::InUse(vec![user.as_str().to_owned()])
    );
    store
        .end_sandbox(&user, SandboxStatus::Deleted, None, 30)
        .await
        .expect("end");
    assert_eq!(
        store.delete_volume("acme", "v1").await.expect("delete"),
        VolumeDeleted::Deleted
    );
    assert_eq!(store.find_volume("acme", "data").await.expect("gone"), None);
    // The ended sandbox still says where it had the volume; the name is gone with it.
    assert_eq!(
        store.mounts_of(user.as_str()).await.expect("mounts of")[0].name,
        None
    );
}
