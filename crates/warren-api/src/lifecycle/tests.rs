//! The lifecycle's branches on a fake node over a real SQLite store: what a user relies on when
//! a create is admitted or refused, a warm sandbox is taken, a snapshot is copied, a server
//! restarts, a sandbox dies or expires. No root needed.

use std::sync::Arc;
use std::time::Duration;

use warren_core::{SandboxId, SandboxStatus, Tier};
use warren_wire::control::CreateSandboxRequest;

use super::{LifecycleConfig, LifecycleError, PoolTarget, POOL_TENANT};
use crate::cluster::Cluster;
use crate::lifecycle::{Lifecycle, TemplateRoots};
use crate::nodes::fake::{Call, FakeNode};
use crate::nodes::NodeHandle;
use crate::testing::{Harness, Setup, TENANT};

fn create_of(template: &str) -> CreateSandboxRequest {
    CreateSandboxRequest {
        template_name: Some(template.to_owned()),
        ..Default::default()
    }
}

/// A sandbox of the harness's built template `py`, created by its key.
async fn create_py(h: &Harness) -> warren_store::SandboxRecord {
    h.lifecycle
        .create(create_of("py"), h.who())
        .await
        .expect("created")
}

fn quota(max_sandboxes: u64) -> Setup {
    let mut setup = Setup::default();
    setup.limits.max_sandboxes_per_tenant = max_sandboxes;
    setup
}

#[tokio::test]
async fn a_create_runs_the_template_with_the_callers_environment_on_top() {
    let h = Harness::new().await;
    h.built_template("py", None).await;
    let mut req = create_of("py");
    req.env_vars = Some([("MINE".to_owned(), "2".to_owned())].into());
    let rec = h.lifecycle.create(req, h.who()).await.expect("created");
    assert_eq!(rec.status, SandboxStatus::Running);
    assert_eq!(rec.isolation, Tier::Namespaces, "the node's default tier");
    let stored = h.lifecycle.get(&rec.id).await.expect("stored");
    assert_eq!(stored.status, SandboxStatus::Running);
    assert!(stored.runtime_handle.is_some(), "kept for live restore");
    let running = h.node.sandbox(&rec.id).expect("runs on the node");
    assert_eq!(running.owner, TENANT);
    assert_eq!(
        running.env_vars.get("FROM_TEMPLATE").map(String::as_str),
        Some("1")
    );
    assert_eq!(running.env_vars.get("MINE").map(String::as_str), Some("2"));
}

#[tokio::test]
async fn a_create_past_the_quota_is_refused_and_starts_nothing() {
    let h = Harness::with(quota(2)).await;
    h.built_template("py", None).await;
    for _ in 0..2 {
        h.lifecycle
            .create(create_of("py"), h.who())
            .await
            .expect("within the quota");
    }
    let refused = h.lifecycle.create(create_of("py"), h.who()).await;
    match refused {
        Err(LifecycleError::Quota(q)) => {
            assert_eq!((q.limit, q.current), (2, 2));
            assert_eq!(q.flag, "--max-sandboxes");
        }
        other => panic!("expected a quota error, got {other:?}"),
    }
    let starts = h
        .node
        .calls()
        .iter()
        .filter(|c| matches!(c, Call::Start(_)))
        .count();
    assert_eq!(starts, 2);
}

#[tokio::test]
async fn concurrent_creates_never_overshoot_the_quota() {
    let h = Harness::with(quota(5)).await;
    h.built_template("py", None).await;
    h.node.set_start_delay(Duration::from_millis(20));
    let creates = (0..20).map(|_| {
        let lifecycle = h.lifecycle.clone();
        let key_id = h.key_id.clone();
        tokio::spawn(async move {
            let who = super::Requester {
                tenant: TENANT,
                key_id: &key_id,
            };
            lifecycle.create(create_of("py"), who).await
        })
    });
    let results = futures_util::future::join_all(creates).await;
    let (ok, refused): (Vec<_>, Vec<_>) = results
        .into_iter()
        .map(|r| r.expect("task"))
        .partition(Result::is_ok);
    assert_eq!(ok.len(), 5);
    assert!(refused
        .iter()
        .all(|r| matches!(r, Err(LifecycleError::Quota(_)))));
    assert_eq!(h.node.sandboxes().len(), 5);
    let usage = h.store.tenant_usage(TENANT).await.expect("usage");
    assert_eq!(usage.sandboxes, 5);
}

#[tokio::test]
async fn a_create_without_a_lifetime_gets_the_default_and_none_may_pass_the_maximum() {
    let mut setup = Setup::default();
    setup.limits.default_timeout_seconds = Some(300);
    setup.limits.max_timeout_seconds = 600;
    let h = Harness::with(setup).await;
    h.built_template("py", None).await;
    let rec = create_py(&h).await;
    assert_eq!(rec.timeout_seconds, Some(300));
    let expires = rec.expires_at.expect("it expires");
    assert!((295..=305).contains(&(expires - rec.created_at)), "{rec:?}");

    let mut long = create_of("py");
    long.timeout_seconds = Some(601);
    match h.lifecycle.create(long, h.who()).await {
        Err(LifecycleError::Invalid(why)) => assert!(why.contains("--max-timeout"), "{why}"),
        other => panic!("expected a refusal naming --max-timeout, got {other:?}"),
    }
    match h.lifecycle.set_timeout(&rec.id, 601).await {
        Err(LifecycleError::Invalid(why)) => assert!(why.contains("--max-timeout"), "{why}"),
        other => panic!("expected a refusal naming --max-timeout, got {other:?}"),
    }
    let kept = h
        .lifecycle
        .set_timeout(&rec.id, 600)
        .await
        .expect("at the maximum");
    assert_eq!(kept.timeout_seconds, Some(600));
}

#[tokio::test]
async fn an_organization_may_have_its_own_longest_lifetime() {
    let mut setup = Setup::default();
    setup.limits.default_timeout_seconds = Some(3600);
    setup.limits.max_timeout_seconds = 7200;
    setup
        .limits
        .max_timeout_by_tenant
        .insert(TENANT.to_owned(), 120);
    setup
        .limits
        .max_timeout_by_tenant
        .insert("lab".to_owned(), 86_400);
    let h = Harness::with(setup).await;
    h.built_template("py", None).await;
    // No lifetime asked: the default, cut to the organization's longest.
    let rec = create_py(&h).await;
    assert_eq!(rec.timeout_seconds, Some(120));
    let mut long = create_of("py");
    long.timeout_seconds = Some(121);
    match h.lifecycle.create(long, h.who()).await {
        Err(LifecycleError::Invalid(why)) => {
            assert!(
                why.contains("--tenant-max-timeout") && why.contains("120"),
                "{why}"
            )
        }
        other => panic!("expected a refusal naming --tenant-max-timeout, got {other:?}"),
    }
    // Another organization may go past the server-wide maximum.
    h.builtin_ready("base");
    let mut day = create_of("base");
    day.timeout_seconds = Some(86_400);
    let lab_key = h.key_id.clone();
    let lab = super::Requester {
        tenant: "lab",
        key_id: &lab_key,
    };
    let rec = h.lifecycle.create(day, lab).await.expect("created");
    assert_eq!(rec.timeout_seconds, Some(86_400));
    assert!(h.lifecycle.set_timeout(&rec.id, 86_401).await.is_err());
}

#[tokio::test]
async fn a_start_that_fails_is_recorded_with_its_reason_and_frees_the_quota() {
    let h = Harness::with(quota(1)).await;
    h.built_template("py", None).await;
    h.node
        .fail_starts(Some("ready check (port) did not pass within 1000 ms"));
    let err = h
        .lifecycle
        .create(create_of("py"), h.who())
        .await
        .expect_err("the start fails");
    assert!(
        matches!(&err, LifecycleError::Unavailable(m) if m.contains("ready check")),
        "{err}"
    );
    let failed = h
        .store
        .list_sandboxes(TENANT, Some(SandboxStatus::Error), None, None, 10)
        .await
        .expect("list")
        .items
        .pop()
        .expect("recorded as error");
    assert!(failed
        .status_reason
        .as_deref()
        .is_some_and(|r| r.starts_with("it failed to start: ")));
    h.node.fail_starts(None);
    h.lifecycle
        .create(create_of("py"), h.who())
        .await
        .expect("the failed one no longer counts");
}

#[tokio::test]
async fn a_machine_short_of_memory_refuses_before_recording_anything() {
    let h = Harness::new().await;
    h.built_template("py", None).await;
    h.node.set_no_room(true);
    let err = h.lifecycle.create(create_of("py"), h.who()).await;
    assert!(matches!(err, Err(LifecycleError::Unavailable(m)) if m.contains("short of memory")));
    for status in [None, Some(SandboxStatus::Error)] {
        let page = h.store.list_sandboxes(TENANT, status, None, None, 10).await;
        assert!(page.expect("list").items.is_empty());
    }
}

#[tokio::test]
async fn tiers_are_chosen_per_sandbox_checked_and_can_be_forbidden() {
    let h = Harness::new().await;
    h.built_template("py", None).await;
    let mut req = create_of("py");
    req.isolation = Some("gvisor".into());
    let rec = h
        .lifecycle
        .create(req, h.who())
        .await
        .expect("gvisor is there");
    assert_eq!(rec.isolation, Tier::Gvisor);
    assert_eq!(h.node.sandbox(&rec.id).map(|s| s.tier), Some(Tier::Gvisor));
    for (asked, says) in [
        ("microvm", "not available"),
        ("firecracker", "not available"),
    ] {
        let mut req = create_of("py");
        req.isolation = Some(asked.into());
        match h.lifecycle.create(req, h.who()).await {
            Err(LifecycleError::Invalid(m)) => {
                assert!(m.contains(says) && m.contains("namespaces, gvisor"), "{m}")
            }
            other => panic!("{asked}: expected a 400, got {other:?}"),
        }
    }
    // A template may carry its tier.
    h.built_template("secure", Some(Tier::Gvisor)).await;
    let rec = h
        .lifecycle
        .create(create_of("secure"), h.who())
        .await
        .expect("created");
    assert_eq!(rec.isolation, Tier::Gvisor);

    let strict = Harness::with(Setup {
        allow_isolation_override: false,
        ..Setup::default()
    })
    .await;
    strict.built_template("py", None).await;
    let mut req = create_of("py");
    req.isolation = Some("gvisor".into());
    assert!(matches!(
        strict.lifecycle.create(req, strict.who()).await,
        Err(LifecycleError::TierChoiceDisabled)
    ));
}

#[tokio::test]
async fn another_tenants_template_and_sandbox_are_not_found() {
    let h = Harness::new().await;
    h.built_template("py", None).await;
    let other = super::Requester {
        tenant: "globex",
        key_id: "k",
    };
    assert!(matches!(
        h.lifecycle.create(create_of("py"), other).await,
        Err(LifecycleError::TemplateNotFound(_))
    ));
    let rec = create_py(&h).await;
    assert!(matches!(
        h.lifecycle.get_owned(&rec.id, "globex").await,
        Err(LifecycleError::SandboxNotFound)
    ));
}

#[tokio::test]
async fn pause_resume_and_kill_follow_the_status_machine() {
    let h = Harness::new().await;
    h.built_template("py", None).await;
    let rec = create_py(&h).await;
    let paused = h.lifecycle.pause(&rec.id).await.expect("paused");
    assert_eq!(paused.status, SandboxStatus::Paused);
    assert!(h.node.sandbox(&rec.id).is_some_and(|s| s.paused));
    h.lifecycle
        .pause(&rec.id)
        .await
        .expect("pausing twice is a no-op");
    let resumed = h.lifecycle.resume(&rec.id).await.expect("resumed");
    assert_eq!(resumed.status, SandboxStatus::Running);
    let usage = h.lifecycle.usage(&resumed).await.expect("measured");
    assert_eq!(usage.processes, 2);

    let killed = h.lifecycle.kill(&rec.id).await.expect("killed");
    assert_eq!(killed.status, SandboxStatus::Deleted);
    assert!(h.node.sandbox(&rec.id).is_none(), "gone from the node");
    assert_eq!(
        h.lifecycle.kill(&rec.id).await.expect("twice").status,
        SandboxStatus::Deleted
    );
    match h.lifecycle.resume(&rec.id).await {
        Err(LifecycleError::InvalidState { action, status }) => {
            assert_eq!((action, status), ("resume", SandboxStatus::Deleted))
        }
        other => panic!("expected 409, got {other:?}"),
    }
}

#[tokio::test]
async fn a_sandbox_the_node_lost_cannot_be_paused_and_its_exit_is_recorded() {
    let h = Harness::new().await;
    h.built_template("py", None).await;
    let rec = create_py(&h).await;
    h.node.lose(&rec.id);
    assert!(matches!(
        h.lifecycle.pause(&rec.id).await,
        Err(LifecycleError::InvalidState {
            action: "pause",
            ..
        })
    ));
    h.lifecycle
        .on_node_event(warren_node::NodeEvent::Exited {
            id: rec.id.clone(),
            code: 137,
        })
        .await;
    let after = h.lifecycle.get(&rec.id).await.expect("kept");
    assert_eq!(after.status, SandboxStatus::Error);
    assert_eq!(
        after.status_reason.as_deref(),
        Some("its init process exited on its own (status 137)")
    );
}

#[tokio::test]
async fn a_sandbox_of_a_lost_node_is_marked_when_the_node_reports_it() {
    let h = Harness::new().await;
    h.built_template("py", None).await;
    let id = SandboxId::generate();
    h.store
        .insert_sandbox(
            warren_store::NewSandbox {
                id: &id,
                template_id: "tpl-py",
                template_name: "py",
                resources: warren_core::Resources {
                    vcpu: 1,
                    memory_mb: 512,
                    disk_mb: 1024,
                },
                internet_access: true,
                timeout_seconds: None,
                key_id: None,
                tenant: TENANT,
                isolation: Tier::Namespaces,
                node_id: Some("node-b"),
                region: Some("eu"),
                metadata: None,
                egress: None,
                on_timeout: warren_store::OnTimeout::Kill,
                snapshot_id: None,
                secret_bindings: None,
            },
            crate::clock::now(),
        )
        .await
        .expect("recorded");
    h.store
        .set_sandbox_running(&id, "{}", Some(1), crate::clock::now())
        .await
        .expect("running");
    // Another node's word about it changes nothing.
    h.lifecycle.on_remote_exit("node-c", &id, -1).await;
    assert_eq!(
        h.lifecycle.get(&id).await.expect("kept").status,
        SandboxStatus::Running
    );
    h.lifecycle.on_remote_exit("node-b", &id, -1).await;
    let after = h.lifecycle.get(&id).await.expect("kept");
    assert_eq!(after.status, SandboxStatus::Error);
    assert_eq!(
        after.status_reason.as_deref(),
        Some("it did not survive a restart of its node node-b")
    );
    // The node left the cluster: killing it still records the end.
    assert_eq!(
        h.lifecycle.kill(&id).await.expect("kill").status,
        SandboxStatus::Error,
        "an ended sandbox stays as it ended"
    );
}

#[tokio::test]
async fn a_snapshot_is_copied_onto_its_layer_and_kept_while_copies_run() {
    let h = Harness::new().await;
    let template = h.built_template("py", None).await;
    let source = create_py(&h).await;
    let snap = h
        .lifecycle
        .snapshot(&source.id, TENANT)
        .await
        .expect("snapshot");
    assert!(snap.layer_dir.ends_with("layer"));
    assert!(matches!(
        h.lifecycle.snapshot(&source.id, "globex").await,
        Err(LifecycleError::SandboxNotFound)
    ));
    let req = CreateSandboxRequest {
        snapshot_id: Some(snap.id.clone()),
        ..Default::default()
    };
    let copy = h.lifecycle.create(req, h.who()).await.expect("copy");
    assert_eq!(copy.template_id, template.id);
    assert_eq!(copy.snapshot_id.as_deref(), Some(snap.id.as_str()));
    let layers = h.node.sandbox(&copy.id).expect("copy runs").layers;
    assert_eq!(layers.len(), 2, "the snapshot's layer on the template's");
    assert_eq!(layers[0].display().to_string(), snap.layer_dir);
    assert!(matches!(
        h.lifecycle.delete_snapshot(&snap.id, TENANT).await,
        Err(LifecycleError::Conflict(_))
    ));
    let wrong_tier = CreateSandboxRequest {
        snapshot_id: Some(snap.id.clone()),
        isolation: Some("gvisor".into()),
        ..Default::default()
    };
    assert!(matches!(
        h.lifecycle.create(wrong_tier, h.who()).await,
        Err(LifecycleError::Invalid(m)) if m.contains("runs on the namespaces tier")
    ));
    h.lifecycle.kill(&copy.id).await.expect("killed");
    h.lifecycle
        .delete_snapshot(&snap.id, TENANT)
        .await
        .expect("no copy runs from it now");
    assert!(
        !std::path::Path::new(&snap.layer_dir).exists(),
        "its files are gone"
    );
    let gone = CreateSandboxRequest {
        snapshot_id: Some(snap.id),
        ..Default::default()
    };
    assert!(matches!(
        h.lifecycle.create(gone, h.who()).await,
        Err(LifecycleError::SnapshotNotFound(_))
    ));
}

/// Waits (at most 5 s) until the pools hold `n` warm sandboxes of `template`.
async fn warm(h: &Harness, n: usize) {
    for _ in 0..250 {
        let have: usize = h.lifecycle.pool_sizes().iter().map(|(_, _, n)| n).sum();
        if have >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the pool did not fill");
}

/// A pool of two `base` sandboxes, filled; the returned task keeps it (abort it at the end).
async fn two_warm_base(h: &Harness) -> tokio::task::JoinHandle<()> {
    h.builtin_ready("base");
    h.lifecycle
        .configure_pools(vec!["base=2".parse::<PoolTarget>().expect("pool")], false)
        .await
        .expect("configured");
    let filler = tokio::spawn(h.lifecycle.clone().keep_pools());
    warm(h, 2).await;
    filler
}

#[tokio::test]
async fn a_create_takes_a_warm_sandbox_and_the_pool_refills() {
    let h = Harness::new().await;
    let filler = two_warm_base(&h).await;
    let warm_ids: Vec<SandboxId> = h.node.sandboxes().into_iter().collect();
    let mut req = create_of("base");
    req.env_vars = Some([("TOKEN".to_owned(), "t".to_owned())].into());
    let rec = h.lifecycle.create(req, h.who()).await.expect("created");
    assert!(warm_ids.contains(&rec.id), "a warm sandbox was taken");
    assert_eq!(rec.tenant, TENANT);
    let taken = h.node.sandbox(&rec.id).expect("runs");
    assert_eq!(taken.owner, TENANT);
    assert_eq!(taken.env_vars.get("TOKEN").map(String::as_str), Some("t"));
    assert!(h.node.calls().contains(&Call::HandOver(rec.id.clone())));
    warm(&h, 2).await;
    assert_eq!(h.node.sandboxes().len(), 3, "the pool refilled");

    // Without internet on a tier with a kernel of its own, a create starts cold.
    let mut offline = create_of("base");
    offline.internet_access = Some(false);
    offline.isolation = Some("gvisor".into());
    let cold = h.lifecycle.create(offline, h.who()).await.expect("created");
    assert!(!warm_ids.contains(&cold.id));
    // ... and on namespaces it takes a warm one and cuts its link.
    let mut offline = create_of("base");
    offline.internet_access = Some(false);
    let cut = h.lifecycle.create(offline, h.who()).await.expect("created");
    assert!(!h.node.sandbox(&cut.id).expect("runs").internet);
    assert!(!cut.internet_access);

    // Warm sandboxes count in no quota and are nobody's.
    let usage = h.store.tenant_usage(POOL_TENANT).await.expect("usage");
    assert!(usage.sandboxes >= 1);
    filler.abort();
}

#[tokio::test]
async fn a_create_with_an_egress_policy_takes_a_warm_sandbox_and_puts_the_policy_on_it() {
    use warren_wire::control::EgressPolicy;
    let h = Harness::new().await;
    let filler = two_warm_base(&h).await;
    let warm_ids: Vec<SandboxId> = h.node.sandboxes().into_iter().collect();
    let policy = EgressPolicy {
        allow_out: vec!["api.test".into()],
        deny_out: vec!["0.0.0.0/0".into()],
        ..Default::default()
    };
    let mut req = create_of("base");
    req.network = Some(policy.clone());
    let rec = h.lifecycle.create(req, h.who()).await.expect("created");
    assert!(warm_ids.contains(&rec.id), "a warm sandbox was taken");
    assert!(h
        .node
        .calls()
        .contains(&Call::SetNetwork(rec.id.clone(), Some(policy.clone()))));
    assert_eq!(crate::egress::stored(&rec), Some(policy.clone()));
    let stored = h.lifecycle.get(&rec.id).await.expect("stored");
    assert_eq!(crate::egress::stored(&stored), Some(policy.clone()));

    // Without internet access its allowed names need the link a warm sandbox would lose: cold.
    let mut offline = create_of("base");
    offline.network = Some(policy);
    offline.internet_access = Some(false);
    let cold = h.lifecycle.create(offline, h.who()).await.expect("created");
    assert!(!warm_ids.contains(&cold.id));
    filler.abort();
}

#[tokio::test]
async fn a_warm_sandbox_is_not_taken_past_the_quota() {
    let h = Harness::with(quota(1)).await;
    let filler = two_warm_base(&h).await;
    h.lifecycle
        .create(create_of("base"), h.who())
        .await
        .expect("first");
    assert!(matches!(
        h.lifecycle.create(create_of("base"), h.who()).await,
        Err(LifecycleError::Quota(_))
    ));
    filler.abort();
}

#[tokio::test]
async fn a_restart_takes_over_survivors_and_records_the_rest_as_stopped() {
    let h = Harness::new().await;
    h.built_template("py", None).await;
    let alive = create_py(&h).await;
    let paused = create_py(&h).await;
    h.lifecycle.pause(&paused.id).await.expect("paused");
    let dead = create_py(&h).await;

    // The next server: a new node process finds two of them alive, one resumed meanwhile.
    let node = Arc::new(FakeNode::new(&[Tier::Namespaces]));
    node.survives(&alive.id, false);
    node.survives(&paused.id, false);
    let cluster = Cluster::new(
        Some(node.clone() as Arc<dyn NodeHandle>),
        "local".into(),
        h.store.clone(),
        h.state.tokens.clone(),
        None,
    );
    let next = Lifecycle::new(
        h.store.clone(),
        cluster,
        Arc::new(TemplateRoots::new(
            h.lifecycle.templates.cache.clone(),
            h.store.clone(),
        )),
        LifecycleConfig {
            limits: h.lifecycle.limits().clone(),
            allow_isolation_override: true,
            snapshots_dir: h.dir.path().join("snapshots"),
            vault: h.lifecycle.vault_arc(),
            volumes: h.lifecycle.volumes().clone(),
        },
    );
    let report = next.restore().await.expect("restored");
    assert_eq!((report.adopted, report.lost), (2, 1));
    assert_eq!(
        next.get(&alive.id).await.expect("kept").status,
        SandboxStatus::Running
    );
    assert_eq!(
        next.get(&paused.id).await.expect("kept").status,
        SandboxStatus::Running,
        "recorded as the node found it"
    );
    let lost = next.get(&dead.id).await.expect("kept");
    assert_eq!(lost.status, SandboxStatus::Stopped);
    assert_eq!(
        lost.status_reason.as_deref(),
        Some("its processes had ended while the server was down")
    );
    assert_eq!(node.calls().last(), Some(&Call::RemoveLeftovers));
}

#[tokio::test]
async fn sandboxes_are_stopped_as_their_timeout_passes_or_paused_when_asked() {
    let h = Harness::new().await;
    h.built_template("py", None).await;
    let mut req = create_of("py");
    req.timeout_seconds = Some(1);
    let expiring = h.lifecycle.create(req, h.who()).await.expect("created");
    let mut req = create_of("py");
    req.timeout_seconds = Some(1);
    req.auto_pause = Some(true);
    let pausing = h.lifecycle.create(req, h.who()).await.expect("created");
    let lasting = create_py(&h).await;
    let reaper = tokio::spawn(h.lifecycle.clone().reap_forever());
    let mut ended = None;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let rec = h.lifecycle.get(&expiring.id).await.expect("kept");
        if !rec.status.is_live() {
            ended = Some(rec);
            break;
        }
    }
    reaper.abort();
    let ended = ended.expect("stopped within 4 s of its 1 s timeout");
    assert_eq!(ended.status, SandboxStatus::Stopped);
    assert_eq!(ended.status_reason.as_deref(), Some("its timeout passed"));
    assert!(h.node.sandbox(&expiring.id).is_none(), "its data is gone");
    let paused = h.lifecycle.get(&pausing.id).await.expect("kept");
    assert_eq!(paused.status, SandboxStatus::Paused);
    assert_eq!(
        paused.expires_at, None,
        "a paused sandbox waits without a timeout"
    );
    assert_eq!(
        h.lifecycle.get(&lasting.id).await.expect("kept").status,
        SandboxStatus::Running
    );
    assert!(audited(&h, "sandbox.expire", &expiring.id).await);
}

#[tokio::test]
async fn a_sandbox_paused_at_its_timeout_with_auto_resume_runs_again_on_a_request() {
    let h = Harness::new().await;
    h.built_template("py", None).await;
    let mut req = create_of("py");
    req.auto_resume = Some(true);
    let refused = h.lifecycle.create(req.clone(), h.who()).await;
    assert!(
        matches!(&refused, Err(LifecycleError::Invalid(m)) if m.contains("auto_pause")),
        "auto_resume alone is a mistake: {refused:?}"
    );
    req.auto_pause = Some(true);
    req.timeout_seconds = Some(1);
    let sb = h.lifecycle.create(req, h.who()).await.expect("created");
    let plain = {
        let mut req = create_of("py");
        req.auto_pause = Some(true);
        h.lifecycle.create(req, h.who()).await.expect("created")
    };
    let reaper = tokio::spawn(h.lifecycle.clone().reap_forever());
    let mut paused = false;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if h.lifecycle.get(&sb.id).await.expect("kept").status == SandboxStatus::Paused {
            paused = true;
            break;
        }
    }
    reaper.abort();
    assert!(paused, "paused within 4 s of its 1 s timeout");
    assert!(h.lifecycle.resume_on_request(&sb.id).await);
    let rec = h.lifecycle.get(&sb.id).await.expect("kept");
    assert_eq!(rec.status, SandboxStatus::Running);
    assert!(
        rec.expires_at.is_some_and(|e| e <= crate::clock::now() + 1),
        "it gets its own timeout again: {:?}",
        rec.expires_at
    );
    assert!(h.node.calls().contains(&Call::Resume(sb.id.clone())));
    // Paused by hand, without autoResume: a request does not wake it.
    h.lifecycle.pause(&plain.id).await.expect("paused");
    assert!(!h.lifecycle.resume_on_request(&plain.id).await);
    assert_eq!(
        h.lifecycle.get(&plain.id).await.expect("kept").status,
        SandboxStatus::Paused
    );
}

#[tokio::test]
async fn shutdown_refuses_new_creates_and_leaves_sandboxes_running() {
    let h = Harness::new().await;
    h.built_template("py", None).await;
    h.lifecycle
        .create(create_of("py"), h.who())
        .await
        .expect("created");
    assert_eq!(
        h.lifecycle.shut_down(None).await,
        1,
        "kept for the next server"
    );
    assert!(matches!(
        h.lifecycle.create(create_of("py"), h.who()).await,
        Err(LifecycleError::Unavailable(m)) if m.contains("shutting down")
    ));
}

#[tokio::test]
async fn a_build_sandbox_counts_in_the_quota_until_it_ends() {
    let h = Harness::with(quota(1)).await;
    h.built_template("py", None).await;
    let spec = warren_runtime::SandboxSpec {
        id: SandboxId::generate(),
        template_name: "build".into(),
        layers: Vec::new(),
        persistent_upper: None,
        workdir: None,
        resources: warren_core::Resources {
            vcpu: 1,
            memory_mb: 256,
            disk_mb: 256,
        },
        internet_access: true,
        egress: None,
        env_vars: Default::default(),
        saved_state: None,
        volumes: Vec::new(),
    };
    let build = h
        .lifecycle
        .start_build_sandbox(TENANT, spec)
        .await
        .expect("started");
    assert!(matches!(
        h.lifecycle.create(create_of("py"), h.who()).await,
        Err(LifecycleError::Quota(_))
    ));
    let id = build.id.clone();
    h.lifecycle.end_build_sandbox(build).await;
    assert!(h.node.calls().contains(&Call::Stop(id)));
    h.lifecycle
        .create(create_of("py"), h.who())
        .await
        .expect("the build gave its share back");
}

#[tokio::test]
async fn a_network_update_reaches_the_node_first_and_bad_policies_change_nothing() {
    use warren_wire::control::EgressPolicy;
    let h = Harness::new().await;
    h.built_template("py", None).await;
    let mut req = create_of("py");
    let first = EgressPolicy {
        allow_out: vec!["api.test".into()],
        deny_out: vec!["0.0.0.0/0".into()],
        ..Default::default()
    };
    req.network = Some(first.clone());
    let rec = h.lifecycle.create(req, h.who()).await.expect("created");
    assert_eq!(crate::egress::stored(&rec), Some(first.clone()));

    let next = EgressPolicy {
        allow_out: vec!["*.pkg.test".into(), "198.18.0.9".into()],
        deny_out: vec!["0.0.0.0/0".into()],
        ..Default::default()
    };
    let updated = h.lifecycle.set_network(&rec.id, &next).await.expect("set");
    assert_eq!(crate::egress::stored(&updated), Some(next.clone()));
    assert!(h
        .node
        .calls()
        .contains(&Call::SetNetwork(rec.id.clone(), Some(next.clone()))));

    // A domain without 0.0.0.0/0 denied: E2B's 400, the node untouched, the store unchanged.
    let bad = EgressPolicy {
        allow_out: vec!["api.test".into()],
        ..Default::default()
    };
    let e = h
        .lifecycle
        .set_network(&rec.id, &bad)
        .await
        .expect_err("refused");
    assert!(
        matches!(e, LifecycleError::Invalid(ref m) if m.contains("ALL_TRAFFIC")),
        "{e}"
    );
    let calls = h
        .node
        .calls()
        .into_iter()
        .filter(|c| matches!(c, Call::SetNetwork(..)))
        .count();
    assert_eq!(calls, 1);
    let stored = h.lifecycle.get(&rec.id).await.expect("stored");
    assert_eq!(crate::egress::stored(&stored), Some(next));

    // An empty policy clears it; a stopped sandbox's network cannot change.
    let cleared = h
        .lifecycle
        .set_network(&rec.id, &EgressPolicy::default())
        .await
        .expect("cleared");
    assert_eq!(crate::egress::stored(&cleared), None);
    h.lifecycle.kill(&rec.id).await.expect("killed");
    let e = h
        .lifecycle
        .set_network(&rec.id, &first)
        .await
        .expect_err("not live");
    assert!(matches!(e, LifecycleError::InvalidState { .. }), "{e}");
}

#[tokio::test]
async fn a_templates_policy_is_the_default_and_a_creates_own_replaces_it() {
    use warren_wire::control::EgressPolicy;
    let h = Harness::new().await;
    let template_policy = EgressPolicy {
        allow_out: vec!["pypi.test".into()],
        deny_out: vec!["0.0.0.0/0".into()],
        ..Default::default()
    };
    let p = template_policy.clone();
    h.built_template_with("fenced", move |spec| spec.network = Some(p))
        .await;
    let rec = h
        .lifecycle
        .create(create_of("fenced"), h.who())
        .await
        .expect("created");
    assert_eq!(crate::egress::stored(&rec), Some(template_policy));

    let own = EgressPolicy {
        allow_out: vec!["198.18.0.9".into()],
        ..Default::default()
    };
    let mut req = create_of("fenced");
    req.network = Some(own.clone());
    let rec = h.lifecycle.create(req, h.who()).await.expect("created");
    assert_eq!(crate::egress::stored(&rec), Some(own));
}

#[tokio::test]
async fn network_rules_name_existing_secrets_only() {
    use warren_wire::control::{EgressPolicy, NetworkRule, NetworkTransform};
    let h = Harness::new().await;
    h.built_template("py", None).await;
    let rule = |secret: &str| EgressPolicy {
        rules: [(
            "api.test".to_owned(),
            vec![NetworkRule {
                transform: Some(NetworkTransform {
                    headers: [("x-api-key".to_owned(), format!("${{e2b.secrets.{secret}}}"))]
                        .into(),
                }),
            }],
        )]
        .into(),
        ..Default::default()
    };
    let mut req = create_of("py");
    req.network = Some(rule("missing"));
    let e = h.lifecycle.create(req, h.who()).await.expect_err("refused");
    assert!(
        matches!(e, LifecycleError::Invalid(ref m) if m.contains("missing")),
        "{e}"
    );
    h.lifecycle
        .vault()
        .create(crate::testing::TENANT, "k", "value", &Default::default())
        .await
        .expect("secret");
    let mut req = create_of("py");
    req.network = Some(rule("k"));
    let rec = h.lifecycle.create(req, h.who()).await.expect("created");
    assert_eq!(crate::egress::stored(&rec), Some(rule("k")));
}

#[tokio::test]
async fn idle_sandboxes_are_paused_with_a_reason_and_a_request_resumes_them() {
    let h = Harness::new().await;
    h.built_template("py", None).await;
    let filler = two_warm_base(&h).await;
    let mut req = create_of("py");
    req.timeout_seconds = Some(600);
    let idle = h.lifecycle.create(req, h.who()).await.expect("created");
    let busy = create_py(&h).await;
    let warm: Vec<SandboxId> = h
        .node
        .sandboxes()
        .into_iter()
        .filter(|id| *id != idle.id && *id != busy.id)
        .collect();
    let mut reported = warm.clone();
    reported.push(idle.id.clone());
    h.node.set_idle(&reported);

    let paused = h.lifecycle.pause_idle_once(Duration::from_secs(60)).await;
    assert_eq!(paused, 1, "only the idle sandbox, never a warm one");
    let rec = h.lifecycle.get(&idle.id).await.expect("kept");
    assert_eq!(rec.status, SandboxStatus::Paused);
    assert!(
        rec.status_reason
            .as_deref()
            .is_some_and(|r| r.contains("60 s unused") && r.contains("next request")),
        "{:?}",
        rec.status_reason
    );
    assert_eq!(rec.expires_at, idle.expires_at, "its timeout keeps running");
    assert_eq!(
        h.lifecycle.get(&busy.id).await.expect("kept").status,
        SandboxStatus::Running
    );
    assert!(warm
        .iter()
        .all(|id| !h.node.sandbox(id).expect("warm").paused));
    assert!(audited(&h, "sandbox.idle_pause", &idle.id).await);

    // Its next request wakes it, and the reason goes with the pause.
    assert!(h.lifecycle.resume_on_request(&idle.id).await);
    let rec = h.lifecycle.get(&idle.id).await.expect("kept");
    assert_eq!(rec.status, SandboxStatus::Running);
    assert_eq!(rec.status_reason, None);
    assert_eq!(rec.expires_at, idle.expires_at);
    // A sandbox the node no longer reports idle (a request came) stays running.
    h.node.set_idle(&[]);
    assert_eq!(
        h.lifecycle.pause_idle_once(Duration::from_secs(60)).await,
        0
    );
    filler.abort();
}

/// Whether `TENANT`'s audit trail records `action` on sandbox `id`.
async fn audited(h: &Harness, action: &str, id: &SandboxId) -> bool {
    let (events, _) = h
        .store
        .query_audit(&warren_store::AuditQuery {
            tenant: Some(TENANT.into()),
            limit: 100,
            ..Default::default()
        })
        .await
        .expect("audit");
    events
        .iter()
        .any(|e| e.action == action && e.sandbox_id.as_deref() == Some(id.as_str()))
}
